"""Small real datasets that install from the registries, written out as image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(folder: str | Path, scale: int = 4, per_class: int | None = None) -> Path:
    """scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels) as PNG class folders.

    ``per_class`` keeps only the first N images of each digit.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("The digits demo needs scikit-learn: pip install scikit-learn") from exc
    folder = Path(folder)
    digits = load_digits()
    if (folder / "done").exists():
        return folder
    kept: dict[int, int] = {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        kept[label] = kept.get(label, 0) + 1
        if per_class is not None and kept[label] > per_class:
            continue
        target = folder / str(label)
        target.mkdir(parents=True, exist_ok=True)
        pixels = (255 - image * 255 / 16).astype(np.uint8)  # dark ink on white paper
        Image.fromarray(pixels).resize((8 * scale, 8 * scale), Image.Resampling.NEAREST).save(target / f"{i:04d}.png")
    (folder / "done").write_text(f"{sum(min(k, per_class or k) for k in kept.values())} images\n")
    return folder


def write_faces(folder: str | Path) -> Path:
    """scikit-image's ``lfw_subset``: 100 faces and 100 non-faces, 25x25 grey, as PNG class folders."""
    from skimage import data as skdata

    folder = Path(folder)
    images = skdata.lfw_subset()
    for i, image in enumerate(images):
        target = folder / ("face" if i < 100 else "not_face")
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(target / f"{i:03d}.png")
    return folder
