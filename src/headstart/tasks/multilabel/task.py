"""Multi-label classification: ``MultiLabelClassifier`` (images; ``text.MultiLabelTextClassifier`` for texts).

``MultiLabel`` makes a single-label classifier (backbone + head, strategies, feature cache, reading its items) one
with a sigmoid output per class, calibrated by one temperature fitted on validation (``calibration``), and per-label
decision thresholds tuned on validation on the calibrated probabilities; both saved in spec.json.

>>> clf = MultiLabelClassifier(strategy="linear").fit("photos/labels.csv")
>>> clf.predict(["beach.jpg"])  # [{"path": ..., "labels": [{"label": "sea", "probability": 0.93}, ...], ...}]
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import torch

from headstart.core.estimator import Prepared
from headstart.core.splits import Splits
from headstart.progress import results
from headstart.tasks.image.data import Sample
from headstart.tasks.image.task import ImageClassifier
from headstart.tasks.multilabel.data import TagData, discover, eval_transform, labelled_tags, multi_hot
from headstart.tasks.multilabel.metrics import multilabel_report, predict_tags, tune_thresholds


class MultiLabel:
    """What a multi-label classifier changes in a single-label one (a mixin before it: ``MultiLabel, ImageClassifier``):
    sigmoid outputs, thresholds tuned on validation, tag reports, predictions of every label that applies."""

    thresholds_: list[float]  # one decision threshold per class, tuned on validation
    num_train_: int = 0  # training items (the frequency baseline's denominator)
    LABEL_CHECK = False  # its head is fitted per label: no held-out class to doubt a label by (``label_doubts``)

    def _steps(self, prepared: Prepared) -> Any:
        from headstart.tasks.multilabel.training import MultiLabelSteps

        return MultiLabelSteps(prepared.data, self.config)

    def _check_prepared(self, prepared: Prepared) -> None:
        """No operating point: each label has its own threshold, tuned on validation."""
        from headstart.errors import ConfigError

        if self.config.train.operating_point != "argmax":
            raise ConfigError(f"train.operating_point={self.config.train.operating_point} is for single-label "
                              "classifiers; a multi-label run tunes one threshold per label on validation (its best "
                              "F1, in spec.json): leave it at argmax")

    def _finish(self, run: Path, data: str | Path, prepared: Prepared, steps: Any, fabric: Any, state: Any) -> dict:
        self.num_train_ = steps.num_train
        metrics = super()._finish(run, data, prepared, steps, fabric, state)
        metrics["thresholds"] = dict(zip(self.classes_, self.thresholds_))
        return metrics

    def _split_report(self, split: str, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        from headstart.tasks.classification import calibration

        how = None
        if split == "val":  # comes first: the temperature and thresholds every later score and prediction uses
            self.temperature_, how = calibration.fit_temperature(logits, labels, sigmoid=True) \
                if self.config.train.calibrate else (1.0, "off (train.calibrate=false)")
            self.thresholds_ = tune_thresholds(self._activate(logits), labels)  # on the calibrated probabilities
        report = self._tag_report(logits, labels)
        if how:
            report["calibration"]["temperature_fit"] = how
        return report

    def _tag_report(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """The multi-label report of these logits at the saved temperature and thresholds, with its calibration."""
        from headstart.tasks.classification import calibration

        report = multilabel_report(self._activate(logits), labels, self.classes_, self.train_counts_, self.num_train_,
                                   self.thresholds_)
        report["calibration"] = calibration.summary(logits, labels, self.temperature_, sigmoid=True)
        return report

    def _headline(self, val: dict[str, Any]) -> dict[str, Any]:
        return {"val_map": val["map"], "val_micro_f1": val["micro_f1"], "val_macro_f1": val["macro_f1"],
                "val_baseline_map": val["baseline"]["map"]}

    def _eval_transform(self, spec: Any) -> Any:
        return eval_transform(spec)

    def _activate(self, logits: torch.Tensor) -> torch.Tensor:
        """Each label's calibrated probability: ``sigmoid(logits / T)``, one temperature for every label."""
        return (logits.float() / self.temperature_).sigmoid()

    def _spec_info(self) -> dict[str, Any]:
        info = super()._spec_info()  # its temperature: runs saved before multi-label calibration load with 1
        return {**info, "head": {**info["head"], "output": "sigmoid"}, "num_train": self.num_train_,
                "thresholds": self.thresholds_}

    def _loaded(self, run: Path, info: dict[str, Any]) -> None:
        super()._loaded(run, info)
        self.thresholds_, self.num_train_ = [float(t) for t in info["thresholds"]], int(info["num_train"])

    def _write_outputs(self, run: Path, data: str | Path, prepared: Prepared, state: Any) -> None:
        from headstart.core.report import html_report, outputs
        from headstart.tasks.multilabel import report

        cfg, metrics, splits = self.config, self.metrics_, prepared.splits
        outputs.write_json(metrics, run / "metrics.json")
        outputs.write_history(state.history, run / "history.csv")
        outputs.plot_learning_curve(state.history, run / "learning_curve.png", metrics["selection_metric"],
                                    (("map", "val mAP"), ("macro_f1", "val macro-F1")))
        probs, targets = self._activate(self.val_logits_), prepared.data.labels("val")
        report.plot_pr_curves(probs, targets, self.classes_, run / "pr_curves.png")
        summary = {"model": cfg.model.name, "strategy": cfg.train.strategy, "data": str(data), "layout": splits.layout,
                   "classes": self.classes_, "num_train": metrics["num_train"], "num_val": metrics["num_val"],
                   "num_skipped": metrics["skipped"], "device": metrics["device"], "items": self.NOUN}
        report.write_report_md(run, metrics, summary)
        mistakes = report.confident_mistakes([self._report_item(s) for s in self.splits_val_], probs, targets,
                                             self.thresholds_, self.classes_, is_image=self.REPORT_IMAGES)
        if cfg.train.explain:  # where the model looked for (or the words it read as) the label it got wrong
            self._explain(mistakes)
        seeds = {"train.seed": cfg.train.seed, "data.augment_seed": cfg.data.augment_seed}
        html_report.write_report(run / "report.html", f"headstart run (multi-label): {cfg.model.name} / "
                                 f"{cfg.train.strategy}", report.html_sections(run, metrics, summary, mistakes),
                                 html_report.run_environment(run, metrics.get("device"), seeds), cfg.to_dict())
        self.print_metrics(metrics["val"], f"Validation ({metrics['num_val']} {self.NOUN})")

    # ---------------------------------------------------------------- using the model
    def predict(self, inputs: Any, top_k: int | None = None, errors: bool = False,
                **options: Any) -> list[dict[str, Any]]:
        """One row per readable image: every label at or above its threshold (most probable first, at most
        ``top_k``) with its probability, and every label's probability (``row``).

        ``errors=True``: also one row ``{"path": ..., "error": why}`` per input that could not be read.
        ``options`` go to ``predict_proba`` (images: ``save_heatmaps``, drawn for the most probable label).
        """
        return super().predict(inputs, top_k, errors, **options)

    def row(self, p: torch.Tensor, top_k: int | None) -> dict[str, Any]:
        """One item's ``labels`` (those at or above their thresholds, most probable first, at most ``top_k``) and
        every label's ``probabilities``."""
        on = predict_tags(p[None], self.thresholds_)[0].nonzero().flatten().tolist()
        found = sorted(((self.classes_[i], float(p[i])) for i in on), key=lambda pair: -pair[1])[:top_k]
        return {"labels": [{"label": c, "probability": v} for c, v in found],
                "probabilities": {c: float(v) for c, v in zip(self.classes_, p)}}

    def _margins(self, probs: torch.Tensor) -> Any:
        """How sure of each item: its label nearest to that label's threshold (``suggest.margins``)."""
        from headstart.tasks.classification import suggest

        return suggest.margins(probs, thresholds=self.thresholds_)

    def print_metrics(self, report: dict[str, Any], title: str) -> None:
        from headstart.tasks.multilabel.report import print_metrics

        print_metrics(report, title)

    @classmethod
    def print_predictions(cls, rows: list[dict[str, Any]], fmt: str, top_k: int) -> None:
        key = cls.ITEM_KEY

        def shown(r: dict[str, Any], sep: str, fmt_p: str) -> str:
            return sep.join(f"{t['label']}{fmt_p.format(t['probability'])}" for t in r["labels"])

        if fmt == "json":
            print(json.dumps(rows, indent=2))
        elif fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow([key, "labels", "probabilities", "error"])
            for r in rows:
                if "error" in r:
                    writer.writerow([r[key], "", "", r["error"]])
                else:
                    writer.writerow([r[key], ";".join(t["label"] for t in r["labels"]),
                                     ";".join(f"{c}:{p:.6f}" for c, p in r["probabilities"].items()), ""])
            sys.stdout.write(buf.getvalue())
        else:
            from rich.table import Table

            table = Table()
            for col in ("file" if key == "path" else key, "labels (probability)"):
                table.add_column(col, overflow="fold")
            for r in rows:
                table.add_row(r[key], f"[red]not read[/]: {r['error']}" if "error" in r
                              else shown(r, ", ", " {:.3f}") or "(none above its threshold)")
            results().print(table)


class MultiLabelClassifier(MultiLabel, ImageClassifier):
    """Fine-tune a pretrained image backbone to tag each image with every label that applies.

    >>> clf = MultiLabelClassifier(strategy="linear").fit("photos/labels.csv")
    >>> clf.predict(["beach.jpg"])
    """

    TASK = "multilabel"
    DATA = TagData

    def _discover(self, data: str | Path) -> Splits:
        d = self.config.data
        return discover(data, d.val_fraction, self.config.train.seed, d.path_column, d.label_column, d.from_detection,
                        d.group_column, d.small_val, d.uncertain)

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """mAP, F1 at the saved thresholds, per-label scores and the frequency baseline on labelled data.

        DATA as for training (its test split, else its validation split, else every row).
        """
        model, d = self._require_fitted(), self.config.data
        samples = labelled_tags(data, self.classes_, d.path_column, d.label_column, d.from_detection, d.uncertain)
        read = [Sample(s.path, key=s.key, data=s.data) for s in samples]  # tags kept out of batches
        files, logits = self._logits(model, read)
        readable = set(files)
        targets = torch.stack([multi_hot(s.label, len(self.classes_)) for s in samples if s.path in readable]) \
            if files else torch.zeros(0, len(self.classes_))
        report = self._tag_report(logits, targets)
        report["skipped"] = len(samples) - len(files)
        keys = {s.path: s.key for s in read}
        self._seen_in_training(report, [keys[f] for f in files])
        self._count_unfamiliar(report)
        return report
