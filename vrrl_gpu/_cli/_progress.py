"""Progress bars for long CLI work: rich on a terminal (stderr is a TTY), nothing when piped or redirected."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = ["progress_bar", "wants_progress", "progress_fn"]


def wants_progress(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stderr) is a terminal and rich is installed."""
    s = stream if stream is not None else sys.stderr
    try:
        tty = bool(s.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
    if not tty:
        return False
    try:
        import rich.progress  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def progress_bar(
    description: str, *, stream: TextIO | None = None, enabled: bool | None = None
) -> Iterator[Callable[..., None]]:
    """Yields ``update(done, total_or_None, description=None)``; a transient rich bar on stderr, or nothing.

    ``enabled`` overrides the terminal check (tests); output never goes to stdout.
    """
    s = stream if stream is not None else sys.stderr
    on = wants_progress(s) if enabled is None else enabled
    if not on:
        yield _noop
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second (records, trials): the rate the work goes at."""

        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=s),
        transient=True,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None, description: str | None = None) -> None:
            if description is None:
                bar.update(task, completed=done, total=total)
            else:
                bar.update(task, completed=done, total=total, description=description)

        yield update


def _noop(done: int, total: int | None, description: str | None = None) -> None:
    return None


def progress_fn(update: Callable[..., None]) -> Callable[[int, int | None], None] | None:
    """``update`` for a library call's ``progress=``, or None when no bar is shown (no work for a total)."""
    return None if update is _noop else update
