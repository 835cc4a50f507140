"""Python API for object detection: ``Detector(...).fit(data)``, ``.predict(paths)``, ``.evaluate(data)``.

>>> det = Detector(model="mobilenet_v2", classes=["person"]).fit("coco128/")
>>> det.predict(["street.jpg"])[0]["detections"][:1]
[{'label': 'person', 'score': 0.71, 'box': [12.0, 40.5, 88.2, 230.0]}]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torchvision
from PIL import Image
from torch.utils.data import Subset

from headstart.config import RunConfig
from headstart.core import loop
from headstart.core.backbones import registry
from headstart.core.backbones.spec import BackboneSpec
from headstart.core.estimator import Estimator, Prepared
from headstart.core.report import outputs
from headstart.errors import ConfigError, DataError
from headstart.progress import results, say, warn
from headstart.tasks import flips
from headstart.tasks.detection import clipped_to_image, training
from headstart.tasks.detection import data as det_data
from headstart.tasks.detection import report as det_report
from headstart.tasks.detection.metrics import detection_report
from headstart.tasks.detection.model import DetectionModel, build_detector, build_tv_detector
from headstart.tasks.image.data import image_samples
from headstart.tasks.image.dataset import ImageStore
from headstart.tasks.image.decode import image_header, open_image, output_stems, to_rgb


def is_tv_detector(name: str) -> bool:
    return name.startswith("tv:") and name[3:].split(".")[0] in torchvision.models.list_models(
        module=torchvision.models.detection)


def check_pyramid(dc: Any) -> None:
    """A new FCOS / RetinaNet whose coarsest level (stride 128) would be 1x1 with one channel per GroupNorm group is
    refused: that level normalises to a constant, and a single image cannot be normalised at all at predict."""
    if dc.family in ("fcos", "retinanet") and dc.image_size <= 128 and dc.neck_channels < 64:
        raise ConfigError(f"detection.image_size={dc.image_size} with detection.neck_channels={dc.neck_channels}: "
                          f"the {dc.family} head's coarsest pyramid level (stride 128) is 1x1 px, and its GroupNorm "
                          "(32 groups, one channel each) cannot normalise it; use detection.image_size=192 or more, "
                          "or detection.neck_channels=64")


def create_model(cfg: RunConfig, num_classes: int, spec: BackboneSpec | None = None) -> DetectionModel:
    """The configured detector; ``spec`` given: the architecture of a saved run with random weights."""
    dc, frozen_bn = cfg.detection, cfg.train.batchnorm == "frozen"
    if is_tv_detector(cfg.model.name):
        return build_tv_detector(cfg.model.name, num_classes, dc, pretrained=spec is None and cfg.model.pretrained,
                                 freeze_bn=frozen_bn)
    if spec is not None:
        backbone = registry.rebuild(spec)
        backbone.spec = spec
    else:
        check_pyramid(dc)
        backbone = registry.create_backbone(cfg.model.name, cfg.model.pretrained, cfg.model.weights)
    return build_detector(backbone, num_classes, dc, freeze_bn=frozen_bn and backbone.spec.weights is not None)


class Detector(Estimator):
    """Fine-tune an object detector (FCOS, RetinaNet, Faster R-CNN, SSD/SSDlite) from a pretrained backbone.

    >>> Detector(model="mobilenet_v2", classes="person", family="fcos").fit("coco128/", out="runs/det")
    """

    TASK = "detection"

    def _read(self, data: str | Path) -> det_data.DetectionSplits:
        cfg = self.config
        splits = det_data.discover(data, cfg.data.val_fraction, cfg.train.seed)
        if cfg.detection.classes:
            splits.select_classes(cfg.detection.classes)
        return splits

    def _training_splits(self, splits: det_data.DetectionSplits) -> det_data.DetectionSplits:
        if not self._refitting:
            return splits
        return dataclasses.replace(splits, train=splits.train + splits.val)  # DetectionSplits has no notes

    def _prepare(self, data: str | Path, run: Path) -> Prepared:
        cfg = self.config
        splits = self._training_splits(self._read(data))
        torch.manual_seed(cfg.train.seed)
        model = create_model(cfg, len(splits.classes))
        spec = model.backbone.spec
        say(f"[bold]Detector[/] {model.info.get('family', model.info.get('name'))} on {spec.name} "
            f"(weights: {spec.weights or 'random init'}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, "
            f"{model.backbone.num_groups} backbone groups + neck + heads)")
        chosen = flips.choose(cfg.data.flip, splits.classes)
        ddata = det_data.DetectionData(splits, cfg.detection.image_size, spec.interpolation or "bilinear",
                                       cfg.data.preload_mb, cfg.data.strict, cfg.data.augment, loop.augment_seed(cfg),
                                       chosen, training=True)
        issues = {k: v for k, v in splits.issues.items() if v}
        counts = ddata.box_counts("train")
        n = len(splits.classes)
        say(f"[bold]Data[/] {data}: {splits.layout}; {n} class{'es' if n != 1 else ''}; train {len(ddata.splits['train'])} "
            f"images, val {len(ddata.splits['val'])}"
            + (f", test {len(splits.test)} (scored once at the end)" if splits.test else "") + "; train boxes per class "
            f"{dict(list(zip(splits.classes, counts))[:10])}{' ...' if len(counts) > 10 else ''}")
        for what, n in issues.items():
            warn(f"{n} {what}")
        for note in ddata.notes:
            warn(note)
        if not self._refitting:  # the first read said it
            flips.announce(chosen)
        self._write_skipped(run, splits)
        if not sum(counts):
            raise DataError(f"No boxes in the training images of {data}" + (
                f" for classes {cfg.detection.classes}" if cfg.detection.classes else "") + ": nothing to learn")
        return Prepared(model, ddata, splits, {"issues": issues, "counts": counts, "flips": chosen.name,
                                               "data_warnings": ddata.notes})

    def _steps(self, prepared: Prepared) -> training.DetectionSteps:
        return training.DetectionSteps(prepared.data, self.config)

    def _finish(self, run: Path, data: str | Path, prepared: Prepared, steps: Any, fabric: Any, state: Any) -> dict:
        cfg, ddata, splits = self.config, prepared.data, prepared.splits
        started = time.perf_counter()
        preds = state.best_output
        if preds is None or len(preds) != len(steps.val_targets):  # validated before a resume: predict again
            preds = steps.predict(fabric, prepared.model, 0)
        self.val_preds_, self.val_targets_ = preds, steps.val_targets
        report = detection_report(preds, self.val_targets_, splits.classes)
        per_phase: dict[str, list[float]] = defaultdict(list)
        for row in state.history:
            per_phase[row["phase"]].append(row["epoch_seconds"])
        return {
            **self._score_test(prepared, fabric),
            "task": self.task().run_kind, "model": cfg.model.name, "family": prepared.model.info.get("family", "tv"),
            "strategy": cfg.train.strategy, "classes": splits.classes, "best_epoch": state.best_epoch,
            "data": str(data), "layout": splits.layout, "val": report, "val_map": report["map"],
            "val_map_50": report["map_50"], "selection_metric": steps.metric, "train_seconds": round(state.seconds, 2),
            "seconds_per_epoch": {k: round(sum(v) / len(v), 2) for k, v in per_phase.items()},
            "epochs_run": len(state.history), "eval_seconds": round(time.perf_counter() - started, 2),
            "num_train": len(ddata.splits["train"]), "num_val": len(ddata.splits["val"]),
            "train_boxes": dict(zip(splits.classes, prepared.extra["counts"])), "data_issues": prepared.extra["issues"],
            "skipped": len(splits.skipped), "flips": prepared.extra["flips"], "data_warnings": prepared.extra["data_warnings"],
            "cache": {"items_served": state.cache_hits, "items_computed": state.cache_computed},
            "device": str(fabric.device),
        }

    def _write_outputs(self, run: Path, data: str | Path, prepared: Prepared, state: Any) -> None:
        metrics, cfg = self.metrics_, self.config
        outputs.write_json(metrics, run / "metrics.json")
        outputs.write_history(state.history, run / "history.csv")
        det_report.plot_pr_curves(metrics["val"], run / "pr_curve.png")
        val_set = prepared.data.dataset("val", train=False, epoch=0)
        shown = list(range(min(8, len(val_set))))
        det_report.plot_predictions([val_set[i][0] for i in shown], [self.val_preds_[i] for i in shown],
                                    [self.val_targets_[i] for i in shown], self.classes_, cfg.detection.draw_score,
                                    run / "val_predictions.png")
        det_report.write_report_md(run, metrics)
        det_report.write_detection_report(run, metrics, cfg.to_dict())
        det_report.print_metrics(metrics["val"], f"Validation ({metrics['num_val']} images)")
        if metrics.get("test"):
            det_report.print_metrics(metrics["test"], f"Test ({metrics['test']['num_images']} images, "
                                     f"{outputs.test_model(metrics)})")

    def _spec_info(self) -> dict[str, Any]:
        return {"backbone": self.model_.backbone.spec.to_dict(), "detector": self.model_.info}

    def _model_from_spec(self, info: dict[str, Any], run: Path) -> DetectionModel:
        return create_model(self.config, len(info["classes"]), BackboneSpec.from_dict(info["backbone"]))

    # ---------------------------------------------------------------- using the model
    def predict(self, inputs: str | Path | list[str | Path], top_k: int | None = None,
                save_images: str | Path | None = None, errors: bool = False) -> list[dict[str, Any]]:
        """Per readable image: path, size and detections (label, score, ``[x1, y1, x2, y2]`` pixels), best first.

        ``top_k`` keeps the best k detections per image; ``save_images`` writes each image with its boxes there;
        ``errors=True`` adds one row ``{"path": ..., "error": why}`` per unreadable image (input order).
        """
        model = self._require_fitted()
        samples = image_samples(inputs)  # files, folders, images in memory
        size = self.config.detection.image_size
        store = ImageStore(samples, size, model.backbone.spec.interpolation or "bilinear",
                           self.config.data.preload_mb,
                           self.config.data.strict, desc="Reading images")
        for path, reason in store.skipped:
            warn(f"skipped {path}: {reason}")
        tf = det_data.eval_transform(size)
        images = [tf(det_data.to_tv(store.get(s.path), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))[0])
                  for s in store.samples]
        fabric = loop.make_fabric(self.config.device)
        batch = loop.inference_batch_size(self.config, fabric, size=size)
        chunks = [(torch.stack([im.as_subclass(torch.Tensor) for im in images[i:i + batch]]), None)
                  for i in range(0, len(images), batch)]
        preds = training.predict_batches(fabric, model, chunks, "Detecting", len(chunks), size)
        rows = []
        out_dir = Path(save_images) if save_images is not None else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        names = output_stems([s.path for s in store.samples], save_images)  # x.jpg of two folders: a_x.png, b_x.png
        for sample, pred, name in zip(store.samples, preds, names):
            decoded = store.get(sample.path)
            width, height = original_size(sample.source)
            factor = width / decoded.width / det_data.letterbox_scale(decoded.width, decoded.height, size)
            clipped, inside = clipped_to_image((pred["boxes"] * factor).numpy(), width, height)
            boxes = torch.from_numpy(clipped)
            order = pred["scores"].argsort(descending=True)
            order = order[torch.from_numpy(inside)[order]][: top_k or None]  # none in the letterbox's padding
            dets = [{"label": self.classes_[int(pred["labels"][i]) - 1], "score": round(float(pred["scores"][i]), 4),
                     "box": [round(float(v), 1) for v in boxes[i]]} for i in order]
            rows.append({"path": str(sample.path), "width": width, "height": height, "detections": dets})
            if out_dir is not None:
                keep = [i for i in order.tolist() if float(pred["scores"][i]) >= self.config.detection.draw_score]
                drawn = det_report.draw_boxes(
                    load_original(sample.source), boxes[keep], [self.classes_[int(pred["labels"][i]) - 1] for i in keep],
                    pred["scores"][keep], width=max(2, round(max(width, height) / 300)))
                drawn.save(out_dir / f"{name}.png")
        if errors:
            from headstart.tasks.classification.estimator import with_error_rows

            rows = with_error_rows(rows, store.skipped, "path", [str(s.path) for s in samples])
        return rows

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """COCO mAP on labelled data (its own test split when it has one, as a VOC test.txt; else its val split;
        else all of it), per-class AP, warnings."""
        model = self._require_fitted()
        cfg = self.config
        splits = det_data.discover(data, cfg.data.val_fraction, cfg.train.seed)
        missing = [c for c in self.classes_ if c not in splits.classes]
        if missing:
            raise DataError(f"{data} has no class {missing}; the model detects {', '.join(self.classes_)}")
        splits.select_classes(self.classes_)
        if splits.test:  # held out of training and of model selection
            splits.val = splits.test
        elif "random validation split" in splits.layout:  # no val split of its own: evaluate on everything
            splits.train, splits.val = splits.train[:1], splits.train + splits.val
        report = self._score(model, splits, loop.make_fabric(cfg.device), "Evaluating")
        report["data_issues"] = {k: v for k, v in splits.issues.items() if v}
        report["skipped"] = len(splits.skipped)
        return report

    def _score(self, model: DetectionModel, splits: det_data.DetectionSplits, fabric: Any, desc: str) -> dict:
        """The detection report of ``model`` on ``splits.val``, read afresh (un-augmented, not cached)."""
        cfg = self.config
        ddata = det_data.DetectionData(splits, cfg.detection.image_size, model.backbone.spec.interpolation or "bilinear",
                                       cfg.data.preload_mb, cfg.data.strict, "none", cfg.train.seed)
        val_set = ddata.dataset("val", train=False, epoch=0)
        bs, n = loop.inference_batch_size(cfg, fabric, size=cfg.detection.image_size), len(val_set)

        def compute(items: range) -> list[dict]:  # on several devices, each predicts its share of the images
            val = training.batches(val_set if len(items) == n else Subset(val_set, items), bs,
                                   num_workers=cfg.data.num_workers)
            return training.predict_batches(fabric, model, val, desc + loop.share_note(fabric, items, n), len(val),
                                            cfg.detection.image_size)

        preds = training.inside_images(loop.gather_split(fabric, n, compute), ddata.extents("val"))
        return detection_report(preds, training.view_targets(ddata, "val", False, 0), self.classes_)

    def _score_test(self, prepared: Prepared, fabric: Any) -> dict[str, Any]:
        """DATA's test split (a VOC test.txt, a YOLO 'test' entry), held out of training and of model selection,
        scored by ``prepared.model``; {} without one."""
        splits = prepared.splits
        if not splits.test:
            return {}
        test = dataclasses.replace(splits, train=splits.train[:1], val=splits.test, test=[], skipped=[])
        return {"test": self._score(prepared.model, test, fabric, "Evaluating (test)")}

    def _refit_scores(self, prepared: Prepared, fabric: Any) -> dict[str, Any]:
        return self._score_test(prepared, fabric)

    def print_metrics(self, report: dict[str, Any], title: str) -> None:
        det_report.print_metrics(report, title)

    @classmethod
    def print_predictions(cls, rows: list[dict[str, Any]], fmt: str, top_k: int) -> None:
        """Detection rows as JSON, CSV (one line per box) or a table."""
        if fmt == "json":
            print(json.dumps(rows, indent=2))
            return
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            failed = any("error" in r for r in rows)
            writer.writerow(["path", "label", "score", "x1", "y1", "x2", "y2"] + (["error"] if failed else []))
            for r in rows:
                if "error" in r:
                    writer.writerow([r["path"], "", "", "", "", "", "", r["error"]])
                for d in r.get("detections", []):
                    writer.writerow([r["path"], d["label"], f"{d['score']:.4f}", *d["box"]] + ([""] if failed else []))
            sys.stdout.write(buf.getvalue())
            return
        from rich.table import Table

        table = Table()
        for col in ("file", "boxes", "best detections (label score [x1 y1 x2 y2])"):
            table.add_column(col, overflow="fold")
        for r in rows:
            if "error" in r:
                table.add_row(r["path"], "[red]not read[/]", r["error"])
                continue
            best = "; ".join(f"{d['label']} {d['score']:.2f} {d['box']}" for d in r["detections"][:5])
            table.add_row(r["path"], str(len(r["detections"])), best)
        results().print(table)


def original_size(path: Path | bytes) -> tuple[int, int]:
    """Width and height of an image file (or its bytes) as displayed (EXIF rotation applied), read from its header."""
    return image_header(path)[1:]


def load_original(path: Path | bytes) -> Image.Image:
    """An image file (or its bytes) at its own size as 8-bit RGB, EXIF-rotated (DICOM as its viewer shows it)."""
    return to_rgb(open_image(path))


