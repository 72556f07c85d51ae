"""Progress bars for long CLI work: rich on a terminal (stderr is a TTY), nothing when piped or redirected."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TextIO

__all__ = ["progress_bar", "wants_progress", "progress_fn", "Ticker"]


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
    from rich.markup import escape
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
        # Descriptions name files: markup in them ('[/') is shown, never parsed.
        task = bar.add_task(escape(description), total=None)

        def update(done: int, total: int | None, description: str | None = None) -> None:
            if description is None:
                bar.update(task, completed=done, total=total)
            else:
                bar.update(task, completed=done, total=total, description=escape(description))

        yield update


def _noop(done: int, total: int | None, description: str | None = None) -> None:
    return None


def progress_fn(update: Callable[..., None]) -> Callable[[int, int | None], None] | None:
    """``update`` for a library call's ``progress=``, or None when no bar is shown (no work for a total)."""
    return None if update is _noop else update


class Ticker:
    """``progress(n)`` callbacks (n records more) onto a bar's ``update(done, total)``.

    ``total`` may be corrected once the work is better known (:meth:`retotal`); ``done`` never passes it.
    """

    def __init__(self, update: Callable[..., None], total: int | None) -> None:
        self.update = update
        self.total = total
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.total is not None:
            self.done = min(self.done, self.total)
        self.update(self.done, self.total)

    def retotal(self, total: int) -> None:
        self.total = max(total, self.done)
        self.update(self.done, self.total)
