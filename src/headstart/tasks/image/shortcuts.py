"""What the files, not the pictures, say about the classes: shortcuts a model learns instead of what images show.

When one class's images are PNGs and the others' JPEGs, or one class's scans are grey and the others' colour, or
one class's images all share a size that the others' do not have, a network can tell the classes apart by how
the files were made (compression artefacts, channels, resizing) rather than by what they show. Such a model scores
well on a validation split drawn from the same files, then fails on images made another way; collections
assembled from several sources (one hospital's scans per class, one website per class) are often like this.
``traits`` describes each decoded image; ``shortcut_notes`` names the traits that tell the classes apart.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

TRAITS = ("format", "colour", "size")
COMMON = 0.05  # a value held by fewer than 5% of the images (and by fewer than MIN_COUNT) is never a shortcut
MIN_COUNT = 5
MIN_CLASS = 10  # classes of fewer training images are not judged
HOLDS = 0.8  # a shortcut: at least 80% of a class's images have the value...
OTHERS = 0.1  # ...and at most 10% of the other classes' images have it
GREY_SPREAD = 10  # an RGB image whose channels differ by at most this much (of 255) anywhere is grey
SHOWN = 3  # classes named in a note


def traits(image: Image.Image, fmt: str, width: int, height: int) -> tuple[str, str, str]:
    """(format, ``grey`` or ``colour``, ``W x H``) of a file: ``image`` as decoded (8-bit RGB), ``fmt`` its format
    (``DICOM:...`` counts as DICOM), ``width`` and ``height`` the file's own size."""
    thumb = np.asarray(image.convert("RGB").resize((16, 16)), dtype=np.int16)
    grey = int((thumb.max(axis=2) - thumb.min(axis=2)).max()) <= GREY_SPREAD
    return fmt.split(":")[0], "grey" if grey else "colour", f"{width} x {height}"


def _labels(label: object) -> tuple[int, ...]:
    """A sample's classes: its class index, or a multi-label sample's indices."""
    if label is None:
        return ()
    return tuple(label) if isinstance(label, (tuple, list)) else (int(label),)


def shortcut_notes(found: Mapping[Path, tuple[str, str, str]], samples: Sequence, classes: Sequence[str]) -> list[str]:
    """A warning for each trait (format, colour, size) whose value tells a class apart in ``samples`` (the training
    split: ``path`` and ``label``): at least ``HOLDS`` of the class's images have a value that at most ``OTHERS`` of
    the other images have. ``found``: ``traits`` of each image that was read."""
    rows = [(found[s.path], _labels(s.label)) for s in samples if s.path in found and s.label is not None]
    n = len(rows)
    per_class = Counter(c for _, labels in rows for c in labels)
    notes = []
    for i, trait in enumerate(TRAITS):
        values = Counter(t[i] for t, _ in rows)
        common = {v for v, k in values.items() if k >= max(MIN_COUNT, COMMON * n)}
        if len(values) < 2 or not common:
            continue
        together: dict[str, Counter] = defaultdict(Counter)  # value -> class -> images of the class with it
        for t, labels in rows:
            if t[i] in common:
                together[t[i]].update(labels)
        telling = []
        for c, n_c in per_class.items():
            if n_c < MIN_CLASS or n_c == n:
                continue
            for v in common:
                inside, outside = together[v][c] / n_c, (values[v] - together[v][c]) / (n - n_c)
                if inside >= HOLDS and outside <= OTHERS:
                    telling.append((inside - outside, f"'{classes[c]}' {inside:.0%} {v} (other classes {outside:.0%})"))
        if telling:
            said = [text for _, text in sorted(telling, reverse=True)]
            more = f", and {len(said) - SHOWN} more" if len(said) > SHOWN else ""
            notes.append(f"the image {trait} tells classes apart: {'; '.join(said[:SHOWN])}{more}. A model can learn "
                         f"how the files were made instead of what they show, and a validation split drawn from the "
                         f"same files will not notice; give every class images from the same sources, or make their "
                         f"{trait} alike")
    return notes
