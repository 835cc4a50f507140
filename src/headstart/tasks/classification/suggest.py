"""Which unlabelled items to label next (active learning): those the model is least sure of, unlike one another.

Labelling is the cost of a small dataset. Of a pile of unlabelled items, the ones that teach a model most are near
its decision boundary (the smallest margin between its two most probable classes; "margin sampling", the baseline
that reproducibility studies of active learning find hard to beat), but the least sure items of one round are often
near-copies of one another: ten blurry photos of one kind teach what one of them does. So the batch is chosen as in
Zhdanov, "Diverse mini-batch Active Learning" (2019): the ``PREFILTER``·n least sure items are clustered into n
groups by their features (k-means weighted by how unsure the model is of each), and the item nearest each group's
centre is picked. Items labelled already (same content) and repeated items of the pool are left out.

With no labels yet (``first``), the pile is grouped by a pretrained backbone's features and the most typical item of
each group is picked (TypiClust).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

PREFILTER = 10  # candidates per item picked: the PREFILTER * n least sure items are clustered into n groups
ROUNDS = 25  # at most this many k-means iterations (the assignment settles in a few on a few thousand candidates)


def margins(probs: Any, thresholds: Any = None, positive: int | None = None, threshold: float | None = None
            ) -> np.ndarray:
    """How sure the model is of each item's decision (smaller: less sure), from ``probs[n_items, n_classes]``.

    Single-label: the most probable class's probability minus the next one's; with an operating point (the
    ``positive`` column decided at ``threshold``), also no more than that probability's distance to the threshold.
    Multi-label (``thresholds``: one per label): the smallest distance of a label's probability to its threshold.
    """
    p = np.asarray(probs, dtype=np.float64)
    if thresholds is not None:
        return np.abs(p - np.asarray(thresholds, dtype=np.float64)[None, :]).min(axis=1)
    top = np.sort(p, axis=1)[:, ::-1]
    sure = top[:, 0] - (top[:, 1] if p.shape[1] > 1 else 0.0)
    if positive is not None and threshold is not None:
        sure = np.minimum(sure, np.abs(p[:, positive] - threshold))
    return sure


def choose(sure: Any, features: Any, n: int, seed: int = 0) -> list[int]:
    """The rows to label next, least sure first: of the ``PREFILTER * n`` least sure rows (``sure``: ``margins``),
    in ``n`` groups by their ``features`` (k-means weighted by ``1 - sure``), each group's row nearest its centre."""
    sure = np.asarray(sure, dtype=np.float64)
    order = np.argsort(sure, kind="stable")
    if n <= 0:
        return []
    candidates = order[:PREFILTER * n]
    if len(candidates) <= n:
        return candidates.tolist()
    x = _unit(np.asarray(features, dtype=np.float32)[candidates])
    weights = np.clip(1.0 - sure[candidates], 1e-3, None)
    centres, groups = _weighted_kmeans(x, weights, n, np.random.default_rng(seed))
    d = _squared_distances(x, centres)[np.arange(len(x)), groups]
    picked = _one_per_group(x, groups, n, lambda members: int(members[d[members].argmin()]))
    return sorted((int(candidates[i]) for i, _ in picked), key=lambda row: (sure[row], row))


def first(features: Any, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """With no labels yet: ``(row, group size)`` of the ``n`` rows to label first, the biggest groups first. The rows
    are grouped in ``n`` by their ``features`` (k-means) and each group's most typical row is taken: the one nearest
    its ``TYPICAL`` nearest neighbours of the group (TypiClust: Hacohen et al., "Active Learning on a Budget", ICML
    2022: with few labels, typical items teach more than odd ones, and one per group covers the data's kinds)."""
    x = _unit(np.asarray(features, dtype=np.float32))
    if n <= 0:
        return []
    if len(x) <= n:
        return [(i, 1) for i in range(len(x))]
    rng = np.random.default_rng(seed)
    _, groups = _weighted_kmeans(x, np.ones(len(x)), n, rng)

    def typical(members: np.ndarray) -> int:
        among = members if len(members) <= TYPICAL_AMONG else np.sort(rng.choice(members, TYPICAL_AMONG, False))
        return int(among[_most_typical(x[among])])

    return sorted(_one_per_group(x, groups, n, typical), key=lambda pair: (-pair[1], pair[0]))


def _one_per_group(x: np.ndarray, groups: np.ndarray, n: int, best: Any) -> list[tuple[int, int]]:
    """``(row, group size)`` of the row ``best(members)`` takes of each of the ``n`` groups; for a group k-means
    left empty, the row farthest from those taken (size 1)."""
    picked = [(best(members), len(members)) for j in range(n) if len(members := np.flatnonzero(groups == j))]
    while len(picked) < n:
        rows = [row for row, _ in picked]
        gap = _squared_distances(x, x[rows]).min(axis=1)
        gap[rows] = -1.0
        picked.append((int(gap.argmax()), 1))
    return picked


TYPICAL = 20  # the neighbours whose mean distance says how typical an item is of its group (TypiClust's k)
TYPICAL_AMONG = 2000  # a bigger group's most typical item is sought among this many of its items, drawn (seeded)


def _most_typical(x: np.ndarray) -> int:
    """The row of ``x`` nearest its ``TYPICAL`` nearest other rows (mean squared distance)."""
    if len(x) <= 2:
        return 0
    k = min(TYPICAL, len(x) - 1)
    d = _squared_distances(x, x)
    np.fill_diagonal(d, np.inf)
    return int(np.partition(d, k - 1, axis=1)[:, :k].mean(axis=1).argmin())


def kept_candidates(sure: np.ndarray, n: int) -> np.ndarray:
    """The rows of one chunk of a pool worth keeping for ``choose``: its ``PREFILTER * n`` least sure (a pool
    read in chunks keeps only these, with their features: memory stays flat in the pool's size)."""
    return np.argsort(sure, kind="stable")[:PREFILTER * n]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _weighted_kmeans(x: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``k`` centres of the rows of ``x`` and each row's group: k-means++ seeding and Lloyd's iterations, each row
    counted ``weights`` times."""
    centres = [x[rng.choice(len(x), p=weights / weights.sum())]]
    nearest = ((x - centres[0]) ** 2).sum(axis=1)
    trials = 2 + int(np.log(k))  # greedy k-means++ (as scikit-learn): of a few rows drawn, the one that helps most
    for _ in range(1, k):
        chance = weights * nearest
        total = chance.sum()
        if total <= 0:  # every row sits on a centre already
            centres.append(x[int(rng.integers(len(x)))])
            continue
        rows = rng.choice(len(x), size=trials, p=chance / total)
        after = np.minimum(nearest[None, :], _squared_distances(x[rows], x))
        best = int((after * weights[None, :]).sum(axis=1).argmin())
        centres.append(x[rows[best]])
        nearest = after[best]
    c = np.stack(centres)
    assigned = np.full(len(x), -1)
    for _ in range(ROUNDS):
        now = _squared_distances(x, c).argmin(axis=1)
        if np.array_equal(now, assigned):
            break
        assigned = now
        for j in range(k):
            members = assigned == j
            if members.any():  # an emptied group keeps its centre
                c[j] = (weights[members, None] * x[members]).sum(axis=0) / weights[members].sum()
    return c, assigned


def _squared_distances(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum((x * x).sum(axis=1)[:, None] - 2.0 * x @ c.T + (c * c).sum(axis=1)[None, :], 0.0)


def write_csv(rows: list[dict[str, Any]], path: Path, key: str) -> None:
    """``rows`` of ``suggest`` to ``path``: the item, an empty ``label`` column to fill, the model's guess (the
    most probable class; multi-label: its labels, ``|``-separated) and runner-up, and how sure it was; rows of
    ``suggest_first`` (no model yet): the item, ``label`` and the size of the group it stands for. Image files are
    written by their absolute paths, so that the filled file trains wherever it lies."""
    import csv

    def item(row: dict[str, Any]) -> str:  # a file by its absolute path: the filled CSV is read from its own folder
        return str(Path(row[key]).resolve()) if key == "path" and Path(row[key]).is_file() else row[key]

    flagged = any("unfamiliar" in r for r in rows)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        if rows and "margin" not in rows[0]:
            writer.writerows([[key, "label", "group_size"], *([item(r), "", r["group_size"]] for r in rows)])
            return
        writer.writerow([key, "label", "guess", "probability", "runner_up", "runner_up_probability", "margin",
                         *(["unfamiliar"] if flagged else [])])
        for r in rows:
            guess, runner_up = guesses(r)
            writer.writerow([item(r), "", guess[0], f"{guess[1]:.4f}", runner_up[0], f"{runner_up[1]:.4f}",
                             f"{r['margin']:.4f}", *([str(bool(r.get("unfamiliar"))).lower()] if flagged else [])])


def guesses(row: dict[str, Any]) -> tuple[tuple[str, float], tuple[str, float]]:
    """A suggested row's guess and runner-up, each ``(class, probability)`` (multi-label: the labels at their
    thresholds, then the most probable label below its threshold)."""
    if "top_k" in row:
        top = row["top_k"]
        return (row["label"], row["probability"]), (top[1] if len(top) > 1 else ("", 0.0))
    on = [t["label"] for t in row["labels"]]
    below = sorted(((c, p) for c, p in row["probabilities"].items() if c not in on), key=lambda pair: -pair[1])
    return ("|".join(on), min((t["probability"] for t in row["labels"]), default=0.0)), \
        (below[0] if below else ("", 0.0))
