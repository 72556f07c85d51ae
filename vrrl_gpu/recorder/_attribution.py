"""Attribution: which launch the device had reached when a CUDA error surfaced, and its failure record.

Functions of the recorder (its lock held by the caller), kept apart from the launch path: the crash window of
a stream from the newest breadcrumb it wrote (never from what the host enqueued), the device-sequenced ring's
window for instrumented launches and captured graph nodes, the failure of a launch call, and the HUNG records
of close()'s bounded wait. The Recorder's methods of the same names call these. See docs/recorder.md.
"""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any, cast

from vrrl_gpu.errors import RecorderClosedError, RecorderPoisonedError, VrrlWarning
from vrrl_gpu.evidence._classify import Classification
from vrrl_gpu.evidence._failure import FailureEvidence
from vrrl_gpu.format._layout import UNKNOWN_SLOT, FailureClass, Record, SlotStatus, as_record_array
from vrrl_gpu.format._sidecar import write_sidecar
from vrrl_gpu.recorder._graphs import GraphCulprit, resolve
from vrrl_gpu.recorder._options import Words
from vrrl_gpu.recorder._state import _Launch, _StreamState

if TYPE_CHECKING:
    from vrrl_gpu.recorder._recorder import Recorder

__all__ = [
    "wait_bounded",
    "launch_failed",
    "await_arrival",
    "async_fault",
    "blame_device_window",
    "crash_window",
    "write_evidence",
    "outputs_now",
]


def wait_bounded(rec: Recorder, timeout: float | None) -> bool:
    """close()'s wait: poll the streams until they are idle or ``timeout`` passes. On timeout, write a
    HUNG record for each stream still running and return True (the caller then does not wait again)."""
    if timeout is None:
        return False
    deadline = time.monotonic() + timeout
    delay = 1e-3
    while True:
        running = []
        for st in list(rec._streams.values()):
            if not st.outstanding or st.gone or st.foreign or rec._backend.is_capturing(st.stream):
                continue  # no handle to poll from here (synchronize() waits for those)
            code = int(rec._backend.stream_query(st.stream))
            if code == 600:
                running.append(st)
            elif code != 0:
                return False  # an error: synchronize() attributes it
        if not running:
            return False
        if time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    rec._drainer.flush()
    fc = FailureClass.TRANSIENT_QUEUE
    for st in running:
        culprit = rec._crash_window(st)
        if culprit is None or culprit.slot_idx in rec._hang_reported:
            continue
        rec._hang_reported.add(culprit.slot_idx)
        ev = FailureEvidence(
            slot_status=int(SlotStatus.HUNG), failure_class=fc, backend_error_code=0, output_digest=0
        )
        rec._write_evidence(culprit, ev)
    with rec._sidecar_lock:
        rec._sidecar.extra["close"] = {
            "hung_streams": [st.index for st in running],
            "waited_seconds": timeout,
            "staging": "leaked: the device may still write into it",
        }
        write_sidecar(rec._path, rec._sidecar)
    warnings.warn(
        f"vrrl_gpu: close() waited {timeout:g} s and {len(running)} stream(s) still run; HUNG records "
        f"written to {rec._path}, staging leaked, returning without waiting further",
        VrrlWarning,
        stacklevel=4,
    )
    return True


def launch_failed(
    rec: Recorder, st: _StreamState, info: _Launch, exc: BaseException, *, launched: bool = False
) -> None:
    """The launch call (or a slot body) raised: record it, attribute earlier faults, maybe poison.

    ``launched``: the kernel itself was enqueued and what raised came after it (its end breadcrumb's
    enqueue), so the device may have run it and faulted in it: it is a candidate like any earlier one.
    """
    if isinstance(exc, (RecorderPoisonedError, RecorderClosedError)) or exc is rec._attributed:
        return
    cls = rec._classify(exc)
    # This call's own begin (and anything after it) cannot be the culprit of an earlier fault, unless
    # the kernel was enqueued: then its begin can be the newest breadcrumb of a launch that faulted.
    stop = st.next_seq if info.begin_seq < 0 else info.begin_seq + int(launched)
    earlier = rec._instr_outstanding or any(
        s.outstanding and (s.next_seq if s is not st else stop) > 0 for s in rec._streams.values()
    )
    # The context died before this call: the culprit is in a crash window, not this launch.
    if cls.fatal and earlier and rec._async_fault(exc, classification=cls, stop=(st, stop)):
        return
    # No launch in flight had begun and not ended: the error is this call's own.
    ev = FailureEvidence.from_exception(
        exc,
        slot_status=int(SlotStatus.FAILED_AT_LAUNCH),
        outputs=outputs_now(info.outputs),
        classification=cls,
    )
    if not cls.fatal and info.begin_seq >= 0:
        # The stream still works: let the launch's begin reach the log first, so that its failure record
        # follows it (readers group records under the latest begin of their slot) and is stamped later.
        rec._await_arrival(st, info.begin_seq)
    rec._write_evidence(info, ev, st)
    if cls.fatal:
        rec._poison = exc


def await_arrival(rec: Recorder, st: _StreamState, seq: int, limit_s: float = 5.0) -> None:
    """Drain until sequence ``seq`` of ``st`` arrived, the stream is idle or failed, or ``limit_s`` passed
    (a device still busy with a long queue; the record is then written as it is)."""
    deadline = time.monotonic() + limit_s
    delay = 20e-6
    while True:
        rec._drainer.flush()
        if st.ring.consumer_position > seq:
            return
        code = int(rec._backend.stream_query(st.stream))
        if code != 600 or time.monotonic() > deadline:
            rec._drainer.flush()
            return
        time.sleep(delay)
        delay = min(delay * 2, 1e-3)


def async_fault(
    rec: Recorder,
    exc: BaseException,
    *,
    classification: Classification | None = None,
    stop: tuple[_StreamState, int] | None = None,
) -> int:
    """A CUDA error seen at a check/sync: drain, blame each stream's crash window, fsync, maybe poison.

    ``stop``: a stream and the first of its sequences that cannot be the
    culprit (the failing call's own). Returns how many launches were blamed."""
    cls = classification or rec._classify(exc)
    if cls.fatal:
        rec._poison = exc
    rec._drainer.flush()
    blamed = 0
    newest = -1  # the newest breadcrumb of a stream blamed
    graphs: list[GraphCulprit] = []
    for st in rec._streams.values():
        if not st.outstanding:
            continue
        culprit = rec._crash_window(st, stop[1] if stop is not None and stop[0] is st else None)
        if culprit is None:
            continue
        st.outstanding = False
        last = st.ring.last_consumed
        if culprit.opcode in rec._graphs.opcodes and culprit.slot_idx != UNKNOWN_SLOT:
            # A recorded graph replay had begun and not ended: the node inside it is decided below.
            graphs.append(GraphCulprit(st, culprit, int(last[1]["timestamp_ns"][0]) if last else 0))
            continue
        outputs = None if cls.fatal else outputs_now(culprit.outputs)
        ev = FailureEvidence.from_exception(
            exc, slot_status=int(SlotStatus.FAULTED), outputs=outputs, classification=cls
        )
        rec._write_evidence(culprit, ev, st)
        blamed += 1
        if last is not None:
            newest = max(newest, int(last[1]["timestamp_ns"][0]))
    if rec._instr_outstanding or graphs:
        blamed += rec._blame_device_window(exc, cls, newest, graphs)
    if blamed or cls.fatal:
        rec._log_sync_quietly()
    rec._write_stream_table()
    return blamed


def blame_device_window(
    rec: Recorder, exc: BaseException, cls: Classification, newer_than: int, graphs: list[GraphCulprit]
) -> int:
    """Instrumented launches and captured nodes: the device-sequenced ring's newest record, if a BEGIN
    (the kernel had started and, with begin+end, not finished), names the launch, unless a stream's
    blamed breadcrumb is newer (that launch came after it). ``graphs``: recorded replays that had begun
    and not ended; the node is linked to the replay it ran in (sidecar ``graph_faults``), and a replay
    no node can belong to is blamed itself. Returns how many launches it blamed."""
    instrumented, rec._instr_outstanding = rec._instr_outstanding, False
    ring = rec._table.device_ring
    last = ring[0].last_consumed if ring is not None else None
    newest = None if last is None else last[1]
    node, holders, others = resolve(graphs, newest, newer_than, instrumented=instrumented)
    ev = FailureEvidence.from_exception(
        exc, slot_status=int(SlotStatus.FAULTED), outputs=None, classification=cls
    )
    blamed = 0
    for g in others:
        rec._write_evidence(g.launch, ev, g.stream)
        blamed += 1
    if not node or last is None:
        return blamed
    r = last[1][0]
    culprit = _Launch(
        slot_idx=int(r["slot_idx"]),
        opcode=int(r["opcode"]),
        words=cast(Words, tuple(int(x) for x in r["args"])),
        epoch=int(r["epoch"]),
        begin_seq=-1,
    )
    rec._write_evidence(culprit, ev, not_before=int(r["timestamp_ns"]))
    if holders:
        with rec._sidecar_lock:
            notes = rec._sidecar.extra.setdefault("graph_faults", [])
            notes.append({
                "node_slot": culprit.slot_idx,
                "node_opcode": culprit.opcode,
                # One replay: the node's. Several (streams replaying at once): it ran in one of them.
                "replays": [
                    {"stream": g.stream.index, "slot": g.launch.slot_idx, "graph": g.launch.words[1],
                     "replay": g.launch.words[0]}
                    for g in holders
                ],
            })  # fmt: skip
    return blamed + 1


def crash_window(rec: Recorder, st: _StreamState, stop: int | None = None) -> _Launch | None:
    """The launch the device had reached on this stream, from the newest breadcrumb it wrote.

    A begin breadcrumb names its launch itself. After an end breadcrumb
    (or none yet) the stream was between launches, unless the next
    sequence is the end of a launch that began earlier (a slot around
    other launches): that one is the window. None when no launch before
    ``stop`` (default: every sequence enqueued) had begun and not ended; a
    launch with slot :data:`UNKNOWN_SLOT` when the next sequence is no
    longer resolvable (only without backpressure).
    """
    stop = st.next_seq if stop is None else stop
    last = st.ring.last_consumed
    arrived = -1 if last is None else last[0]
    if last is not None and int(last[1]["slot_status"][0]) == SlotStatus.BEGIN:
        if arrived >= stop:
            return None
        r = last[1][0]
        known = st.lookup(arrived)
        return _Launch(
            slot_idx=int(r["slot_idx"]),
            opcode=int(r["opcode"]),
            words=cast(Words, tuple(int(x) for x in r["args"])),
            epoch=int(r["epoch"]),
            begin_seq=arrived,
            outputs=outputs_now(known.outputs) if known is not None else None,
        )
    nxt = arrived + 1
    if nxt >= stop:
        return None
    info = st.lookup(nxt)
    if info is not None:
        # A begin that never arrived: the device had not reached that launch, so it is not blamed.
        return info if info.end_seq == nxt else None
    note = {"stream": st.index, "arrived_seq": arrived, "unresolved_seq": nxt, "enqueued": st.next_seq}
    rec._unknown.append(note)
    return _Launch(slot_idx=UNKNOWN_SLOT, opcode=0, words=(0, 0, 0, 0), epoch=0, begin_seq=nxt)


def write_evidence(
    rec: Recorder, info: _Launch, ev: FailureEvidence, st: _StreamState | None = None, not_before: int = 0
) -> None:
    """The failure record, stamped no earlier than the newest breadcrumb of its stream (``st``) and
    ``not_before``."""
    stamp = max(time.time_ns(), not_before)
    last = st.ring.last_consumed if st is not None else None
    if last is not None:
        stamp = max(stamp, int(last[1]["timestamp_ns"][0]))
    record = Record(
        timestamp_ns=stamp,
        slot_idx=info.slot_idx,
        tenant_id=rec._opts.tenant_id,
        opcode=info.opcode,
        args=info.words,
        epoch=info.epoch,
        slot_status=ev.slot_status,
        failure_class=ev.failure_class,
        backend_error_code=ev.backend_error_code,
        output_digest=ev.output_digest,
    )
    rec._drainer.write_host(as_record_array([record]))
    rec._log_sync_quietly()
    if info.slot_idx == UNKNOWN_SLOT:
        # The record says "unknown"; the sidecar says what the device had written and what was missing.
        rec._write_stream_table()


def outputs_now(outputs: Any) -> Any:
    """A slot's ``outputs`` may be a callable evaluated when the body ends; evidence made before that (a
    fault attributed while the body runs) takes what it returns now, or nothing if it cannot."""
    if not callable(outputs):
        return outputs
    try:
        return outputs()
    except Exception:
        return None
