"""The running and candidate datastores, their locks, and the one path by which a change takes effect.

A change is built on a copy, checked by NACM, validated by libyang, then sent whole to the runtime (`apply`);
only when the runtime says ok is the copy swapped in. So the running datastore always equals what the runtime
runs, and a refusal anywhere leaves both unchanged. Secrets live in memory only: nothing here is written to
disk, so after a restart the orchestrator must push the configuration again.

A confirmed commit (RFC 6241 section 8.4) keeps the running configuration from before it as the rollback
point; the rollback goes through the same path (libyang, runtime `apply`), so it too leaves running equal to
what the runtime runs, even when the runtime refuses it.

Every change of running that took effect, and every step of a confirmed commit, is reported as an RFC 6470
notification (`config_edits` names the changed nodes). They are collected while the mutex is held and
published once it is released, so a slow subscriber never holds up a change.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lxml import etree

from nf_netconf.edit import Change, apply_edit, drop_default_marks, subtree_changes
from nf_netconf.errors import Reason, RpcError
from nf_netconf.nacm import Nacm
from nf_netconf.notifications import Actor, config_change, confirmed_commit
from nf_netconf.runtime_link import RuntimeLink, RuntimeRefused, RuntimeUnavailable
from nf_netconf.schema import NC_NS, NodeInfo, Schema

log = logging.getLogger(__name__)

TARGETS = ("running", "candidate")
TEST_OPTIONS = frozenset({"test-then-set", "set", "test-only"})
ERROR_OPTIONS = frozenset({"stop-on-error", "continue-on-error", "rollback-on-error"})
DEFAULT_CONFIRM_TIMEOUT = 600  # seconds, RFC 6241 section 8.4.5.1

Publisher = Callable[[list[dict[str, Any]]], None]


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
    by: Actor  # the session that issued the latest confirmed commit
    token: str | None  # None: not persistent, bound to the session of `by`
    timer: threading.Timer
    generation: int  # tells a timer that fired late that it is no longer the current one


class Datastores:
    def __init__(
        self, schema: Schema, runtime: RuntimeLink, nacm: Nacm, publish: Publisher | None = None
    ) -> None:
        self.schema = schema
        self.runtime = runtime
        self.nacm = nacm
        self._publish = publish
        self._mutex = threading.RLock()
        self._depth = 0  # nesting of _changing() (the mutex is reentrant)
        self._outbox: list[dict[str, Any]] = []  # notifications of the changes made under the mutex
        self._stores = {"running": empty_data(), "candidate": empty_data()}
        self.candidate_dirty = False
        self.locks = {target: 0 for target in TARGETS}
        self._pending: PendingConfirm | None = None
        self._generation = 0

    # ----------------------------------------------------------------------------------------------------
    # reading
    # ----------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """The mutex, and on leaving the outermost hold, the publication of what was collected meanwhile."""
        with self._mutex:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                events: list[dict[str, Any]] = []
                if self._depth == 0:
                    events, self._outbox = self._outbox, []
        if events and self._publish is not None:
            self._publish(events)

    def _running_changed(self, old: etree._Element, by: Actor | None) -> None:
        edits = config_edits(old, self._stores["running"], self.schema)
        if edits:
            self._outbox.append(config_change(by, edits))

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
        by: Actor,
        groups: frozenset[str],
        target: str,
        config: etree._Element,
        default_op: str = "merge",
        test_option: str = "test-then-set",
    ) -> None:
        """edit-config: every error-option behaves as rollback-on-error (nothing is applied unless
        everything is), which RFC 6241 permits for stop-on-error and is the :rollback-on-error promise."""
        with self._changing():
            self._check_lock(target, by.session_id)
            if target == "running" and test_option != "test-only":
                self._check_running_free()
            work = copy.deepcopy(self._stores[target])
            changes = apply_edit(work, config, self.schema, default_op)
            self._authorize(groups, changes)
            test_only = test_option == "test-only"
            if not changes and not test_only:
                return  # nothing to change: the runtime already runs exactly this
            self._store(target, work, by, test_only=test_only)

    def replace(self, by: Actor, groups: frozenset[str], target: str, source: etree._Element) -> None:
        """copy-config: the target becomes `source` (a <data>/<config> element), through the same checks."""
        with self._changing():
            self._check_lock(target, by.session_id)
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
            self._store(target, _wrap(new_roots), by)

    def _authorize(self, groups: frozenset[str], changes: list[Change]) -> None:
        denied = self.nacm.first_denied_write(groups, changes)
        if denied is not None:
            raise RpcError(
                "access-denied",
                f"{denied.op} of {denied.info.path} is not permitted",
                reason=Reason.ACCESS_DENIED,
                path=denied.instance,
            )

    def _store(self, target: str, work: etree._Element, by: Actor, test_only: bool = False) -> None:
        """running only as the runtime accepts it (a clean candidate follows); candidate once YANG-valid.
        Only running's changes are notified: RFC 6470's datastore leaf has no candidate."""
        if target == "running":
            new = self._apply_running(work, test_only=test_only)
            if test_only:
                return
            old, self._stores["running"] = self._stores["running"], new
            self._running_changed(old, by)
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
        by: Actor,
        *,
        confirmed: bool = False,
        timeout: float = DEFAULT_CONFIRM_TIMEOUT,
        persist: str | None = None,
        persist_id: str | None = None,
    ) -> None:
        """commit, and RFC 6241 section 8.4: `confirmed` starts (or, while one is pending, extends) a
        confirmed commit that rolls back after `timeout` seconds; a commit without it confirms the pending
        one. A refusal (locks, the runtime) leaves a pending confirmed commit and its timer as they were."""
        session_id = by.session_id
        with self._changing():
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
            old, self._stores["running"] = self._stores["running"], new
            self._stores["candidate"] = copy.deepcopy(new)
            self.candidate_dirty = False
            self._running_changed(old, by)
            if confirmed:
                token = persist if persist is not None else (pending.token if pending is not None else None)
                self._start_pending(rollback, by, token, timeout)
                self._outbox.append(confirmed_commit("extend" if pending else "start", by, timeout))
                log.info(
                    "confirmed commit %s by session %d: rolls back in %g s unless confirmed (%s)",
                    "extended" if pending is not None else "started",
                    session_id,
                    timeout,
                    "persistent" if token is not None else "bound to the session",
                )
            elif pending is not None:
                self._end_pending()
                self._outbox.append(confirmed_commit("complete", by))
                log.info("confirmed commit confirmed by session %d", session_id)

    def cancel_commit(self, by: Actor, persist_id: str | None) -> None:
        """<cancel-commit>: roll back the pending confirmed commit now; a runtime refusal is the client's
        error and leaves the confirmed commit pending (its timer tries again)."""
        session_id = by.session_id
        with self._changing():
            pending = self._pending
            if pending is None:
                raise _confirm_error(
                    "operation-failed", "no confirmed commit is pending", error_type="application"
                )
            self._check_may_confirm(pending, session_id, persist_id)
            self._check_lock("running", session_id)
            self._check_lock("candidate", session_id)
            self._rollback(pending, by)
            self._outbox.append(confirmed_commit("cancel", by))
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
        if session_id != pending.by.session_id:
            raise _confirm_error(
                "in-use",
                f"a confirmed commit of session {pending.by.session_id} is pending; only that session can "
                "confirm or cancel it",
                **{"session-id": str(pending.by.session_id)},
            )

    def _check_running_free(self) -> None:
        """While a confirmed commit is pending, running changes only through commit and cancel-commit: a
        direct edit would be silently undone by the rollback, or would have to be kept past it."""
        pending = self._pending
        if pending is None:
            return
        info = {} if pending.token is not None else {"session-id": str(pending.by.session_id)}
        raise _confirm_error(
            "in-use",
            "a confirmed commit is pending: running can be changed only by confirming it (commit) or "
            "cancelling it (cancel-commit)",
            **info,
        )

    def _start_pending(self, rollback: etree._Element, by: Actor, token: str | None, timeout: float) -> None:
        if self._pending is not None:
            self._pending.timer.cancel()
        self._generation += 1
        timer = threading.Timer(timeout, self._expire, args=(self._generation,))
        timer.daemon = True
        timer.name = "confirmed-commit-timer"
        self._pending = PendingConfirm(rollback, by, token, timer, self._generation)
        timer.start()

    def _end_pending(self) -> None:
        if self._pending is not None:
            self._pending.timer.cancel()
            self._pending = None

    def _rollback(self, pending: PendingConfirm, by: Actor | None) -> None:
        """Give the runtime the configuration before the confirmed commit; only if it takes it do running and
        the candidate return to it (candidate changes made meanwhile were built on what is undone). `by`
        None: the server's own act (timeout, session end, shutdown)."""
        new = self._apply_running(copy.deepcopy(pending.rollback), test_only=False)
        self._end_pending()
        old, self._stores["running"] = self._stores["running"], new
        self._running_changed(old, by)
        if self.candidate_dirty:
            log.warning("the rollback of the confirmed commit discards the uncommitted candidate changes")
        self._discard()

    def _rollback_or_keep(self, why: str, event: str) -> None:
        """A rollback nobody asked for over the wire (timeout, session end, shutdown): a refusal cannot go to
        a client, so it is logged, and running stays the configuration the runtime kept. Either way the
        confirmed commit ends, which `event` (timeout, cancel) reports."""
        pending = self._pending
        if pending is None:
            return
        log.info("confirmed commit not confirmed (%s): rolling back to the previous configuration", why)
        try:
            self._rollback(pending, None)
        except Exception as exc:  # on a timer thread nothing else would see it; an RpcError's text is safe
            self._end_pending()
            self._outbox.append(confirmed_commit(event, pending.by))
            log.error(
                "ROLLBACK FAILED: the runtime did not take back the configuration from before the confirmed "
                "commit (%s: %s); running keeps the unconfirmed configuration, which the runtime still runs",
                why,
                exc if isinstance(exc, RpcError) else f"internal error ({type(exc).__name__})",
            )
            return
        self._outbox.append(confirmed_commit(event, pending.by))
        log.info("confirmed commit rolled back (%s)", why)

    def _expire(self, generation: int) -> None:
        with self._changing():
            pending = self._pending
            if pending is None or pending.generation != generation:
                return  # confirmed, extended or cancelled while this timer was firing
            self._rollback_or_keep("the confirm timeout expired", "timeout")

    def shutdown(self) -> None:
        """The server stops: no one could confirm a pending confirmed commit afterwards and nothing is kept
        on disk, so it is rolled back now, as RFC 6241 asks of a device that restarts."""
        with self._changing():
            self._rollback_or_keep("the NETCONF server is stopping", "cancel")
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
        with self._changing():
            for target in TARGETS:
                if self.locks[target] == session_id:
                    self.locks[target] = 0
                    if target == "candidate":
                        self._discard()
            pending = self._pending
            if pending is not None and pending.token is None and pending.by.session_id == session_id:
                self._rollback_or_keep(f"session {session_id} ended before confirming it", "cancel")


# ----------------------------------------------------------------------------------------------------------
# RFC 6470 edit records: what changed between two versions of running
# ----------------------------------------------------------------------------------------------------------


def config_edits(old: etree._Element, new: etree._Element, schema: Schema) -> list[tuple[str | None, str]]:
    """(instance-identifier, operation) for each node that differs, the highest one that does: a new node
    is `create` (its subtree is not listed), a gone one `delete`, a leaf or anydata with another value
    `replace`, and so is an entry of an ordered-by user list that moved. Paths only, never a value: a
    predicate would name a secret only for a secret key or leaf-list, and such a target is left out, as is
    one no RFC 7951 path can spell (a key holding both quote characters); RFC 6470 allows both."""
    edits: list[tuple[str | None, str]] = []
    _diff(list(old), list(new), None, "", schema, edits)
    return edits


_Identity = tuple[str, tuple[str, ...]]


def _identity(el: etree._Element, info: NodeInfo | None) -> _Identity:
    if info is not None and info.kind == "list":
        return str(el.tag), tuple((el.findtext(key) or "").strip() for key in info.keys)
    if info is not None and info.kind == "leaf-list":
        return str(el.tag), ((el.text or "").strip(),)
    return str(el.tag), ()


def _step(el: etree._Element, info: NodeInfo, parent: NodeInfo | None) -> str | None:
    step = info.name if parent is not None and parent.module == info.module else f"{info.module}:{info.name}"
    values: list[tuple[str, str]] = []
    if (info.kind == "leaf-list" and info.secret) or any(
        info.children[key].secret for key in info.keys if key in info.children
    ):
        return None  # a value in a predicate would carry the secret (no module has such a node today)
    if info.kind == "list":
        values = [(key.rpartition("}")[2], (el.findtext(key) or "").strip()) for key in info.keys]
    elif info.kind == "leaf-list":
        values = [(".", (el.text or "").strip())]
    for name, value in values:
        if "'" not in value:
            step += f"[{name}='{value}']"
        elif '"' not in value:
            step += f'[{name}="{value}"]'
        else:
            return None
    return step


def _diff(
    old: list[etree._Element],
    new: list[etree._Element],
    parent: NodeInfo | None,
    parent_inst: str | None,
    schema: Schema,
    edits: list[tuple[str | None, str]],
) -> None:
    def index(elements: list[etree._Element]) -> dict[_Identity, tuple[etree._Element, NodeInfo | None]]:
        found: dict[_Identity, tuple[etree._Element, NodeInfo | None]] = {}
        for el in elements:
            if not isinstance(el.tag, str):
                continue
            info = schema.lookup(parent, el.tag)
            if parent is not None and parent.kind == "list" and el.tag in parent.keys:
                continue  # a key is the entry's identity: it never changes on its own
            found[_identity(el, info)] = (el, info)
        return found

    def inst(el: etree._Element, info: NodeInfo | None) -> str | None:
        if parent_inst is None or info is None:
            return None
        step = _step(el, info, parent)
        return None if step is None else f"{parent_inst}/{step}"

    before, after = index(old), index(new)
    for identity, (el, info) in before.items():
        if identity not in after:
            edits.append((inst(el, info), "delete"))
    for identity, (el, info) in after.items():
        if identity not in before:
            edits.append((inst(el, info), "create"))
            continue
        was = before[identity][0]
        if info is None or info.kind in ("leaf", "anydata"):
            if _canonical(was) != _canonical(el):
                edits.append((inst(el, info), "replace"))
        elif info.kind in ("container", "list"):
            _diff(list(was), list(el), info, inst(el, info), schema, edits)
    # an ordered-by user list or leaf-list: entries kept in both whose order changed are reported as moved
    for tag in {identity[0] for identity in after}:
        info = after[next(i for i in after if i[0] == tag)][1]
        if info is None or not info.user_ordered:
            continue
        kept_before = [i for i in before if i[0] == tag and i in after]
        kept_after = [i for i in after if i[0] == tag and i in before]
        matcher = difflib.SequenceMatcher(None, kept_before, kept_after, autojunk=False)
        stayed = {j for block in matcher.get_matching_blocks() for j in range(block.b, block.b + block.size)}
        for position, identity in enumerate(kept_after):
            if position not in stayed:
                el, entry_info = after[identity]
                edits.append((inst(el, entry_info), "replace"))


def _canonical(el: etree._Element) -> bytes:
    return bytes(etree.tostring(el, method="c14n"))
