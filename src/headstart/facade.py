"""What every task facade shares (ImageClassifier, TextClassifier, Detector): resume, save, fitted checks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from headstart import engine, runs
from headstart.errors import NotFittedError, RunFolderError


class Facade:
    """Base of the task facades; subclasses set ``TASK`` and implement fit/predict/evaluate/load."""

    TASK = ""
    model_: Any = None
    run_dir_: Path | None = None

    @classmethod
    def resume(cls, run: str | Path):
        """Continue an interrupted run from its last checkpoint."""
        run = Path(run)
        meta = runs.read_meta(run, cls.TASK)
        if meta.get("status") == "complete":
            raise RunFolderError(f"{run} is already complete; nothing to resume")
        if not (run / engine.CHECKPOINT).exists():
            raise RunFolderError(f"{run} has no checkpoint yet (interrupted before the first epoch ended); "
                                 "start it again with headstart train")
        return cls(config=run / "config.yaml").fit(meta["data"], out=run, resume=True)

    def _require_fitted(self):
        if self.model_ is None:
            name = type(self).__name__
            raise NotFittedError(f"This {name} is not fitted yet: call .fit(data) or {name}.load(run)")
        return self.model_

    def save(self, directory: str | Path) -> Path:
        """Copy the run folder (model, spec, config, metrics, plots) to ``directory``."""
        self._require_fitted()
        directory = Path(directory)
        if self.run_dir_ is not None and directory.resolve() != self.run_dir_.resolve():
            shutil.copytree(self.run_dir_, directory, dirs_exist_ok=True)
        return directory


def check_run_target(run: Path, resume: bool) -> None:
    """Refuse to overwrite a finished run or to silently restart an unfinished one."""
    if resume:
        return
    if (run / engine.CHECKPOINT).exists():
        raise RunFolderError(f"{run} holds an unfinished run: continue it with 'headstart train --resume {run}' "
                             "or choose another --out")
    if (run / runs.META).exists() and runs.read_meta(run).get("status") == "complete":
        raise RunFolderError(f"{run} already holds a trained model; choose another --out (nothing was overwritten)")


class ClassifierFacade(Facade):
    """Image and text classifiers: the same final evaluation and run-folder outputs."""

    NOUN = "items"  # what one sample is called in messages
    SKIPPED = "files"  # what a skipped input is called
    REPORT_IMAGES = True  # report.html shows mistaken items as thumbnails (else as texts)
    config: Any
    val_logits_: Any = None
    splits_val_: Any = None  # validation samples, in the order of ``val_logits_``

    def _report_item(self, sample: Any) -> str | Path:
        """What report.html shows of a mistaken validation sample (an image path, a text)."""
        raise NotImplementedError

    def _finish(self, run: Path, data: str | Path, splits: Any, task_data: Any, model: Any, fabric: Any,
                state: Any, **extra_metrics: Any) -> None:
        """Evaluate the best weights on val (and test), then write every output of the run folder."""
        import time

        import torch

        from headstart.metrics import classification_report, selection_metric

        cfg = self.config
        self.model_, self.classes_ = model, splits.classes
        self.train_counts_ = torch.bincount(task_data.labels("train"), minlength=len(splits.classes)).tolist()
        self.history_, self.run_dir_ = state.history, run
        self.splits_val_ = task_data.splits["val"]
        started = time.perf_counter()
        metrics: dict[str, Any] = {"model": cfg.model.name, "strategy": cfg.train.strategy,
                                   "classes": splits.classes, "best_epoch": state.best_epoch}
        for split in ("val", "test"):
            if not task_data.splits[split]:
                continue
            logits = state.best_val_logits if split == "val" else None  # the best epoch's, already computed
            if logits is None or len(logits) != len(task_data.splits[split]):
                batch = engine.inference_batch_size(cfg, fabric, model.backbone.spec.modality)
                logits = engine.predict_logits(fabric, model, task_data.dataset(split, False, 0), task_data, batch,
                                               desc=f"Evaluating ({split})")
            metrics[split] = classification_report(logits, task_data.labels(split), splits.classes, self.train_counts_)
            if split == "val":
                self.val_logits_ = logits
        metrics.update(
            val_accuracy=metrics["val"]["accuracy"], val_macro_f1=metrics["val"]["macro_f1"],
            selection_metric=selection_metric(cfg.train.select_metric, self.train_counts_),
            train_seconds=round(state.seconds, 2), eval_seconds=round(time.perf_counter() - started, 2),
            num_train=len(task_data.splits["train"]), num_val=len(task_data.splits["val"]),
            skipped=len(splits.skipped),
            cache={"items_served": state.cache_hits, "items_computed": state.cache_computed},
            device=str(fabric.device), **extra_metrics,
        )
        self.metrics_ = metrics
        self._write_outputs(run, data, splits, metrics, state)

    def _write_outputs(self, run: Path, data: str | Path, splits: Any, metrics: dict, state: Any) -> None:
        import torch

        from headstart import html_report, reports

        cfg = self.config
        runs.save_classifier(run, self.model_, self.classes_, self.train_counts_, cfg.model.dropout)
        reports.write_json(metrics, run / "metrics.json")
        reports.write_history(state.history, run / "history.csv")
        reports.plot_learning_curve(state.history, run / "learning_curve.png", metrics["selection_metric"])
        reports.plot_confusion_matrix(metrics["val"]["confusion_matrix"], self.classes_,
                                      run / "confusion_matrix.png", "Validation confusion matrix")
        summary = {"model": cfg.model.name, "strategy": cfg.train.strategy, "data": str(data),
                   "layout": splits.layout, "classes": self.classes_, "num_train": metrics["num_train"],
                   "num_val": metrics["num_val"], "num_skipped": metrics["skipped"], "device": metrics["device"],
                   "items": self.NOUN, "skipped_what": self.SKIPPED}
        reports.write_report_md(run, metrics, summary)
        val = self.splits_val_
        predictions = ([self._report_item(s) for s in val], self.val_logits_, torch.tensor([s.label for s in val]))
        html_report.write_classifier_report(run, metrics, summary, cfg, self.classes_, predictions,
                                            is_image=self.REPORT_IMAGES)
        self._write_task_outputs(run, metrics, summary)
        runs.write_meta(run, status="complete")
        (run / engine.CHECKPOINT).unlink(missing_ok=True)
        reports.print_metrics(metrics["val"], f"Validation ({metrics['num_val']} {self.NOUN})")
        from headstart.progress import say

        say(f"Run folder: [bold]{run}[/] (report.md, metrics.json, learning_curve.png, confusion_matrix.png)")

    def _write_task_outputs(self, run: Path, metrics: dict, summary: dict) -> None:
        """Outputs only one task writes (tokenizer files...)."""
