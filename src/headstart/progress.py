"""Console output: rich progress bars and messages, on stderr so that --json output stays clean."""

from __future__ import annotations

import os
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

console = Console(stderr=True, highlight=False)


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


def warn(message: str) -> None:
    """Warnings are printed even in quiet mode."""
    console.print(f"[bold yellow]WARNING:[/] {message}")
