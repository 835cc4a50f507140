"""Words that tell the classes apart on their own: shortcuts a text model learns instead of what the texts say.

Collections assembled from one source per class carry their source in every text: the ISOT fake news set's true
articles each begin "WASHINGTON (Reuters) -", its fake ones never do; a class scraped from one forum signs every post
the same way; one class's texts all came through a template. A classifier then scores near 100% by spotting the
byline, on a validation split drawn from the same files, and fails on the texts it is meant for. ``word_notes`` names
each word found in nearly every text of one class and nearly no text of the others, so that the user can judge
whether it is what the class is about ("refund" in a refund intent) or an artefact of the collection.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from headstart.tasks.text import shown

WORD = re.compile(r"[^\W_]{2,}")  # words of two letters or digits or more, compared without case
HOLDS = 0.9  # a telling word: in at least 90% of a class's texts...
OTHERS = 0.02  # ...and in at most 2% of the other classes' texts
MIN_CLASS = 20  # classes of fewer training texts are not judged
PER_CLASS = 2000  # texts of a class looked at at most (evenly spaced)
CHARS = 5000  # characters of a text looked at
SHOWN = 3  # words named in the note


def _classes(label: object) -> tuple[int, ...]:
    """A sample's classes: its class index, or a multi-label sample's indices."""
    if label is None:
        return ()
    return tuple(label) if isinstance(label, (tuple, list)) else (int(label),)


def word_notes(samples: Sequence, classes: Sequence[str]) -> list[str]:
    """A warning naming the words that tell a class apart in ``samples`` (the training split: ``text`` and
    ``label``): each in at least ``HOLDS`` of the class's texts and at most ``OTHERS`` of the other texts."""
    by_class: dict[int, list] = {}
    for s in samples:
        for c in _classes(s.label):
            by_class.setdefault(c, []).append(s)
    looked = [s for texts in by_class.values() for s in texts[::max(1, len(texts) // PER_CLASS)][:PER_CLASS]]
    looked = list({id(s): s for s in looked}.values())  # a multi-label text counted once
    words = [set(WORD.findall(s.text[:CHARS].casefold())) for s in looked]
    everywhere = Counter(w for found in words for w in found)
    telling = []
    for c in by_class:
        inside = [found for s, found in zip(looked, words) if c in _classes(s.label)]
        n_c, n_other = len(inside), len(looked) - len(inside)
        if n_c < MIN_CLASS or not n_other:
            continue
        for word, k in Counter(w for found in inside for w in found).items():
            share, other = k / n_c, (everywhere[word] - k) / n_other
            if share >= HOLDS and other <= OTHERS:
                telling.append((share - other, f"'{word}' in {share:.0%} of '{classes[c]}' texts "
                                               f"(other classes {other:.1%})"))
    if not telling:
        return []
    said = [text for _, text in sorted(telling, reverse=True)]
    more = f", and {len(said) - SHOWN} more" if len(said) > SHOWN else ""
    example = next((shown(s.text)[:80] for s in looked if said[0].split("'")[1] in s.text.casefold()), "")
    return [f"a word alone tells classes apart: {'; '.join(said[:SHOWN])}{more} (e.g. {example!r}). If it is not "
            "what the class is about (a source's byline or signature, a template's phrase), the model can learn it "
            "instead of what the texts say, and a validation split drawn from the same files will not notice: "
            "remove it from the texts, or collect each class from the same sources"]
