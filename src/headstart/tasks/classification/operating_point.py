"""A classifier's operating point: the threshold on one class's probability that decides it, chosen on validation.

Argmax (for two classes, a threshold of 0.5 on the calibrated probability) is the decision with the fewest mistakes
when every mistake costs the same. A screening test does not weigh them the same: ``train.operating_point=
recall>=0.95`` keeps the highest threshold on p(positive) that still finds 95 % of the validation positives, and
every later decision (scores, confusion matrix, ``predict``, ``evaluate``, exports, the server) is the positive class
where ``p(positive) >= threshold``, else the other class (with more classes, named by ``train.positive_class``: the
most probable of the others; a melanoma flagged among seven kinds of skin lesion).

Rules: ``recall>=X`` (alias ``sensitivity>=X``): the most specific threshold with that recall (of thresholds as
specific, the one with most recall); ``specificity>=X``: the most sensitive one with that specificity (of thresholds
as sensitive, the most specific); ``precision>=X``: the most sensitive one with that precision (not always
reachable: the most precise is kept, with a warning); ``f1``: the best F1 of the positive class; ``youden``: the best
recall + specificity - 1. The threshold sits halfway between the chosen validation score and the next lower one, so
validation decisions are those counted and a new item scored like the last one kept is not on the edge. Scores that
another runtime's arithmetic could reorder count as one (within ``EDGE`` of 0 or 1, or logits under ``TIE`` apart, as
multi-label thresholds do): no threshold falls between them, so ONNX and fp16 decide each validation item alike.

A rule met on a small validation split is met on new data only about as well as the split measures: each rate comes
with its Wilson 95 % interval, and the test split (scored at the validation threshold) says how it held.
This module imports no torch: the ONNX engine decides with it on numpy arrays.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from headstart.core.intervals import wilson

RULES = ("recall", "specificity", "precision", "f1", "youden")
ALIASES = {"sensitivity": "recall", "tpr": "recall", "tnr": "specificity", "ppv": "precision"}
_BOUND = re.compile(r"^\s*([a-z]+)\s*>=\s*(0?\.\d+|1(?:\.0*)?|\d{1,2}(?:\.\d+)?%)\s*$")
SHOWN = ("argmax", "f1", "youden", "recall>=0.9", "recall>=0.95", "recall>=0.99", "specificity>=0.95")  # report table


def parse(rule: str) -> tuple[str, float | None]:
    """``(kind, bound)`` of a rule: ``"recall>=0.95"`` or ``"recall>=95%"`` -> ``("recall", 0.95)``, ``"f1"`` ->
    ``("f1", None)``; ValueError naming the rules for anything else."""
    text = rule.strip().lower()
    if text in ("f1", "youden", "argmax"):
        return text, None
    found = _BOUND.match(text)
    kind = ALIASES.get(found.group(1), found.group(1)) if found else None
    if not found or kind not in RULES[:3]:
        raise ValueError(f"operating point {rule!r}: expected argmax, f1, youden, or recall>=X, specificity>=X, "
                         "precision>=X (X in (0, 1], e.g. recall>=0.95 or recall>=95%; sensitivity is recall)")
    bound = float(found.group(2).rstrip("%")) / (100 if found.group(2).endswith("%") else 1)
    if not 0 < bound <= 1:
        raise ValueError(f"operating point {rule!r}: the bound must be in (0, 1]; found {bound}")
    return kind, bound


def positive_class(classes: list[str], train_counts: list[int], named: str | None) -> int:
    """The class whose probability is thresholded: ``named`` (``train.positive_class``), else, of two classes, the
    rarer in training (what a screening test looks for), else the second (scikit-learn's ``pos_label=1``); more
    classes need it named."""
    if named is not None:
        if named not in classes:
            raise ValueError(f"train.positive_class {named!r} is not a class of this data; its classes: {classes}")
        return classes.index(named)
    if len(classes) != 2:
        raise ValueError(f"an operating point thresholds one class, the one train.positive_class names; this data has "
                         f"{len(classes)} classes: name it with train.positive_class=NAME (one of {classes})")
    return 0 if len(train_counts) == 2 and train_counts[0] < train_counts[1] else 1


def rates(scores: list[float], positive: list[bool], threshold: float) -> dict[str, Any]:
    """Counts and rates of the decisions ``score >= threshold`` against the truth, with Wilson intervals."""
    return rates_of([s >= threshold for s in scores], positive)


def rates_of(decided: list[bool], positive: list[bool]) -> dict[str, Any]:
    """Counts, recall, specificity and precision of the positive decisions against the truth, with Wilson
    intervals."""
    tp = sum(d and y for d, y in zip(decided, positive))
    fp = sum(d and not y for d, y in zip(decided, positive))
    pos, neg = sum(positive), len(positive) - sum(positive)
    fn, tn = pos - tp, neg - fp

    def rate(hits: int, n: int) -> dict[str, Any]:
        return {"value": hits / n if n else None, "of": n,
                "ci95": [round(v, 4) for v in wilson(hits, n)] if n else None}

    return {"recall": rate(tp, pos), "specificity": rate(tn, neg), "precision": rate(tp, tp + fp),
            "counts": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}


def choose(scores: list[float], positive: list[bool], rule: str) -> tuple[float, bool]:
    """``(threshold, met)``: the threshold the rule picks on these validation scores (p(positive) of each item) and
    whether the rule's bound is met there (``precision>=X`` may be out of reach: its best precision is kept)."""
    return _pick(_candidates(scores, positive, rule), rule)


EDGE = 1e-4  # scores this close to 0 or 1 count as one: float32 rounds a confident model's to 1.0, ONNX to 0.99999
TIE = 2e-3  # scores whose logits are closer than this count as one (an exported model's logits may differ by 1e-3)


def _logit(p: float) -> float:
    p = min(max(p, EDGE), 1 - EDGE)
    return math.log(p / (1 - p))


def _candidates(scores: list[float], positive: list[bool], rule: str = "") -> list[tuple[float, ...]]:
    """Rows ``(t, recall, specificity, precision, F1, top)`` of predicting positive for scores >= t: t = inf (nothing
    positive), then each distinct score from high to low (down to predicting everything positive); scores that count
    as one (``EDGE``, ``TIE``) give one row, at the lowest of them, ``top`` the highest."""
    pos = sum(positive)
    neg = len(positive) - pos
    if not scores or pos == 0 or neg == 0:
        raise ValueError(f"operating point {rule!r} needs validation items of both classes; found {pos} positive "
                         f"and {neg} negative")
    ranked = sorted(zip(scores, positive), key=lambda pair: -pair[0])
    table, tp, fp, i = [(math.inf, 0.0, 1.0, 1.0, 0.0, math.inf)], 0, 0, 0
    distinct = sorted(set(scores), reverse=True)
    top = distinct[0]
    for k, t in enumerate(distinct):
        if k + 1 < len(distinct) and _logit(t) - _logit(distinct[k + 1]) <= TIE:
            continue  # one value with the next lower score
        while i < len(ranked) and ranked[i][0] >= t:
            tp, fp, i = tp + ranked[i][1], fp + (not ranked[i][1]), i + 1
        table.append((t, tp / pos, (neg - fp) / neg, tp / (tp + fp), 2 * tp / (pos + tp + fp), top))
        top = distinct[k + 1] if k + 1 < len(distinct) else top
    return table


def _pick(table: list[tuple[float, ...]], rule: str) -> tuple[float, bool]:
    """``choose``'s threshold from the candidate rows of ``_candidates``."""
    kind, bound = parse(rule)
    if kind == "argmax":
        return 0.5, True
    met = True
    if kind == "recall":  # the best specificity with that recall; of equals, the lowest threshold (more recall)
        reached = [row for row in table if row[1] >= bound - 1e-12]
        pick = [row for row in reached if row[2] == max(r[2] for r in reached)][-1]
    elif kind == "specificity":  # the best recall with that specificity; of equals, the highest threshold
        reached = [row for row in table if row[2] >= bound - 1e-12]
        pick = next(row for row in reached if row[1] == max(r[1] for r in reached))
    elif kind == "precision":  # the best recall with that precision; of equals, the highest threshold
        reached = [row for row in table[1:] if row[3] >= bound - 1e-12]
        met = bool(reached)
        pick = next(row for row in reached if row[1] == max(r[1] for r in reached)) if reached else \
            max(table[1:], key=lambda row: row[3])
    else:
        value = (lambda row: row[4]) if kind == "f1" else (lambda row: row[1] + row[2] - 1)
        pick = max(table, key=value)  # the first (highest-threshold) best
    at = table.index(pick)
    if at == 0:  # nothing positive: above the highest score
        return min(1.0, (table[1][5] + 1.0) / 2), met
    # halfway down to the next lower score (everything positive: to 0), off every validation score
    return (pick[0] + (table[at + 1][5] if at + 1 < len(table) else 0.0)) / 2, met


@dataclass(frozen=True)
class OperatingPoint:
    """``p(classes[positive]) >= threshold``: the positive class; below: the other one."""

    positive: int
    threshold: float
    rule: str

    def decide(self, probs: Any) -> Any:
        """The decided class of each row of ``probs[n, classes]`` (a torch tensor or a numpy array): the positive
        class at or above the threshold, else the most probable other class."""
        chosen = probs[:, self.positive] >= self.threshold
        others = probs * 1.0  # a copy, numpy or torch
        others[:, self.positive] = -1.0
        return chosen * self.positive + ~chosen * others.argmax(1)

    def decide_one(self, p: Any) -> int:
        """The decided class of one item's probabilities."""
        return int(self.decide(p[None])[0])

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        return {"positive": classes[self.positive], "threshold": self.threshold, "rule": self.rule}

    @classmethod
    def from_dict(cls, info: dict[str, Any], classes: list[str]) -> OperatingPoint:
        if info.get("positive") not in classes:
            raise ValueError(f"the operating point's positive class {info.get('positive')!r} is not one of {classes}")
        return cls(classes.index(info["positive"]), float(info["threshold"]), str(info.get("rule", "")))

    def describe(self, classes: list[str]) -> str:
        """'p(pneumonia) >= 0.231 (recall>=0.95 on validation)'."""
        return f"p({classes[self.positive]}) >= {self.threshold:.3g} ({self.rule} on validation)"


def decisions(logits: Any, point: OperatingPoint | None = None) -> tuple[Any, Any]:
    """``(probability of the decided class, decided class)`` of each row of ``logits`` (a torch tensor): the argmax,
    or at the operating ``point``."""
    probs = logits.float().softmax(dim=1)
    if point is None:
        return probs.max(dim=1)
    pred = point.decide(probs)
    return probs.gather(1, pred[:, None])[:, 0], pred


def alternatives(scores: list[float], positive: list[bool], also: str = "argmax",
                 argmax: list[bool] | None = None) -> list[dict[str, Any]]:
    """What each rule of ``SHOWN`` (and ``also``) would give on these validation scores: its threshold and rates
    (report.md and report.html list them, to choose ``train.operating_point`` from). ``argmax``: where the argmax
    decides the positive class, with more than two classes (no threshold: its row has None)."""
    try:
        table = _candidates(scores, positive)
    except ValueError:
        return []
    rows = []
    for rule in SHOWN + ((also,) if also not in SHOWN else ()):
        t, met = _pick(table, rule)
        plain = rule == "argmax" and argmax is not None
        r = rates_of(argmax, positive) if plain else rates(scores, positive, t)
        rows.append({"rule": rule, "threshold": None if plain else round(t, 4), "met": met,
                     **{k: r[k]["value"] for k in ("recall", "specificity", "precision")}})
    return rows
