"""Which column of a table holds what: the one named, else a common name, else the only column left, else (where the
caller gives the rows) the one whose values look the part: the longest values for texts, the fewest distinct values
for labels, image file names for paths."""

from __future__ import annotations

import ast
import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.tables import IMAGE_SUFFIXES, SPLIT_COLUMN

SAMPLE_ROWS = 2000  # rows whose values a content guess looks at
CONTENT_COLUMNS = 3  # columns told apart by their values at most: in wider tables a guess could take the wrong one
WIDE_LABELS = 50  # distinct values at most of a label column found by its values among more columns
ONE_HOT = {"0", "1", "0.0", "1.0"}  # the values of a one-hot column
POSITIVE = {"1", "1.0"}
UNCERTAIN = {"-1", "-1.0"}  # a flag neither set nor clear (CheXpert's uncertain findings)
FLAG = ONE_HOT | UNCERTAIN | {""}  # the values of a multi-hot column (blank: not mentioned, a negative)
SPARSE = 0.05  # a column with values in at most this share of the rows is not a candidate (Kaggle's 'Unnamed: 2')
IDS_FROM = 20  # rows a sample needs before a column of a different value in every row is taken for ids, not labels
ID_WORDS = {"id", "ids", "uid", "uuid", "guid"}  # the last word of an identifier column's name: 'id', 'PassengerId'


def pick_column(columns: list[str], wanted: str | None, candidates: Sequence[str], what: str, where: Path,
                hint: str, exclude: Collection[str] = (), optional: bool = False,
                rows: Sequence[dict[str, Any]] | None = None, by_values: bool = True) -> str | None:
    """The column holding the ``what`` of table ``where``.

    ``wanted`` (the user's) must exist; else the first of ``candidates`` present (any case), else the one column
    whose name holds a candidate as one of its words (``_named_like``: ``airline_sentiment``), else the one column
    left besides ``exclude`` (the columns already taken), the split column and, given ``rows``, columns blank in all
    but ``SPARSE`` of them and, for labels, identifiers (``identifies``): ``path, species`` and ``id, path, species``
    give ``species``
    as the labels once ``path`` is the images'; else, given the table's ``rows``, the one column whose values
    plainly hold the ``what`` (``text``, ``label`` or ``path``: see ``by_content``; tables of up to
    ``CONTENT_COLUMNS`` columns left, any number for paths; not with ``by_values=False``), for paths at last the one
    column of ids named as such (``_image_ids``: APTOS' ``id_code``). ``optional``: None instead of a
    DataError when nothing fits. ``hint`` ends the error: how to name the column (a CLI option or config key).
    """
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{where}: no column '{wanted}' for the {what}; columns found: {columns}. {hint}")
        return wanted
    lower = {c.lower(): c for c in columns if c not in exclude}
    for c in candidates:
        if c in lower:
            return lower[c]
    # not for paths, found by their values in any table: 'Patient ID' is no image id, 'Image Index' names the files
    named = _named_like([c for c in columns if c not in exclude], candidates) if what != "path" else None
    if named is not None:
        return named
    rest = [c for c in columns if c not in exclude and c.lower() != SPLIT_COLUMN]
    if rows:  # columns (nearly) always blank hold nothing: trailing commas, the overflow columns of Kaggle's spam.csv
        sample = rows[:SAMPLE_ROWS]
        rest = [c for c in rest if sum(bool(str(r.get(c) or "").strip()) for r in sample) > SPARSE * len(sample)]
        if what == "label":  # 'id, message, is_spam': the labels are the column left besides the ids (but the
            # humpback whales' 'Image, Id' has no other: there 'Id' names the whale, a class)
            rest = [c for c in rest if not identifies(c, sample)] or rest
    if len(rest) == 1 and exclude:
        return rest[0]
    few = len(rest) <= CONTENT_COLUMNS or what in ("path", "text")  # image file names, long texts: in any table
    guess = by_content(what if few else f"{what}:wide", rest, rows) if rows and by_values else None
    if guess is None and what == "path" and rows and by_values:
        guess = _image_ids(rest, rows)
    if guess is not None or optional:
        return guess
    raise DataError(f"{where}: cannot tell which column holds the {what}; columns found: {columns}. {hint}")


def _image_ids(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str | None:
    """The one column named as ids (a word ``id``: APTOS' ``id_code``, ``ImageId``, RSNA's ``patientId``) holding a
    single token in every row, mostly different ones (an id repeats in a table of a row per box): image files' names
    without their suffix (found beside the table later), else None."""
    sample = rows[:SAMPLE_ROWS]
    found = []
    for c in columns:
        values = [str(r.get(c) if r.get(c) is not None else "").strip() for r in sample]
        if "id" in name_words(c) and all(v and " " not in v for v in values) and len(set(values)) >= 0.5 * len(values):
            found.append(c)
    return found[0] if len(found) == 1 else None


def identifies(column: str, rows: Sequence[dict[str, Any]]) -> bool:
    """Whether ``column`` holds identifiers, never classes: named as one (its last word ``id``: ``id``, ``tweet_id``,
    ``PassengerId``, ``Patient ID``) or a different value in each of ``IDS_FROM`` or more rows (row numbers, URLs)."""
    words = name_words(column)
    if words and words[-1] in ID_WORDS:
        return True
    values = [str(r.get(column) if r.get(column) is not None else "").strip() for r in rows]
    return len(values) >= IDS_FROM and len(set(values)) == len(values)


def name_words(name: str) -> list[str]:
    """A column name's words, lower case: ``airline_sentiment`` and ``imagePath`` give two each."""
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+|(?<=[a-z])(?=[A-Z])", name) if w]


def _named_like(columns: Sequence[str], candidates: Sequence[str]) -> str | None:
    """The one column with a name of several words, one of them a candidate's (Twitter US Airline Sentiment's
    ``airline_sentiment``, ``tweet_text``); among several, the one whose last word is (``airline_sentiment``, not
    ``airline_sentiment_confidence``); else None."""
    wanted = {c.lower() for c in candidates if len(c) > 1}  # not 'y' of 'y_min'
    several = {c: words for c in columns if len(words := name_words(c)) > 1}
    named = [c for c, words in several.items() if wanted & set(words)]
    if len(named) > 1:
        named = [c for c in named if several[c][-1] in wanted]
    return named[0] if len(named) == 1 else None


def one_hot_columns(columns: Sequence[str], rows: Sequence[dict[str, Any]], exclude: Collection[str]) -> list[str]:
    """The columns of a one-hot label encoding: 2 or more columns (besides ``exclude``) of 0/1 values with exactly one
    1 per row (ISIC's ``image,MEL,NV,BCC...`` ground truth), else []."""
    found = [c for c in columns if c not in exclude and rows
             and all(str(r.get(c) if r.get(c) is not None else "").strip() in ONE_HOT for r in rows)]
    if len(found) < 2 or any(sum(str(r[c]).strip() in POSITIVE for c in found) != 1 for r in rows):
        return []
    return found


def flag_columns(columns: Sequence[str], rows: Sequence[dict[str, Any]], exclude: Collection[str]) -> list[str]:
    """The columns (besides ``exclude``) holding only 0/1 flags, blanks and -1 (uncertain: CheXpert's labels): one
    column per class of a multi-hot label encoding."""
    return [c for c in columns if c not in exclude and rows
            and all(str(r.get(c) if r.get(c) is not None else "").strip() in FLAG for r in rows)]


def by_content(what: str, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str | None:
    """The one of ``columns`` whose values plainly are the ``what``, or None when none or several could be.

    ``text``: the longest values on average (at least 1.5x any other column's, mostly distinct); ``label``: the fewest
    distinct values (2 or more, at most half the rows, fewer than any other column's); ``path``: the one column of
    image file names.
    """
    rule = _RULES.get(what)
    if rule is None or not columns:
        return None
    sample = rows[:SAMPLE_ROWS]
    values = {c: [str(r.get(c) if r.get(c) is not None else "").strip() for r in sample] for c in columns}
    return rule({c: [v for v in vs if v] for c, vs in values.items()}, len(sample))


def _text(values: dict[str, list[str]], _: int) -> str | None:
    mean = {c: sum(map(len, vs)) / max(len(vs), 1) for c, vs in values.items()}
    longest = max(mean, key=mean.get)
    mostly_distinct = len(set(values[longest])) > 0.5 * len(values[longest])
    if mostly_distinct and all(mean[longest] >= 1.5 * m for c, m in mean.items() if c != longest):
        return longest
    return None


def _label(values: dict[str, list[str]], rows: int) -> str | None:
    distinct = {c: len(set(vs)) for c, vs in values.items() if 2 <= len(set(vs)) <= max(2, rows // 2)}
    ranked = sorted(distinct, key=distinct.get)
    if ranked and (len(ranked) == 1 or distinct[ranked[0]] < distinct[ranked[1]]):
        return ranked[0]
    return None


def _label_wide(values: dict[str, list[str]], rows: int) -> str | None:
    """A label column among more than ``CONTENT_COLUMNS`` (Sentiment140's six, without a header line): the only column
    of 2 to ``WIDE_LABELS`` distinct values, fewer than a tenth of the rows (ids, dates and user names have more)."""
    few = [c for c, vs in values.items() if 2 <= len(set(vs)) <= min(WIDE_LABELS, max(2, rows // 10))]
    return few[0] if len(few) == 1 else None


def _path(values: dict[str, list[str]], _: int) -> str | None:
    images = [c for c, vs in values.items() if vs and sum(v.lower().endswith(IMAGE_SUFFIXES) for v in vs) > 0.8 * len(vs)]
    return images[0] if len(images) == 1 else None


_RULES: dict[str, Callable[[dict[str, list[str]], int], str | None]] = {
    "text": _text, "label": _label, "path": _path, "label:wide": _label_wide}


WHOLE_DECIMAL = re.compile(r"\s*(-?\d+)\.0+\s*")  # '1.0': a whole number as pandas writes an int column with gaps


def folded(name: str) -> str:
    """A class name without case, spacing or separators: ``Golden_Retriever `` is ``golden retriever``; a whole
    number written as a decimal (``1.0``) is the number (``1``)."""
    whole = WHOLE_DECIMAL.fullmatch(name)
    return whole.group(1) if whole else re.sub(r"[\s_\-]+", " ", name.casefold()).strip()


def folded_class(classes: Sequence[str]) -> Callable[[str], str | None]:
    """The class of ``classes`` a name is but for case, spacing or separators (``ants`` for ``Ants``), or None when
    none is, or when two classes fold alike (nothing is guessed)."""
    known: dict[str, list[str]] = {}
    for c in classes:
        known.setdefault(folded(c), []).append(c)

    def match(name: str) -> str | None:
        found = known.get(folded(name), [])
        return found[0] if len(found) == 1 else None

    return match


def listed(text: str) -> list[str] | None:
    """The items of a cell that holds a list literal of strings or numbers (``['Drama', 'Romance']``: pandas' lists
    saved to CSV; read as data, never run), else None."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(items, list) or not all(isinstance(i, (str, int, float)) for i in items):
        return None
    return [str(i).strip() for i in items if str(i).strip()]


def one_spelling(labels: Sequence[str]) -> tuple[list[str], str]:
    """``labels`` with the spellings of one class that differ only in case, spacing or separators (``folded``) made
    the most frequent one (a hand-made table's ``ham``, ``Ham`` and ``HAM``: one class ``ham``, not three), and what
    the Data line says of it ('' when every class has one spelling). Labels that are all written as lists of one item
    (``['ants']``, pandas' lists saved to CSV; doccano's JSONL ``"label": ["positive"]``) are their items, and an empty
    list (doccano's item not labelled yet) no label."""
    items = [listed(label) if label else [""] for label in labels]
    if any(labels) and all(i is not None and len(i) <= 1 for i in items) and any(i for i in items if i != [""]):
        first = next(label for label, i in zip(labels, items) if i and i != [""])
        unlisted, merged = one_spelling([i[0] if i else "" for i in items])
        return unlisted, (f"labels written as lists of one item read as the item ({first!r}: {listed(first)[0]!r})"
                          + (f"; {merged}" if merged else ""))
    wholes = [WHOLE_DECIMAL.fullmatch(label) for label in labels if label]
    if wholes and all(wholes):  # pandas' 0.0 / 1.0 of an int column with an empty cell: the classes 0 and 1
        first = next(label for label in labels if label)
        whole, merged = one_spelling([folded(label) if label else "" for label in labels])
        return whole, (f"whole numbers written as decimals read as numbers ({first!r}: {folded(first)!r})"
                       + (f"; {merged}" if merged else ""))
    spellings: dict[str, list[str]] = {}
    for label, _ in Counter(label for label in labels if label).most_common():
        spellings.setdefault(folded(label), []).append(label)
    merged = {other: found[0] for found in spellings.values() for other in found[1:]}
    if not merged:
        return list(labels), ""
    groups = [found for found in spellings.values() if len(found) > 1]
    said = "; ".join(f"{', '.join(repr(o) for o in found[1:])} as {found[0]!r}" for found in groups[:3])
    return ([merged.get(label, label) for label in labels],
            f"labels that differ only in case or spacing read as one class: {said}{'...' if len(groups) > 3 else ''}")
