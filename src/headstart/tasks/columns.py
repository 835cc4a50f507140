"""Which column of a table holds what: the one named, else a common name, else the only column left."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from headstart.errors import DataError

SPLIT_COLUMN = "split"


def pick_column(columns: list[str], wanted: str | None, candidates: Sequence[str], what: str, where: Path,
                hint: str, exclude: Collection[str] = (), optional: bool = False) -> str | None:
    """The column holding the ``what`` of table ``where``.

    ``wanted`` (the user's) must exist; else the first of ``candidates`` present (any case), else the one column
    left besides ``exclude`` (the columns already taken) and the split column: ``path, species`` gives ``species``
    as the labels once ``path`` is the images'. ``optional``: None instead of a DataError when nothing fits.
    ``hint`` ends the error: how to name the column (a CLI option or config key).
    """
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{where}: no column '{wanted}' for the {what}; columns found: {columns}. {hint}")
        return wanted
    lower = {c.lower(): c for c in columns if c not in exclude}
    for c in candidates:
        if c in lower:
            return lower[c]
    rest = [c for c in columns if c not in exclude and c.lower() != SPLIT_COLUMN]
    if len(rest) == 1 and exclude:
        return rest[0]
    if optional:
        return None
    raise DataError(f"{where}: cannot tell which column holds the {what}; columns found: {columns}. {hint}")
