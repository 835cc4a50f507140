"""Image classification: ``ImageClassifier(...).fit(data)``, ``.predict(paths)``, ``.evaluate(data)``.

>>> clf = ImageClassifier(model="efficientnet_lite0", strategy="lp-ft").fit("data/")
>>> clf.predict(["cat.jpg"])
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from headstart.core import loop
from headstart.core.backbones import lora, registry
from headstart.core.estimator import REFIT_TRAIN, Prepared
from headstart.errors import ConfigError
from headstart.progress import say, warn
from headstart.tasks import flips
from headstart.tasks.classification.estimator import ClassifierEstimator
from headstart.tasks.classification.model import TransferClassifier
from headstart.tasks.classification.training import predict_logits
from headstart.tasks.image.data import ImageSplits, Sample, content_keys, discover, file_key, image_samples, labelled_samples
from headstart.tasks.image.dataset import ImageData, ImageDataset, ImageStore
from headstart.tasks.image.decode import output_stems
from headstart.tasks.image.shortcuts import shortcut_notes
from headstart.tasks.image.stored import payload
from headstart.tasks.image.transforms import eval_transform

HEATMAP_BATCH = 32  # images per heat-map pass: it keeps the backbone's activations for the backward pass


class ImageClassifier(ClassifierEstimator):
    """Fine-tune a pretrained image backbone on a folder of images.

    >>> clf = ImageClassifier(model="efficientnet_lite0", strategy="lp-ft").fit("data/")
    >>> clf.predict(["cat.jpg"])
    """

    TASK = "image"
    NOUN = "images"
    heatmaps_: list[str] = []  # the heat maps the last predict_proba(..., save_heatmaps=FOLDER) wrote, in order

    def _prepare(self, data: str | Path, run: Path) -> Prepared:
        cfg = self.config
        splits = self._training_splits(self._discover(data))
        backbone = self._backbone()
        lora.prepare(backbone, cfg.train)  # strategy lora: adapters on a ViT's attention (a CNN is refused here)
        spec = backbone.spec
        chosen = flips.choose(cfg.data.flip, splits.classes, splits.unmirrored)
        imdata = self.DATA(splits, spec, cfg.data.preload_mb, cfg.data.strict, cfg.data.augment, loop.augment_seed(cfg),
                           intensity=cfg.data.intensity, max_pixels=cfg.data.max_pixels,
                           flips=chosen)
        _summarize_data(data, splits, imdata, self._refitting)
        if not self._refitting:  # the first read said it
            flips.announce(chosen)
        if imdata.intensity_note:
            say(imdata.intensity_note)
        self._write_skipped(run, splits)
        notes = imdata.store.warnings() + shortcut_notes(imdata.store.traits, splits.train, splits.classes)
        notes += splits.notes
        for note in notes if not self._refitting else ():  # the first read said them
            warn(note)
        torch.manual_seed(cfg.train.seed)
        model = TransferClassifier(backbone, len(splits.classes), cfg.model.dropout)
        self.class_aliases_ = splits.aliases
        return Prepared(model, imdata, splits, {"data_warnings": notes, "intensity": spec.extra["intensity"],
                                                  "flips": chosen.name})

    DATA = ImageData  # the training data's class

    def _backbone(self) -> Any:
        """The configured pretrained backbone (``model.name``), said."""
        cfg = self.config
        backbone = registry.create_backbone(cfg.model.name, cfg.model.pretrained, cfg.model.weights)
        spec = backbone.spec
        if spec.modality != "image":
            raise ConfigError(f"Model '{cfg.model.name}' is a {spec.modality} model; an image classifier "
                              f"needs an image backbone (see 'headstart models'), or train with --task {spec.modality}")
        say(f"[bold]Backbone[/] {spec.name} ({spec.arch}, weights: {spec.weights or 'random init'}, "
            f"{spec.num_params / 1e6:.1f}M params, {backbone.num_groups} layer groups)")
        return backbone

    def _use_pretrained(self) -> None:
        backbone = self._backbone()
        backbone.spec.extra["intensity"] = self.config.data.intensity  # auto: each image windowed where it needs
        self.model_, self.classes_, self.familiar_ = TransferClassifier(backbone, 1), ["(none)"], None

    def _eval_transform(self, spec: Any) -> Any:
        """What an image decoded at ``spec.resize_size`` goes through before the model (as in validation)."""
        return eval_transform(spec)

    def _discover(self, data: str | Path) -> ImageSplits:
        """The classes and splits of DATA (files not read yet)."""
        cfg = self.config
        return discover(data, cfg.data.val_fraction, cfg.train.seed, cfg.data.path_column, cfg.data.label_column,
                        cfg.data.group_column, cfg.data.small_val)

    def _labelled(self, data: str | Path, splits: ImageSplits | None = None) -> tuple[list[Sample], list[tuple[str, str]]]:
        d = self.config.data
        if splits is None:
            return labelled_samples(data, self.classes_, d.path_column, d.label_column, self.class_aliases_)
        return labelled_samples(data, splits.classes, d.path_column, d.label_column, splits.aliases, known_by="DATA")

    def _keys_of(self, samples: list[Sample]) -> list[str]:
        content_keys([s for s in samples if s.data is None])  # an image in memory (a table's pixels) is not keyed
        return [s.key for s in samples]

    def _report_item(self, sample: Sample) -> Path | tuple[str, bytes]:
        return sample.path if sample.data is None else (str(sample.path), sample.data)  # a table of pixels' row

    # ---------------------------------------------------------------- using the model
    def _pool(self, inputs: Any) -> list[Any]:
        """One item per image: a folder's files, a table's images (``pixel_tables.prediction_items``)."""
        from headstart.tasks.image.pixel_tables import prediction_items

        return prediction_items(inputs if isinstance(inputs, list) else [inputs])

    def _content_key(self, item: Any) -> str | None:
        """An image file's ``data.file_key``, as the training images are keyed; an image held in a dataset's row or
        in memory, that of its bytes (``stored_``: the last prediction's); None: a file gone since it was
        read."""
        stored = getattr(self, "stored_", {}).get(str(item))
        if stored is not None:  # hashed here, when suggest asks, not on every prediction
            return stored.key or hashlib.sha1(payload(stored.data)).hexdigest()
        return (file_key(item) or None) if isinstance(item, Path) else None

    def predict_proba(self, inputs: str | Path | bytes | list,
                      save_heatmaps: str | Path | None = None) -> tuple[list[Path], torch.Tensor]:
        """Class probabilities ``(files, probs[n_files, n_classes])``; unreadable files are left out.

        ``inputs``: image files, folders, and images in memory (a file's ``bytes``, or ``(name, bytes)``:
        decoded as that file would be; see ``data.image_samples``). ``save_heatmaps``: a folder receiving
        ``NAME_heatmap.png`` per image, where the model looked for its predicted class (``heatmaps.grad_cam``).
        """
        model = self._require_fitted()
        files, logits = self._logits(model, image_samples(inputs), save_heatmaps)
        return files, self._activate(logits)

    def _store(self, samples: list[Sample], spec: Any) -> ImageStore:
        """The samples decoded as the run's model reads them (unreadable ones skipped, each said)."""
        store = ImageStore(samples, spec.resize_size, spec.interpolation, self.config.data.preload_mb,
                           self.config.data.strict, desc="Reading images",
                           intensity=spec.extra.get("intensity", "off"),  # as trained (older runs: off)
                           max_pixels=self.config.data.max_pixels)
        for path, reason in store.skipped:
            warn(f"skipped {path}: {reason}")
        return store

    def _logits(self, model: TransferClassifier, samples: list[Sample],
                heatmaps: str | Path | None = None) -> tuple[list[Path], torch.Tensor]:
        """``(files, logits[n_files, n_classes])`` of the samples that could be read; ``heatmaps``: a folder that
        receives each one's heat map, from the same pass (``heatmaps_``: their files)."""
        spec = model.backbone.spec
        store = self._store(samples, spec)
        self.unreadable_, self.inputs_ = list(store.skipped), [str(s.path) for s in samples]
        self.heatmaps_ = []
        self.stored_ = {str(s.path): s for s in store.samples if s.data is not None}  # rows, images in memory
        if not store.samples:
            self.unfamiliar_ = []
            return [], torch.empty(0, len(self.classes_))
        fabric = loop.make_fabric(self.config.device)
        dataset = ImageDataset(store.samples, store, self._eval_transform(spec))
        batch_size, forward = loop.inference_batch_size(self.config, fabric), None
        if heatmaps is not None:
            batch_size, forward = min(batch_size, HEATMAP_BATCH), self._heatmap_pass(
                model, Path(heatmaps), output_stems([s.path for s in store.samples], heatmaps))
        logits = self._unfamiliar(predict_logits(fabric, model, dataset, batch_size, features=True, forward=forward,
                                                 desc="Predicting" if forward is None else "Drawing heat maps"))
        return [s.path for s in store.samples], logits

    def _heatmap_pass(self, model: TransferClassifier, folder: Path, stems: list[str]) -> Any:
        """A forward pass for ``predict_logits`` that also writes each image's heat map (``stems[i]_heatmap.png``,
        in order) and lists the files in ``heatmaps_``."""
        from headstart.tasks.image import heatmaps

        spec = model.backbone.spec

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            found = heatmaps.grad_cam(model, x)
            for image, heat in zip(x, found.heat):
                path = folder / f"{stems[len(self.heatmaps_)]}_heatmap.png"
                self.heatmaps_.append(str(heatmaps.save(heatmaps.shown_image(image, spec), heat, path)))
            return found.logits, found.features

        return forward

    def _explain(self, shown: list[Any]) -> bool:
        """Each shown validation item's heat map for the class the model predicted (report.html shows it beside the
        image); False when an image can no longer be read (the report shows none)."""
        from headstart.core.report.html_report import THUMBNAIL, explained_class
        from headstart.tasks.image import heatmaps

        if not shown:
            return True
        model = self.model_
        spec = model.backbone.spec
        store = self._store([self.splits_val_[m.index] for m in shown], spec)
        if len(store.samples) != len(shown):  # a file changed since training
            return False
        dataset = ImageDataset(store.samples, store, self._eval_transform(spec))
        x = torch.stack([dataset[i][0] for i in range(len(dataset))]).to(next(model.parameters()).device)
        found = heatmaps.grad_cam(model, x, torch.tensor([explained_class(m, self.classes_) for m in shown]))
        for m, image, heat in zip(shown, x, found.heat):
            m.heatmap = heatmaps.png(heatmaps.shown_image(image, spec), heat, THUMBNAIL)
        return True

    def _flags(self, items: list[Any]) -> list[dict[str, Any]]:
        """The unfamiliar flag, and the heat map's file where ``predict(..., save_heatmaps=FOLDER)`` drew one."""
        return self._with(super()._flags(items), "heatmap", self.heatmaps_)

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """Metrics on labelled data (class folders or CSV) with the baseline and warnings."""
        model = self._require_fitted()
        samples, skipped = self._labelled(data)
        files, logits = self._logits(model, samples)
        readable = set(files)
        labels = torch.tensor([s.label for s in samples if s.path in readable], dtype=torch.long)
        report = self._scored(logits, labels)
        report["skipped"] = len(samples) - len(files) + len(skipped)
        self._seen_in_training(report, [s.key for s in samples if s.path in readable])
        self._count_unfamiliar(report)
        return report


def _summarize_data(data: str | Path, splits: ImageSplits, imdata: ImageData, refitting: bool = False) -> None:
    counts = imdata.class_counts("train")
    say(f"[bold]Data[/] {data}: {splits.layout}; {len(splits.classes)} classes; train {len(imdata.splits['train'])}"
        f"{REFIT_TRAIN if refitting else ''}, val {len(imdata.splits['val'])}"
        + (f", test {len(imdata.splits['test'])}" if imdata.splits["test"] else "")
        + f"; train per class {counts}; {imdata.store.memory_mb:.0f} MB decoded in memory{imdata.store.read_note()}")
