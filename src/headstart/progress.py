"""Console output: rich progress bars and messages, on stderr so that --json output stays clean; a command's
results (the tables of ``predict``, ``suggest``, ``models``) on stdout (``results``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True, highlight=False, emoji=False)  # 'sms:train:12' is a text's place, not a 🚋


PIPED_WIDTH = 1000  # a results table written to a file or a pipe: its rows unfolded (long paths on one line)


def results() -> Console:
    """A console on stdout for a command's results: as wide as the terminal, or, written to a file or a pipe
    (``headstart predict RUN folder/ > predictions.txt``), as wide as the rows are, so that no path is folded."""
    return Console(highlight=False, emoji=False, width=None if sys.stdout.isatty() else PIPED_WIDTH)


def quiet() -> bool:
    return os.environ.get("HEADSTART_QUIET", "") not in {"", "0"}


@contextmanager
def progress_bar(description: str, total: int) -> Iterator[Callable[..., None]]:
    """A rich progress bar; yields ``advance(n=1, **fields)``."""
    if quiet() or total <= 0:
        yield lambda n=1, **fields: None
        return
    columns = [
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, info: str | None = None) -> None:
            progress.update(task, advance=n, **({"info": info} if info is not None else {}))

        yield advance


def say(message: object) -> None:
    """Print a message or a rich renderable (tables), unless HEADSTART_QUIET is set."""
    if not quiet():
        console.print(message)


_shown: set[str] | None = None  # inside warnings_once(): the warnings already printed


def warn(message: str) -> None:
    """Warnings are printed even in quiet mode (once each inside ``warnings_once``)."""
    if _shown is not None:
        if message in _shown:
            return
        _shown.add(message)
    console.print(f"[bold yellow]WARNING:[/] {message}", soft_wrap=True)  # the terminal wraps: paths stay whole


@contextmanager
def warnings_once(seen: set[str] | None = None) -> Iterator[None]:
    """Print each distinct warning once; pass the same ``seen`` set to span several blocks (compare's cells)."""
    global _shown
    previous, _shown = _shown, seen if seen is not None else (set() if _shown is None else _shown)
    try:
        yield
    finally:
        _shown = previous
