"""Which words a text classifier's prediction rests on: each word's leave-one-out weight.

A word's weight is how much the predicted class's log-odds drop when that word alone is taken out of the text
(occlusion, Zeiler & Fergus, 2014, on words; LIME and SHAP perturb texts the same way and SHAP explains classifiers
in log-odds too). Log-odds, not probabilities: a confident model's probability is 0.9999 with or without any one word
of a spam message, while its odds still fall when "FREE" goes; a weight of 0.69 means the odds of the class halve
without the word. It reads the model as a black box, so it holds for every text backbone and head. Words are what the
user wrote (runs of non-blank characters), not tokens; a text of several columns never loses its separator. Each text
costs one forward pass per word, batched with the others (the first ``MAX_WORDS`` words are weighed: a model reads a
few hundred tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

from headstart.tasks.text import PART_SEP

MAX_WORDS = 128  # words weighed per text
SHOWN = 5  # words kept per row: the ones the prediction rests on most
WORD = re.compile(rf"[^\s{PART_SEP}]+")


def without_each_word(text: str, within: int | None = None) -> tuple[list[str], list[str]]:
    """``(words, texts)``: the first ``MAX_WORDS`` words of ``text`` (those that end within its first ``within``
    characters: what a report shows) and the text without each of them."""
    spans = [m.span() for m in WORD.finditer(text) if within is None or m.end() <= within][:MAX_WORDS]
    return [text[s:e] for s, e in spans], [(text[:s] + text[e:]).strip() for s, e in spans]


def log_odds(logits: torch.Tensor, sigmoid: bool = False) -> torch.Tensor:
    """Each class's log-odds ``log(p / (1 - p))`` from logits, without rounding p to 1: a softmax's is the class's
    logit minus the log-sum-exp of the others'; a sigmoid's (multi-label) is the logit."""
    logits = logits.float()
    if sigmoid:
        return logits
    n = logits.shape[1]
    others = logits[:, None, :].expand(-1, n, -1).masked_fill(torch.eye(n, dtype=torch.bool), float("-inf"))
    return logits - others.logsumexp(dim=-1)


def weigh(texts: list[str], classes: list[int], scores: Callable[[list[str]], torch.Tensor],
          shown: int = SHOWN, within: int | None = None) -> list[list[tuple[str, float]]]:
    """Per text, the words that most support its class ``classes[i]`` with their weights (largest first; only words
    whose removal lowers the class's log-odds); ``within``: only the words in the first so many characters.

    ``scores(texts) -> (n, n_classes)`` is the model's log-odds (``log_odds`` of its calibrated logits); it is called
    once, on the texts and all their one-word-short versions.
    """
    pieces = [without_each_word(t, within) for t in texts]
    variants = [v for _, vs in pieces for v in vs]
    odds = scores(list(texts) + variants)
    full, rest = odds[:len(texts)], odds[len(texts):]
    found, at = [], 0
    for i, (words, vs) in enumerate(pieces):
        c = classes[i]
        drops = (full[i, c] - rest[at:at + len(vs), c]).tolist()
        at += len(vs)
        ranked = sorted(((w, d) for w, d in zip(words, drops) if d > 0), key=lambda pair: -pair[1])
        found.append([(w, round(float(d), 3)) for w, d in ranked[:shown]])
    return found
