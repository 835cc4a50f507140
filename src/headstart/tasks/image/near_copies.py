"""Near-copies: one picture saved twice (resized, recompressed, in another format, in grey), found by its pixels.

Byte-identical copies are found by their content keys when DATA is read (``data.py``). A picture saved again has
other bytes, and collections gathered from several sources often hold one picture at two sizes. When one copy is
in training and the other in validation, validation scores a picture the model has learned, and says the model
is better than it is on new pictures; when the two copies carry different labels, one of them is wrong.

Each decoded image leaves a 16 x 16 grey thumbnail (``thumbnail``, 256 bytes). Pairs are found through a 64-bit
hash of it (the signs of its 8 x 8 block means about its mean), cut in four bands: an image is compared with the
images that share a band with it (a copy flips few bits, so it shares one), first by its 16 x 16 thumbnail, then
by 32 x 32 thumbnails of the decoded images. ``CLOSE``: re-saved copies of photos and of 40-pixel blood-cell crops
measured at most 0.09 apart; the closest distinct pictures measured (scikit-learn's handwritten digits) 0.13.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

THUMB = 16  # side of the thumbnail each image leaves
SHARP = 32  # side of the thumbnails that decide
LOOSE = 0.2  # at 16 x 16: mean |difference| of standardized thumbnails under which a pair is looked at closer
CLOSE = 0.1  # at 32 x 32: under it, a pair is one picture
BANDS = 4  # 64 hash bits in 4 bands of 16
CROWDED = 500  # a band value shared by more images than this (plain backgrounds) is not used to find pairs
CHECKED = 5  # an item's closest candidates at 16 x 16 that are compared at 32 x 32
KEPT = 4096  # 32 x 32 thumbnails kept while looking (4 kB each)
SHOWN = 2  # pairs named in a note
ALIKE = ("alike at 32 x 32 pixels: one picture saved again, resized, recompressed or in another format, or two pictures "
         "as good as identical")


def thumbnail(image: Image.Image) -> bytes:
    """The 16 x 16 grey thumbnail of a decoded image (256 bytes)."""
    return image.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR).tobytes()


def _standard(pixels: np.ndarray) -> np.ndarray:
    """Rows of pixels scaled to mean 0 and standard deviation 1 (a brighter copy is the same picture)."""
    pixels = pixels.astype(np.float32)
    return (pixels - pixels.mean(axis=-1, keepdims=True)) / (pixels.std(axis=-1, keepdims=True) + 1.0)


def _hashes(thumbs: np.ndarray) -> np.ndarray:
    """(N, BANDS) band values of each thumbnail's 64-bit hash: 8 x 8 block means above the thumbnail's mean."""
    blocks = thumbs.reshape(-1, 8, 2, 8, 2).mean(axis=(2, 4)).reshape(-1, 64)
    bits = (blocks > blocks.mean(axis=1, keepdims=True)).astype(np.uint64)
    weights = np.uint64(1) << np.arange(16, dtype=np.uint64)
    return np.stack([(bits[:, 16 * b:16 * (b + 1)] * weights).sum(axis=1) for b in range(BANDS)], axis=1)


@dataclass
class Pair:
    """``item`` (of the split looked in) is a near-copy of ``of`` (a training item), ``distance`` apart."""

    item: object
    of: object
    distance: float


def find(items: Sequence, pool: Sequence, thumbs: dict[Path, bytes], picture: Callable[[Path], Image.Image],
         same_pool: bool = False, exact: bool = False) -> list[Pair]:
    """For each of ``items`` (samples with ``path`` and ``key``) the closest near-copy among ``pool``, if any.

    ``thumbs``: each path's ``thumbnail`` (items without one are not looked at: unread, or nearly uniform);
    ``picture``: a path's decoded image, for the 32 x 32 check. ``same_pool``: ``items`` is ``pool`` (pairs within
    one split, each said once). Byte-identical pairs (same ``key``) are left to the content keys, unless ``exact``
    (a reader that does not look at the keys: detection)."""
    pool = [s for s in pool if s.path in thumbs]
    items = [s for s in items if s.path in thumbs]
    if not pool or not items:
        return []
    pool_thumbs = _standard(np.frombuffer(b"".join(thumbs[s.path] for s in pool), np.uint8).reshape(len(pool), -1))
    index: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(BANDS)]
    for i, bands in enumerate(_hashes(pool_thumbs)):
        for b, value in enumerate(bands):
            index[b][int(value)].append(i)
    item_thumbs = pool_thumbs if same_pool else _standard(
        np.frombuffer(b"".join(thumbs[s.path] for s in items), np.uint8).reshape(len(items), -1))
    sharp: dict[Path, np.ndarray] = {}  # 32 x 32 thumbnails made, at most KEPT of them

    def sharp_of(path: Path) -> np.ndarray:
        if path not in sharp:
            if len(sharp) >= KEPT:
                sharp.clear()
            small = picture(path).convert("L").resize((SHARP, SHARP), Image.Resampling.BILINEAR)
            sharp[path] = _standard(np.asarray(small).reshape(-1))
        return sharp[path]

    pairs = []
    for n, (item, bands) in enumerate(zip(items, _hashes(item_thumbs))):
        near = {i for b, value in enumerate(bands) if len(found := index[b].get(int(value), ())) <= CROWDED
                for i in found}
        near = np.array(sorted(i for i in near if (exact or pool[i].key != item.key) and (not same_pool or i > n)),
                        dtype=np.int64)
        if not len(near):
            continue
        loose = np.abs(pool_thumbs[near] - item_thumbs[n]).mean(axis=1)
        closest = np.argsort(loose, kind="stable")[:CHECKED]
        distances = [(float(np.abs(sharp_of(pool[i].path) - sharp_of(item.path)).mean()), int(i))
                     for i in near[closest[loose[closest] < LOOSE]]]
        best = min(distances, default=None)
        if best is not None and best[0] < CLOSE:
            pairs.append(Pair(item, pool[best[1]], best[0]))
    return pairs


def settle(splits: dict[str, list], thumbs: dict[Path, bytes], picture: Callable[[Path], Image.Image],
           held_out: bool, classes: Sequence[str], conflicts: bool = True, exact: bool = False) -> list[str]:
    """Notes on near-copies between training and the other splits, and (``conflicts``: items with a ``label``)
    within training under other labels.

    ``held_out``: headstart drew the validation split, so validation's near-copies of training pictures join
    training (``splits`` is changed), as byte-identical copies are kept on one side; DATA's own splits are said,
    not changed. The test split is never changed. ``exact``: byte-identical copies count too (``find``)."""
    notes = []
    for name, what in (("val", "validation"), ("test", "test")):
        pairs = find(splits[name], splits["train"], thumbs, picture, exact=exact)
        if not pairs:
            continue
        said = "; ".join(f"{p.item.path} ≈ {p.of.path}" for p in pairs[:SHOWN])
        if name == "val" and held_out and len(pairs) < len(splits["val"]):
            moved = {id(p.item) for p in pairs}
            splits["val"] = [s for s in splits["val"] if id(s) not in moved]
            splits["train"] += [p.item for p in pairs]
            notes.append(f"{len(pairs)} validation image(s) were near-copies of training images ({ALIKE}), e.g. "
                         f"{said}: moved to training, so that validation scores pictures the model has not learned")
        else:
            notes.append(f"{len(pairs)} of the {len(splits[name])} {what} images are near-copies of training images "
                         f"({ALIKE}), e.g. {said}: the {what} scores are optimistic. Remove the copies from one side")
    if not conflicts:
        return notes
    differ = [p for p in find(splits["train"], splits["train"], thumbs, picture, same_pool=True)
              if p.item.label != p.of.label]
    if differ:
        said = "; ".join(f"{p.item.path} ({_names(p.item.label, classes)}) ≈ {p.of.path} ({_names(p.of.label, classes)})"
                         for p in differ[:SHOWN])
        notes.append(f"{len(differ)} training image(s) are near-copies of training images under another label, "
                     f"e.g. {said}: one of each pair is mislabelled, or the classes overlap")
    return notes


def _names(label: object, classes: Sequence[str]) -> str:
    """A sample's class name(s): ``label`` is a class index or a tuple of them (multi-label)."""
    labels = label if isinstance(label, (tuple, list)) else (label,)
    return ", ".join(classes[i] for i in labels) or "no label"
