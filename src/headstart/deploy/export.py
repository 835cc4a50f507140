"""Export a run's model to ONNX or TorchScript, then check it against PyTorch on the run's validation items.

``export_run(run, "onnx")`` writes ``RUN/model.onnx`` (``model.fp16.onnx``, ``model.int8.onnx``;
TorchScript: ``model.torchscript.pt``), a sidecar ``<file>.json`` with everything needed to use the file
without headstart's training code, and the parity results in ``RUN/export.json``. The parity check runs
the run's PyTorch model at fp32 (eval mode, no autocast) and the exported file on the same inputs, made
from real validation items of the run's data; for ONNX it also runs ``OnnxEngine`` end to end from the
files or texts (its numpy/PIL preprocessing) against ``predict_proba`` of the PyTorch estimator. A check
outside ``TOLERANCES`` raises ``ExportError`` (the CLI exits with code 2) and the sidecar records
``passed: false``, which the ONNX engine refuses to run.

Multi-label runs export like image runs (the whole image resized to the input square) with their per-class
thresholds in the sidecar; their check compares the label sets at those thresholds. Detection runs export at
fp32 to ONNX or TorchScript (traced), one letterboxed image per call, checked box by box, and for ONNX also end to
end through the engine from the files (``match_detections``); fp16 and int8 are refused with the reason
(``DETECTION_REFUSALS``).

Segmentation runs export to ONNX (fp32, fp16) or TorchScript (fp32; tracing the half model failed on CPU): the
graph takes ``pixel_values [batch, 3, height, width]`` at any height and width (dynamic axes: an image keeps its
aspect ratio, its shorter side resized to ``segmentation.image_size`` as ``Segmenter.predict`` does) and returns
``logits [batch, classes, height, width]``.
The check compares the logits and the argmax masks pixel by pixel (``SEGMENTATION_TOLERANCES``); for ONNX also
``OnnxEngine.predict`` from the files (PIL resize, the logits upsampled to each image's own size in numpy) against
``Segmenter.predict``. int8 and TorchScript fp16 are refused with the reason (``SEGMENTATION_REFUSALS``).

ONNX graphs are made by ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript): the
exporter torch recommends and defaults to; the TorchScript-based exporter is deprecated. Detectors and segmenters
(dynamic height and width) go through the TorchScript-based one (see ``_segmentation_onnx_export``).
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart import __version__
from headstart.core.runfolder import file_sha256 as sha256
from headstart.deploy import onnx_engine
from headstart.errors import ConfigError, ExportError
from headstart.tasks.classification import familiarity
from headstart.tasks.classification.operating_point import OperatingPoint

FORMATS = ("onnx", "torchscript")
TASKS = ("image", "text", "multilabel", "text-multilabel")  # runs that export with every option (and run in the engine)
IMAGE_TASKS = ("image", "multilabel")  # their graphs take ``pixel_values``
TEXT_TASKS, TAG_TASKS = onnx_engine.TEXT_TASKS, onnx_engine.TAG_TASKS  # token ids in; a sigmoid per class out
DETECTION_FAMILIES = ("fcos", "retinanet", "fasterrcnn")  # detectors that export (ONNX fp32, one image per call)
EXPORT_JSON = "export.json"
# Limits of the parity check, by precision of the exported file. Logit differences are relative to the largest
# reference logit (at least 1); the accuracy drop is on the checked validation items (one item of grace).
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_logit_diff": 1e-3, "max_abs_probability_diff": 1e-4, "top1_agreement": 1.0,
             "engine_max_abs_probability_diff": 1e-3},
    "fp16": {"max_abs_logit_diff": 5e-2, "max_abs_probability_diff": 2e-2, "top1_agreement": 0.95,
             "engine_max_abs_probability_diff": 2e-2},
    "int8": {"max_abs_logit_diff": math.inf, "max_abs_probability_diff": 0.25, "top1_agreement": 0.90,
             "accuracy_drop": 0.05, "engine_max_abs_probability_diff": 0.25},
}
# Detection: a PyTorch box is matched when the exported file has a box of the same class with IoU >= 0.99 (boxes
# above the lowest score of a full list of ``detections_per_img``, where ties decide which boxes make the cut).
DETECTION_REFUSALS = {  # why a detection run does not export at these precisions (tried with torch 2.x, FCOS)
    "fp16": "--fp16: the detector does not run in half precision in PyTorch (half weights on a half image raise "
            "'expected scalar type Half but found Float' inside torchvision's detector), and onnxruntime's float16 "
            "converter turns the exported detection graph into an invalid model ('Node input ... is not a graph "
            "input'), so there is no fp16 reference and no fp16 file to check",
    "int8": "--int8: headstart quantises classification graphs only (a detection graph holds the box decoding and "
            "NMS; its quantisation is not supported)",
}
DETECTION_TOLERANCES = {"box_agreement": 0.98, "max_abs_score_diff": 1e-3, "max_abs_box_diff": 0.5}
# End to end (OnnxEngine from the files vs Detector.predict): both letterbox with PIL's resize, so what is left is the
# rounding of the rows (0.1 px, 4 digits of score) and the float differences of the graph. Matched: same class,
# IoU >= 0.9; boxes within 0.005 of a full list's lowest score are left out (ties).
ENGINE_DETECTION_TOLERANCES = {"box_agreement": 0.97, "max_abs_score_diff": 5e-3, "max_abs_box_diff": 2.0}
SEGMENTATION = "segmentation"
# Segmentation: logit differences relative to max(1, |reference logit|); pixel_agreement = share of the pixels whose
# argmax class is the same, on the graph's inputs; engine_pixel_agreement = the same for OnnxEngine.predict's masks
# against Segmenter.predict's (at fp32) at each image's own size, from the files. The engine's PIL resize rounds
# about one 8-bit value in 1000 differently from torchvision's, which moves a few boundary pixels.
SEGMENTATION_TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_logit_diff": 1e-3, "pixel_agreement": 0.999, "engine_pixel_agreement": 0.995},
    "fp16": {"max_abs_logit_diff": 5e-2, "pixel_agreement": 0.99, "engine_pixel_agreement": 0.985},
}
SEGMENTATION_REFUSALS = {
    "int8": "--int8: headstart's static int8 quantisation is calibrated and checked for classification graphs (top-1 "
            "and accuracy change on the validation split); for segmentation graphs its mIoU change is not measured, "
            "so it is not offered. Export at fp32 or with --fp16",
    "torchscript-fp16": "--format torchscript --fp16: torch.jit.trace of the half-precision segmenter failed on CPU "
                        "('Cannot insert a Tensor that requires grad as a constant', EfficientNet-Lite0 FPN, torch "
                        "2.14), so there is no file to check. Use --format onnx --fp16 (checked pixel by pixel) or "
                        "TorchScript at fp32",
}
CALIBRATION_ITEMS = 32  # training images that calibrate static int8 quantisation
BATCH = 16


@dataclass
class Checked:
    """The validation items a parity check runs on: graph inputs in batches, labels, and the raw items."""

    batches: list[dict[str, Any]]  # torch tensors keyed by graph input name
    labels: list[int | None]
    items: list[Any]  # image paths or texts, for the engine's end-to-end check
    calibration: list[dict[str, Any]] = field(default_factory=list)  # int8 images: training inputs


def default_file(fmt: str, precision: str) -> str:
    suffix = "" if precision == "fp32" else f".{precision}"
    return f"model{suffix}.onnx" if fmt == "onnx" else f"model{suffix}.torchscript.pt"


# ---------------------------------------------------------------------------------------------- the API
def export_run(run: str | Path, fmt: str = "onnx", dynamic_batch: bool = True, fp16: bool = False, int8: bool = False,
               data: str | Path | None = None, out: str | Path | None = None, max_items: int = 200) -> dict[str, Any]:
    """Export RUN's model, check it against PyTorch on up to ``max_items`` validation items; the record.

    ``fmt``: ``onnx`` or ``torchscript``; ``fp16`` halves the weights; ``int8`` (ONNX only) quantises them
    (dynamic for text, static with training images as calibration for images). ``data`` replaces the data
    path recorded in ``RUN/headstart.json``. Raises ``ExportError`` when the check fails (the files stay,
    marked as failed) and ``ConfigError`` for options that do not go together.
    """
    from headstart.progress import say

    run = Path(run)
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, found '{fmt}'")
    if fp16 and int8:
        raise ConfigError("--fp16 and --int8 exclude each other: choose one precision")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 quantises with ONNX Runtime: use it with --format onnx")
    precision = "int8" if int8 else "fp16" if fp16 else "fp32"
    est, task = _load(run)
    if task == "detection":
        return _export_detection(est, run, fmt, precision, data, out, max_items)
    if task == SEGMENTATION:
        return _export_segmentation(est, run, fmt, precision, dynamic_batch, data, out, max_items)
    target = Path(out) if out is not None else run / default_file(fmt, precision)
    target.parent.mkdir(parents=True, exist_ok=True)
    checked = _checked_items(est, task, run, data, max_items, dynamic_batch, calibrate=int8 and task in IMAGE_TASKS)
    features = fmt == "onnx" and est.familiar_ is not None  # a second output: the unfamiliar-input check's features
    graph = _graph(est, task, half=fp16 and fmt == "torchscript", features=features)
    started = time.perf_counter()
    say(f"[bold]Export[/] {run} ({task}) to {fmt} {precision} -> {target}")
    if fmt == "onnx":
        _export_onnx(graph, task, checked, dynamic_batch, precision, target, _reusable_fp32(run, dynamic_batch, features),
                     features)
    else:
        _export_torchscript(graph, task, checked, target)
    seconds = time.perf_counter() - started
    meta = _sidecar(est, task, run, fmt, precision, dynamic_batch, target, features)
    meta["export_seconds"] = round(seconds, 2)
    return _check_and_record(est, task, run, target, meta, checked)


def verify_export(run: str | Path, model_file: str | Path, data: str | Path | None = None,
                  max_items: int = 200) -> dict[str, Any]:
    """Check an existing export of RUN again (as at the end of ``export_run``); ``ExportError`` when it fails."""
    run, model_file = Path(run), Path(model_file)
    if not model_file.is_file():
        raise ExportError(f"Exported model not found: {model_file}")
    meta = onnx_engine.read_sidecar(model_file)
    est, task = _load(run)
    if task == "detection" and meta.get("task") == "detection":
        images, paths = _detection_items(est, _data_path(run, data), max_items)
        meta["file_changed"] = sha256(model_file) != meta.get("model_sha256")
        return _check_detection(est, run, model_file, meta, images, paths)
    if task == SEGMENTATION and meta.get("task") == SEGMENTATION and meta.get("classes") == est.classes_:
        checked = _segmentation_items(est, _data_path(run, data), max_items, meta.get("dynamic_batch", True))
        now = sha256(model_file)
        meta["file_changed"] = now != meta.get("model_sha256")
        meta["model_sha256"] = now
        return _check_segmentation(est, run, model_file, meta, checked)
    if meta.get("task") != task or meta.get("classes") != est.classes_:
        raise ExportError(f"{model_file} is a '{meta.get('task')}' export with classes {meta.get('classes')}; "
                          f"{run} holds a '{task}' model with classes {est.classes_}: it is not this run's export")
    checked = _checked_items(est, task, run, data, max_items, meta.get("dynamic_batch", True), calibrate=False)
    now = sha256(model_file)
    meta["file_changed"] = now != meta.get("model_sha256")  # changed since export (e.g. re-optimised, tampered)
    meta["model_sha256"] = now
    return _check_and_record(est, task, run, model_file, meta, checked)


# ---------------------------------------------------------------------------------------------- pieces
def _load(run: Path) -> tuple[Any, str]:
    from headstart.core import runfolder
    from headstart.tasks import task_of_run

    chosen = task_of_run(run)
    runfolder.read_meta(run, complete=True)
    if chosen.name == "detection":
        family = _detection_family(run)
        if family not in DETECTION_FAMILIES:
            raise ExportError(
                f"{run} holds a '{family}' detector, which headstart cannot export yet (its ONNX graph does not "
                f"reproduce the PyTorch boxes); it exports image, text and multi-label classification runs and the "
                f"{', '.join(DETECTION_FAMILIES)} detection families. Predict it with the PyTorch engine")
    elif chosen.name not in (*TASKS, SEGMENTATION):
        raise ExportError(f"{run} holds a '{chosen.name}' model; headstart exports {', '.join(TASKS)} "
                          f"classification runs, segmentation runs and the {', '.join(DETECTION_FAMILIES)} detection "
                          "families")
    est = chosen.estimator_class().load(run)
    est.config.device.precision = "32-true"  # the reference is fp32, whatever the run predicts with
    return est, chosen.name


def _detection_family(run: Path) -> str:
    """The detector family of a detection run (``tv:`` detectors: torchvision's class, e.g. FCOS -> fcos)."""
    from headstart.core import runfolder

    try:
        detector = runfolder.read_spec(run).get("detector", {})
    except Exception:  # noqa: BLE001 - the message is the point; a damaged spec is reported when loading
        return "?"
    if detector.get("kind") == "tv":
        name = str(detector.get("name", "?")).removeprefix("tv:")
        return next((f for f in DETECTION_FAMILIES if name.startswith(f)), name)
    return str(detector.get("family", "?"))


def _data_path(run: Path, data: str | Path | None) -> Path:
    from headstart.core import runfolder

    recorded = runfolder.read_meta(run).get("data")
    path = Path(data) if data is not None else Path(recorded) if recorded else None
    if path is None or not path.exists():
        where = f"--data {data}" if data is not None else f"the training data recorded in {run / 'headstart.json'} " \
                                                           f"({recorded})"
        raise ExportError(f"The parity check needs the run's validation items, but {where} cannot be read: pass "
                          "--data DATA (labelled data in the layout the run was trained on)")
    return path


def _spread(items: list[Any], n: int) -> list[Any]:
    """Up to ``n`` items spread over the list (validation lists are often sorted by class)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _checked_items(est: Any, task: str, run: Path, data: str | Path | None, max_items: int, dynamic_batch: bool,
                   calibrate: bool) -> Checked:
    path = _data_path(run, data)
    batch = BATCH if dynamic_batch else 1
    return _image_items(est, path, max_items, batch, calibrate) if task in IMAGE_TASKS else \
        _text_items(est, path, max_items, batch)


def _relabel(labels: list[int | None], found: list[str], classes: list[str]) -> list[int | None]:
    return [classes.index(found[y]) if y is not None and found[y] in classes else None for y in labels]


def _image_items(est: Any, data: Path, max_items: int, batch: int, calibrate: bool) -> Checked:
    import torch

    from headstart.tasks.image.data import discover
    from headstart.tasks.image.dataset import ImageStore
    from headstart.tasks.image.transforms import eval_transform

    cfg, spec = est.config, est.model_.backbone.spec
    multilabel = est.TASK == "multilabel"
    splits = est._discover(data) if multilabel else \
        discover(data, cfg.data.val_fraction, cfg.train.seed, cfg.data.path_column, cfg.data.label_column,
                 cfg.data.group_column, cfg.data.small_val)
    wanted = _spread(splits.val or splits.train, max_items)
    extra = _spread(splits.train, CALIBRATION_ITEMS) if calibrate else []
    store = ImageStore(wanted + extra, spec.resize_size, spec.interpolation, cfg.data.preload_mb, False,
                       desc="Reading validation images", intensity=spec.extra.get("intensity", "off"))
    readable = {id(s) for s in store.samples}
    val = [s for s in wanted if id(s) in readable]
    if not val:
        raise ExportError(f"No readable validation images in {data} for the parity check ({len(store.skipped)} "
                          "skipped): pass --data with readable images")
    transform = est._eval_transform(spec) if multilabel else eval_transform(spec)  # multi-label: the whole image

    def stack(samples: list[Any]) -> list[dict[str, Any]]:
        tensors = [transform(store.get(s.path)) for s in samples]
        return [{"pixel_values": torch.stack(tensors[i:i + batch])} for i in range(0, len(tensors), batch)]

    calibration = stack([s for s in extra if id(s) in readable]) if calibrate else []
    labels = [None] * len(val) if multilabel else _relabel([s.label for s in val], splits.classes, est.classes_)
    return Checked(stack(val), labels,
                   [s.path if s.data is None else (str(s.path), s.data) for s in val], calibration)


def _text_items(est: Any, data: Path, max_items: int, batch: int) -> Checked:
    from headstart.tasks.text.data import PadCollate, tokenize

    spec = est.model_.backbone.spec
    splits = est._discover(data)  # multi-label texts as their estimator reads them
    val = _spread(splits.val or splits.train, max_items)
    if not val:
        raise ExportError(f"No validation texts in {data} for the parity check: pass --data with labelled texts")
    ids, _ = tokenize(est.tokenizer_, [s.text for s in val], spec.extra["max_length"])
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # batches of similar lengths, padded inside
    collate = PadCollate(spec.extra.get("pad_token_id", 0))
    batches = [collate([(ids[i], 0) for i in order[s:s + batch]])[0] for s in range(0, len(order), batch)]
    val = [val[i] for i in order]
    labels = [None] * len(val) if est.TASK in TAG_TASKS else _relabel([s.label for s in val], splits.classes,
                                                                      est.classes_)
    return Checked(batches, labels, [s.text for s in val])


def _graph(est: Any, task: str, half: bool = False, features: bool = False) -> Any:
    """The run's model as a module of the exported graph's inputs, returning float32 ``logits`` (``features``: and
    the backbone's output, the head's input, as a second output ``features``)."""
    from torch import nn

    model = copy.deepcopy(est.model_).half().eval() if half else est.model_.float().eval()

    class Graph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def outputs(self, x):
            if not features:
                return self.model(x).float()
            pooled = self.model.backbone(x)
            return self.model.head(pooled).float(), pooled.float()

    class ImageGraph(Graph):
        def forward(self, pixel_values):
            return self.outputs(pixel_values.half() if half else pixel_values)

    class TextGraph(Graph):
        def forward(self, input_ids, attention_mask):
            return self.outputs({"input_ids": input_ids, "attention_mask": attention_mask})

    return (TextGraph() if task in TEXT_TASKS else ImageGraph()).eval()


def _input_names(task: str) -> list[str]:
    return ["input_ids", "attention_mask"] if task in TEXT_TASKS else ["pixel_values"]


def _example(task: str, checked: Checked, dynamic_batch: bool) -> tuple[Any, ...]:
    """Example inputs to trace: a batch of 2 when the batch is dynamic (torch.export specialises 1), else 1."""
    import torch

    names = _input_names(task)
    first = checked.batches[0]
    if task == SEGMENTATION and first["pixel_values"].shape[-1] == first["pixel_values"].shape[-2]:
        first = {"pixel_values": first["pixel_values"][..., :-8]}  # height != width, or torch.export ties the two
    if task not in TEXT_TASKS:
        x = first["pixel_values"][:1]
        return (x.repeat(2, 1, 1, 1) if dynamic_batch else x,)
    if dynamic_batch:  # two texts of different lengths: the traced graph sees padding and the mask
        last = checked.batches[-1]
        length = max(int(last["attention_mask"][-1].sum()), 3)
        ids = torch.zeros(2, length, dtype=torch.long)
        mask = torch.zeros(2, length, dtype=torch.long)
        ids[0], mask[0] = last["input_ids"][-1, :length], last["attention_mask"][-1, :length]
        short = max(2, length - 1)
        ids[1, :short], mask[1, :short] = last["input_ids"][-1, :short], 1
        return ids, mask
    return tuple(first[n][:1] for n in names)


def _reusable_fp32(run: Path, dynamic_batch: bool, features: bool) -> Path | None:
    """``RUN/model.onnx`` when it is a passed fp32 export of the run's current weights with the same batch axis and
    outputs (``features``: the second output)."""
    path = run / onnx_engine.DEFAULT_FILE
    try:
        meta = onnx_engine.read_sidecar(path)
    except Exception:  # noqa: BLE001 - absent or unreadable: export afresh
        return None
    same = meta.get("weights_sha256") == sha256(run / "model.safetensors") and meta.get("model_sha256") == sha256(path)
    ok = same and meta.get("precision") == "fp32" and meta.get("parity", {}).get("passed")
    outputs = [o.get("name") for o in meta.get("outputs", [])]
    return path if ok and meta.get("dynamic_batch") == dynamic_batch and ("features" in outputs) == features else None


def _export_onnx(graph: Any, task: str, checked: Checked, dynamic_batch: bool, precision: str, target: Path,
                 reuse: Path | None = None, features: bool = False) -> None:
    """The graph by torch.onnx (dynamo); fp16 / int8 are made from the fp32 graph (``reuse``: one made before)."""
    import torch

    names = _input_names(task)
    example = _example(task, checked, dynamic_batch)
    batch = torch.export.Dim("batch", min=1, max=4096) if dynamic_batch else None
    if task in IMAGE_TASKS:
        shapes = {"pixel_values": {0: batch} if batch is not None else {}}
    elif task == SEGMENTATION:  # any height and width, by the TorchScript-based exporter
        shapes = {}
    else:
        longest = max(int(b["input_ids"].shape[1]) for b in checked.batches)
        limit = max(longest, int(example[0].shape[1]) + 1, 512)
        sequence = torch.export.Dim("sequence", min=2, max=limit)
        axes = {0: batch, 1: sequence} if batch is not None else {1: sequence}
        shapes = {"input_ids": axes, "attention_mask": dict(axes)}
    with tempfile.TemporaryDirectory(prefix="headstart-export-") as tmp:
        plain = Path(tmp) / "model.onnx" if precision != "fp32" else target
        if precision != "fp32" and reuse is not None:
            shutil.copy(reuse, plain)
        elif task == SEGMENTATION:
            _segmentation_onnx_export(graph, example, dynamic_batch, plain)
        else:
            _torch_onnx_export(graph, task, example, names, shapes, plain, ["logits", "features"][:1 + features])
        if precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(plain)), keep_io_types=True), str(target))
        elif precision == "int8":
            _quantize(plain, target, task, checked, Path(tmp))


def _torch_onnx_export(graph: Any, task: str, example: tuple, names: list[str], shapes: dict, path: Path,
                       outputs: list[str]) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, example, str(path), input_names=names, output_names=outputs, dynamo=True,
                              external_data=False, dynamic_shapes=shapes, verbose=False, optimize=True)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; say which model failed
            raise ExportError(f"torch.onnx.export could not export this {task} model "
                              f"({type(exc).__name__}: {str(exc)[:500]}); try --format torchscript") from exc


def _segmentation_onnx_export(graph: Any, example: tuple, dynamic_batch: bool, path: Path) -> None:
    """A segmenter with dynamic height and width by the TorchScript-based exporter (opset 17): ``torch.export`` with
    symbolic height and width did not finish in minutes on EfficientNet-Lite0 (its TF "same" padding is computed
    from the input size at every strided conv), while tracing keeps those sizes as graph ops."""
    import torch

    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_batch else {2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, example, str(path), dynamo=False, opset_version=17, input_names=["pixel_values"],
                              output_names=["logits"], dynamic_axes={"pixel_values": axes, "logits": dict(axes)})
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types; say which model failed
            raise ExportError(f"torch.onnx.export could not export this segmentation model "
                              f"({type(exc).__name__}: {str(exc)[:500]}); try --format torchscript") from exc


def _quantize(plain: Path, target: Path, task: str, checked: Checked, tmp: Path) -> None:
    """int8 with ONNX Runtime: dynamic (weights) for text, static QDQ calibrated on training images for images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its 'consider pre-processing' hint
    if task in TEXT_TASKS:
        quantize_dynamic(str(plain), str(target), weight_type=QuantType.QInt8)
        return
    feeds = [{"pixel_values": b["pixel_values"].numpy()} for b in checked.calibration or checked.batches]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    import onnx

    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
    graph = onnx.load(str(prepared)).graph
    head = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]  # the classifier stays fp32 (it is tiny;
    # quantised, its logits moved by up to 9 on EfficientNet-Lite0 and top-1 flipped on a quarter of the images)
    quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=head,
                    extra_options={"ActivationSymmetric": True})


def _export_torchscript(graph: Any, task: str, checked: Checked, target: Path) -> None:
    import torch

    from headstart.progress import say

    example = _example(task, checked, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings, and torch.jit's deprecation (said once below)
        try:
            traced = torch.jit.trace(graph, example, check_trace=False)
        except Exception as exc:  # noqa: BLE001
            raise ExportError(f"torch.jit.trace could not trace this {task} model ({type(exc).__name__}: "
                              f"{str(exc)[:500]}); try --format onnx") from exc
        torch.jit.save(traced, str(target))
    say(f"TorchScript: PyTorch {torch.__version__} deprecates torch.jit in favour of torch.export; the file loads with "
        "torch.jit.load while PyTorch keeps it, ONNX (the default format) is the one to keep")


def _load_torchscript(target: Path) -> Any:
    """``torch.jit.load(target)`` in eval mode, without torch's deprecation warning (the export said it once)."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        return torch.jit.load(str(target)).eval()


def _preprocessing(est: Any, task: str, run: Path, target: Path) -> dict[str, Any]:
    spec = est.model_.backbone.spec
    if task in IMAGE_TASKS:
        intensity = spec.extra.get("intensity", "off")
        pre = {"type": "image", "decode": "PIL; EXIF orientation applied; JPEGs decoded with draft('RGB', "
                                          "(2 x resize_shorter_side)); 8-bit RGB, 16-bit / 32-bit / float images "
                                          "scaled to 0-255 (headstart.tasks.image.transforms.to_rgb)",
               "intensity": intensity, "resize_shorter_side": spec.resize_size, "interpolation": spec.interpolation,
               "center_crop": spec.input_size, "scale": 1 / 255, "mean": list(spec.mean), "std": list(spec.std),
               "channels": "RGB", "layout": "NCHW", "dtype": "float32",
               "max_pixels": getattr(est.config.data, "max_pixels", None)}
        if task == "multilabel":  # the whole image to the input square: a centre crop could cut a tagged object away
            del pre["center_crop"]
            pre["square"] = spec.input_size
            pre["square_resize"] = "the decoded image resized to square x square, bilinear (PIL), after the shorter " \
                                   "side went to resize_shorter_side"
        if intensity == "window":
            pre["window"] = "each image stretched linearly so that its 0.5th..99.5th percentiles (min..max when it " \
                            "has at most 32 distinct values) map to 0..255, all channels together"
        return pre
    source = run / "tokenizer"
    if target.parent.resolve() != run.resolve():  # the tokenizer travels with the exported file
        shutil.copytree(source, target.parent / "tokenizer", dirs_exist_ok=True)
    from headstart.tasks.text.data import part_separator

    return {"type": "text", "tokenizer": "tokenizer/tokenizer.json", "max_length": spec.extra["max_length"],
            "pad_token_id": spec.extra.get("pad_token_id", 0), "special_tokens": True,
            "text_columns": est.text_columns_, "part_separator": part_separator(est.tokenizer_),
            "truncation": "to max_length tokens (special tokens included)",
            "padding": "right, to the longest text of the batch; attention_mask 1 for tokens, 0 for padding"}


def _sidecar(est: Any, task: str, run: Path, fmt: str, precision: str, dynamic_batch: bool, target: Path,
             features: bool = False) -> dict:
    """The export's ``<file>.json`` (``features``: the graph has the unfamiliar-input check's second output)."""
    import torch

    spec = est.model_.backbone.spec
    n = len(est.classes_)
    batch: Any = "batch" if dynamic_batch else 1
    if task in IMAGE_TASKS:
        inputs = [{"name": "pixel_values", "dtype": "float32", "shape": [batch, 3, spec.input_size, spec.input_size]}]
    else:
        inputs = [{"name": name, "dtype": "int64", "shape": [batch, "sequence"]}
                  for name in ("input_ids", "attention_mask")]
    meta: dict[str, Any] = {
        "format": fmt, "file": target.name, "precision": precision, "task": task, "classes": est.classes_,
        "inputs": inputs, "outputs": [{"name": "logits", "dtype": "float32", "shape": [batch, n],
                                       "postprocessing": "sigmoid of each logit divided by the temperature "
                                       "(temperature) gives its class's probability; a label applies when its "
                                       "probability >= its class's threshold (thresholds)"
                                       if task in TAG_TASKS else "softmax over classes of the logits divided by "
                                       "the temperature (temperature) gives the probabilities; the class is their "
                                       "argmax, or, with an operating_point, the positive class where its "
                                       "probability >= its threshold"}],
        "dynamic_batch": dynamic_batch, "preprocessing": _preprocessing(est, task, run, target),
        **_provenance(spec, run, target),
    }
    meta["temperature"] = est.temperature_  # fitted on validation (calibration)
    if task in TAG_TASKS:
        meta["thresholds"] = [float(t) for t in est.thresholds_]  # tuned on validation, in classes' order
    elif est.operating_point_ is not None:  # p(positive) >= threshold decides, not the argmax
        meta["operating_point"] = est.operating_point_.to_dict(est.classes_)
    if features:  # the unfamiliar-input check, with its bank beside the file
        meta["outputs"].append({"name": "features", "dtype": "float32", "shape": [batch, spec.feature_dim],
                                "postprocessing": "an input is unfamiliar when the cosine distance from its features "
                                "to the k-th nearest row of the familiarity file's bank is over its cut"})
        bank = target.parent / familiarity.FILE
        if bank.resolve() != (run / familiarity.FILE).resolve():
            shutil.copy(run / familiarity.FILE, bank)
        meta["familiarity"] = {"file": bank.name, **est.familiar_.summary()}
    if fmt == "onnx":
        import onnx
        import onnxruntime

        model = onnx.load(str(target), load_external_data=False)
        meta["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        meta["exporter"] = f"torch.onnx.export(dynamo=True), torch {torch.__version__}"
        meta["onnxruntime_version"] = onnxruntime.__version__
        if precision == "int8":
            meta["quantization"] = "dynamic (int8 weights, onnxruntime.quantization.quantize_dynamic)" if task in TEXT_TASKS \
                else f"static QDQ: per-channel int8 weights, symmetric int8 activations calibrated (min-max) on up to " \
                     f"{CALIBRATION_ITEMS} training images; the classifier layer stays fp32 " \
                     "(onnxruntime.quantization.quantize_static)"
    else:
        meta["exporter"] = f"torch.jit.trace, torch {torch.__version__}"
        meta["load"] = "torch.jit.load(file); call with the inputs above"
    return meta


def _provenance(spec: Any, run: Path, target: Path) -> dict[str, Any]:
    """Where an exported file comes from: backbone, run, hashes of the run's weights and of the file, versions."""
    import torch

    return {"backbone": {"name": spec.name, "arch": spec.arch, "weights": spec.weights},
            "run": str(run.resolve()), "weights_sha256": sha256(run / "model.safetensors"),
            "model_sha256": sha256(target), "headstart_version": __version__, "torch_version": torch.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _conclude(run: Path, target: Path, meta: dict[str, Any], parity: dict[str, Any], failures: list[str],
              summary: str, refused: str = "") -> dict[str, Any]:
    """Record a parity check in the sidecar and export.json, print ``summary``; ExportError when it failed."""
    from headstart.progress import say

    parity["passed"] = not failures
    meta["parity"] = parity
    onnx_engine.sidecar_path(target).write_text(json.dumps(meta, indent=2))
    _record(run, target, meta)
    say(summary)
    if failures:
        raise ExportError(f"The parity check of {target} failed: {'; '.join(failures)}. The file is kept and marked "
                          f"as failed in {onnx_engine.sidecar_path(target).name} and {run / EXPORT_JSON}{refused}")
    return meta


# ---------------------------------------------------------------------------------------------- the check
def _exported_runner(meta: dict[str, Any], target: Path) -> Any:
    """``run(batch) -> logits ndarray`` for the exported file."""
    if meta["format"] == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return lambda b: session.run(["logits"], {n: b[n].numpy() for n in names})[0]
    import torch

    module = _load_torchscript(target)

    def run(b: dict[str, Any]) -> np.ndarray:
        with torch.no_grad():
            return module(*b.values()).float().numpy()

    return run


def _reference(est: Any, task: str, batch: dict[str, Any]) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = dict(batch) if task in TEXT_TASKS else batch["pixel_values"]
        return est.model_(x).float().numpy()


def _accuracy(logits: np.ndarray, labels: list[int | None], meta: dict[str, Any]) -> float | None:
    known = [(i, y) for i, y in enumerate(labels) if y is not None]
    if not known:
        return None
    decided = _decided(onnx_engine.softmax(logits / meta.get("temperature", 1.0)), meta)
    return float(np.mean([int(decided[i]) == y for i, y in known]))


def _decided(probs: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Each item's class from its calibrated probabilities: the argmax, or at the sidecar's operating point."""
    point = meta.get("operating_point")
    return probs.argmax(1) if point is None else OperatingPoint.from_dict(point, meta["classes"]).decide(probs)


def _check_and_record(est: Any, task: str, run: Path, target: Path, meta: dict[str, Any], checked: Checked) -> dict:

    limits = TOLERANCES[meta["precision"]]
    runner = _exported_runner(meta, target)
    ref = np.concatenate([_reference(est, task, b) for b in checked.batches])
    got = np.concatenate([runner(b) for b in checked.batches]).astype(np.float32)
    activate = onnx_engine.sigmoid if task in TAG_TASKS else onnx_engine.softmax
    p_ref, p_got = activate(ref), activate(got)
    scale = max(1.0, float(np.abs(ref).max()))
    t = meta.get("temperature", 1.0)  # the decisions are on the calibrated probabilities
    calibrated = activate(ref / t), activate(got / t)
    agree, agreement = _agreement(task, *calibrated, meta)
    parity: dict[str, Any] = {
        "items": len(ref), "reference": "the run's PyTorch model at fp32 (eval mode, no autocast), same inputs",
        "max_abs_logit_diff": float(np.abs(ref - got).max()),
        "max_abs_probability_diff": float(np.abs(p_ref - p_got).max()),
        agree: agreement, "tolerances": {k: v for k, v in limits.items() if math.isfinite(v)},
    }
    failures = []
    if parity["max_abs_logit_diff"] > limits["max_abs_logit_diff"] * scale:
        failures.append(f"max |logit difference| {parity['max_abs_logit_diff']:.3g} > "
                        f"{limits['max_abs_logit_diff']:g} x {scale:.3g}")
    if parity["max_abs_probability_diff"] > limits["max_abs_probability_diff"]:
        failures.append(f"max |probability difference| {parity['max_abs_probability_diff']:.3g} > "
                        f"{limits['max_abs_probability_diff']:g}")
    if agreement < limits["top1_agreement"]:
        failures.append(f"{agree.replace('_', ' ')} {agreement:.3f} < {limits['top1_agreement']:g}")
    acc_ref, acc_got = _accuracy(ref, checked.labels, meta), _accuracy(got, checked.labels, meta)
    if acc_ref is not None:
        parity["accuracy"] = {"pytorch_fp32": acc_ref, "exported": acc_got, "change": acc_got - acc_ref,
                              "labelled_items": sum(y is not None for y in checked.labels)}
        grace = 1 / parity["accuracy"]["labelled_items"]
        if "accuracy_drop" in limits and acc_ref - acc_got > max(limits["accuracy_drop"], grace) + 1e-9:
            failures.append(f"validation accuracy drops from {acc_ref:.3f} to {acc_got:.3f}")
    if meta["format"] == "onnx":
        parity["engine"] = _engine_parity(est, target, meta, checked, limits, failures)
    return _conclude(run, target, meta, parity, failures,
                     f"Parity on {parity['items']} validation items: max |logit diff| {parity['max_abs_logit_diff']:.2e}, "
                     f"max |prob diff| {parity['max_abs_probability_diff']:.2e}, {agree.replace('_', ' ')} "
                     f"{agreement:.3f}", "; the ONNX engine will not run it")


def _agreement(task: str, a: np.ndarray, b: np.ndarray, meta: dict[str, Any]) -> tuple[str, float]:
    """How often two sets of (calibrated) probabilities decide the same: the class (top-1, or at the operating point),
    or (multi-label) every label at its class's threshold (the share of items whose label sets are equal)."""
    if task in TAG_TASKS:
        t = np.asarray(meta["thresholds"], np.float32)[None]
        return "tag_agreement", float(np.mean(((a >= t) == (b >= t)).all(1)))
    return "top1_agreement", float(np.mean(_decided(a, meta) == _decided(b, meta)))


def _engine_parity(est: Any, target: Path, meta: dict[str, Any], checked: Checked, limits: dict[str, float],
                   failures: list[str]) -> dict[str, Any]:
    """OnnxEngine from the files / texts (numpy + PIL or tokenizers) against the estimator's ``predict_proba``."""
    engine = onnx_engine.OnnxEngine(target, meta=meta)
    kept, probs = engine.predict_proba(checked.items)
    ref_items, ref_probs = est.predict_proba(checked.items)
    if [str(i) for i in kept] != [str(i) for i in ref_items]:
        failures.append(f"the ONNX engine read {len(kept)} items, PyTorch {len(ref_items)}")
        return {"items": len(kept), "passed": False}
    ref_probs = ref_probs.float().numpy()
    agree, agreement = _agreement(meta["task"], probs, ref_probs, meta)
    result = {"what": "OnnxEngine (numpy/PIL or tokenizers preprocessing) vs the estimator's predict_proba at fp32, "
                      "from the same files / texts",
              "items": len(kept), "max_abs_probability_diff": float(np.abs(probs - ref_probs).max()), agree: agreement}
    if engine.familiar is not None:  # the unfamiliar-input flags, from the exported features (said, not required)
        result["unfamiliar_agreement"] = float(np.mean([a == b for a, b in zip(engine.unfamiliar_, est.unfamiliar_)]))
    if result["max_abs_probability_diff"] > limits["engine_max_abs_probability_diff"]:
        failures.append(f"end to end, the ONNX engine's probabilities differ by {result['max_abs_probability_diff']:.3g}"
                        f" > {limits['engine_max_abs_probability_diff']:g}")
    if agreement < limits["top1_agreement"]:
        failures.append(f"end to end, the ONNX engine's {agree.replace('_', ' ')} is {agreement:.3f}")
    return result


def _record(run: Path, target: Path, meta: dict[str, Any]) -> None:
    """Add this export's settings and parity to ``RUN/export.json`` (one entry per exported file)."""
    path = run / EXPORT_JSON
    try:
        record = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        record = {}
    exports = record.get("exports") if isinstance(record.get("exports"), dict) else {}
    try:
        key = str(target.resolve().relative_to(run.resolve()))
    except ValueError:
        key = str(target.resolve())
    exports[key] = {k: meta[k] for k in ("format", "precision", "task", "dynamic_batch", "model_sha256", "created",
                                         "exporter", "opset", "export_seconds", "file_changed", "parity") if k in meta}
    path.write_text(json.dumps({"exports": exports}, indent=2))


# ---------------------------------------------------------------------------------------------- segmentation
def _export_segmentation(est: Any, run: Path, fmt: str, precision: str, dynamic_batch: bool,
                         data: str | Path | None, out: str | Path | None, max_items: int) -> dict[str, Any]:
    """A segmenter to ONNX or TorchScript (fp32 / fp16, any height and width), checked pixel by pixel."""
    from headstart.progress import say

    if precision == "int8":
        raise ConfigError(f"Segmentation runs export at fp32 or fp16: {SEGMENTATION_REFUSALS['int8']}")
    if precision == "fp16" and fmt == "torchscript":
        raise ConfigError(f"Segmentation runs export to TorchScript at fp32: {SEGMENTATION_REFUSALS['torchscript-fp16']}")
    target = Path(out) if out is not None else run / default_file(fmt, precision)
    target.parent.mkdir(parents=True, exist_ok=True)
    checked = _segmentation_items(est, _data_path(run, data), max_items, dynamic_batch)
    graph = _graph(est, SEGMENTATION)  # fp16 ONNX is converted from the fp32 graph
    say(f"[bold]Export[/] {run} (segmentation) to {fmt} {precision} -> {target}")
    started = time.perf_counter()
    if fmt == "onnx":
        _export_onnx(graph, SEGMENTATION, checked, dynamic_batch, precision, target)
    else:
        _export_torchscript(graph, SEGMENTATION, checked, target)
    meta = _segmentation_sidecar(est, run, fmt, precision, dynamic_batch, target)
    meta["export_seconds"] = round(time.perf_counter() - started, 2)
    return _check_segmentation(est, run, target, meta, checked)


def _segmentation_items(est: Any, data: Path, max_items: int, dynamic_batch: bool) -> Checked:
    """Validation images through the run's eval transform (shorter side to ``segmentation.image_size``), batched
    by shape (batches of one for a fixed batch axis), as ``Segmenter.predict`` feeds its model."""
    import torch
    from torchvision import tv_tensors

    from headstart.tasks.segmentation import data as seg_data
    from headstart.tasks.segmentation import transforms as seg_tf

    cfg = est.config
    splits = seg_data.discover(data, cfg.data.val_fraction, cfg.train.seed)
    samples = _spread(splits.val or splits.train, max_items)
    if not samples:
        raise ExportError(f"No validation images in {data} for the parity check: pass --data with image-mask pairs")
    tf = seg_tf.eval_transform(est.model_.backbone.spec, cfg.segmentation.image_size)
    batch = BATCH if dynamic_batch else 1
    batches: list[dict[str, Any]] = []
    for s in samples:
        image = np.asarray(seg_tf.read_image(s))
        x, _ = tf(tv_tensors.Image(torch.from_numpy(image.copy()).permute(2, 0, 1)),
                  tv_tensors.Mask(torch.zeros(image.shape[:2], dtype=torch.uint8)))
        x = x.as_subclass(torch.Tensor)[None]
        last = batches[-1]["pixel_values"] if batches else None
        if last is not None and len(last) < batch and last.shape[1:] == x.shape[1:]:
            batches[-1]["pixel_values"] = torch.cat([last, x])
        else:
            batches.append({"pixel_values": x})
    return Checked(batches, [None] * len(samples),  # a dataset row's image as (name, where it is stored)
                   [s.image if s.data is None else (str(s.image), s.data) for s in samples])


def _segmentation_sidecar(est: Any, run: Path, fmt: str, precision: str, dynamic_batch: bool,
                          target: Path) -> dict[str, Any]:
    import torch

    from headstart.tasks.segmentation.report import palette

    spec, n = est.model_.backbone.spec, len(est.classes_)
    batch: Any = "batch" if dynamic_batch else 1
    meta: dict[str, Any] = {
        "format": fmt, "file": target.name, "precision": precision, "task": SEGMENTATION, "classes": est.classes_,
        "dynamic_batch": dynamic_batch, "dynamic_size": True,
        "inputs": [{"name": "pixel_values", "dtype": "float32", "shape": [batch, 3, "height", "width"],
                    "meaning": "any height and width: the image with its shorter side resized to "
                               "resize_shorter_side, normalised"}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [batch, n, "height", "width"],
                     "postprocessing": "resize bilinearly (half-pixel centres, align_corners=False) to the image's "
                                       "own height and width, then argmax over classes gives the class of each pixel"}],
        "preprocessing": {
            "type": "segmentation", "decode": "PIL; EXIF orientation applied; 8-bit RGB at the image's own size "
                                              "(headstart.tasks.image.decode.to_rgb)",
            "intensity": "off", "resize_shorter_side": est.config.segmentation.image_size,
            "longer_side": "int(resize_shorter_side x longer / shorter) (torchvision's Resize)",
            "interpolation": "bilinear, antialiased", "scale": 1 / 255, "mean": list(spec.mean),
            "std": list(spec.std), "channels": "RGB", "layout": "NCHW", "dtype": "float32"},
        "palette": palette(n)[:n].tolist(),  # RGB per class, as --save-masks colours the masks
        **_provenance(spec, run, target),
    }
    if fmt == "onnx":
        import onnx
        import onnxruntime

        model = onnx.load(str(target), load_external_data=False)
        meta["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
        meta["exporter"] = f"torch.onnx.export(dynamo=False, opset 17, dynamic height and width), torch " \
                           f"{torch.__version__}"
        meta["onnxruntime_version"] = onnxruntime.__version__
    else:
        meta["exporter"] = f"torch.jit.trace, torch {torch.__version__}"
        meta["load"] = "torch.jit.load(file); module(pixel_values) -> logits"
    return meta


def mask_agreement(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """How well the masks of ``other`` rows (``Segmenter.predict``'s form) reproduce those of ``reference``: the
    share of all pixels with the same class, and the largest difference of a class's share of an image."""
    same = total = 0
    fraction_diff = 0.0
    for a, b in zip(reference, other):
        if "mask" not in a or "mask" not in b:
            continue
        if a["mask"].shape != b["mask"].shape:
            total += a["mask"].size
            continue
        same += int((a["mask"] == b["mask"]).sum())
        total += a["mask"].size
        keys = set(a["fractions"]) | set(b["fractions"])
        fraction_diff = max([fraction_diff, *(abs(a["fractions"].get(k, 0.0) - b["fractions"].get(k, 0.0))
                                              for k in keys)])
    return {"images": len(reference), "same_images": [r["path"] for r in reference] == [r["path"] for r in other],
            "pixels": total, "pixel_agreement": same / total if total else 1.0, "max_abs_fraction_diff": fraction_diff}


def _check_segmentation(est: Any, run: Path, target: Path, meta: dict[str, Any], checked: Checked) -> dict[str, Any]:
    limits = SEGMENTATION_TOLERANCES[meta["precision"]]
    runner = _exported_runner(meta, target)
    diff, scale, same, pixels = 0.0, 1.0, 0, 0
    for b in checked.batches:
        ref = _reference(est, SEGMENTATION, b)
        got = np.asarray(runner(b), np.float32)
        if got.shape != ref.shape:
            raise ExportError(f"{target} returned logits of shape {list(got.shape)} for inputs "
                              f"{list(b['pixel_values'].shape)}; PyTorch {list(ref.shape)}")
        diff = max(diff, float(np.abs(ref - got).max()))
        scale = max(scale, float(np.abs(ref).max()))
        same += int((ref.argmax(1) == got.argmax(1)).sum())
        pixels += ref.shape[0] * ref.shape[2] * ref.shape[3]
    parity: dict[str, Any] = {
        "items": len(checked.items), "pixels": pixels,
        "reference": "the run's PyTorch model at fp32 (eval mode, no autocast), same inputs (validation images, "
                     "shorter side resized)",
        "input_shapes": sorted({str(list(b["pixel_values"].shape[2:])) for b in checked.batches}),
        "max_abs_logit_diff": diff, "max_abs_reference_logit": scale, "pixel_agreement": same / pixels,
        "tolerances": limits,
    }
    failures = []
    if diff > limits["max_abs_logit_diff"] * scale:
        failures.append(f"max |logit difference| {diff:.3g} > {limits['max_abs_logit_diff']:g} x {scale:.3g}")
    if parity["pixel_agreement"] < limits["pixel_agreement"]:
        failures.append(f"pixel agreement {parity['pixel_agreement']:.5f} < {limits['pixel_agreement']:g}")
    summary = f"Parity on {len(checked.items)} validation images ({pixels} pixels): max |logit diff| {diff:.2e}, " \
              f"argmax pixel agreement {parity['pixel_agreement']:.5f}"
    if meta["format"] == "onnx":
        engine = onnx_engine.OnnxEngine(target, meta=meta)
        result = mask_agreement(est.predict(checked.items), engine.predict(checked.items, top_k=None))
        result["what"] = "OnnxEngine.predict (PIL resize, numpy bilinear upsampling of the logits) vs " \
                         "Segmenter.predict at fp32, same files, masks at each image's own size"
        parity["engine"] = result
        if not result["same_images"]:
            failures.append("end to end, the ONNX engine read other images than PyTorch")
        if result["pixel_agreement"] < limits["engine_pixel_agreement"]:
            failures.append(f"end to end, the ONNX engine's masks agree with PyTorch's on "
                            f"{result['pixel_agreement']:.5f} of the pixels < {limits['engine_pixel_agreement']:g}")
        summary += f"; end to end from the files (ONNX engine): {result['pixel_agreement']:.5f} of " \
                   f"{result['pixels']} pixels agree, max |class share diff| {result['max_abs_fraction_diff']:.2g}"
    return _conclude(run, target, meta, parity, failures, summary, "; the ONNX engine will not run it")


# ---------------------------------------------------------------------------------------------- detection
def _export_detection(est: Any, run: Path, fmt: str, precision: str, data: str | Path | None, out: str | Path | None,
                      max_items: int) -> dict[str, Any]:
    """A detector to ONNX or TorchScript (fp32, one letterboxed image per call), checked box by box against PyTorch."""
    import torch

    if precision != "fp32":
        raise ConfigError(f"Detection runs export at fp32 only: {DETECTION_REFUSALS[precision]}. Export it with: "
                          "headstart export RUN [--format torchscript], or predict with --engine torch")
    target = Path(out) if out is not None else run / default_file(fmt, "fp32")
    target.parent.mkdir(parents=True, exist_ok=True)
    from torch import nn

    from headstart.progress import say

    class DetectionGraph(nn.Module):
        """``images [1, 3, S, S]`` in [0, 1] -> ``boxes [n, 4]`` (xyxy, letterbox pixels), ``scores``, ``labels``."""

        def __init__(self) -> None:
            super().__init__()
            self.detector = est.model_.detector

        def forward(self, images):
            found = self.detector(list(images))[0]
            return found["boxes"], found["scores"], found["labels"]

    images, paths = _detection_items(est, _data_path(run, data), max_items)
    graph = DetectionGraph().eval()
    say(f"[bold]Export[/] {run} (detection) to {fmt} fp32 -> {target}")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":  # torchvision's detectors trace with their data-dependent number of boxes (its
            # ops are written for tracing); torch.jit.script cannot compile headstart's feature extractor
            try:
                torch.jit.save(torch.jit.trace(graph, (images[0],), check_trace=False), str(target))
            except Exception as exc:  # noqa: BLE001
                raise ExportError(f"torch.jit.trace could not trace this detector ({type(exc).__name__}: "
                                  f"{str(exc)[:500]}); try --format onnx") from exc
        else:
            try:  # torch.export cannot capture torchvision's data-dependent box decoding and NMS: the TorchScript-
                # based exporter can (opset 17), as torchvision's own ONNX tests do
                torch.onnx.export(graph, (images[0],), str(target), dynamo=False, opset_version=17,
                                  input_names=["images"], output_names=["boxes", "scores", "labels"],
                                  dynamic_axes={n: {0: "detections"} for n in ("boxes", "scores", "labels")})
            except Exception as exc:  # noqa: BLE001
                raise ExportError(f"torch.onnx.export could not export this detector ({type(exc).__name__}: "
                                  f"{str(exc)[:500]})") from exc
    meta = _detection_sidecar(est, run, target, fmt)
    meta["export_seconds"] = round(time.perf_counter() - started, 2)
    return _check_detection(est, run, target, meta, images, paths)


def _detection_items(est: Any, data: Path, max_items: int) -> tuple[list[Any], list[Any]]:
    """Letterboxed validation images ``[1, 3, S, S]``, decoded as ``Detector.predict`` decodes them, and the items
    ``predict`` takes for them: their files, or ``(name, where they are stored)`` (a Parquet row)."""
    import torch

    from headstart.tasks.detection import data as det_data
    from headstart.tasks.image.data import Sample
    from headstart.tasks.image.dataset import ImageStore

    cfg = est.config
    size = cfg.detection.image_size
    splits = det_data.discover(data, cfg.data.val_fraction, cfg.train.seed)
    samples = [Sample(s.path, data=s.data) for s in _spread(splits.val or splits.train, max_items)]
    store = ImageStore(samples, size, est.model_.backbone.spec.interpolation or "bilinear", cfg.data.preload_mb, False,
                       desc="Reading validation images")
    if not store.samples:
        raise ExportError(f"No readable validation images in {data} for the parity check: pass --data")
    tf = det_data.eval_transform(size)
    images = [tf(det_data.to_tv(store.get(s.path), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))[0])
              .as_subclass(torch.Tensor)[None] for s in store.samples]
    return images, [s.path if s.data is None else (str(s.path), s.data) for s in store.samples]


def _detection_sidecar(est: Any, run: Path, target: Path, fmt: str = "onnx") -> dict[str, Any]:
    import torch

    from headstart.tasks.image.data import MAX_PIXELS

    cfg, spec = est.config, est.model_.backbone.spec
    size = cfg.detection.image_size
    meta = {
        "format": fmt, "file": target.name, "precision": "fp32", "task": "detection", "classes": est.classes_,
        "family": _detection_family(run), "dynamic_batch": False,
        "inputs": [{"name": "images", "dtype": "float32", "shape": [1, 3, size, size]}],
        "outputs": [{"name": "boxes", "dtype": "float32", "shape": ["detections", 4],
                     "meaning": "x1, y1, x2, y2 in letterbox pixels; divide by the letterbox scale for image pixels"},
                    {"name": "scores", "dtype": "float32", "shape": ["detections"]},
                    {"name": "labels", "dtype": "int64", "shape": ["detections"],
                     "meaning": "class index + 1 into classes (0 is the background)"}],
        "preprocessing": {
            "type": "detection", "decode": "PIL; EXIF orientation applied; 8-bit RGB; shorter side resized to "
                                           "resize_shorter_side with interpolation (as headstart reads images)",
            "resize_shorter_side": size, "interpolation": spec.interpolation or "bilinear", "max_pixels": MAX_PIXELS,
            "letterbox": {"size": size, "longer_side_to": size, "resize": "bilinear, antialiased", "pad": "right and "
                          "bottom", "fill": 114}, "scale": 1 / 255, "channels": "RGB", "layout": "NCHW",
            "normalisation": "inside the graph (torchvision's transform: mean/std of the backbone)",
            "letterbox_scale": "size / max(decoded width, decoded height); image pixels = letterbox pixels x "
                               "original width / decoded width / letterbox_scale"},
        "postprocessing": {"score_thresh": cfg.detection.score_thresh, "nms_thresh": cfg.detection.nms_thresh,
                           "detections_per_img": cfg.detection.detections_per_img, "in_graph": True},
        **_provenance(spec, run, target),
    }
    if fmt == "torchscript":
        meta["exporter"] = f"torch.jit.trace, torch {torch.__version__}"
        meta["load"] = "torch.jit.load(file); module(images) -> (boxes, scores, labels)"
        return meta
    import onnx
    import onnxruntime

    model = onnx.load(str(target), load_external_data=False)
    meta["opset"] = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    meta["exporter"] = f"torch.onnx.export(dynamo=False, opset 17), torch {torch.__version__}"
    meta["onnxruntime_version"] = onnxruntime.__version__
    return meta


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a [n, 4]`` with every box of ``b [m, 4]`` (xyxy)."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _check_detection(est: Any, run: Path, target: Path, meta: dict[str, Any], images: list[Any],
                     paths: list[Any]) -> dict[str, Any]:
    import torch

    if meta["format"] == "torchscript":
        module = _load_torchscript(target)

        def detect(x: Any) -> list[np.ndarray]:
            with torch.no_grad():
                return [t.numpy() for t in module(x)]
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])

        def detect(x: Any) -> list[np.ndarray]:
            return session.run(None, {"images": x.numpy()})

    cap = est.config.detection.detections_per_img
    total = matched = same_count = 0
    score_diff = box_diff = 0.0
    for x in images:
        with torch.no_grad():
            ref = est.model_.detector(list(x))[0]
        boxes, scores, labels = detect(x)
        rb, rs, rl = ref["boxes"].numpy(), ref["scores"].numpy(), ref["labels"].numpy()
        same_count += len(rb) == len(boxes)
        # a full list (detections_per_img boxes) is cut at its lowest score: boxes at that edge may differ by a tie
        floor = max([float(v.min()) for v in (rs, scores) if len(v) >= cap] or [-np.inf])
        keep = rs > floor + 1e-6
        rb, rs, rl = rb[keep], rs[keep], rl[keep]
        total += len(rb)
        if not len(rb) or not len(boxes):
            continue
        iou = _iou(rb, boxes) * (rl[:, None] == labels[None, :])
        best = iou.argmax(1)
        ok = iou[np.arange(len(rb)), best] >= 0.99
        matched += int(ok.sum())
        if ok.any():
            score_diff = max(score_diff, float(np.abs(rs[ok] - scores[best[ok]]).max()))
            box_diff = max(box_diff, float(np.abs(rb[ok] - boxes[best[ok]]).max()))
    limits = DETECTION_TOLERANCES
    parity = {"items": len(images), "reference": "the run's PyTorch detector at fp32 (eval mode), same letterboxed images",
              "detections": total, "box_agreement": matched / total if total else 1.0,
              "same_number_of_detections": same_count / len(images), "max_abs_score_diff": score_diff,
              "max_abs_box_diff": box_diff, "tolerances": limits}
    failures = [f"{k.replace('_', ' ')} {parity[k]:.3g} " + (f"< {v:g}" if k == "box_agreement" else f"> {v:g}")
                for k, v in limits.items() if (parity[k] < v if k == "box_agreement" else parity[k] > v)]
    summary = f"Parity on {len(images)} validation images: {matched} of {total} boxes matched (IoU >= 0.99, same " \
              f"class), max |score diff| {score_diff:.2e}, max |box diff| {box_diff:.2e} px"
    if meta["format"] == "onnx":
        engine = parity["engine"] = _detection_engine_parity(est, target, meta, paths, failures)
        summary += f"; end to end from the files (ONNX engine): {engine['box_agreement']:.3f} of " \
                   f"{engine['detections']} boxes matched, max |box diff| {engine['max_abs_box_diff']:.2g} px"
    return _conclude(run, target, meta, parity, failures, summary, "; the ONNX engine will not run it")


def match_detections(reference: list[dict[str, Any]], other: list[dict[str, Any]], cap: int,
                     min_iou: float = 0.9) -> dict[str, Any]:
    """How well the detections of ``other`` rows (``Detector.predict``'s form) reproduce those of ``reference``.

    Each reference box is matched to the ``other`` box of the same label with the highest IoU (at least
    ``min_iou``); boxes within 0.005 of the lowest score of a full list (``cap`` boxes) are left out, since which
    of those make the cut is decided by ties. Also compares the error rows (same inputs unreadable)."""
    total = matched = 0
    score_diff = box_diff = 0.0
    errors_equal = [r.get("error") for r in reference] == [r.get("error") for r in other]
    for a, b in zip(reference, other):
        if "error" in a or "error" in b:
            continue
        da, db = a["detections"], b["detections"]
        floor = max([min(d["score"] for d in x) for x in (da, db) if len(x) >= cap] or [-np.inf])
        keep = [d for d in da if d["score"] > floor + 0.005]
        total += len(keep)
        if not keep or not db:
            continue
        ious = _iou(np.array([d["box"] for d in keep], np.float64), np.array([d["box"] for d in db], np.float64))
        ious *= np.array([[d["label"] == e["label"] for e in db] for d in keep])
        for i, d in enumerate(keep):
            j = int(ious[i].argmax())
            if ious[i, j] >= min_iou:
                matched += 1
                score_diff = max(score_diff, abs(d["score"] - db[j]["score"]))
                box_diff = max(box_diff, float(np.abs(np.subtract(d["box"], db[j]["box"])).max()))
    return {"images": len(reference), "same_images": [r["path"] for r in reference] == [r["path"] for r in other],
            "errors_equal": errors_equal, "detections": total, "box_agreement": matched / total if total else 1.0,
            "max_abs_score_diff": score_diff, "max_abs_box_diff": box_diff}


def _detection_engine_parity(est: Any, target: Path, meta: dict[str, Any], paths: list[Any],
                             failures: list[str]) -> dict[str, Any]:
    """OnnxEngine from the image files (PIL letterbox, boxes back in image pixels) against ``Detector.predict``."""
    engine = onnx_engine.OnnxEngine(target, meta=meta)
    result = match_detections(est.predict(paths), engine.predict(paths, top_k=None),
                              est.config.detection.detections_per_img)
    result["what"] = "OnnxEngine.predict (numpy/PIL letterbox) vs Detector.predict at fp32, same files, image pixels"
    result["tolerances"] = ENGINE_DETECTION_TOLERANCES
    limits = ENGINE_DETECTION_TOLERANCES
    if not result["same_images"]:
        failures.append("end to end, the ONNX engine read other images than PyTorch")
    if result["box_agreement"] < limits["box_agreement"]:
        failures.append(f"end to end, the ONNX engine matched {result['box_agreement']:.3f} of the PyTorch boxes")
    for key in ("max_abs_score_diff", "max_abs_box_diff"):
        if result[key] > limits[key]:
            failures.append(f"end to end, {key.replace('_', ' ')} {result[key]:.3g} > {limits[key]:g}")
    return result


# ---------------------------------------------------------------------------------------------- using it
def onnx_engine_of(run: str | Path) -> onnx_engine.OnnxEngine:
    """The ONNX engine of RUN's default export ``RUN/model.onnx``; exported first (with its parity check) if absent."""
    from headstart.progress import say
    from headstart.tasks import task_of_run

    run = Path(run)
    task = task_of_run(run).name
    if task not in onnx_engine.TASKS:
        raise ExportError(f"--engine onnx predicts {', '.join(onnx_engine.TASKS)} runs; {run} holds a '{task}' "
                          "model: predict it with --engine torch")
    target = run / onnx_engine.DEFAULT_FILE
    if not target.is_file() or not onnx_engine.sidecar_path(target).is_file():  # (an export that stopped part way)
        try:
            _data_path(run, None)
        except ExportError as exc:
            raise ExportError(f"{target} does not exist yet and cannot be exported here: {exc}. Export it first: "
                              f"headstart export {run} --data DATA") from None
        say(f"{target} does not exist yet: exporting it first (headstart export {run})")
        export_run(run, "onnx")
    engine = onnx_engine.OnnxEngine(target)
    if engine.meta.get("weights_sha256") != sha256(run / "model.safetensors"):
        raise ExportError(f"{target} was exported from other weights than {run / 'model.safetensors'} holds now: "
                          f"export it again (headstart export {run})")
    return engine


def print_parity(meta: dict[str, Any]) -> None:
    """The export's parity results as a table on stdout."""
    from rich.console import Console
    from rich.table import Table

    parity = meta["parity"]
    if meta["task"] == SEGMENTATION:
        table = Table(title=f"Parity of {meta['file']} ({meta['format']} {meta['precision']}) with PyTorch fp32, "
                            f"{parity['items']} validation images")
        for col in ("check", "value", "limit"):
            table.add_column(col)
        limits = parity["tolerances"]
        table.add_row("max |logit difference|", f"{parity['max_abs_logit_diff']:.3g}",
                      f"{limits['max_abs_logit_diff']:g} x max(1, |logit|)")
        table.add_row(f"argmax pixel agreement ({parity['pixels']} pixels)", f"{parity['pixel_agreement']:.5f}",
                      f">= {limits['pixel_agreement']:g}")
        engine = parity.get("engine")
        if engine:
            table.add_row(f"engine end to end: mask pixel agreement ({engine['pixels']} pixels, image size)",
                          f"{engine['pixel_agreement']:.5f}", f">= {limits['engine_pixel_agreement']:g}")
            table.add_row("engine end to end: max |class share difference|", f"{engine['max_abs_fraction_diff']:.3g}",
                          "-")
        Console().print(table)
        Console().print(f"{'[green]passed[/]' if parity['passed'] else '[red]FAILED[/]'}: {meta['file']} "
                        f"(sha256 {meta['model_sha256'][:12]}), sidecar {meta['file']}.json, "
                        f"opset {meta.get('opset', '-')}")
        return
    if meta["task"] == "detection":
        table = Table(title=f"Parity of {meta['file']} ({meta['format']} fp32) with PyTorch fp32, {parity['items']} "
                            "validation images")
        for col in ("check", "value", "limit"):
            table.add_column(col)
        limits = parity["tolerances"]
        table.add_row("boxes matched (same class, IoU >= 0.99)", f"{parity['box_agreement']:.3f} of "
                      f"{parity['detections']}", f">= {limits['box_agreement']:g}")
        table.add_row("images with the same number of boxes", f"{parity['same_number_of_detections']:.3f}", "-")
        table.add_row("max |score difference|", f"{parity['max_abs_score_diff']:.3g}", f"{limits['max_abs_score_diff']:g}")
        table.add_row("max |box difference| (px)", f"{parity['max_abs_box_diff']:.3g}", f"{limits['max_abs_box_diff']:g}")
        engine = parity.get("engine")
        if engine:
            e_limits = engine["tolerances"]
            table.add_row("engine end to end: boxes matched (same class, IoU >= 0.9)",
                          f"{engine['box_agreement']:.3f} of {engine['detections']}", f">= {e_limits['box_agreement']:g}")
            table.add_row("engine end to end: max |score difference|", f"{engine['max_abs_score_diff']:.3g}",
                          f"{e_limits['max_abs_score_diff']:g}")
            table.add_row("engine end to end: max |box difference| (image px)", f"{engine['max_abs_box_diff']:.3g}",
                          f"{e_limits['max_abs_box_diff']:g}")
        Console().print(table)
        Console().print(f"{'[green]passed[/]' if parity['passed'] else '[red]FAILED[/]'}: {meta['file']}")
        return
    table = Table(title=f"Parity of {meta['file']} ({meta['format']} {meta['precision']}) with PyTorch fp32, "
                        f"{parity['items']} validation items")
    for col in ("check", "value", "limit"):
        table.add_column(col)
    limits = parity["tolerances"]
    table.add_row("max |logit difference|", f"{parity['max_abs_logit_diff']:.3g}",
                  f"{limits['max_abs_logit_diff']:g} x max(1, |logit|)" if "max_abs_logit_diff" in limits else "-")
    table.add_row("max |probability difference|", f"{parity['max_abs_probability_diff']:.3g}",
                  f"{limits['max_abs_probability_diff']:g}")
    agree = "tag_agreement" if "tag_agreement" in parity else "top1_agreement"
    words = "items with the same labels (at the thresholds)" if agree == "tag_agreement" else "top-1 agreement"
    table.add_row(words, f"{parity[agree]:.3f}", f">= {limits['top1_agreement']:g}")
    if "accuracy" in parity:
        acc = parity["accuracy"]
        table.add_row("accuracy PyTorch -> exported", f"{acc['pytorch_fp32']:.3f} -> {acc['exported']:.3f} "
                      f"({acc['change']:+.3f})", f"drop <= {limits['accuracy_drop']:g}" if "accuracy_drop" in limits
                      else "-")
    engine = parity.get("engine")
    if engine and "max_abs_probability_diff" in engine:
        table.add_row("engine end to end: max |probability difference|", f"{engine['max_abs_probability_diff']:.3g}",
                      f"{limits['engine_max_abs_probability_diff']:g}")
        table.add_row(f"engine end to end: {words}", f"{engine[agree]:.3f}", f">= {limits['top1_agreement']:g}")
    console = Console()
    console.print(table)
    console.print(f"{'[green]passed[/]' if parity['passed'] else '[red]FAILED[/]'}: {meta['file']} "
                  f"(sha256 {meta['model_sha256'][:12]}), sidecar {meta['file']}.json, opset {meta.get('opset', '-')}")
