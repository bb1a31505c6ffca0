"""The running and candidate datastores, their locks, and the one path by which a change takes effect.

A change is built on a copy, checked by NACM, validated by libyang, then sent whole to the runtime (`apply`);
only when the runtime says ok is the copy swapped in. So the running datastore always equals what the runtime
runs, and a refusal anywhere leaves both unchanged. Secrets live in memory only: nothing here is written to
disk, so after a restart the orchestrator must push the configuration again.

A confirmed commit (RFC 6241 section 8.4) keeps the running configuration from before it as the rollback
point; the rollback goes through the same path (libyang, runtime `apply`), so it too leaves running equal to
what the runtime runs, even when the runtime refuses it.
"""

from __future__ import annotations

import copy
import hmac
import json
import logging
import threading
from dataclasses import dataclass
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
DEFAULT_CONFIRM_TIMEOUT = 600  # seconds, RFC 6241 section 8.4.5.1


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


def _confirm_error(tag: str, message: str, *, error_type: str = "protocol", **info: str) -> RpcError:
    return RpcError(tag, message, reason=Reason.CONFIRMED_COMMIT, error_type=error_type, info=info)


@dataclass
class PendingConfirm:
    """A confirmed commit awaiting its confirming commit. `token` (the persist value) is a credential: it is
    never logged nor quoted in an error."""

    rollback: etree._Element  # running as it was before the first confirmed commit of this series
    session_id: int  # the session that issued the latest confirmed commit
    token: str | None  # None: not persistent, bound to session_id
    timer: threading.Timer
    generation: int  # tells a timer that fired late that it is no longer the current one


class Datastores:
    def __init__(self, schema: Schema, runtime: RuntimeLink, nacm: Nacm) -> None:
        self.schema = schema
        self.runtime = runtime
        self.nacm = nacm
        self._mutex = threading.RLock()
        self._stores = {"running": empty_data(), "candidate": empty_data()}
        self.candidate_dirty = False
        self.locks = {target: 0 for target in TARGETS}
        self._pending: PendingConfirm | None = None
        self._generation = 0

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
            if target == "running" and test_option != "test-only":
                self._check_running_free()
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
            if target == "running":
                self._check_running_free()
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

    def commit(
        self,
        session_id: int,
        *,
        confirmed: bool = False,
        timeout: float = DEFAULT_CONFIRM_TIMEOUT,
        persist: str | None = None,
        persist_id: str | None = None,
    ) -> None:
        """commit, and RFC 6241 section 8.4: `confirmed` starts (or, while one is pending, extends) a
        confirmed commit that rolls back after `timeout` seconds; a commit without it confirms the pending
        one. A refusal (locks, the runtime) leaves a pending confirmed commit and its timer as they were."""
        with self._mutex:
            self._check_lock("running", session_id)
            self._check_lock("candidate", session_id)
            pending = self._pending
            if pending is not None:
                self._check_may_confirm(pending, session_id, persist_id)
            elif persist_id is not None:
                raise _confirm_error(
                    "invalid-value",
                    "persist-id does not match: no confirmed commit is pending",
                    error_type="application",
                )
            rollback = pending.rollback if pending is not None else copy.deepcopy(self._stores["running"])
            new = self._apply_running(copy.deepcopy(self._stores["candidate"]), test_only=False)
            self._stores["running"] = new
            self._stores["candidate"] = copy.deepcopy(new)
            self.candidate_dirty = False
            if confirmed:
                token = persist if persist is not None else (pending.token if pending is not None else None)
                self._start_pending(rollback, session_id, token, timeout)
                log.info(
                    "confirmed commit %s by session %d: rolls back in %g s unless confirmed (%s)",
                    "extended" if pending is not None else "started",
                    session_id,
                    timeout,
                    "persistent" if token is not None else "bound to the session",
                )
            elif pending is not None:
                self._end_pending()
                log.info("confirmed commit confirmed by session %d", session_id)

    def cancel_commit(self, session_id: int, persist_id: str | None) -> None:
        """<cancel-commit>: roll back the pending confirmed commit now; a runtime refusal is the client's
        error and leaves the confirmed commit pending (its timer tries again)."""
        with self._mutex:
            pending = self._pending
            if pending is None:
                raise _confirm_error(
                    "operation-failed", "no confirmed commit is pending", error_type="application"
                )
            self._check_may_confirm(pending, session_id, persist_id)
            self._check_lock("running", session_id)
            self._check_lock("candidate", session_id)
            self._rollback(pending)
            log.info(
                "confirmed commit cancelled by session %d; the previous configuration is back", session_id
            )

    @property
    def confirm_pending(self) -> bool:
        with self._mutex:
            return self._pending is not None

    def _check_may_confirm(self, pending: PendingConfirm, session_id: int, persist_id: str | None) -> None:
        """RFC 6241 section 8.4: a persistent confirmed commit is confirmed, extended or cancelled by its
        token from any session; another only from its own session."""
        if pending.token is not None:
            if persist_id is None:
                raise _confirm_error(
                    "missing-element",
                    "a persistent confirmed commit is pending: give its persist-id",
                    **{"bad-element": "persist-id"},
                )
            if not hmac.compare_digest(persist_id.encode(), pending.token.encode()):
                raise _confirm_error(
                    "invalid-value",
                    "persist-id does not match the pending confirmed commit",
                    error_type="application",
                )
            return
        if persist_id is not None:
            raise _confirm_error(
                "invalid-value",
                "persist-id does not match: the pending confirmed commit is not persistent",
                error_type="application",
            )
        if session_id != pending.session_id:
            raise _confirm_error(
                "in-use",
                f"a confirmed commit of session {pending.session_id} is pending; only that session can "
                "confirm or cancel it",
                **{"session-id": str(pending.session_id)},
            )

    def _check_running_free(self) -> None:
        """While a confirmed commit is pending, running changes only through commit and cancel-commit: a
        direct edit would be silently undone by the rollback, or would have to be kept past it."""
        pending = self._pending
        if pending is None:
            return
        info = {} if pending.token is not None else {"session-id": str(pending.session_id)}
        raise _confirm_error(
            "in-use",
            "a confirmed commit is pending: running can be changed only by confirming it (commit) or "
            "cancelling it (cancel-commit)",
            **info,
        )

    def _start_pending(
        self, rollback: etree._Element, session_id: int, token: str | None, timeout: float
    ) -> None:
        if self._pending is not None:
            self._pending.timer.cancel()
        self._generation += 1
        timer = threading.Timer(timeout, self._expire, args=(self._generation,))
        timer.daemon = True
        timer.name = "confirmed-commit-timer"
        self._pending = PendingConfirm(rollback, session_id, token, timer, self._generation)
        timer.start()

    def _end_pending(self) -> None:
        if self._pending is not None:
            self._pending.timer.cancel()
            self._pending = None

    def _rollback(self, pending: PendingConfirm) -> None:
        """Give the runtime the configuration before the confirmed commit; only if it takes it do running and
        the candidate return to it (candidate changes made meanwhile were built on what is undone)."""
        new = self._apply_running(copy.deepcopy(pending.rollback), test_only=False)
        self._end_pending()
        self._stores["running"] = new
        if self.candidate_dirty:
            log.warning("the rollback of the confirmed commit discards the uncommitted candidate changes")
        self._discard()

    def _rollback_or_keep(self, why: str) -> None:
        """A rollback nobody asked for over the wire (timeout, session end, shutdown): a refusal cannot go to
        a client, so it is logged, and running stays the configuration the runtime kept."""
        pending = self._pending
        if pending is None:
            return
        log.info("confirmed commit not confirmed (%s): rolling back to the previous configuration", why)
        try:
            self._rollback(pending)
        except Exception as exc:  # on a timer thread nothing else would see it; an RpcError's text is safe
            self._end_pending()
            log.error(
                "ROLLBACK FAILED: the runtime did not take back the configuration from before the confirmed "
                "commit (%s: %s); running keeps the unconfirmed configuration, which the runtime still runs",
                why,
                exc if isinstance(exc, RpcError) else f"internal error ({type(exc).__name__})",
            )
            return
        log.info("confirmed commit rolled back (%s)", why)

    def _expire(self, generation: int) -> None:
        with self._mutex:
            pending = self._pending
            if pending is None or pending.generation != generation:
                return  # confirmed, extended or cancelled while this timer was firing
            self._rollback_or_keep("the confirm timeout expired")

    def shutdown(self) -> None:
        """The server stops: no one could confirm a pending confirmed commit afterwards and nothing is kept
        on disk, so it is rolled back now, as RFC 6241 asks of a device that restarts."""
        with self._mutex:
            self._rollback_or_keep("the NETCONF server is stopping")
            self._end_pending()

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
        """Release the session's locks; a candidate locked by a session that ends is discarded; a confirmed
        commit of that session that is not persistent is rolled back (RFC 6241 section 8.4.1)."""
        with self._mutex:
            for target in TARGETS:
                if self.locks[target] == session_id:
                    self.locks[target] = 0
                    if target == "candidate":
                        self._discard()
            pending = self._pending
            if pending is not None and pending.token is None and pending.session_id == session_id:
                self._rollback_or_keep(f"session {session_id} ended before confirming it")
