"""Supervisely's project format, as Supervisely and Dataset Ninja download datasets: ``meta.json`` (the project's
classes) beside a folder per dataset, each holding ``img/`` (the images) and ``ann/`` (``NAME.json`` per image
``NAME``: its ``size``, its ``tags`` (the image's classes) and its ``objects``, each a ``classTitle``, a
``geometryType`` and ``points.exterior`` in pixels, or a ``bitmap``: ``data``, a PNG of the object's pixels, compressed
with zlib and written in base64, its top-left corner at ``origin``). Rectangles, polygons and bitmaps are regions
(a bitmap's box: its PNG's extent, as Supervisely crops it); points and lines are named, not read."""

from __future__ import annotations

import base64
import binascii
import io
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headstart.errors import DataError
from headstart.tasks.exports.regions import Region, Task, fitted, region

META = "meta.json"


@dataclass(frozen=True)
class Bitmap:
    """A Supervisely bitmap object's pixels: ``data`` as the annotation holds it, its top-left corner at ``origin``
    (x, y) in an image of ``size`` (height, width) as the annotation gives it. Decoded when a mask is drawn."""

    data: str
    origin: tuple[int, int]
    size: tuple[int, int]

    def png(self) -> Any:
        """The PNG as a PIL image (its pixels read when used; ValueError when ``data`` holds no PNG)."""
        from PIL import Image

        try:
            return Image.open(io.BytesIO(zlib.decompress(base64.b64decode(self.data, validate=True))))
        except (binascii.Error, zlib.error, OSError) as exc:
            raise ValueError(f"its data is not a zlib-compressed PNG in base64 ({exc})") from None

    def patch(self) -> Any:
        """(h, w) bool array of the object's pixels: the PNG's alpha (Supervisely writes a two-colour palette whose
        colour 0 is transparent), or its non-zero pixels when it has no transparency."""
        import numpy as np

        image = self.png()
        if "A" in image.getbands() or "transparency" in image.info:
            return np.asarray(image.convert("RGBA"))[..., 3] > 0
        return np.asarray(image.convert("L")) > 0

    def mask(self, height: int, width: int) -> Any:
        """(height, width) bool mask of an image of that size (the annotation's, else resized to it, nearest)."""
        import numpy as np

        rows, cols = self.size
        out = np.zeros((rows, cols), dtype=bool)
        patch, (x, y) = self.patch(), self.origin
        top, left = max(y, 0), max(x, 0)
        cut = patch[top - y:max(rows - y, 0), left - x:max(cols - x, 0)]
        out[top:top + cut.shape[0], left:left + cut.shape[1]] = cut
        return fitted(out, height, width)


def _bitmap(obj: dict[str, Any], label: str, width: float, height: float) -> Region:
    """A bitmap object as a region: the box of its PNG at its origin, its pixels read when drawn (ValueError when its
    data or origin is unreadable)."""
    try:
        x, y = (int(v) for v in obj["bitmap"]["origin"])
        pixels = Bitmap(str(obj["bitmap"]["data"]), (x, y), (int(height), int(width)))
    except (KeyError, TypeError, ValueError):
        raise ValueError("a bitmap without 'data' and an 'origin' of [x, y]") from None
    w, h = pixels.png().size
    box = [(max(x, 0), max(y, 0)), (min(x + w, width), max(y, 0)), (min(x + w, width), min(y + h, height)),
           (max(x, 0), min(y + h, height))]
    return Region(label, [(px / width, py / height) for px, py in box], "bitmap", pixels)


def datasets(folder: Path) -> dict[str, Path]:
    """``{name: folder}`` of a Supervisely project's datasets (folders of ``img/`` and ``ann/`` beside ``meta.json``
    with its ``classes``); {} for any other folder."""
    meta = folder / META
    if not meta.is_file():
        return {}
    try:
        found = json.loads(meta.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(found, dict) or "classes" not in found:
        return {}
    return {d.name: d for d in sorted(folder.iterdir()) if (d / "ann").is_dir() and (d / "img").is_dir()}


def read_supervisely(path: Path) -> list[Task]:
    """The images of a project (every dataset) or of one dataset folder, as tasks: the image's path, its tags (the
    choices) and its rectangles, polygons and bitmaps (the regions)."""
    sets = [path] if (path / "ann").is_dir() else list(datasets(path).values())
    tasks: list[Task] = []
    for folder in sets:
        for ann in sorted((folder / "ann").glob("*.json")):
            try:
                found = json.loads(ann.read_text(encoding="utf-8-sig"))
                height, width = float(found["size"]["height"]), float(found["size"]["width"])
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
                raise DataError(f"{ann}: not a readable Supervisely annotation (a 'size' of 'height' and 'width', "
                                "'objects')") from None
            task = Task(len(tasks) + 1, {"image": str((folder / "img" / ann.name[:-len(".json")]).absolute())}, True)
            task.choices += [str(t["name"]).strip() for t in found.get("tags") or []
                             if isinstance(t, dict) and str(t.get("name") or "").strip()]
            for obj in found.get("objects") or []:
                kind, label = str(obj.get("geometryType")), str(obj.get("classTitle") or "").strip()
                task.kinds.append(kind)
                if kind not in ("rectangle", "polygon", "bitmap") or not label:
                    continue
                if kind == "bitmap":
                    try:
                        task.regions.append(_bitmap(obj, label, width, height))
                    except ValueError as exc:
                        raise DataError(f"{ann}: object {len(task.kinds)} ({label}): {exc}") from None
                    continue
                try:
                    points = [(float(x), float(y)) for x, y in obj["points"]["exterior"]]
                except (KeyError, TypeError, ValueError):
                    raise DataError(f"{ann}: a {kind} without points.exterior of [x, y] pairs") from None
                if kind == "rectangle" and len(points) == 2:
                    (x1, y1), (x2, y2) = points
                    points = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
                found_region = region(label, points, width, height, "box" if kind == "rectangle" else "polygon")
                task.regions += [found_region] if found_region is not None else []
            tasks.append(task)
    return tasks
