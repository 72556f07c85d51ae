"""docs/cli.md, generated from the argparse parsers of every command module.

``python -m vrrl_gpu._cli._docs`` rewrites docs/cli.md (``--check`` only
compares); a test keeps the file equal to :func:`render_cli_markdown`. The
usage lines are built here rather than by argparse, whose wrapping depends on
the terminal width and the Python version.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from vrrl_gpu._cli import build_parser

__all__ = ["render_cli_markdown", "main"]

_HEADER = (
    "<!-- Generated from the argparse parsers by `python -m vrrl_gpu._cli._docs`; do not edit by hand.\n"
    "     tests/test_analysis_docs.py fails when this file and the parsers disagree. -->"
)


def _visible(action: argparse.Action) -> bool:
    return action.help is not argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar) if not isinstance(action.metavar, tuple) else " ".join(action.metavar)
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _term(action: argparse.Action) -> str:
    """``-n, --lines N`` or ``LOG [LOG ...]``."""
    mv = _metavar(action)
    if not action.option_strings:
        if action.nargs == "+":
            return f"{mv} [{mv} ...]"
        if action.nargs == "*":
            return f"[{mv} ...]"
        if action.nargs == "?":
            return f"[{mv}]"
        return mv
    names = ", ".join(action.option_strings)
    return f"{names} {mv}" if _takes_value(action) else names


def _usage_part(action: argparse.Action) -> str:
    if not action.option_strings:
        return _term(action)
    first = (
        action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
    )
    short = min(action.option_strings, key=len)
    name = short if len(short) == 2 else first
    text = f"{name} {_metavar(action)}" if _takes_value(action) else name
    return text if action.required else f"[{text}]"


def _usage(prog: str, parser: argparse.ArgumentParser) -> str:
    grouped: dict[int, argparse._MutuallyExclusiveGroup] = {}
    for g in parser._mutually_exclusive_groups:
        for a in g._group_actions:
            grouped[id(a)] = g
    parts: list[str] = []
    done: set[int] = set()
    actions = [a for a in parser._actions if _visible(a)]
    for a in [x for x in actions if x.option_strings] + [x for x in actions if not x.option_strings]:
        grp = grouped.get(id(a))
        if grp is not None:
            if id(grp) in done:
                continue
            done.add(id(grp))
            inner = " | ".join(_usage_part(x).strip("[]") for x in grp._group_actions if _visible(x))
            parts.append(f"({inner})" if grp.required else f"[{inner}]")
        else:
            parts.append(_usage_part(a))
    return " ".join([prog, *parts])


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    with contextlib.suppress(KeyError, TypeError, ValueError):  # help without %-placeholders stays as it is
        text = text % {**vars(action), "prog": prog, "default": action.default}
    if action.option_strings and action.required:
        text += " (required)"
    if action.choices is not None and action.metavar is not None:
        text += f" (one of: {', '.join(str(c) for c in action.choices)})"
    return " ".join(text.split()).replace("|", "\\|")


def render_cli_markdown() -> str:
    """The whole of docs/cli.md, from :func:`vrrl_gpu._cli.build_parser` (every ``COMMAND_MODULES`` entry)."""
    import vrrl_gpu._cli as cli

    parser = build_parser()
    doc = (cli.__doc__ or "").strip().split("\n\n", 1)
    lines = [
        "# The `vrrl` command",
        "",
        _HEADER,
        "",
        " ".join((parser.description or "").split()),
        "",
    ]
    if len(doc) > 1:
        lines += [" ".join(doc[1].split()), ""]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    entries: list[tuple[str, str, argparse.ArgumentParser]] = []
    for sub in subs:
        helps = {c.dest: c.help or "" for c in sub._choices_actions}
        for name, p in sub.choices.items():
            if name in helps:  # aliases have no entry of their own
                entries.append((name, helps[name], p))
    lines += ["| command | what it does |", "|---|---|"]
    for name, h, _ in entries:
        cell = " ".join(h.split()).replace("|", "\\|")
        lines.append(f"| [`vrrl {name}`](#vrrl-{name}) | {cell} |")
    lines.append("")
    for name, h, p in entries:
        prog = f"vrrl {name}"
        lines += [f"## vrrl {name}", "", " ".join(h.split()) + ("." if h and not h.endswith(".") else ""), ""]
        if p.description and p.description != h:
            lines += [" ".join(p.description.split()), ""]
        lines += ["```text", _usage(prog, p), "```", ""]
        rows = [a for a in p._actions if _visible(a)]
        if rows:
            lines += ["| argument | meaning |", "|---|---|"]
            for a in rows:
                lines.append(f"| `{_term(a)}` | {_help(a, prog)} |")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


#: The generated table of export formats inside docs/analysis.md lies between these lines.
FORMATS_BEGIN = "<!-- formats:begin (generated from exporters/_registry.py) -->\n"
FORMATS_END = "<!-- formats:end -->"


def with_formats_table(page: str) -> str:
    """``page`` (docs/analysis.md) with its table of export formats regenerated from the registry."""
    from vrrl_gpu.analysis.exporters._registry import render_formats_markdown

    head, rest = page.split(FORMATS_BEGIN, 1)
    _, tail = rest.split(FORMATS_END, 1)
    return head + FORMATS_BEGIN + render_formats_markdown() + FORMATS_END + tail


def main(argv: Sequence[str] | None = None) -> int:
    """Write docs/cli.md (or the given path) and the format table of the analysis.md beside it.

    With ``--check``, exit 1 when either is out of date.
    """
    ap = argparse.ArgumentParser(prog="python -m vrrl_gpu._cli._docs", description=main.__doc__)
    ap.add_argument("path", nargs="?", default="docs/cli.md")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    path = Path(args.path)
    analysis = path.with_name("analysis.md")
    wanted = {path: render_cli_markdown()}
    if analysis.exists():
        wanted[analysis] = with_formats_table(analysis.read_text(encoding="utf-8"))
    stale = 0
    for p, text in wanted.items():
        current = p.read_text(encoding="utf-8") if p.exists() else ""
        if current == text:
            continue
        if args.check:
            print(f"{p} is out of date; run: python -m vrrl_gpu._cli._docs", file=sys.stderr)
            stale = 1
        else:
            p.write_text(text, encoding="utf-8")
            print(f"wrote {p}")
    return stale


if __name__ == "__main__":
    raise SystemExit(main())
