"""The running and candidate datastores, their locks, and the one path by which a change takes effect.

A change is built on a copy, checked by NACM, validated by libyang, then sent whole to the runtime (`apply`);
only when the runtime says ok is the copy swapped in. So the running datastore always equals what the runtime
runs, and a refusal anywhere leaves both unchanged. Secrets live in memory only: nothing here is written to
disk, so after a restart the orchestrator must push the configuration again.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from typing import Any

from lxml import etree

from nf_netconf.edit import Change, apply_edit, drop_default_marks, subtree_changes
from nf_netconf.errors import Reason, RpcError
from nf_netconf.nacm import Nacm
from nf_netconf.runtime_link import RuntimeLink, RuntimeRefused, RuntimeUnavailable
from nf_netconf.schema import NC_NS, Schema

log = logging.getLogger(__name__)

TARGETS = ("running", "candidate")
TEST_OPTIONS = frozenset({"test-then-set", "set", "test-only"})
ERROR_OPTIONS = frozenset({"stop-on-error", "continue-on-error", "rollback-on-error"})


def empty_data() -> etree._Element:
    return etree.Element(f"{{{NC_NS}}}data", nsmap={None: NC_NS})


def _wrap(roots: list[etree._Element]) -> etree._Element:
    data = empty_data()
    data.extend(roots)
    return data


def runtime_error(exc: RuntimeRefused | RuntimeUnavailable) -> RpcError:
    if isinstance(exc, RuntimeRefused):
        return RpcError(exc.tag, exc.message, reason=Reason.RUNTIME_REFUSED, path=exc.path)
    return RpcError(
        "operation-failed", f"the runtime is not available: {exc}", reason=Reason.RUNTIME_UNAVAILABLE
    )


class Datastores:
    def __init__(self, schema: Schema, runtime: RuntimeLink, nacm: Nacm) -> None:
        self.schema = schema
        self.runtime = runtime
        self.nacm = nacm
        self._mutex = threading.RLock()
        self._stores = {"running": empty_data(), "candidate": empty_data()}
        self.candidate_dirty = False
        self.locks = {target: 0 for target in TARGETS}

    # ----------------------------------------------------------------------------------------------------
    # reading
    # ----------------------------------------------------------------------------------------------------

    def snapshot(self, source: str) -> etree._Element:
        """A copy of a datastore, secrets included: callers must prune before replying."""
        with self._mutex:
            return copy.deepcopy(self._stores[source])

    # ----------------------------------------------------------------------------------------------------
    # changing
    # ----------------------------------------------------------------------------------------------------

    def _check_lock(self, target: str, session_id: int) -> None:
        holder = self.locks[target]
        if holder and holder != session_id:
            raise RpcError(
                "in-use",
                f"the {target} datastore is locked by session {holder}",
                reason=Reason.IN_USE,
                error_type="protocol",
                info={"session-id": str(holder)},
            )

    def _apply_running(self, new: etree._Element, *, test_only: bool) -> etree._Element:
        roots, json_text = self.schema.check_config(list(new), full=True)
        config: dict[str, Any] = json.loads(json_text)
        try:
            if test_only:
                self.runtime.validate(config)
            else:
                self.runtime.apply(config)
        except (RuntimeRefused, RuntimeUnavailable) as exc:
            raise runtime_error(exc) from None
        return _wrap(roots)

    def edit(
        self,
        session_id: int,
        groups: frozenset[str],
        target: str,
        config: etree._Element,
        default_op: str = "merge",
        test_option: str = "test-then-set",
    ) -> None:
        """edit-config: every error-option behaves as rollback-on-error (nothing is applied unless
        everything is), which RFC 6241 permits for stop-on-error and is the :rollback-on-error promise."""
        with self._mutex:
            self._check_lock(target, session_id)
            work = copy.deepcopy(self._stores[target])
            changes = apply_edit(work, config, self.schema, default_op)
            self._authorize(groups, changes)
            test_only = test_option == "test-only"
            if not changes and not test_only:
                return  # nothing to change: the runtime already runs exactly this
            self._store(target, work, test_only=test_only)

    def replace(self, session_id: int, groups: frozenset[str], target: str, source: etree._Element) -> None:
        """copy-config: the target becomes `source` (a <data>/<config> element), through the same checks."""
        with self._mutex:
            self._check_lock(target, session_id)
            new_roots = [copy.deepcopy(el) for el in source if isinstance(el.tag, str)]
            for root in new_roots:
                info = self.schema.lookup(None, root.tag)
                if info is not None:  # an unknown root is refused by subtree_changes below
                    drop_default_marks(root, info, "/" + info.path.lstrip("/"))
            changes = subtree_changes(list(self._stores[target]), self.schema, "delete")
            changes += subtree_changes(new_roots, self.schema, "create")
            self._authorize(groups, changes)
            self._store(target, _wrap(new_roots))

    def _authorize(self, groups: frozenset[str], changes: list[Change]) -> None:
        denied = self.nacm.first_denied_write(groups, changes)
        if denied is not None:
            raise RpcError(
                "access-denied",
                f"{denied.op} of {denied.info.path} is not permitted",
                reason=Reason.ACCESS_DENIED,
                path=denied.instance,
            )

    def _store(self, target: str, work: etree._Element, test_only: bool = False) -> None:
        """running only as the runtime accepts it (a clean candidate follows); candidate once YANG-valid."""
        if target == "running":
            new = self._apply_running(work, test_only=test_only)
            if test_only:
                return
            self._stores["running"] = new
            if not self.candidate_dirty:
                self._stores["candidate"] = copy.deepcopy(new)
        else:
            roots, _ = self.schema.check_config(list(work), full=False)
            if test_only:
                return
            self._stores["candidate"] = _wrap(roots)
            self.candidate_dirty = True

    def commit(self, session_id: int) -> None:
        with self._mutex:
            self._check_lock("running", session_id)
            self._check_lock("candidate", session_id)
            new = self._apply_running(copy.deepcopy(self._stores["candidate"]), test_only=False)
            self._stores["running"] = new
            self._stores["candidate"] = copy.deepcopy(new)
            self.candidate_dirty = False

    def discard_changes(self, session_id: int) -> None:
        with self._mutex:
            self._check_lock("candidate", session_id)
            self._discard()

    def _discard(self) -> None:
        self._stores["candidate"] = copy.deepcopy(self._stores["running"])
        self.candidate_dirty = False

    def reapply(self) -> None:
        """Send running to the runtime again (after a runtime restart); a refusal is logged, not raised."""
        with self._mutex:
            if len(self._stores["running"]) == 0:
                return
            try:
                self._apply_running(copy.deepcopy(self._stores["running"]), test_only=False)
            except RpcError as error:
                log.error("the runtime refused the running configuration after reconnecting: %s", error)

    def validate(self, data: etree._Element) -> None:
        """<validate>: full YANG validation, then the runtime's own checks (files, addresses)."""
        with self._mutex:
            self._apply_running(copy.deepcopy(data), test_only=True)

    # ----------------------------------------------------------------------------------------------------
    # locks (RFC 6241 section 7.5)
    # ----------------------------------------------------------------------------------------------------

    def lock(self, target: str, session_id: int) -> None:
        with self._mutex:
            holder = self.locks[target]
            if holder:
                raise RpcError(
                    "lock-denied",
                    f"the {target} datastore is locked by session {holder}",
                    reason=Reason.LOCK_DENIED,
                    error_type="protocol",
                    info={"session-id": str(holder)},
                )
            if target == "candidate" and self.candidate_dirty:
                raise RpcError(
                    "lock-denied",
                    "the candidate holds uncommitted changes; commit or discard-changes first",
                    reason=Reason.LOCK_DENIED,
                    error_type="protocol",
                    info={"session-id": "0"},
                )
            self.locks[target] = session_id

    def unlock(self, target: str, session_id: int) -> None:
        with self._mutex:
            if self.locks[target] != session_id:
                raise RpcError(
                    "operation-failed",
                    f"this session does not hold the {target} lock",
                    reason=Reason.LOCK_DENIED,
                    error_type="protocol",
                )
            self.locks[target] = 0

    def session_closed(self, session_id: int) -> None:
        """Release the session's locks; a candidate locked by a session that ends is discarded."""
        with self._mutex:
            for target in TARGETS:
                if self.locks[target] == session_id:
                    self.locks[target] = 0
                    if target == "candidate":
                        self._discard()
