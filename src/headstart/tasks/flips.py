"""Which mirror images keep an item's label (``data.flip``), for every image task's training augmentation.

A random horizontal flip is the default augmentation of photos: a mirrored dog is still a dog. It is wrong where a
mirror image is another class: GTSRB's "Turn left ahead" flipped is "Turn right ahead", EMNIST's ``b`` flipped is
``d``, a segmentation's "left lung" flipped lies where the "right lung" is. Trained on such flips, the model sees
each of those items under both labels. ``auto`` therefore flips horizontally unless the classes come in mirror pairs
(names that differ only by left/right, or the letters b/d and p/q), and says so. Vertical flips (``vertical``,
``both``) suit images without an up: microscopy, histology, aerial and satellite views; they are asked for by name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torchvision.transforms import v2

from headstart.progress import say, warn

FLIPS = ("auto", "horizontal", "vertical", "both", "none")
# words (and single letters) that a mirror image turns into each other, by flip
_MIRRORED = {
    "horizontal": {"left": "right", "right": "left", "b": "d", "d": "b", "p": "q", "q": "p"},
    "vertical": {"up": "down", "down": "up", "top": "bottom", "bottom": "top", "upper": "lower", "lower": "upper",
                 "above": "below", "below": "above", "b": "p", "p": "b", "d": "q", "q": "d"},
}
_WORD = re.compile(r"[A-Za-z]+|[0-9]+|[^A-Za-z0-9]+")


def _words(name: str) -> list[str]:
    """``name`` cut into words (camelCase split too), separators kept: 'TurnLeft_ahead' -> Turn Left _ ahead."""
    return _WORD.findall(re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name))


def _key(name: str) -> str:
    """A class name compared without case and separators: 'Turn left' and 'TurnLeft' are one name."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


def mirror_pairs(classes: Sequence[str], flip: str = "horizontal") -> list[tuple[str, str]]:
    """Pairs of classes that ``flip`` (horizontal or vertical) turns into each other: the names differ only by
    mirrored words (any case) or are mirrored single letters (case kept: ``b``/``d``, not ``B``/``D``)."""
    swap = _MIRRORED[flip]
    exact = {c.strip(): c for c in classes}
    by_key = {_key(c): c for c in classes}
    pairs: list[tuple[str, str]] = []
    for c in classes:
        name = c.strip()
        if len(name) == 1:  # a letter: only the lower-case ones mirror into each other
            partner = exact.get(swap.get(name, "")) if name.islower() else None
        else:
            mirrored = _key("".join(swap.get(w.lower(), w) if len(w) > 1 else w for w in _words(name)))
            partner = by_key.get(mirrored) if mirrored != _key(name) else None
        if partner is not None and (partner, c) not in pairs:
            pairs.append((c, partner))
    return pairs


@dataclass(frozen=True)
class Flips:
    """The flips a training transform draws, and why (``note``: None when nothing needs saying)."""

    horizontal: bool = True
    vertical: bool = False
    note: str | None = None
    swaps: bool = False  # a flip asked for by name turns some classes into each other

    def steps(self) -> list[Any]:
        """The torchvision transforms (each a coin flip per item)."""
        return [*([v2.RandomHorizontalFlip()] if self.horizontal else []),
                *([v2.RandomVerticalFlip()] if self.vertical else [])]

    @property
    def name(self) -> str:
        return {(True, True): "both", (True, False): "horizontal", (False, True): "vertical"}.get(
            (self.horizontal, self.vertical), "none")


def _shown(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"'{a}' / '{b}'" for a, b in pairs[:3]) + (f" and {len(pairs) - 3} more" if len(pairs) > 3 else "")


def choose(setting: str, classes: Sequence[str], unmirrored: str = "") -> Flips:
    """The flips for ``data.flip`` = ``setting`` on these classes (ValueError for an unknown setting).

    ``auto``: horizontal unless the classes come in horizontal mirror pairs, or the data's reader knows that a mirror
    image of its items is none of them (``unmirrored``, why: MNIST's handwriting), then none. A flip asked for by name
    is drawn even then, with a note naming the pairs it swaps."""
    if setting not in FLIPS:
        raise ValueError(f"data.flip must be one of {', '.join(FLIPS)}, not {setting!r}")
    if setting == "none":
        return Flips(False, False)
    if setting == "auto" and unmirrored:
        return Flips(False, False, f"No flips in training: {unmirrored} (data.flip=horizontal to flip anyway)")
    if setting == "auto":
        pairs = mirror_pairs(classes, "horizontal")
        if not pairs:
            return Flips(True, False)
        return Flips(False, False, f"No flips in training: the classes {_shown(pairs)} are mirror images of each "
                                   "other, and a flipped item would carry the wrong label (data.flip=horizontal to "
                                   "flip anyway)")
    flips = Flips(setting in ("horizontal", "both"), setting in ("vertical", "both"))
    swapped = [p for axis in ("horizontal", "vertical") if getattr(flips, axis)
               for p in mirror_pairs(classes, axis)]
    if swapped:
        return Flips(flips.horizontal, flips.vertical, swaps=True,
                     note=f"data.flip={setting}: the classes {_shown(swapped)} are mirror images of each other; a flipped "
                     "item keeps its label (data.flip=auto would not flip them)")
    return flips


def announce(flips: Flips) -> None:
    """Say ``flips.note``: a line when ``auto`` left the flips out, a warning when a flip asked for by name swaps
    mirror classes."""
    if flips.note:
        (warn if flips.swaps else say)(flips.note)


DEFAULT = Flips()  # a horizontal flip: the transforms' default, as before data.flip
