"""``vrrl replay`` (re-run a log's launches, minimise a crash) and ``vrrl recover`` (orphaned segments)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from vrrl_gpu._cli._argtypes import count, positive_int, positive_seconds, seconds
from vrrl_gpu._cli._output import printable
from vrrl_gpu._cli._progress import progress_bar, progress_fn
from vrrl_gpu._cli._table import PAGE_ROWS, write_aligned
from vrrl_gpu.analysis.exporters._text import choice_table
from vrrl_gpu.format._layout import SlotStatus
from vrrl_gpu.format._sidecar import opcode_label
from vrrl_gpu.reproduce._plan import MATCH_MODES, REPLAY_DEVICES

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="re-run a log's launches through a registry and check that the recorded failure happens again",
        description=(
            "Re-runs the launches of LOG, in publish order, in a fresh child process: each opcode is "
            "performed by the registry's callable fn(words, epoch, tenant_id, slot_idx). Nothing in the log "
            "is executed. "
            "Exit status: 0 the recorded outcome was reproduced, 1 it was not, 2 bad input."
        ),
    )
    p.add_argument("log", help="the VRRL log of the crashed job")
    p.add_argument(
        "--registry",
        metavar="MODULE:ATTR",
        help="a mapping of opcode (number or name) to callable: 'package.module:NAME' or 'file.py:NAME'",
    )
    p.add_argument(
        "--device",
        choices=REPLAY_DEVICES,
        default="auto",
        help="the replay child's Recorder: auto (GPU if any, else the CPU twin), cupy, twin, or none "
        "(run the callables without recording) (default: auto)",
    )
    p.add_argument("--from", dest="start", type=count, metavar="N", help="first launch position to replay")
    p.add_argument("--to", dest="stop", type=count, metavar="N", help="last launch position to replay")
    p.add_argument("--stop-at-failure", action="store_true", help="stop at the first failure of any kind")
    p.add_argument(
        "--timeout",
        type=positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="a launch that takes longer is reported as hung and the trial's process is killed (default: 60)",
    )
    p.add_argument(
        "--trial-timeout",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help="a trial (one process, after start-up) that takes longer is reported as hung and killed",
    )
    p.add_argument(
        "--compare-digests",
        action="store_true",
        help="compare output digests with those the log recorded (end breadcrumbs and failure records)",
    )
    p.add_argument(
        "--replay-log",
        metavar="PATH",
        help="where the replay records (default: crash.replay.vrrl for crash.vrrl)",
    )
    p.add_argument(
        "--list", action="store_true", help="list the launch sequence and the recorded failure; run nothing"
    )
    p.add_argument(
        "--minimize",
        action="store_true",
        help="shrink the launches before the failure to a minimal sequence that still reproduces it",
    )
    p.add_argument(
        "-o", "--output", metavar="SMALL.vrrl", help="with --minimize: write the minimal sequence here"
    )
    g = p.add_argument_group(
        "flaky failures",
        "each sequence runs in up to N fresh processes (docs/reproducing-crashes.md: the stopping rules)",
    )
    g.add_argument(
        "--trials",
        type=positive_int,
        default=1,
        metavar="N",
        help="trials per sequence; stops early once the Wilson interval of the rate lies above or below "
        "--min-rate, so a failure that reproduces on the first trial costs one (default: 1)",
    )
    g.add_argument(
        "--min-trials",
        type=positive_int,
        default=1,
        metavar="M",
        help="without --minimize: at least M trials before stopping early, to measure the rate (default: 1)",
    )
    g.add_argument(
        "--min-rate",
        type=_rate,
        default=None,
        metavar="R",
        help="the rate that counts as reproducing: replay, the stopping rule's threshold (default: 0.05); "
        "--minimize, the reference rate candidates are tested against (default: the original's rate)",
    )
    g.add_argument(
        "--confidence",
        type=_confidence,
        default=0.95,
        metavar="C",
        help="confidence of the intervals, and of each rejection while minimising (default: 0.95)",
    )
    g.add_argument(
        "--match",
        choices=MATCH_MODES,
        default="code",
        help="the same failure: same class; same class and CUDA code; or those at the recorded launch "
        "(default: code); a different failure is reported, never counted",
    )
    g.add_argument("--seed", type=count, default=0, help="seed of the per-trial seeds (default: 0)")
    g.add_argument(
        "--jitter",
        type=seconds,
        default=0.0,
        metavar="SECONDS",
        help="sleep a random 0..SECONDS (drawn from the trial's seed) before each launch, to shake schedules",
    )
    g.add_argument(
        "--streams",
        type=positive_int,
        default=1,
        metavar="K",
        help="spread the launches the registry marks independent (@independent) over K streams, where they "
        "may overlap (default: 1)",
    )
    g.add_argument(
        "--jobs", type=positive_int, default=None, help="trials run at once (default: CPUs, at most 4)"
    )
    g.add_argument(
        "--devices",
        type=_devices,
        default=(),
        metavar="0,1,...",
        help="one GPU per concurrent trial (CUDA_VISIBLE_DEVICES in each child), round robin",
    )
    g.add_argument(
        "--budget",
        type=_budget,
        default=None,
        metavar="N|Ss",
        help="with --minimize: stop after N trials or S seconds (500, 90s) with the best sequence so far",
    )
    p.add_argument("--salvage", action="store_true", help="skip damaged slots of LOG instead of refusing it")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "recover",
        help="drain staging segments of dead processes from /dev/shm into their logs",
        description=(
            "Finds staging segments (staging='shm') whose owner process is gone, copies every committed "
            "record "
            "into the log named in the segment (or --into), after a RECOVERED meta-record, and removes the "
            "segment. Segments whose owner still runs are skipped; other users' segments are refused."
        ),
    )
    p.add_argument("segments", nargs="*", metavar="SHM", help="segment files to recover")
    p.add_argument("--all", action="store_true", help="recover every orphaned segment of yours")
    p.add_argument(
        "--into", metavar="LOG", help="write the records into LOG instead of the segment's own log"
    )
    p.add_argument(
        "--shm-dir", default=None, metavar="DIR", help="where to look with --all (default: /dev/shm)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per segment")
    p.set_defaults(func=cmd_recover)


# ---------------------------------------------------------------------------------------------- replay


def _rate(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1, got {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1], got {text}")
    return v


def _confidence(text: str) -> float:
    v = _rate(text)
    if not 0.5 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"expected a confidence in [0.5, 1), e.g. 0.95, got {text}")
    return v


def _devices(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(","))
    if not parts or any(not p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected device numbers like 0,1,2, got {text!r}")
    return parts


def _budget(text: str) -> Any:
    from vrrl_gpu.reproduce._sampler import Budget

    t = text.strip().lower()
    if t.endswith("s"):
        return Budget(seconds=positive_seconds(t[:-1]))
    return Budget(trials=positive_int(t))


def _jobs(args: argparse.Namespace) -> int:
    if args.jobs is not None:
        return int(args.jobs)
    if args.devices:
        return len(args.devices)  # one trial per device at a time
    return max(1, min(4, os.cpu_count() or 1))


def cmd_replay(args: argparse.Namespace) -> int:
    from vrrl_gpu._cli import UsageError
    from vrrl_gpu.reproduce._plan import read_plan

    if args.list:
        return _list(args)
    plan = read_plan(args.log, salvage=args.salvage)
    if not args.registry:
        raise UsageError(
            "vrrl replay: --registry MODULE:ATTR is required (or --list to only show the launches)"
        )
    if not plan.launches:
        raise UsageError(f"vrrl replay: {args.log} holds no launch records; there is nothing to replay")
    if args.output and not args.minimize:
        raise UsageError("vrrl replay: -o/--output goes with --minimize")
    if args.minimize:
        return _minimize(plan, args)
    from vrrl_gpu.reproduce._replay import replay

    if args.budget is not None:
        raise UsageError("vrrl replay: --budget goes with --minimize (--trials caps a replay)")
    n = len(plan.select(args.start, args.stop))
    label = "replaying" if args.trials == 1 else "replaying (trials)"
    with progress_bar(label, enabled=None if not args.json else False) as update:
        report = replay(
            plan,
            args.registry,
            start=args.start,
            stop=args.stop,
            device=args.device,
            timeout=args.timeout,
            stop_at_failure=args.stop_at_failure,
            compare_digests=args.compare_digests,
            replay_log=args.replay_log,
            progress=lambda done: update(done, n),
            trials=args.trials,
            min_trials=args.min_trials,
            min_rate=args.min_rate,
            confidence=args.confidence,
            match=args.match,
            seed=args.seed,
            jitter=args.jitter,
            streams=args.streams,
            trial_timeout=args.trial_timeout,
            jobs=_jobs(args),
            devices=args.devices,
            on_trial=lambda r: update(r.trials, args.trials, f"trials: {r.describe()}"),
        )
    if args.json:
        print(json.dumps(report.to_json()))
    else:
        _print_report(report, args)
    return 0 if report.ok else 1


def _describe_launch(launch: Any, names: Any) -> str:
    return f"position {launch.position} (slot {launch.slot_idx}, {opcode_label(launch.opcode, names)})"


def _describe_failed(plan: Any, fl: Any) -> str:
    """The recorded failure's launch, or that the recorder could not tell which launch it was."""
    if fl.unknown:
        return f"slot unknown (the recorder could not tell which launch; any of positions 0..{fl.position})"
    return _describe_launch(plan.launches[fl.position], plan.names)


def _print_report(report: Any, args: argparse.Namespace) -> None:
    plan, out = report.plan, report.outcome
    names = plan.names
    lo = report.launches[0].position
    hi = report.launches[-1].position
    print(f"log:        {plan.path}: {len(plan.launches)} launches; replayed positions {lo}..{hi}")
    if plan.lost_records:
        print(
            f"warning:    the log lost {plan.lost_records} records (GAP meta-records); the replay may differ"
        )
    exp = report.expected
    if exp is None:
        print("recorded:   no failure in this range")
    else:
        print(
            f"recorded:   {_describe_failed(plan, exp)}: {exp.failure_class.label} "
            f"{_code(exp.code)} [{SlotStatus.label_of(exp.slot_status)}]"
        )
    f = out.first_failure
    where = f"{out.completed} of {len(report.launches)} launches completed, backend {out.backend or '-'}"
    if f is None:
        print(f"replayed:   no failure ({where})")
    else:
        launch = report.launches[f.position] if f.position < len(report.launches) else None
        at = _describe_launch(launch, names) if launch is not None else f"after position {hi}"
        what = (
            f"{f.failure_class.label} {f.name} ({f.code})"
            if f.kind == "exception"
            else f"{f.kind}: {f.reason}"
        )
        print(f"replayed:   {at}: {what} ({where})")
        for g in out.failures[1:]:
            extra = report.launches[g.position] if g.position < len(report.launches) else None
            label = _describe_launch(extra, names) if extra is not None else "-"
            print(f"            also {label}: {g.failure_class.label} {g.name} ({g.code})")
    if args.compare_digests:
        mm = report.digest_mismatch
        if report.digests_compared == 0:
            print("digests:    none compared (logs hold digests only in end breadcrumbs and failure records)")
        elif mm is None:
            print(f"digests:    {report.digests_compared} compared, all equal")
        else:
            got = "none" if mm.replayed is None else f"{mm.replayed:#018x}"
            print(
                f"digests:    {report.digests_compared} compared; first difference at position {mm.position} "
                f"(slot {mm.slot_idx}, {opcode_label(mm.opcode, names)}): recorded {mm.recorded:#018x}, "
                f"replayed {got}"
            )
    r = report.rate
    if r is not None and args.trials > 1:
        other = f"; {r.other_failures} failed otherwise (not counted)" if r.other_failures else ""
        early = (
            f", stopped early (the interval lies {'above' if r.above(report.min_rate) else 'below'} "
            f"{report.min_rate:g})"
            if r.trials < args.trials
            else ""
        )
        print(f"trials:     reproduced in {r.describe()}{other}{early}")
    if out.replay_log:
        print(f"replay log: {out.replay_log}")
    if out.output_tail and f is not None and f.kind == "crashed":
        print(f"child output (last lines):\n{out.output_tail}")
    print(f"result:     {'REPRODUCED' if report.ok else 'NOT REPRODUCED'}")


def _code(code: int) -> str:
    from vrrl_gpu.evidence._classify import code_name

    return code_name(code) if code else "(no code)"


def _list(args: argparse.Namespace) -> int:
    """The launch sequence and the recorded failure, streamed from numpy columns (reproduce/_listing.py)."""
    from vrrl_gpu.format._sidecar import load_sidecar
    from vrrl_gpu.reproduce._listing import scan_launches

    side = load_sidecar(args.log)
    names = dict(side.opcode_names) if side else {}
    name = printable(os.path.basename(args.log))
    bar = None if not args.json else False
    with progress_bar(f"reading {name}", enabled=bar) as update:
        ix = scan_launches(args.log, salvage=args.salvage, progress=progress_fn(update))
        lo, hi = ix.check_range(args.start, args.stop) if ix.launches else (0, 0)
    fl = ix.failure
    with progress_bar(f"listing {name}", enabled=bar) as update:
        batches = ix.columns(lo, hi, progress=progress_fn(update))
        if args.json:
            _write_launches_json(ix, batches, names)
            return 0
        print(printable(f"{ix.path}: {ix.launches} launches"))
        fail_pos = ix.failed_launch[0] if ix.failed_launch is not None else -1
        write_aligned(
            _launch_pages(batches, names, fail_pos),
            _LAUNCH_COLUMNS,
            _LAUNCH_JUSTIFY,
            bold=_tty(sys.stdout),
            printable_cells=True,
        )
    if fl is not None:
        if fl.unknown or ix.failed_launch is None:
            where = (
                f"slot unknown (the recorder could not tell which launch; any of positions 0..{fl.position})"
            )
        else:
            pos, slot, op = ix.failed_launch
            where = f"position {pos} (slot {slot}, {opcode_label(op, names)})"
        print(
            f"recorded failure: {where}: "
            f"{fl.failure_class.label} {_code(fl.code)} [{SlotStatus.label_of(fl.slot_status)}]"
        )
    else:
        print("recorded failure: none")
    return 0


_MARKS = choice_table([b"", b"<- failure"])
#: Launches rendered as text at a time (the renderer's word matrices take ~200 bytes a launch).
_TEXT_LAUNCHES = 1 << 13


def _launch_text(
    batches: Iterable[Any], names: Mapping[int, str], *, json_rows: bool, fail_pos: int = -1
) -> Iterator[bytes]:
    """The launches as text built with numpy: JSON objects (each after ``, ``) or TSV lines (the last
    column marks the launch at ``fail_pos``)."""
    from vrrl_gpu.analysis.exporters._rows import LabelCache
    from vrrl_gpu.analysis.exporters._text import Lines, choice_table

    labels = LabelCache(lambda op: opcode_label(op, names))
    tables: dict[tuple[str | None, ...], Any] = {}
    for whole in batches:
        for lo in range(0, len(whole), _TEXT_LAUNCHES):
            c = whole.slice(lo, lo + _TEXT_LAUNCHES)
            lab = labels(c.opcode)
            t = tables.get(lab.values)
            if t is None:
                t = tables[lab.values] = choice_table([_cell(v or "", json_rows) for v in lab.values])
            a = c.args
            x = Lines(len(c))
            if json_rows:
                x.lit(', {"position": ').uint(c.position).lit(', "slot_idx": ').uint(c.slot_idx)
                x.lit(', "tenant_id": ').uint(c.tenant_id).lit(', "opcode": ').uint(c.opcode)
                x.lit(', "opcode_name": ').pick(lab.idx, t).lit(', "args": [').uint(a[:, 0])
                x.lit(", ").uint(a[:, 1]).lit(", ").uint(a[:, 2]).lit(", ").uint(a[:, 3])
                x.lit('], "epoch": ').uint(c.epoch).lit("}")
            else:
                x.uint(c.position).lit("\t").uint(c.slot_idx).lit("\t").pick(lab.idx, t)
                x.lit("\t0x").hex(a[:, 0]).lit(" 0x").hex(a[:, 1]).lit(" 0x").hex(a[:, 2])
                x.lit(" 0x").hex(a[:, 3]).lit("\t").uint(c.epoch).lit("\t").uint(c.tenant_id).lit("\t")
                x.pick((c.position == fail_pos).astype(np.intp), _MARKS).lit("\n")
            yield bytes(x.render().tobytes())


def _cell(text: str, json_rows: bool) -> bytes:
    """A name as a JSON string, or as a table cell that cannot break a TSV line or a terminal."""
    return json.dumps(text).encode() if json_rows else printable(text).encode("utf-8", "backslashreplace")


def _write_launches_json(ix: Any, batches: Iterable[Any], names: Mapping[int, str]) -> None:
    """The same bytes as ``json.dumps`` of the listing's object, written a batch at a time."""
    out = sys.stdout
    out.write(f'{{"log": {json.dumps(ix.path)}, "launches": [')
    first = True
    for text in _launch_text(batches, names, json_rows=True):
        if first and text:
            text, first = text[2:], False
        out.write(text.decode())
    fl = ix.failure
    failure = json.dumps(fl.to_json(names)) if fl is not None else "null"
    out.write(f'], "recorded_failure": {failure}, "lost_records": {ix.lost_records}}}\n')
    out.flush()


def _launch_pages(
    batches: Iterable[Any], names: Mapping[int, str], fail_pos: int
) -> Iterator[list[list[str]]]:
    """Pages of :data:`PAGE_ROWS` launches (the page size decides the column widths, so it is kept)."""
    rows: list[list[str]] = []
    for text in _launch_text(batches, names, json_rows=False, fail_pos=fail_pos):
        rows.extend(line.split("\t") for line in text.decode("utf-8", "replace").splitlines())
        while len(rows) >= PAGE_ROWS:
            yield rows[:PAGE_ROWS]
            del rows[:PAGE_ROWS]
    if rows:
        yield rows


def _launch_json(launch: Any, names: Any) -> dict[str, Any]:
    return {
        "position": launch.position,
        "slot_idx": launch.slot_idx,
        "tenant_id": launch.tenant_id,
        "opcode": launch.opcode,
        "opcode_name": opcode_label(launch.opcode, names),
        "args": list(launch.args),
        "epoch": launch.epoch,
    }


_LAUNCH_COLUMNS = ("pos", "slot", "opcode", "args", "epoch", "tenant", "")
_LAUNCH_JUSTIFY = {"pos": "right", "slot": "right", "epoch": "right", "tenant": "right"}


def _print_launches(title: str | None, launches: Sequence[Any], plan: Any) -> None:
    """The launches as an aligned table, printed a page at a time (a million launches stream)."""
    fail_pos = plan.failure.position if plan.failure is not None and not plan.failure.unknown else -1
    labels: dict[int, str] = {}

    def label(op: int) -> str:
        text = labels.get(op)
        if text is None:
            text = labels[op] = opcode_label(op, plan.names)
        return text

    def pages() -> Any:
        for lo in range(0, len(launches), PAGE_ROWS):
            yield [
                (
                    str(x.position),
                    str(x.slot_idx),
                    label(x.opcode),
                    " ".join(f"{a:#x}" for a in x.args),
                    str(x.epoch),
                    str(x.tenant_id),
                    "<- failure" if x.position == fail_pos else "",
                )
                for x in launches[lo : lo + PAGE_ROWS]
            ]

    if title is not None:
        print(printable(title))
    write_aligned(pages(), _LAUNCH_COLUMNS, _LAUNCH_JUSTIFY, bold=_tty(sys.stdout))


def _tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _minimize(plan: Any, args: argparse.Namespace) -> int:
    from vrrl_gpu._cli import UsageError
    from vrrl_gpu.reproduce._minimize import minimize, write_sequence_log

    if plan.failure is None:
        raise UsageError(f"vrrl replay: {args.log} holds no failure record; there is nothing to minimise")
    if plan.failure.unknown:
        raise UsageError(
            f"vrrl replay: {args.log} does not say which launch failed (slot unknown); --minimize needs it"
        )
    if args.stop is not None:
        raise UsageError("vrrl replay: --minimize always ends at the failure; drop --to")
    out_path = args.output or _default_output(args.log)
    if os.path.exists(out_path):
        raise UsageError(f"vrrl replay: {out_path} exists; remove it or pass another -o")
    fl = plan.failure
    if not args.json:
        print(
            f"minimising: {plan.path}: failure at "
            f"{_describe_launch(plan.launches[fl.position], plan.names)}: "
            f"{fl.failure_class.label} {_code(fl.code)}; {fl.position + 1 - (args.start or 0)} launches"
        )
        sys.stdout.flush()
    best = [""]
    cap = args.budget.trials if args.budget is not None else None

    def on_best(n: int, length: int, rate: Any) -> None:
        best[0] = f"best {_n(length, 'launch')}" + (f", rate {rate.rate:.2f}" if args.trials > 1 else "")
        update(n, cap, f"minimising: {best[0]}")

    with progress_bar("minimising (trials)", enabled=None if not args.json else False) as update:
        result = minimize(
            plan,
            args.registry,
            start=args.start,
            device=args.device,
            timeout=args.timeout,
            jobs=_jobs(args),
            on_trial=lambda n, length, ok: update(n, cap),
            trials=args.trials,
            min_rate=args.min_rate,
            confidence=args.confidence,
            match=args.match,
            seed=args.seed,
            jitter=args.jitter,
            streams=args.streams,
            trial_timeout=args.trial_timeout,
            devices=args.devices,
            budget=args.budget,
            on_best=on_best,
        )
    if not result.reproduced:
        first = result.first_outcome
        got = "no failure"
        if first is not None and first.first_failure is not None:
            ff = first.first_failure
            got = f"{ff.kind} {ff.failure_class.label} {ff.name} ({ff.code}) at trial position {ff.position}"
        if args.json:
            print(json.dumps({"log": plan.path, "reproduced": False, "trials": result.trials, "replay": got}))
        else:
            print(f"the full sequence does not reproduce the recorded failure (the replay gave: {got})")
            print("result:     NOT REPRODUCED")
        return 1
    note: dict[str, Any] = {"kept_positions": [x.position for x in result.kept], "trials": result.trials}
    if args.trials > 1:
        note.update(_flaky_json(result))
    written = write_sequence_log(out_path, plan, result.kept, note=note)
    if args.json:
        print(
            json.dumps(
                {
                    "log": plan.path,
                    "reproduced": True,
                    "recorded_failure": fl.to_json(plan.names),
                    "original_length": result.original_length,
                    "suffix_length": result.suffix_length,
                    "trials": result.trials,
                    "kept": [_launch_json(x, plan.names) for x in result.kept],
                    "output": out_path,
                    "records_written": written,
                    "candidates": result.candidates,
                    "exhausted": result.exhausted,
                    **(_flaky_json(result) if args.trials > 1 else {}),
                }
            )
        )
        return 0
    first_pos = fl.position + 1 - result.suffix_length
    print(
        f"shortest reproducing suffix: {_n(result.suffix_length, 'launch')} "
        f"(positions {first_pos}..{fl.position})"
    )
    print(
        f"minimal sequence: {len(result.kept)} of {result.original_length} launches still reproduce it "
        f"({result.trials} trials, {_n(result.candidates, 'sequence')} judged)"
    )
    if args.trials > 1:
        _print_confidence(result)
    if result.exhausted:
        print(
            "budget:     exhausted; this is the shortest sequence seen to reproduce, not necessarily minimal"
        )
    _print_launches(None, result.kept, plan)
    print(
        f"wrote {out_path}: {_n(written, 'record')} ({_n(len(result.kept), 'launch')} + the failure record)"
    )
    device = f" --device {args.device}" if args.device != "auto" else ""
    flaky = f" --trials {args.trials}" if args.trials > 1 else ""
    flaky += f" --jitter {args.jitter:g}" if args.jitter else ""
    flaky += f" --streams {args.streams}" if args.streams > 1 else ""
    print(f"replay it: vrrl replay {out_path} --registry {args.registry}{device}{flaky}")
    return 0


def _flaky_json(result: Any) -> dict[str, Any]:
    return {
        "original_rate": result.original_rate.to_json() if result.original_rate else None,
        "rate": result.kept_rate.to_json() if result.kept_rate else None,
        "reference_rate": result.reference_rate,
        "misses_to_reject": result.misses_to_reject,
        "miss_probability": result.miss_probability,
    }


def _print_confidence(result: Any) -> None:
    orig, kept = result.original_rate, result.kept_rate
    print(f"original:   reproduced in {orig.describe()}")
    if kept is not None:
        print(f"minimum:    reproduced in {kept.describe()}")
        if kept.interval[1] < orig.interval[0]:
            print("            (the intervals do not overlap: the minimum reproduces less often)")
    if result.exhausted:
        return
    print(
        f"confidence: each launch kept is needed: without it, {_n(result.misses_to_reject, 'trial')} showed "
        f"no reproduction; at rate {result.reference_rate:.2f} that happens with probability "
        f"{result.miss_probability:.3f}"
    )


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else ("es" if noun.endswith("h") else "s"))


def _default_output(log: str) -> str:
    stem = log[: -len(".vrrl")] if log.endswith(".vrrl") else log
    return stem + ".min.vrrl"


# ---------------------------------------------------------------------------------------------- recover


def cmd_recover(args: argparse.Namespace) -> int:
    from vrrl_gpu._cli import UsageError
    from vrrl_gpu.capture._recover import recover_segment
    from vrrl_gpu.capture._shm import list_segments
    from vrrl_gpu.capture._staging import DEFAULT_SHM_DIR
    from vrrl_gpu.errors import RecoverError, StagingError

    if bool(args.segments) == bool(args.all):
        raise UsageError("vrrl recover: name segment files (SHM ...) or pass --all, not both and not neither")
    notes: list[str] = []
    results: list[dict[str, Any]] = []
    status = 0
    if args.all:
        directory = args.shm_dir or DEFAULT_SHM_DIR
        targets: list[str] = []
        for info in list_segments(directory):
            if isinstance(info, StagingError):
                notes.append(f"skipped: {info}")
            elif not info.mine:
                notes.append(
                    f"skipped {info.path}: it belongs to uid {info.file_uid}, not you (uid {os.getuid()})"
                )
            elif info.owner_alive:
                notes.append(f"skipped {info.path}: its owner, pid {info.owner_pid}, is still running")
            else:
                targets.append(info.path)
        if not targets and not notes:
            notes.append(f"no staging segments in {directory}")
    else:
        targets = list(args.segments)
    for path in targets:
        try:
            r = recover_segment(path, into=args.into)
        except RecoverError as e:
            if "still running" in str(e):
                notes.append(f"skipped {path}: {e}")
                status = max(status, 1)
                continue
            raise
        results.append(
            {
                "segment": r.segment,
                "log": r.log_path,
                "owner_pid": r.owner_pid,
                "recovered": r.recovered,
                "lost": r.lost,
                "duplicates": r.duplicates,
            }
        )
    if args.json:
        for d in results:
            print(json.dumps(d))
    else:
        for d in results:
            extra = f", {d['lost']} lost" if d["lost"] else ""
            extra += f", {d['duplicates']} already in the log" if d["duplicates"] else ""
            print(
                f"recovered {d['recovered']} records of pid {d['owner_pid']} from {d['segment']} "
                f"into {d['log']}{extra}"
            )
    for n in notes:
        print(f"vrrl recover: {n}", file=sys.stderr)
    return status
