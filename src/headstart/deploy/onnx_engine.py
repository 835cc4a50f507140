"""Predict with an exported ONNX model and its sidecar JSON: numpy, PIL, onnxruntime and tokenizers, no torch.

The sidecar (``model.onnx.json``, written by ``headstart export``) says what the graph takes: for image
runs the decoding (EXIF rotation, 8-bit RGB, intensity windowing when the run recorded it), the resize
of the shorter side, the centre crop (multi-label runs: the whole image resized to the input square) and
mean/std; for text runs the tokenizer file, ``max_length`` and the padding id; for detection runs the
letterbox (the graph decodes the boxes and runs NMS itself); for segmentation runs the shorter-side resize
(the graph takes any height and width) and the upsampling of the logits back to each image's own size.
Multi-label rows use the per-class thresholds the sidecar carries. The image decoding below mirrors
``headstart.tasks.image.transforms`` step by step (that module imports torch); ``tests/test_export.py`` checks
that both decode the same pixels.

>>> engine = OnnxEngine.from_run("runs/ants")          # RUN/model.onnx
>>> engine.predict(["ant.jpg"], top_k=2)[0]["label"]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from headstart.errors import RunFolderError
from headstart.tasks.classification.familiarity import Familiarity
from headstart.tasks.classification.familiarity import warning as familiarity_warning
from headstart.tasks.classification.operating_point import OperatingPoint
from headstart.tasks.detection import clipped_to_image
from headstart.tasks.image.decode import (  # noqa: F401
    IMAGE_EXTENSIONS,
    decode,
    image_files,
    image_header,
    open_image,
    output_stems,
    predict_items,
    quiet_pil,
    too_large_reason,
    unreadable_reason,
)
from headstart.tasks.image.pixel_tables import item_name, prediction_items
from headstart.tasks.image.stored import payload
from headstart.tasks.text import PART_SEP, as_texts, is_blank, shown

DEFAULT_FILE = "model.onnx"
TASKS = ("image", "text", "multilabel", "text-multilabel", "detection", "segmentation")  # the exports it runs
TEXT_TASKS = ("text", "text-multilabel")  # their models take token ids
TAG_TASKS = ("multilabel", "text-multilabel")  # a sigmoid and a threshold per class


def sidecar_path(model_file: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return Path(str(model_file) + ".json")


def read_sidecar(model_file: str | Path) -> dict[str, Any]:
    """The sidecar JSON of an exported model; RunFolderError when it is missing or unreadable."""
    path = sidecar_path(model_file)
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunFolderError(f"{path} not found: an exported model needs its sidecar JSON (written by "
                             "'headstart export RUN'); export it again") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunFolderError(f"{path} cannot be read as JSON ({exc}); export the model again") from None
    if not isinstance(meta, dict) or "task" not in meta or "preprocessing" not in meta:
        raise RunFolderError(f"{path} lacks 'task' or 'preprocessing': it was not written by 'headstart export'")
    return meta


# ------------------------------------------------------------------------------------ image decoding
def decode_image(data: bytes | Path, short_side: int, interpolation: str, intensity: str = "off") -> Image.Image:
    """8-bit RGB, shorter side resized to ``short_side``: training's own decoding (``tasks/image/decode.py``)."""
    return decode(data, short_side, interpolation, intensity)


def image_array(image: Image.Image, pre: dict[str, Any]) -> np.ndarray:
    """A decoded image as the graph's ``(3, crop, crop)`` float32 input: centre crop (or, with ``square`` in
    ``pre``, the whole image resized to that square, as torchvision's bilinear Resize of a PIL image), /255,
    mean/std."""
    if "square" in pre:
        side = int(pre["square"])
        pixels = np.asarray(image.resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32) / np.float32(255)
        mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
        return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))
    size = int(pre["center_crop"])
    w, h = image.size
    if w < size or h < size:  # torchvision's CenterCrop pads with zeros first
        canvas = Image.new("RGB", (max(w, size), max(h, size)))
        canvas.paste(image, ((max(w, size) - w) // 2, (max(h, size) - h) // 2))
        image, (w, h) = canvas, canvas.size
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / np.float32(255.0)
    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def read_image(path: Path | tuple[str, bytes], pre: dict[str, Any]) -> np.ndarray | str:
    """The graph input of one image file (or ``(name, bytes)`` in memory), or why it cannot be read (the torch path's
    reasons)."""
    image = read_decoded(path, pre)
    return image if isinstance(image, str) else image_array(image, pre)


def read_decoded(path: Path | tuple[str, bytes], pre: dict[str, Any]) -> Image.Image | str:
    """One image file (or ``(name, bytes)``: a table of pixels' row) decoded as the run decodes it (shorter side to
    ``resize_shorter_side``), or why it cannot be."""
    try:
        data = payload(path[1]) if isinstance(path, tuple) else path.read_bytes()
    except OSError as exc:
        return f"cannot open file ({exc.strerror or exc})"
    if not data:
        return "empty file (0 bytes)"
    try:
        with quiet_pil():
            _, width, height = image_header(data)
            if (too_large := too_large_reason(width, height, pre.get("max_pixels"))) is not None:
                return too_large
            image = decode_image(data, int(pre["resize_shorter_side"]), pre["interpolation"],
                                 pre.get("intensity", "off"))
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        return unreadable_reason(exc)
    return image


def displayed_size(path: Path | bytes) -> tuple[int, int]:
    """Width and height of an image file (or its bytes) as displayed (EXIF rotation applied), from its header."""
    return image_header(path)[1:]


def item_source(item: Path | tuple[str, Any]) -> Path | bytes:
    """What an item of ``prediction_items`` is read from: its file, or the bytes of an image in memory."""
    return payload(item[1]) if isinstance(item, tuple) else item


def letterbox_array(image: Image.Image, size: int, fill: int = 114) -> np.ndarray:
    """A decoded image as the detection graph's ``(3, size, size)`` input in [0, 1]: longer side to ``size``
    (bilinear, antialiased), padded right and bottom with ``fill``, as ``detection.data.Letterbox``, which resizes
    8-bit images with PIL too: the same pixels (torchvision's uint8 resize rounds about one value in 1000 the other
    way)."""
    w, h = image.size
    scale = size / max(w, h)
    resized = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), (fill, fill, fill))
    canvas.paste(resized, (0, 0))
    return np.ascontiguousarray(np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0))


def open_full(path: Path | bytes) -> Image.Image | str:
    """An image file as 8-bit RGB at its own size, EXIF rotation applied (``Segmenter.predict``'s decoding), or why
    it cannot be read, in that path's words."""
    from headstart.tasks.image.decode import to_rgb

    try:
        return to_rgb(open_image(path))
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not fatal
        return f"cannot be read as an image ({type(exc).__name__}: {exc})"


def shorter_side_size(width: int, height: int, short: int) -> tuple[int, int]:
    """``(width, height)`` with the shorter side at ``short``, the longer ``int(short x longer / shorter)``
    (torchvision's ``Resize(short)``)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def segmentation_array(image: Image.Image, pre: dict[str, Any]) -> np.ndarray:
    """A decoded image as the segmentation graph's ``(3, h, w)`` float32 input: shorter side to
    ``resize_shorter_side`` (PIL bilinear, antialiased: torchvision's ``Resize(antialias=True)`` rounds about one
    8-bit value in 1000 differently), /255, mean/std."""
    size = shorter_side_size(image.width, image.height, int(pre["resize_shorter_side"]))
    resized = image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.float32) / np.float32(255.0)
    mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def _linear_taps(out_size: int, in_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of a bilinear resize along one axis, half-pixel centres (``align_corners=False``),
    computed in float32 as torch's CPU kernel does."""
    scale = np.float32(in_size) / np.float32(out_size)
    src = np.maximum((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsampled_mask(logits: np.ndarray, height: int, width: int, rows: int = 128) -> np.ndarray:
    """The argmax over classes of ``logits (classes, h, w)`` resized bilinearly to ``height x width``
    (``F.interpolate(mode="bilinear", align_corners=False)``), as ``(height, width)`` uint8; ``rows`` output rows at
    a time, so that large images need little memory."""
    logits = logits.astype(np.float32, copy=False)
    y0, y1, wy = _linear_taps(height, logits.shape[1])
    x0, x1, wx = _linear_taps(width, logits.shape[2])
    mask = np.empty((height, width), np.uint8)
    for start in range(0, height, rows):
        sl = slice(start, min(start + rows, height))
        a, b, t = logits[:, y0[sl]], logits[:, y1[sl]], wy[sl][None, :, None]
        band = (np.float32(1) - t) * a + t * b  # (classes, rows, w)
        u = wx[None, None, :]
        band = (np.float32(1) - u) * band[:, :, x0] + u * band[:, :, x1]
        mask[sl] = band.argmax(0)
    return mask


def save_mask(mask: np.ndarray, image: Image.Image, palette: list[list[int]], folder: Path, stem: str) -> None:
    """``stem.png`` (the class indices as a palette PNG) and ``stem_overlay.png`` (the classes' colours blended
    half over the image), as ``Segmenter.predict(save_masks=...)`` writes them."""
    colours = np.zeros((256, 3), np.uint8)
    colours[:len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    index = Image.fromarray(mask, mode="P")
    index.putpalette(colours.ravel().tolist())
    index.save(folder / f"{stem}.png")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    blend = np.where((mask == 255)[..., None], rgb, 0.5 * rgb + 0.5 * colours[mask].astype(np.float32))
    Image.fromarray(blend.clip(0, 255).astype(np.uint8)).save(folder / f"{stem}_overlay.png")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------ the engine
class OnnxEngine:
    """An exported model run by ONNX Runtime; rows like ``ImageClassifier`` / ``TextClassifier`` /
    ``MultiLabelClassifier`` / ``Detector.predict``."""

    def __init__(self, model_file: str | Path, threads: int | None = None, meta: dict[str, Any] | None = None) -> None:
        """``meta``: the sidecar's content (read from ``<model_file>.json`` when not given)."""
        import onnxruntime as ort

        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise RunFolderError(f"Exported model not found: {self.model_file}; write it with 'headstart export RUN'")
        self.meta = read_sidecar(self.model_file) if meta is None else meta
        if meta is None and not self.meta.get("parity", {}).get("passed", False):
            raise RunFolderError(f"{self.model_file} failed its parity check (see {sidecar_path(self.model_file).name}):"
                                 " export it again ('headstart export RUN') or predict with --engine torch")
        if self.meta.get("format") != "onnx":
            raise RunFolderError(f"{self.model_file} is a {self.meta.get('format')} export; the ONNX engine runs "
                                 "'headstart export RUN --format onnx' files")
        if self.meta["task"] not in TASKS:
            raise RunFolderError(f"The ONNX engine predicts {', '.join(TASKS)} models; {self.model_file} holds "
                                 f"a '{self.meta['task']}' model")
        self.task, self.classes = self.meta["task"], list(self.meta["classes"])
        self.item_key = "text" if self.task in TEXT_TASKS else "path"
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.model_file), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.batch_size = 32 if self.meta.get("dynamic_batch", True) else 1
        self.thresholds = [float(t) for t in self.meta.get("thresholds") or []]  # multi-label: one per class
        self.temperature = float(self.meta.get("temperature", 1.0))  # the logits' divisor (calibration)
        point = self.meta.get("operating_point")  # the threshold on p(positive) that decides (None: argmax)
        self.operating_point = None if point is None else OperatingPoint.from_dict(point, self.classes)
        if self.task in TAG_TASKS and len(self.thresholds) != len(self.classes):
            raise RunFolderError(f"{sidecar_path(self.model_file).name} holds {len(self.thresholds)} thresholds for "
                                 f"{len(self.classes)} classes: export the model again")
        self._tokenizer: Any = None
        self.inputs_: list[str] = []  # the last predict_proba's inputs, in order
        self.unreadable_: list[tuple[str, str]] = []  # (input, why) of those that could not be read
        self.familiar = self._familiarity()  # the unfamiliar-input check (None: the export has none)
        self.unfamiliar_: list[bool] = []  # the last predict_proba's items that are unlike the training items

    def _familiarity(self) -> Familiarity | None:
        """The check the sidecar names: its bank file beside the model file (an export without the ``features``
        output, or whose bank file is missing, predicts without it, the latter with a warning)."""
        found = self.meta.get("familiarity")
        if not found or "features" not in [o.name for o in self.session.get_outputs()]:
            return None
        path = self.model_file.parent / found["file"]
        if not path.is_file():
            from headstart.progress import warn

            warn(f"{path} not found (the sidecar names it): predicting without flagging unfamiliar inputs; copy it "
                 "beside the model file")
            return None
        return Familiarity.load(path)

    @classmethod
    def from_run(cls, run: str | Path, threads: int | None = None) -> OnnxEngine:
        """The run's default export, ``RUN/model.onnx``."""
        return cls(Path(run) / DEFAULT_FILE, threads)

    def logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's logits for one batch of its inputs (split into batches of one for fixed-batch exports)."""
        return self._outputs(inputs)[0]

    def _outputs(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """``(logits, features)`` of one batch (features: None without the unfamiliar-input check)."""
        n = len(next(iter(inputs.values())))
        if self.batch_size == 1 and n > 1:
            parts = [self._outputs({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(n)]
            return np.concatenate([p[0] for p in parts]), \
                None if self.familiar is None else np.concatenate([p[1] for p in parts])
        names = ["logits"] + (["features"] if self.familiar is not None else [])
        out = self.session.run(names, {k: inputs[k] for k in self.input_names})
        return out[0].astype(np.float32), out[1].astype(np.float32) if len(out) > 1 else None

    def _flag(self, features: list[np.ndarray | None]) -> None:
        """``unfamiliar_`` of the items whose features (batches, in the items' order) these are."""
        self.unfamiliar_ = self.familiar.unfamiliar(np.concatenate(features)) if self.familiar is not None and \
            features else []

    # ---------------------------------------------------------------- images
    def _image_probabilities(self, inputs: Sequence[str | Path]) -> tuple[list[Path], np.ndarray]:
        from headstart.progress import warn

        pre = self.meta["preprocessing"]
        kept, arrays = [], []
        files = prediction_items(inputs)  # files, folders' files, a table of pixels' rows
        self.inputs_, self.unreadable_ = [item_name(f) for f in files], []
        for path in files:
            result = read_image(path, pre)
            if isinstance(result, str):
                warn(f"skipped {item_name(path)}: {result}")
                self.unreadable_.append((item_name(path), result))
                continue
            kept.append(Path(item_name(path)))
            arrays.append(result)
        self.unfamiliar_ = []
        if not kept:
            return [], np.empty((0, len(self.classes)), np.float32)
        step = max(1, self.batch_size)
        outs = [self._outputs({"pixel_values": np.stack(arrays[i:i + step])}) for i in range(0, len(arrays), step)]
        self._flag([f for _, f in outs])
        return kept, self._activate(np.concatenate([logits for logits, _ in outs]))

    # ---------------------------------------------------------------- texts
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            pre = self.meta["preprocessing"]
            path = self.model_file.parent / pre["tokenizer"]
            if not path.is_file():
                raise RunFolderError(f"{path} not found: the tokenizer file the sidecar names; export the model again")
            tokenizer = Tokenizer.from_file(str(path))
            tokenizer.no_padding()
            tokenizer.enable_truncation(int(pre["max_length"]))
            self._tokenizer = tokenizer
        return self._tokenizer

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids with special tokens, cut to ``max_length``, as the run's ``transformers`` tokenizer gives them
        (a text's parts, read from several columns, separated as ``tokenize`` separates them)."""
        sep = self.meta["preprocessing"].get("part_separator", " ")
        texts = [t.replace(PART_SEP, sep) for t in texts]
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def _text_probabilities(self, texts: str | Sequence[str]) -> tuple[list[str], np.ndarray]:
        from headstart.progress import warn

        texts = as_texts(texts)
        kept = [t for t in texts if not is_blank(t)]
        self.inputs_, self.unreadable_ = [shown(t) for t in texts], []
        if len(kept) < len(texts):
            warn(f"{len(texts) - len(kept)} empty text(s) left out")
        self.unfamiliar_ = []
        if not kept:
            return [], np.empty((0, len(self.classes)), np.float32)
        ids = self.token_ids(kept)
        pad = int(self.meta["preprocessing"].get("pad_token_id", 0))
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        out = np.empty((len(ids), len(self.classes)), np.float32)
        features: list[Any] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            longest = max(len(ids[i]) for i in rows)
            input_ids = np.full((len(rows), longest), pad, np.int64)
            mask = np.zeros((len(rows), longest), np.int64)
            for r, i in enumerate(rows):
                input_ids[r, :len(ids[i])], mask[r, :len(ids[i])] = ids[i], 1
            out[rows], found = self._outputs({"input_ids": input_ids, "attention_mask": mask})
            for r, i in enumerate(rows):
                features[i] = None if found is None else found[r:r + 1]
        self._flag(features if self.familiar is not None else [])
        return [shown(t) for t in kept], self._activate(out)

    def _activate(self, logits: np.ndarray) -> np.ndarray:
        z = logits / self.temperature  # calibrated on validation
        return sigmoid(z) if self.task in TAG_TASKS else softmax(z)

    # ---------------------------------------------------------------- detection
    def detect(self, inputs: Any, top_k: int | None = None) -> list[dict[str, Any]]:
        """``Detector.predict``'s rows: ``path``, ``width``, ``height``, ``detections`` (label, score, box in image
        pixels), best first, at most ``top_k``; unreadable files in ``unreadable_``."""
        from headstart.progress import warn

        pre = self.meta["preprocessing"]
        size = int(pre["letterbox"]["size"])
        files = prediction_items(predict_items(inputs))  # files, folders' files, images in memory
        self.inputs_, self.unreadable_ = [item_name(f) for f in files], []
        rows = []
        for path in files:
            image = read_decoded(path, pre)
            if isinstance(image, str):
                warn(f"skipped {item_name(path)}: {image}")
                self.unreadable_.append((item_name(path), image))
                continue
            boxes, scores, labels = self.session.run(["boxes", "scores", "labels"],
                                                     {"images": letterbox_array(image, size, pre["letterbox"]["fill"])[None]})
            width, height = displayed_size(item_source(path))
            factor = width / image.width / (size / max(image.width, image.height))
            boxes, inside = clipped_to_image(boxes.astype(np.float32) * np.float32(factor), width, height)
            order = np.argsort(-scores, kind="stable")
            order = order[inside[order]][: top_k or None]  # none in the letterbox's padding (Detector.predict's)
            rows.append({"path": item_name(path), "width": width, "height": height, "detections": [
                {"label": self.classes[int(labels[i]) - 1], "score": round(float(scores[i]), 4),
                 "box": [round(float(v), 1) for v in boxes[i]]} for i in order]})
        return rows

    # ---------------------------------------------------------------- segmentation
    def segment(self, inputs: Any, top_k: int | None = None, save_masks: str | Path | None = None) -> list[dict[str, Any]]:
        """``Segmenter.predict``'s rows: ``path``, ``width``, ``height``, ``fractions`` (share of the pixels per class,
        largest first, the first ``top_k``) and ``mask`` ((H, W) uint8 class indices at the image's own size: the
        graph's logits upsampled bilinearly, then argmax); ``save_masks``: a folder for ``NAME.png`` and
        ``NAME_overlay.png``. Unreadable files in ``unreadable_``."""
        from headstart.progress import warn

        pre = self.meta["preprocessing"]
        files = prediction_items(predict_items(inputs))  # files, folders' files, images in memory
        self.inputs_, self.unreadable_ = [item_name(f) for f in files], []
        folder = Path(save_masks) if save_masks is not None else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        n, rows = len(self.classes), []
        names = output_stems(self.inputs_, save_masks)  # x.png of two folders: a_x.png, b_x.png
        for i, path in enumerate(files):
            image = open_full(item_source(path))
            if isinstance(image, str):
                warn(f"skipped {item_name(path)}: {image}")
                self.unreadable_.append((item_name(path), image))
                continue
            logits = self.logits({"pixel_values": segmentation_array(image, pre)[None]})[0]
            mask = upsampled_mask(logits, image.height, image.width)
            counts = np.bincount(mask.ravel(), minlength=n)[:n]
            order = np.argsort(-counts, kind="stable")
            fractions = {self.classes[c]: round(float(counts[c]) / mask.size, 6) for c in order if counts[c]}
            if top_k:
                fractions = dict(list(fractions.items())[:top_k])
            rows.append({"path": item_name(path), "width": image.width, "height": image.height, "fractions": fractions,
                         "mask": mask})
            if folder is not None:
                save_mask(mask, image, self.meta.get("palette") or [], folder, names[i])
        return rows

    # ---------------------------------------------------------------- every task
    def predict_proba(self, inputs: Any) -> tuple[list[Any], np.ndarray]:
        """``(items, probabilities[n_items, n_classes])`` of the items that could be read (multi-label: one
        sigmoid probability per class)."""
        if self.task in ("detection", "segmentation"):
            raise RunFolderError(f"predict_proba is for classifiers; a {self.task} export predicts "
                                 f"{'boxes' if self.task == 'detection' else 'masks'}: use predict")
        if self.task in TEXT_TASKS:
            return self._text_probabilities(inputs)
        return self._image_probabilities(predict_items(inputs))

    def predict(self, inputs: Any, top_k: int | None = 1, errors: bool = False,
                save_masks: str | Path | None = None) -> list[dict[str, Any]]:
        """One row per readable item, as the run's estimator gives it: ``path``/``text``, ``label``,
        ``probability``, ``top_k`` (class, probability); multi-label: ``labels`` (each at or above its threshold,
        most probable first, at most ``top_k``) and ``probabilities``; detection: boxes (see ``detect``);
        segmentation: masks and the share of pixels per class (see ``segment``; ``save_masks`` applies to it only).

        ``errors=True``: also a row ``{"path": ..., "error": why}`` per unreadable input, all in input order.
        """
        if save_masks is not None and self.task != "segmentation":
            raise RunFolderError(f"save_masks applies to segmentation exports; {self.model_file} holds a "
                                 f"'{self.task}' model")
        if self.task == "segmentation":
            rows = self.segment(inputs, top_k, save_masks)
        elif self.task == "detection":
            rows = self.detect(inputs, top_k)
        elif self.task in TAG_TASKS:
            rows = self._tag_rows(*self.predict_proba(inputs), top_k)
        else:
            rows = self._class_rows(*self.predict_proba(inputs), top_k)
        if self.familiar is not None and self.task not in ("detection", "segmentation"):
            from headstart.progress import warn

            rows = [{**r, "unfamiliar": odd} for r, odd in zip(rows, self.unfamiliar_)]
            said = familiarity_warning(self.unfamiliar_, "texts" if self.task in TEXT_TASKS else "images")
            if said:
                warn(said)
        if not errors:
            return rows
        from headstart.tasks.classification.estimator import with_error_rows  # imports no torch

        return with_error_rows(rows, self.unreadable_, self.item_key, self.inputs_)

    def _tag_rows(self, items: list[Any], probs: np.ndarray, top_k: int | None) -> list[dict[str, Any]]:
        rows = []
        for item, p in zip(items, probs):
            on = [i for i in range(len(self.classes)) if p[i] >= np.float32(self.thresholds[i])]
            found = sorted(((self.classes[i], float(p[i])) for i in on), key=lambda pair: -pair[1])[:top_k]
            rows.append({self.item_key: str(item), "labels": [{"label": c, "probability": v} for c, v in found],
                         "probabilities": {c: float(v) for c, v in zip(self.classes, p)}})
        return rows

    def _class_rows(self, items: list[Any], probs: np.ndarray, top_k: int | None) -> list[dict[str, Any]]:
        k = max(1, min(top_k or 1, len(self.classes)))
        rows = []
        for item, p in zip(items, probs):
            order = np.argsort(-p, kind="stable")[:k]
            label = int(order[0]) if self.operating_point is None else self.operating_point.decide_one(p)
            rows.append({self.item_key: str(item), "label": self.classes[label], "probability": float(p[label]),
                         "top_k": [(self.classes[int(i)], float(p[i])) for i in order]})
        return rows
