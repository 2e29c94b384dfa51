"""The CLI's progress bar for long work (generation, judge evaluation, calibration)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from charter.jobs.activity import Activity


class ProgressBar:
    """A rich progress bar (done/total, rate, ETA) on stderr; silent with --json.

    Use as a context manager; call it with (done, total) as work finishes, and `status` with
    what a long wait is waiting for (a batch being answered).
    """

    def __init__(self, label: str, *, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self.interactive = sys.stderr.isatty()
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> ProgressBar:
        if not self.quiet:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(stderr=True),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=None, rate="", status="")
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            return
        elapsed = self.bar.tasks[0].elapsed or 0.0
        rate = f"{done / elapsed * 60:.1f}/min" if elapsed > 1 and done else ""
        self.bar.update(self.task, completed=done, total=total, rate=rate)

    def activity(self, now: Activity) -> None:
        """A running job's calls and tokens: on the bar in a terminal; otherwise, where a bar
        shows nothing (output redirected to a file, CI), as a log line on stderr."""
        if self.quiet:
            return
        if self.interactive:
            self.status(
                f"{now.calls_made} calls ({now.in_flight} in flight), "
                f"{now.tokens + now.decoded:,} tokens, {now.tokens_per_s:.1f}/s"
                + (f", {now.waiting} waiting" if now.waiting else "")
            )
        else:
            click.echo(f"{self.label}: {now.line()}", err=True)

    def status(self, text: str) -> None:
        """Show `text` after the bar until the next status (e.g. "batch_1: 12 of 40 done")."""
        if self.bar is not None:
            self.bar.update(self.task, status=text)

    def counter(self, total: int) -> Callable[..., None]:
        """A callback that advances the bar by one each time it is called (any arguments)."""
        done = 0

        def tick(*_: object) -> None:
            nonlocal done
            done += 1
            self(done, total)

        return tick

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)
