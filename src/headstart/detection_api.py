"""Python API for object detection: ``Detector(...).fit(data)``, ``.predict(paths)``, ``.evaluate(data)``.

>>> det = Detector(model="mobilenet_v2", classes=["person"]).fit("coco128/")
>>> det.predict(["street.jpg"])[0]["detections"][:1]
[{'label': 'person', 'score': 0.71, 'box': [12.0, 40.5, 88.2, 230.0]}]
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

from headstart import detection_engine, detection_reports, engine, registry, reports, runs
from headstart.api import SHORTCUTS
from headstart.config import RunConfig, load_config, parse_override
from headstart.data import detection as det_data
from headstart.data.images import ImageStore, Sample, image_files
from headstart.errors import DataError, RunFolderError
from headstart.facade import Facade, check_run_target
from headstart.progress import say, warn
from headstart.spec import BackboneSpec
from headstart.tasks.detection import DetectionModel, build_detector, build_tv_detector

TASK = "detection"

# Defaults of a detection run (the image defaults are made for classification).
DEFAULTS: dict[str, Any] = {
    "task": "detection",
    "model": {"name": "mobilenet_v2"},
    # Frozen backbone on cached features: the one recipe that trains a detector in minutes on a CPU
    # (benchmarks/detection.py); lp-ft / partial:K are one flag away when a GPU is at hand.
    "train": {"strategy": "linear", "epochs": 24, "head_epochs": 12, "batch_size": 8, "lr": 3e-3,
              "weight_decay": 1e-4, "backbone_lr_ratio": 0.1},
    "data": {"augment": "standard"},
    # fp32: box regression and decoding lose pixels in bf16 (the image tasks' "auto" picks bf16 on this CPU)
    "device": {"precision": "32-true"},
}
DETECTION_SHORTCUTS = {**SHORTCUTS, "classes": "detection.classes", "family": "detection.family",
                       "image_size": "detection.image_size", "time_budget": "detection.time_budget"}


def build_config(config: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                 **shortcuts: Any) -> RunConfig:
    """A validated detection RunConfig: DEFAULTS <- YAML file <- overrides <- keywords."""
    merged: dict[str, Any] = {}
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    merged.update(overrides or {})
    for name, value in shortcuts.items():
        if name not in DETECTION_SHORTCUTS:
            raise TypeError(f"Unknown argument '{name}'; expected one of {sorted(DETECTION_SHORTCUTS)} or overrides={{...}}")
        if name == "classes" and isinstance(value, str):
            value = [c.strip() for c in value.split(",") if c.strip()]
        if value is not None:
            merged[DETECTION_SHORTCUTS[name]] = value
    cfg = load_config(config, merged, base=json.loads(json.dumps(DEFAULTS)))
    if cfg.task != TASK:
        raise RunFolderError(f"This config is for task '{cfg.task}'; Detector needs task 'detection'")
    return cfg


def is_tv_detector(name: str) -> bool:
    return name.startswith("tv:") and name[3:].split(".")[0] in torchvision.models.list_models(
        module=torchvision.models.detection)


def create_model(cfg: RunConfig, num_classes: int, spec: BackboneSpec | None = None) -> DetectionModel:
    """The configured detector; ``spec`` given: the architecture of a saved run with random weights."""
    dc = cfg.detection
    if is_tv_detector(cfg.model.name):
        return build_tv_detector(cfg.model.name, num_classes, dc, pretrained=spec is None and cfg.model.pretrained)
    if spec is not None:
        backbone = registry.rebuild(spec)
        backbone.spec = spec
    else:
        backbone = registry.create_backbone(cfg.model.name, cfg.model.pretrained, cfg.model.weights)
    return build_detector(backbone, num_classes, dc, pretrained=backbone.spec.weights is not None)


class Detector(Facade):
    """Fine-tune an object detector (FCOS, RetinaNet, Faster R-CNN, SSD/SSDlite) from a pretrained backbone.

    >>> Detector(model="mobilenet_v2", classes="person", family="fcos").fit("coco128/", out="runs/det")
    """

    TASK = TASK

    def __init__(self, model: str | None = None, strategy: str | None = None, epochs: int | None = None,
                 config: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                 **kwargs: Any) -> None:
        self.config = build_config(config, overrides, model=model, strategy=strategy, epochs=epochs, **kwargs)
        self.model_: DetectionModel | None = None
        self.classes_: list[str] = []
        self.metrics_: dict[str, Any] = {}
        self.history_: list[dict[str, Any]] = []
        self.run_dir_: Path | None = None

    # ---------------------------------------------------------------- training
    def _read(self, data: str | Path) -> det_data.DetectionSplits:
        cfg = self.config
        splits = det_data.discover(data, cfg.data.val_fraction, cfg.train.seed)
        if cfg.detection.classes:
            splits.select_classes(cfg.detection.classes)
        return splits

    def fit(self, data: str | Path, out: str | Path | None = None, resume: bool = False) -> Detector:
        """Train on DATA (YOLO folder or COCO json); the run folder ``out`` receives every output."""
        cfg = self.config
        run = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="headstart-det-"))
        check_run_target(run, resume)
        run.mkdir(parents=True, exist_ok=True)
        splits = self._read(data)
        torch.manual_seed(cfg.train.seed)
        model = create_model(cfg, len(splits.classes))
        spec = model.backbone.spec
        say(f"[bold]Detector[/] {model.info.get('family', model.info.get('name'))} on {spec.name} "
            f"(weights: {spec.weights or 'random init'}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
            f"{model.backbone.num_groups} backbone groups + neck + heads)")
        ddata = det_data.DetectionData(splits, cfg.detection.image_size, spec.interpolation or "bilinear",
                                       cfg.data.preload_mb, cfg.data.strict, cfg.data.augment, engine.augment_seed(cfg))
        issues = {k: v for k, v in splits.issues.items() if v}
        counts = ddata.box_counts("train")
        say(f"[bold]Data[/] {data}: {splits.layout}; {len(splits.classes)} classes; train {len(ddata.splits['train'])} "
            f"images, val {len(ddata.splits['val'])}; train boxes per class "
            f"{dict(list(zip(splits.classes, counts))[:10])}{' ...' if len(counts) > 10 else ''}")
        for what, n in issues.items():
            warn(f"{n} {what}")
        if splits.skipped:
            (run / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in splits.skipped))
            warn(f"{len(splits.skipped)} file(s) skipped (listed in {run / 'skipped.txt'})")
        if not sum(counts):
            raise DataError(f"No boxes in the training images of {data}" + (
                f" for classes {cfg.detection.classes}" if cfg.detection.classes else "") + ": nothing to learn")
        fingerprint = hashlib.sha256("".join(ddata.keys("train") + ddata.keys("val")).encode()).hexdigest()[:16]
        if resume and runs.read_meta(run, TASK).get("data_fingerprint") != fingerprint:
            raise RunFolderError(f"The data changed since {run} started: resume needs the same files; "
                                 "start a new run with another --out")
        cfg.dump(run / "config.yaml")
        runs.write_meta(run, task=TASK, status="running", data=str(Path(data).resolve()), data_fingerprint=fingerprint)
        fabric = engine.make_fabric(cfg.device)
        state, preds = detection_engine.fit(model, ddata, cfg, run, resume=resume, fabric=fabric)
        self.model_, self.classes_, self.history_, self.run_dir_ = model, splits.classes, state.history, run

        started = time.perf_counter()
        val_set = ddata.dataset("val", train=False, epoch=0)
        if preds is None:  # the best epoch was validated before a resume: predict again
            batch = cfg.train.batch_size * 2
            preds = detection_engine.predict_batches(fabric, model, detection_engine._loader(val_set, batch),
                                                     "Evaluating (val)", -(-len(val_set) // batch), cfg.detection.image_size)
        targets = detection_engine.view_targets(ddata, "val", False, 0)
        report = detection_engine.detection_report(preds, targets, splits.classes)
        per_phase: dict[str, list[float]] = defaultdict(list)
        for row in state.history:
            per_phase[row["phase"]].append(row["train_seconds_epoch"])
        metrics = {
            "task": TASK, "model": cfg.model.name, "family": model.info.get("family", "tv"),
            "strategy": cfg.train.strategy, "classes": splits.classes, "best_epoch": state.best_epoch,
            "data": str(data), "layout": splits.layout, "val": report, "val_map": report["map"],
            "val_map_50": report["map_50"], "train_seconds": round(state.seconds, 2),
            "seconds_per_epoch": {k: round(sum(v) / len(v), 2) for k, v in per_phase.items()},
            "epochs_run": len(state.history), "eval_seconds": round(time.perf_counter() - started, 2),
            "num_train": len(ddata.splits["train"]), "num_val": len(ddata.splits["val"]),
            "train_boxes": dict(zip(splits.classes, counts)), "data_issues": issues, "skipped": len(splits.skipped),
            "cache": {"items_served": state.cache_hits, "items_computed": state.cache_computed},
            "device": str(fabric.device),
        }
        self.metrics_ = metrics
        save_detector(run, model, splits.classes)
        reports.write_json(metrics, run / "metrics.json")
        reports.write_history(state.history, run / "history.csv")
        detection_reports.plot_pr_curves(report, run / "pr_curve.png")
        shown = list(range(min(8, len(val_set))))
        detection_reports.plot_predictions([val_set[i][0] for i in shown], [preds[i] for i in shown],
                                           [targets[i] for i in shown], splits.classes, cfg.detection.draw_score,
                                           run / "val_predictions.png")
        detection_reports.write_report_md(run, metrics)
        runs.write_meta(run, status="complete")
        (run / engine.CHECKPOINT).unlink(missing_ok=True)
        detection_reports.print_metrics(report, f"Validation ({metrics['num_val']} images)")
        say(f"Run folder: [bold]{run}[/] (report.md, metrics.json, pr_curve.png, val_predictions.png)")
        return self

    # ---------------------------------------------------------------- using the model
    def predict(self, inputs: str | Path | list[str | Path], top_k: int | None = None,
                save_images: str | Path | None = None) -> list[dict[str, Any]]:
        """Per readable image: path, size and detections (label, score, ``[x1, y1, x2, y2]`` pixels), best first.

        ``top_k`` keeps the best k detections per image; ``save_images`` writes each image with its boxes there.
        """
        model = self._require_fitted()
        files = image_files([inputs] if isinstance(inputs, (str, Path)) else inputs)
        size = self.config.detection.image_size
        store = ImageStore([Sample(f) for f in files], size, model.backbone.spec.interpolation or "bilinear",
                           self.config.data.preload_mb,
                           self.config.data.strict, desc="Reading images")
        for path, reason in store.skipped:
            warn(f"skipped {path}: {reason}")
        tf = det_data.eval_transform(size)
        images = [tf(det_data.to_tv(store.get(s.path), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))[0])
                  for s in store.samples]
        batch = self.config.train.batch_size * 2
        fabric = engine.make_fabric(self.config.device)
        chunks = [(torch.stack([im.as_subclass(torch.Tensor) for im in images[i:i + batch]]), None)
                  for i in range(0, len(images), batch)]
        preds = detection_engine.predict_batches(fabric, model, chunks, "Detecting", len(chunks), size)
        rows = []
        out_dir = Path(save_images) if save_images is not None else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        for sample, pred in zip(store.samples, preds):
            decoded = store.get(sample.path)
            width, height = original_size(sample.path)
            factor = width / decoded.width / det_data.letterbox_scale(decoded.width, decoded.height, size)
            boxes = (pred["boxes"] * factor).clamp(min=0)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(max=width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(max=height)
            order = pred["scores"].argsort(descending=True)[: top_k or None]
            dets = [{"label": self.classes_[int(pred["labels"][i]) - 1], "score": round(float(pred["scores"][i]), 4),
                     "box": [round(float(v), 1) for v in boxes[i]]} for i in order]
            rows.append({"path": str(sample.path), "width": width, "height": height, "detections": dets})
            if out_dir is not None:
                keep = [i for i in order.tolist() if float(pred["scores"][i]) >= self.config.detection.draw_score]
                drawn = detection_reports.draw_boxes(
                    load_original(sample.path), boxes[keep], [self.classes_[int(pred["labels"][i]) - 1] for i in keep],
                    pred["scores"][keep], width=max(2, round(max(width, height) / 300)))
                drawn.save(out_dir / (sample.path.stem + ".png"))
        return rows

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """COCO mAP on labelled data (its val split when it has one, else all of it), per-class AP, warnings."""
        model = self._require_fitted()
        cfg = self.config
        splits = det_data.discover(data, cfg.data.val_fraction, cfg.train.seed)
        missing = [c for c in self.classes_ if c not in splits.classes]
        if missing:
            raise DataError(f"{data} has no class {missing}; the model detects {', '.join(self.classes_)}")
        splits.select_classes(self.classes_)
        if "random validation split" in splits.layout:  # no val split of its own: evaluate on everything
            splits.train, splits.val = splits.train[:1], splits.train + splits.val
        ddata = det_data.DetectionData(splits, cfg.detection.image_size, model.backbone.spec.interpolation or "bilinear",
                                       cfg.data.preload_mb,
                                       cfg.data.strict, "none", cfg.train.seed)
        val_set = ddata.dataset("val", train=False, epoch=0)
        fabric = engine.make_fabric(cfg.device)
        batch = cfg.train.batch_size * 2
        preds = detection_engine.predict_batches(fabric, model, detection_engine._loader(val_set, batch), "Evaluating",
                                                 -(-len(val_set) // batch), cfg.detection.image_size)
        report = detection_engine.detection_report(preds, detection_engine.view_targets(ddata, "val", False, 0),
                                                   self.classes_)
        report["data_issues"] = {k: v for k, v in splits.issues.items() if v}
        report["skipped"] = len(splits.skipped)
        return report

    @classmethod
    def load(cls, run: str | Path) -> Detector:
        """A fitted detector from a run folder."""
        run = Path(run)
        meta = runs.read_meta(run, TASK)
        if meta.get("status") != "complete" or not (run / "model.safetensors").exists():
            raise RunFolderError(f"{run} has no finished model (status '{meta.get('status')}'); "
                                 f"finish it with: headstart train --resume {run}")
        det = cls(config=run / "config.yaml")
        info = json.loads((run / "spec.json").read_text())
        model = create_model(det.config, len(info["classes"]), BackboneSpec.from_dict(info["backbone"]))
        state = load_file(str(run / "model.safetensors"))
        expected = model.state_dict()
        problems = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
        unexpected = [k for k in state if k not in expected]
        if problems or unexpected:
            raise RunFolderError(f"The weights in {run}/model.safetensors do not fit the detector in spec.json: "
                                 f"{len(problems)} missing or of another shape (e.g. {problems[:2]}), "
                                 f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")
        model.load_state_dict(state)
        model.eval()
        det.model_, det.classes_, det.run_dir_ = model, info["classes"], run
        return det


def save_detector(run: Path, model: DetectionModel, classes: list[str]) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(run / "model.safetensors"), metadata={"task": TASK})
    spec = {"task": TASK, "backbone": model.backbone.spec.to_dict(), "detector": model.info, "classes": classes}
    (run / "spec.json").write_text(json.dumps(spec, indent=2))


def original_size(path: Path) -> tuple[int, int]:
    """Width and height of an image file as displayed (EXIF rotation applied), read from its header."""
    with Image.open(path) as im:
        w, h = im.size
        return (h, w) if im.getexif().get(0x0112) in (5, 6, 7, 8) else (w, h)


def load_original(path: Path) -> Image.Image:
    from PIL import ImageOps

    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


