"""Python API in the scikit-learn manner: ``ImageClassifier(...).fit(data)``, ``.predict(paths)``."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import torch

from headstart import engine, registry, runs
from headstart.config import RunConfig, load_config
from headstart.data.images import (
    ImageData,
    ImageSplits,
    ImageStore,
    Sample,
    discover,
    image_files,
    labelled_samples,
)
from headstart.data.transforms import eval_transform
from headstart.errors import ConfigError, RunFolderError
from headstart.facade import ClassifierFacade, check_run_target
from headstart.metrics import classification_report
from headstart.progress import console, say, warn
from headstart.tasks.classification import TransferClassifier

TASK = "image-classification"

# Short keyword arguments of the facades and the config keys they set.
SHORTCUTS = {
    "model": "model.name", "weights": "model.weights", "pretrained": "model.pretrained",
    "strategy": "train.strategy", "epochs": "train.epochs", "head_epochs": "train.head_epochs",
    "lr": "train.lr", "batch_size": "train.batch_size", "seed": "train.seed",
    "early_stopping": "train.early_stopping", "cache": "cache.enabled", "cache_views": "cache.views",
    "strict": "data.strict", "val_fraction": "data.val_fraction",
}


def build_config(config: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                 **shortcuts: Any) -> RunConfig:
    """A validated RunConfig from a YAML file, dotted overrides and the facades' keywords."""
    merged: dict[str, Any] = {}
    for name, value in shortcuts.items():
        if name not in SHORTCUTS:
            raise TypeError(f"Unknown argument '{name}'; expected one of {sorted(SHORTCUTS)} or overrides={{...}}")
        if value is not None:
            merged[SHORTCUTS[name]] = value
    if isinstance(overrides, list):
        from headstart.config import parse_override

        overrides = dict(parse_override(o) for o in overrides)
    merged.update(overrides or {})
    return load_config(config, merged)


class ImageClassifier(ClassifierFacade):
    """Fine-tune a pretrained image backbone on a folder of images.

    >>> clf = ImageClassifier(model="efficientnet_lite0", strategy="lp-ft").fit("data/")
    >>> clf.predict(["cat.jpg"])
    """

    TASK = TASK
    NOUN = "images"

    def __init__(self, model: str | None = None, strategy: str | None = None, epochs: int | None = None,
                 config: str | Path | None = None, overrides: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.config = build_config(config, overrides, model=model, strategy=strategy, epochs=epochs, **kwargs)
        self.model_: TransferClassifier | None = None
        self.classes_: list[str] = []
        self.train_counts_: list[int] = []
        self.metrics_: dict[str, Any] = {}
        self.history_: list[dict[str, Any]] = []
        self.run_dir_: Path | None = None

    # ---------------------------------------------------------------- training
    def fit(self, data: str | Path, out: str | Path | None = None, resume: bool = False) -> ImageClassifier:
        """Train on DATA; the run folder ``out`` (default: a temporary folder) receives every output."""
        cfg = self.config
        run = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="headstart-run-"))
        check_run_target(run, resume)
        run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.train.seed)
        splits = discover(data, cfg.data.val_fraction, cfg.train.seed, cfg.data.path_column, cfg.data.label_column)
        backbone = registry.create_backbone(cfg.model.name, cfg.model.pretrained, cfg.model.weights)
        if backbone.spec.modality != "image":
            raise ConfigError(f"Model '{cfg.model.name}' is a {backbone.spec.modality} model; an image classifier "
                              f"needs an image backbone (see 'headstart models'), or train with --task {backbone.spec.modality}")
        say(f"[bold]Backbone[/] {backbone.spec.name} ({backbone.spec.arch}, weights: {backbone.spec.weights or 'random init'}, "
            f"{backbone.spec.num_params / 1e6:.1f}M params, {backbone.num_groups} layer groups)")
        imdata = ImageData(splits, backbone.spec, cfg.data.preload_mb, cfg.data.strict, cfg.data.augment,
                           engine.augment_seed(cfg))
        _summarize_data(data, splits, imdata, run)
        fingerprint = hashlib.sha256("".join(imdata.keys("train") + imdata.keys("val")).encode()).hexdigest()[:16]
        if resume:
            meta = runs.read_meta(run, TASK)
            if meta.get("data_fingerprint") != fingerprint:
                raise RunFolderError(
                    f"The data changed since {run} started (fingerprint {meta.get('data_fingerprint')} != "
                    f"{fingerprint}): resume needs the same files; start a new run with another --out"
                )
        torch.manual_seed(cfg.train.seed)
        model = TransferClassifier(backbone, len(splits.classes), cfg.model.dropout)
        cfg.dump(run / "config.yaml")
        runs.write_meta(run, task=TASK, status="running", data=str(Path(data).resolve()), data_fingerprint=fingerprint)
        fabric = engine.make_fabric(cfg.device)
        state = engine.fit(model, imdata, cfg, run, resume=resume, fabric=fabric)

        self._finish(run, data, splits, imdata, model, fabric, state,
                     data_warnings=imdata.store.warnings() + splits.notes)
        return self

    def _report_item(self, sample: Sample) -> Path:
        return sample.path

    # ---------------------------------------------------------------- using the model
    def predict_proba(self, inputs: str | Path | list[str | Path]) -> tuple[list[Path], torch.Tensor]:
        """Class probabilities ``(files, probs[n_files, n_classes])``; unreadable files are left out."""
        model = self._require_fitted()
        files = image_files([inputs] if isinstance(inputs, (str, Path)) else inputs)
        return self._probabilities(model, [Sample(f) for f in files])

    def _probabilities(self, model: TransferClassifier, samples: list[Sample]) -> tuple[list[Path], torch.Tensor]:
        spec = model.backbone.spec
        store = ImageStore(samples, spec.resize_size, spec.interpolation, self.config.data.preload_mb,
                           self.config.data.strict, desc="Reading images")
        for path, reason in store.skipped:
            warn(f"skipped {path}: {reason}")
        if not store.samples:
            return [], torch.empty(0, len(self.classes_))
        data = _PlainData(store, spec)
        fabric = engine.make_fabric(self.config.device)
        logits = engine.predict_logits(fabric, model, data.dataset(store.samples), data,
                                       engine.inference_batch_size(self.config, fabric))
        return [s.path for s in store.samples], logits.softmax(dim=1)

    def predict(self, inputs: str | Path | list[str | Path], top_k: int = 1) -> list[dict[str, Any]]:
        """One row per readable image: path, label, probability and the top-k classes."""
        files, probs = self.predict_proba(inputs)
        k = max(1, min(top_k, len(self.classes_)))
        rows = []
        for path, p in zip(files, probs):
            values, indices = p.topk(k)
            rows.append({"path": str(path), "label": self.classes_[int(indices[0])], "probability": float(values[0]),
                         "top_k": [(self.classes_[int(i)], float(v)) for v, i in zip(values, indices)]})
        return rows

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """Metrics on labelled data (class folders or CSV) with the baseline and warnings."""
        model = self._require_fitted()
        samples, skipped = labelled_samples(data, self.classes_, self.config.data.path_column,
                                            self.config.data.label_column)
        files, probs = self._probabilities(model, samples)
        readable = set(files)
        labels = torch.tensor([s.label for s in samples if s.path in readable], dtype=torch.long)
        report = classification_report(probs.log(), labels, self.classes_, self.train_counts_)
        report["skipped"] = len(samples) - len(files) + len(skipped)
        return report

    @classmethod
    def load(cls, run: str | Path) -> ImageClassifier:
        """A fitted classifier from a run folder, with the preprocessing it was trained with."""
        runs.read_meta(run, TASK)
        model, info = runs.load_classifier(run)
        clf = cls(config=Path(run) / "config.yaml")
        clf.model_, clf.classes_ = model, info["classes"]
        clf.train_counts_, clf.run_dir_ = info.get("train_counts", []), Path(run)
        return clf


class _PlainData:
    """Unlabelled images with the eval transform (for predict/evaluate)."""

    collate = None

    def __init__(self, store: ImageStore, spec) -> None:
        self.store, self.tf = store, eval_transform(spec)

    def dataset(self, samples: list[Sample]):
        from headstart.data.images import ImageDataset

        return ImageDataset(samples, self.store, self.tf)


def _summarize_data(data: str | Path, splits: ImageSplits, imdata: ImageData, run: Path) -> None:
    counts = {c: 0 for c in splits.classes}
    for s in imdata.splits["train"]:
        counts[splits.classes[s.label]] += 1
    say(f"[bold]Data[/] {data}: {splits.layout}; {len(splits.classes)} classes; train {len(imdata.splits['train'])}, "
        f"val {len(imdata.splits['val'])}" + (f", test {len(imdata.splits['test'])}" if imdata.splits["test"] else "")
        + f"; train per class {counts}; {imdata.store.memory_mb:.0f} MB decoded in memory")
    if splits.skipped:
        (run / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in splits.skipped))
        warn(f"{len(splits.skipped)} file(s) skipped (listed in {run / 'skipped.txt'}):")
        for p, why in splits.skipped[:10]:
            console.print(f"  {p}: {why}")
    for note in imdata.store.warnings() + splits.notes:
        warn(note)
