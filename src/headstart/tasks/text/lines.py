"""Text files of one labelled text a line, in the formats datasets ship them in: fastText's ``__label__2 Great CD``
(Amazon and Yelp reviews as the fastText tutorials and Kaggle give them), TREC's ``NUM:dist How far is it ...``
(the question classification set's ``train_5500.label`` and ``TREC_10.label``: a coarse class, its fine class, the
question) and ``text@label`` (the Financial PhraseBank's ``Sentences_AllAgree.txt``). Each is read only where 9 in 10
of a file's first 200 lines are in it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FASTTEXT_LABEL = "__label__"  # fastText's format: '__label__2 Great CD: ...', a text a line after its label
TREC_LINE = re.compile(r"(?P<coarse>[A-Z]{2,5}):(?P<fine>[a-z]\w*) (?P<text>\S.*)")
LABEL_AFTER = re.compile(r"(?P<text>\S.*\S)\s*@(?P<label>[A-Za-z][\w-]{0,29})")
LOOKED_AT, SHARE, MAX_CLASSES = 200, 0.9, 50  # lines looked at, the share in the format, classes a format may give
FINE_COLUMN = "fine_label"  # TREC's fine class ('NUM:dist'), a label column to choose instead of the coarse one


@dataclass
class LabelledLines:
    """The rows (``label``, ``text``...) of a file of labelled lines, how it was read, and notes of what was not."""

    rows: list[dict[str, str]]
    columns: list[str]
    read: str
    notes: list[str] = field(default_factory=list)


def labelled_lines(name: str, text: str) -> LabelledLines | None:
    """The lines of file ``name``'s ``text`` as rows, in the first format 9 in 10 of its first 200 lines are in;
    None for other text (tables, prose)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    head = lines[:LOOKED_AT]
    if not head:
        return None
    if sum(ln.startswith(FASTTEXT_LABEL) for ln in head) >= SHARE * len(head):
        return _fasttext(name, lines)
    tabbed = any("\t" in ln for ln in head)  # a tab-separated table ends its lines with a column, not '@label'
    for pattern, read in ((TREC_LINE, _trec), (LABEL_AFTER, _label_after)):
        if pattern is LABEL_AFTER and tabbed:
            continue
        found = [pattern.fullmatch(ln) for ln in head]
        labels = {m.group(2 if pattern is LABEL_AFTER else 1) for m in found if m}
        if sum(m is not None for m in found) >= SHARE * len(head) and 1 < len(labels) <= MAX_CLASSES:
            return read(name, lines)
    return None


def _fasttext(name: str, lines: list[str]) -> LabelledLines:
    """A line with several labels keeps its first (said in a note)."""
    rows, several = [], 0
    for ln in lines:
        labels, words = [], ln.split(" ")
        while words and words[0].startswith(FASTTEXT_LABEL):
            labels.append(words.pop(0)[len(FASTTEXT_LABEL):])
        several += len(labels) > 1
        rows.append({"label": labels[0] if labels else "", "text": " ".join(words).strip()})
    notes = [f"{several} line(s) have several labels: each keeps its first"] if several else []
    return LabelledLines(rows, ["label", "text"], f"{name}: fastText lines ('__label__X text')", notes)


def _trec(name: str, lines: list[str]) -> LabelledLines:
    """The label is the coarse class (TREC-6); ``fine_label`` the fine one (TREC-50). A line of no class has none."""
    rows = []
    for ln in lines:
        found = TREC_LINE.fullmatch(ln)
        rows.append({"label": found["coarse"], FINE_COLUMN: f"{found['coarse']}:{found['fine']}", "text": found["text"]}
                    if found else {"label": "", FINE_COLUMN: "", "text": ln})
    return LabelledLines(rows, ["label", FINE_COLUMN, "text"], f"{name}: TREC lines ('COARSE:fine question'), the "
                         f"coarse class the label (the fine one: --label-column {FINE_COLUMN})")


def _label_after(name: str, lines: list[str]) -> LabelledLines:
    """The label after the last ``@``; a line without one has none."""
    rows = []
    for ln in lines:
        found = LABEL_AFTER.fullmatch(ln)
        rows.append({"text": found["text"], "label": found["label"]} if found else {"text": ln, "label": ""})
    return LabelledLines(rows, ["text", "label"], f"{name}: lines of 'text@label'")
