"""Semantic segmentation: ``Segmenter(...).fit(data)``, ``.predict(paths)``, ``.evaluate(data)``.

A light FPN decoder on a registry backbone's stride-8/16/32 stages (or a torchvision segmentation
model by name), trained by the shared loop; a frozen encoder's maps come from the feature cache.
Validation, evaluation and prediction run at each image's own size: the image is resized to the
training scale, predicted, and the logits upsampled to its original height and width.

>>> seg = Segmenter(strategy="linear").fit("camvid/")
>>> seg.predict(["street.png"])[0]["fractions"]  # {'road': 0.31, 'sky': 0.18, ...}
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from headstart.core import loop
from headstart.core.backbones.spec import BackboneSpec
from headstart.core.estimator import Estimator, Prepared
from headstart.errors import DataError
from headstart.progress import progress_bar, results, say, warn
from headstart.tasks import flips
from headstart.tasks.image.decode import output_stems
from headstart.tasks.segmentation import data as seg_data
from headstart.tasks.segmentation import report as seg_report
from headstart.tasks.segmentation import transforms as seg_tf
from headstart.tasks.segmentation.metrics import confusion, segmentation_report
from headstart.tasks.segmentation.model import SegmentationModel, create_model
from headstart.tasks.segmentation.training import SegData, SegmentationSteps, train_pixel_counts


def _open_rgb(source: Path | bytes):
    """An image file (or its bytes) as 8-bit RGB, EXIF rotation applied, at its own size."""
    from headstart.tasks.image.decode import open_image, to_rgb

    return to_rgb(open_image(source))


class Segmenter(Estimator):
    """Fine-tune a pretrained backbone with a light FPN decoder to label every pixel.

    >>> Segmenter(model="mobilenet_v2", strategy="linear").fit("camvid/", out="runs/seg")
    """

    TASK = "segmentation"
    NOUN = "images"
    SKIPPED = "image-mask pairs"
    train_pixels_: list[int]

    # ---------------------------------------------------------------- training
    def _training_splits(self, splits: seg_data.SegmentationSplits) -> seg_data.SegmentationSplits:
        if not self._refitting:
            return splits
        return dataclasses.replace(splits, train=splits.train + splits.val, notes=[], read=[])

    def _build(self, num_classes: int, spec: BackboneSpec | None = None, channels: int | None = None) -> SegmentationModel:
        cfg, sc = self.config, self.config.segmentation
        return create_model(cfg.model.name, num_classes, cfg.model.pretrained, cfg.model.weights,
                            channels or sc.decoder_channels, sc.image_size, spec)

    def _prepare(self, data: str | Path, run: Path) -> Prepared:
        cfg = self.config
        splits = self._training_splits(seg_data.discover(data, cfg.data.val_fraction, cfg.train.seed))
        torch.manual_seed(cfg.train.seed)
        model = self._build(len(splits.classes))
        spec = model.backbone.spec
        say(f"[bold]Segmenter[/] {model.info['kind']} on {spec.name} (weights: {spec.weights or 'random init'}, "
            f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params, {model.backbone.num_groups} backbone "
            "groups + decoder + classifier)")
        chosen = flips.choose(cfg.data.flip, splits.classes)
        sdata = SegData(splits, spec, cfg.segmentation.image_size, cfg.data.augment, loop.augment_seed(cfg),
                        flips=chosen)
        pixels = [sum(s.class_pixels[i] for s in splits.train if s.class_pixels) for i in range(len(splits.classes))] \
            if all(s.class_pixels for s in splits.train) else train_pixel_counts(splits)
        total = max(sum(pixels), 1)
        say(f"[bold]Data[/] {data}: {splits.layout}; {len(splits.classes)} classes; train {len(splits.train)} images, "
            f"val {len(splits.val)}" + (f", test {len(splits.test)}" if splits.test else "") + "; training pixels "
            + ", ".join(f"{c} {p / total:.1%}" for c, p in list(zip(splits.classes, pixels))[:12]))
        for note in splits.read:  # how DATA was read
            say(note)
        for note in splits.notes:  # what to check: the data warnings
            warn(note)
        if not self._refitting:  # the first read said it
            flips.announce(chosen)
        self._write_skipped(run, splits)
        if not sum(pixels):
            raise DataError(f"No labelled pixel in the training masks of {data} (all 255): nothing to learn")
        missing = [c for c, p in zip(splits.classes, pixels) if not p]
        notes = list(splits.notes)
        if missing:
            notes.append(f"{len(missing)} class(es) have no training pixel and cannot be learned: "
                         f"{', '.join(missing[:10])}")
            warn(notes[-1])
        self.train_pixels_ = pixels
        return Prepared(model, sdata, splits, {"train_pixels": pixels, "flips": chosen.name, "data_warnings": notes})

    def _steps(self, prepared: Prepared) -> SegmentationSteps:
        return SegmentationSteps(prepared.data, self.config, prepared.extra["train_pixels"])

    def _finish(self, run: Path, data: str | Path, prepared: Prepared, steps: Any, fabric: Any, state: Any) -> dict:
        cfg, splits = self.config, prepared.splits
        started = time.perf_counter()
        self.classes_ = splits.classes
        shown = min(cfg.segmentation.overlays, len(splits.val))  # spread over the split (frames of a video follow)
        keep = {round(i * len(splits.val) / shown) for i in range(shown)} if shown else set()
        val, self.val_overlays_ = self._evaluate_samples(prepared.model, splits.val, fabric, keep, "Evaluating (val)")
        metrics: dict[str, Any] = {
            "task": self.task().run_kind, "model": cfg.model.name, "segmenter": prepared.model.info["kind"],
            "strategy": cfg.train.strategy, "classes": splits.classes, "best_epoch": state.best_epoch,
            "data": str(data), "layout": splits.layout, "image_size": cfg.segmentation.image_size,
            "val": val, "val_miou": val["miou"], "val_pixel_accuracy": val["pixel_accuracy"],
            "baseline_miou": val["baseline"]["miou"], "selection_metric": steps.metric,
            "train_seconds": round(state.seconds, 2), "epochs_run": len(state.history),
            "num_train": len(splits.train), "num_val": len(splits.val), "skipped": len(splits.skipped),
            "train_pixels": dict(zip(splits.classes, prepared.extra["train_pixels"])), "flips": prepared.extra["flips"],
            "data_warnings": prepared.extra["data_warnings"],
            "cache": {"items_served": state.cache_hits, "items_computed": state.cache_computed},
            "phases": state.phases, "chosen": loop.chosen_phase(state.phases, steps.metric),
            "device": str(fabric.device),
        }
        if splits.test:
            metrics["test"], _ = self._evaluate_samples(prepared.model, splits.test, fabric, set(), "Evaluating (test)")
        metrics["eval_seconds"] = round(time.perf_counter() - started, 2)
        return metrics

    def _write_outputs(self, run: Path, data: str | Path, prepared: Prepared, state: Any) -> None:
        from headstart.core.report import outputs

        metrics, cfg = self.metrics_, self.config
        outputs.write_json(metrics, run / "metrics.json")
        outputs.write_history(state.history, run / "history.csv")
        outputs.plot_learning_curve(state.history, run / "learning_curve.png", metrics["selection_metric"],
                                    (("miou", "val mIoU"), ("pixel_accuracy", "val pixel accuracy")))
        seg_report.plot_confusion(metrics["val"], self.classes_, run / "confusion_matrix.png")
        seg_report.plot_overlays(self.val_overlays_, self.classes_, run / "val_overlays.png")
        seg_report.write_report_md(run, metrics)
        seg_report.write_segmentation_report(run, metrics, cfg.to_dict())
        self.print_metrics(metrics["val"], f"Validation ({metrics['num_val']} images, at their own size)")

    def _spec_info(self) -> dict[str, Any]:
        return {"backbone": self.model_.backbone.spec.to_dict(), "segmenter": self.model_.info,
                "image_size": self.config.segmentation.image_size, "train_pixels": self.train_pixels_}

    def _model_from_spec(self, info: dict[str, Any], run: Path) -> SegmentationModel:
        seg = info["segmenter"]
        return self._build(len(info["classes"]), BackboneSpec.from_dict(info["backbone"]), seg.get("channels"))

    def _loaded(self, run: Path, info: dict[str, Any]) -> None:
        self.train_pixels_ = [int(p) for p in info["train_pixels"]]

    # ---------------------------------------------------------------- inference at each image's own size
    def _masks(self, model: SegmentationModel, images: Iterator, fabric: Any, total: int,
               desc: str) -> Iterator[tuple[Any, np.ndarray]]:
        """``(tag, predicted mask (H, W) uint8)`` per ``(tag, PIL image)``.

        Each image is resized to the training scale by the eval transform, predicted, and its logits
        upsampled bilinearly to the image's own size; images whose resized shapes match share a batch.
        """
        from torchvision import tv_tensors

        model.eval()
        model.to(fabric.device)
        tf = seg_tf.eval_transform(model.backbone.spec, self.config.segmentation.image_size)
        bs = loop.inference_batch_size(self.config, fabric, size=self.config.segmentation.image_size)
        pending: list[tuple[Any, tuple[int, int], torch.Tensor]] = []

        def flush() -> Iterator[tuple[Any, np.ndarray]]:
            x = torch.stack([p[2] for p in pending])
            with torch.inference_mode(), fabric.autocast():
                logits = model(loop.autocast_images(loop.channels_last(fabric.to_device(x))))
            for (tag, (h, w), _), lg in zip(pending, logits):
                up = F.interpolate(lg[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0]
                yield tag, up.argmax(0).to("cpu", torch.uint8).numpy()
            pending.clear()

        with progress_bar(desc, total) as advance:
            for tag, image in images:
                w, h = image.size
                dummy = tv_tensors.Mask(torch.zeros(h, w, dtype=torch.uint8))
                x, _ = tf(tv_tensors.Image(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)), dummy)
                x = x.as_subclass(torch.Tensor)
                if pending and (len(pending) >= bs or pending[0][2].shape != x.shape):
                    yield from flush()
                pending.append((tag, (h, w), x))
                advance()
            if pending:
                yield from flush()

    def _evaluate_samples(self, model: SegmentationModel, samples: list, fabric: Any, keep: set[int],
                          desc: str) -> tuple[dict[str, Any], list]:
        """The report of ``samples`` at their own size, and the (image, truth, prediction) triples of items ``keep``;
        on several devices each predicts its share of the images and all get the summed confusion."""
        n = len(self.classes_)

        def compute(share: range) -> list[tuple[torch.Tensor, list, str | None]]:
            cm, kept = torch.zeros(n, n, dtype=torch.long), []
            items = ((i, _open_rgb(samples[i].source)) for i in share)
            note = loop.share_note(fabric, share, len(samples))
            for i, pred in self._masks(model, items, fabric, len(share), desc + note):
                truth = samples[i].read_mask()
                if truth.shape != pred.shape:  # said on every device (a lone raise would leave the others waiting)
                    return [(cm, kept, f"The mask of {samples[i].image} is {truth.shape[1]}x{truth.shape[0]}, its "
                                       f"image {pred.shape[1]}x{pred.shape[0]}")]
                cm += confusion(torch.from_numpy(pred).long(), torch.from_numpy(truth).long(), n)
                if i in keep:
                    kept.append((samples[i].source, truth, pred))
            return [(cm, kept, None)]

        shares = loop.gather_split(fabric, len(samples), compute)
        for _, _, error in shares:
            if error:
                raise DataError(error)
        cm = sum((part[0] for part in shares), torch.zeros(n, n, dtype=torch.long))
        kept = [k for part in shares for k in part[1]]
        report = segmentation_report(cm, self.classes_, self.train_pixels_, num_images=len(samples))
        return report, kept

    # ---------------------------------------------------------------- using the model
    def predict(self, inputs: Any, top_k: int | None = None, errors: bool = False,
                save_masks: str | Path | None = None) -> list[dict[str, Any]]:
        """Per readable image: path, width, height, ``mask`` (numpy (H, W) uint8 class indices at the image's own
        size) and ``fractions`` (share of the image's pixels per class, largest first; ``top_k`` keeps the first k).

        ``save_masks``: a folder receiving ``NAME.png`` (the class indices, a palette PNG) and ``NAME_overlay.png``
        (the classes' colours over the image) per image. ``errors=True`` adds one ``{"path": ..., "error": why}``
        row per unreadable input (input order).
        """
        from headstart.tasks.classification.estimator import with_error_rows
        from headstart.tasks.image.data import image_samples

        model = self._require_fitted()
        samples = image_samples(inputs)
        skipped: list[tuple[str, str]] = []
        opened: dict[int, Any] = {}

        def items():
            for i, s in enumerate(samples):
                try:
                    image = _open_rgb(s.source)
                except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not fatal
                    skipped.append((str(s.path), f"cannot be read as an image ({type(exc).__name__}: {exc})"))
                    warn(f"skipped {s.path}: {skipped[-1][1]}")
                    continue
                opened[i] = image
                yield i, image

        out_dir = Path(save_masks) if save_masks is not None else None
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        names = output_stems([s.path for s in samples], save_masks)  # x.png of two folders: a_x.png, b_x.png
        fabric = loop.make_fabric(self.config.device)
        rows = []
        n = len(self.classes_)
        for i, mask in self._masks(model, items(), fabric, len(samples), "Segmenting"):
            counts = np.bincount(mask.ravel(), minlength=n)[:n]
            order = np.argsort(-counts, kind="stable")
            fractions = {self.classes_[c]: round(float(counts[c]) / mask.size, 6) for c in order if counts[c]}
            if top_k:
                fractions = dict(list(fractions.items())[:top_k])
            h, w = mask.shape
            rows.append({"path": str(samples[i].path), "width": w, "height": h, "fractions": fractions, "mask": mask})
            if out_dir is not None:
                seg_report.save_mask(mask, opened[i], self.classes_, out_dir, names[i])
            opened.pop(i, None)
        return with_error_rows(rows, skipped, "path", [str(s.path) for s in samples]) if errors else rows

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """mIoU, pixel accuracy and per-class IoU at each image's own size, beside the majority-class baseline.

        DATA as for training (its test split, else its validation split).
        """
        model = self._require_fitted()
        cfg = self.config
        splits = seg_data.discover(data, cfg.data.val_fraction, cfg.train.seed)
        if splits.classes != self.classes_:
            raise DataError(f"{data} has classes {splits.classes[:12]}, the model segments {self.classes_[:12]}: "
                            "evaluate needs the same classes in the same order")
        samples, split = (splits.test, "test") if splits.test else (splits.val, "val")
        report, _ = self._evaluate_samples(model, samples, loop.make_fabric(cfg.device), set(),
                                           f"Evaluating ({split})")
        report["split"] = split
        report["skipped"] = len(splits.skipped)
        return report

    def print_metrics(self, report: dict[str, Any], title: str) -> None:
        seg_report.print_metrics(report, title)

    @classmethod
    def print_predictions(cls, rows: list[dict[str, Any]], fmt: str, top_k: int) -> None:
        """Per image: the share of its pixels per class (JSON, CSV or a table); the masks are not printed."""
        shown = [{k: v for k, v in r.items() if k != "mask"} for r in rows]
        if fmt == "json":
            print(json.dumps(shown, indent=2))
            return
        if fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(["path", "width", "height", "class", "fraction", "error"])
            for r in shown:
                if "error" in r:
                    writer.writerow([r["path"], "", "", "", "", r["error"]])
                for c, f in r.get("fractions", {}).items():
                    writer.writerow([r["path"], r["width"], r["height"], c, f"{f:.6f}", ""])
            sys.stdout.write(buf.getvalue())
            return
        from rich.table import Table

        table = Table()
        for col in ("file", "size", "classes (share of pixels)"):
            table.add_column(col, overflow="fold")
        for r in shown:
            if "error" in r:
                table.add_row(r["path"], "[red]not read[/]", r["error"])
                continue
            table.add_row(r["path"], f"{r['width']}x{r['height']}",
                          ", ".join(f"{c} {f:.1%}" for c, f in list(r["fractions"].items())[:max(top_k, 5)]))
        results().print(table)

