"""What image and text classifiers share: the loop's steps, the final evaluation, outputs and printing."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from headstart.core.estimator import Estimator, Prepared
from headstart.progress import results
from headstart.tasks.classification.operating_point import OperatingPoint

DOUBTS_KEPT, DOUBTS_SHOWN = 50, 12  # doubted training labels in metrics.json, and shown in report.html


class ClassifierEstimator(Estimator):
    """Base of ``ImageClassifier`` and ``TextClassifier``: single-label classification of items."""

    NOUN = "items"  # what one sample is called in messages
    LORA = True  # strategy 'lora' on a transformer backbone (text encoders, ViTs)
    REPORT_IMAGES = True  # report.html shows mistaken items as thumbnails (else as texts)
    train_counts_: list[int]
    val_logits_: Any = None  # validation logits of the final model, in the order of ``splits_val_``
    splits_val_: Any = None  # the validation samples
    doubts_: list = []  # (training sample, predicted class, p(its label), p(predicted)): ``probe.label_doubts``
    LABEL_CHECK = True  # ``check_labels`` lists doubted labels (single-label heads)
    temperature_: float = 1.0  # the logits' divisor before the softmax, fitted on validation (``calibration``)
    operating_point_: Any = None  # the threshold on p(positive) chosen on validation (``operating_point``); None: argmax
    selective_: list = []  # (accuracy aimed at, the probability from which validation reached it): ``calibration``
    familiar_: Any = None  # training features and the distance beyond which an input is unfamiliar (``familiarity``)
    class_aliases_: dict[str, str] = {}  # the codes DATA named the classes by (``image.class_names``): code -> class
    unfamiliar_: list[bool] = []  # the last predict_proba's items: unlike the training items (``familiar_``)
    features_: Any = None  # the last predict_proba's items' features (the head's input), on the CPU
    _listing_doubts = False  # ``check_labels``'s temporary run

    def _report_item(self, sample: Any) -> str | Path:
        """What report.html shows of a mistaken validation sample (an image path, a text)."""
        raise NotImplementedError

    def _added(self, splits: Any) -> Any:
        """DATA's splits with the labelled items of each ``data.add`` table in training (labelled with DATA's classes
        by ``_labelled``); never in validation or test, so a run's scores compare with the run before it. Items with
        the content of one of DATA's or of one added before are left out and counted; rows without a label are
        skipped, each named (skipped.txt)."""
        import dataclasses

        from headstart.errors import DataError
        from headstart.progress import say

        files = [Path(f) for f in self.config.data.add]
        seen = {key for key in self._keys_of(splits.train + splits.val + splits.test) if key}
        added, skipped, said = [], list(splits.skipped), []
        for file in files:
            samples, blank = self._labelled(file, splits)
            if not samples:
                raise DataError(f"--add {file}: no row has a label ({len(blank)} without): fill its label column "
                                f"with one of DATA's classes ({', '.join(splits.classes)})")
            fresh = []
            for sample, key in zip(samples, self._keys_of(samples)):
                if key and key in seen:
                    continue
                seen.add(key)
                fresh.append(sample)
            added += fresh
            skipped += blank
            left_out = len(samples) - len(fresh)
            notes = [f"{left_out} already in DATA or listed before: left out"] * bool(left_out) + [
                f"{len(blank)} row(s) skipped, each named with why"] * bool(blank)
            said.append(f"{len(fresh)} from {file.name}" + (f" ({'; '.join(notes)})" if notes else ""))
        if not self._refitting:  # the first read said it
            say(f"[bold]Added[/] to the training split: {', '.join(said)}")
        return dataclasses.replace(splits, train=splits.train + added, skipped=skipped,
                                   layout=f"{splits.layout}; + {len(added)} {self.NOUN} added to training (--add)")

    def _labelled(self, data: str | Path, splits: Any = None) -> tuple[list[Any], list[tuple[str, str]]]:
        """Labelled items of ``data`` and the rows skipped: labelled with the model's classes (``evaluate``), or with
        the classes of ``splits``, the data being trained on (``data.add``)."""
        raise NotImplementedError

    def _keys_of(self, samples: list[Any]) -> list[str]:
        """The content keys of samples, as the training data keys its items ("" where not known)."""
        raise NotImplementedError

    def _steps(self, prepared: Prepared) -> Any:
        from headstart.tasks.classification.training import ClassificationSteps

        return ClassificationSteps(prepared.data, self.config)

    def _finish(self, run: Path, data: str | Path, prepared: Prepared, steps: Any, fabric: Any, state: Any) -> dict:
        """Evaluate the best weights on val (and test)."""
        from headstart.core import loop, strategies
        from headstart.tasks.classification import familiarity

        cfg, task_data = self.config, prepared.data
        self.train_counts_ = steps.train_counts
        self.splits_val_ = task_data.splits["val"]
        started = time.perf_counter()
        metrics: dict[str, Any] = {"task": self.task().run_kind, "model": cfg.model.name,
                                   "strategy": cfg.train.strategy, "classes": self.classes_,
                                   "best_epoch": state.best_epoch}
        for split in ("val", "test"):
            if not task_data.splits[split]:
                continue
            logits = state.best_output if split == "val" else None  # the best epoch's, already computed
            if logits is None or len(logits) != len(task_data.splits[split]):
                logits = self._split_logits(prepared, fabric, split)
            metrics[split] = self._split_report(split, logits, task_data.labels(split))
            if split == "val":
                self.val_logits_ = logits
        metrics.update(
            **self._headline(metrics["val"]), selection_metric=steps.metric, train_seconds=round(state.seconds, 2),
            time_budget=strategies.time_budget(cfg.train), phases=state.phases,
            chosen=loop.chosen_phase(state.phases, steps.metric),
            eval_seconds=round(time.perf_counter() - started, 2),
            num_train=len(task_data.splits["train"]), num_val=len(task_data.splits["val"]), layout=prepared.splits.layout,
            skipped=len(prepared.splits.skipped),
            cache={"items_served": state.cache_hits, "items_computed": state.cache_computed},
            device=str(fabric.device), **prepared.extra,
        )
        self.familiar_ = None if self._listing_doubts else familiarity.fit(
            self._features(prepared, fabric, "train"), self._features(prepared, fabric, "val"))
        metrics["familiarity"] = None if self.familiar_ is None else self.familiar_.summary()
        found = getattr(steps, "doubts", None)  # None: no head was fitted by cross-validation (no linear phase)
        self.doubts_ = [(task_data.splits["train"][i], c, own, sure) for i, c, own, sure in found or []]
        if self.doubts_:
            from headstart.progress import say
            from headstart.tasks.classification.probe import DOUBT_OTHER

            n = len(task_data.splits["train"])
            say(f"[bold]Label check[/] {len(self.doubts_)} training {self.NOUN} ({len(self.doubts_) / n:.1%}) are "
                f"predicted as another class, with over {DOUBT_OTHER:.0%} confidence, by the cross-validation heads "
                "that did not train on them: check their labels (metrics.json label_doubts, report.html)")
        metrics["label_doubts"] = None if found is None else {
            "count": len(self.doubts_), "of": len(task_data.splits["train"]),
            "items": [{"item": self._doubt_name(sample), "label": self.classes_[sample.label],
                       "predicted": self.classes_[c], "p_label": round(own, 4), "p_predicted": round(sure, 4)}
                      for sample, c, own, sure in self.doubts_[:DOUBTS_KEPT]]}
        return metrics

    def check_labels(self, data: str | Path) -> dict[str, Any]:
        """``check``, with the training labels to check: the linear head is fitted on DATA's features by
        cross-validation (``--strategy linear``, no refit, in a temporary folder), and the items its held-out heads
        put in another class are listed (``label_doubts``, as a run's metrics.json has them)."""
        import tempfile

        saved = self.config
        self.config = saved.model_copy(deep=True)
        self.config.train.strategy, self.config.train.refit = "linear", False
        self.config.train.explain = False  # a temporary run: its report is not read
        self._listing_doubts = True  # a temporary run: no unfamiliar-input check to save
        try:
            with tempfile.TemporaryDirectory(prefix=f"headstart-check-{self.TASK}-") as tmp:
                self.fit(data, out=Path(tmp) / "run")
                listed = Path(tmp) / "run" / "skipped.txt"
                skipped = [dict(zip(("item", "why"), line.split("\t", 1)))
                           for line in (listed.read_text().splitlines() if listed.exists() else [])]
        finally:
            self.config, self.run_dir_, self._listing_doubts = saved, None, False
        m = self.metrics_
        return {"task": self.TASK, "data": str(data), "layout": m["layout"], "classes": list(self.classes_),
                "sizes": {"train": m["num_train"], "val": m["num_val"]}, "skipped": skipped,
                "warnings": list(m.get("data_warnings") or []), "label_doubts": m["label_doubts"]}

    def _seen_in_training(self, report: dict[str, Any], keys: list[str]) -> None:
        """``evaluate``: count in ``report`` (``seen_in_training``) the evaluated items that are identical to items the
        saved model trained on (their content keys), with a warning: their scores are optimistic."""
        from headstart.core import runfolder

        trained = runfolder.read_trained_keys(self.run_dir_) if self.run_dir_ is not None else None
        if trained is None:  # a run saved before trained_items.txt
            return
        seen = sum(k in trained for k in keys)
        report["seen_in_training"] = seen
        if seen:
            report.setdefault("warnings", []).append(
                f"{seen} of the {len(keys)} evaluated {self.NOUN} are identical copies of {self.NOUN} the model trained "
                f"on: these scores are optimistic; evaluate on {self.NOUN} it never saw")

    def _count_unfamiliar(self, report: dict[str, Any]) -> None:
        """``evaluate``: count in ``report`` (``unfamiliar``) the evaluated items unlike the training items, with a
        warning when they are over 5 times the share of validation items beyond the cut (5%: a cut measured on a
        small validation split varies)."""
        from headstart.tasks.classification.familiarity import QUANTILE

        if self.familiar_ is None:
            return
        odd, n = sum(self.unfamiliar_), len(self.unfamiliar_)
        report["unfamiliar"] = odd
        if odd > max(3, 5 * (1 - QUANTILE) * n):
            report.setdefault("warnings", []).append(
                f"{odd} of the {n} evaluated {self.NOUN} ({odd / n:.0%}) are unlike the training {self.NOUN}, against "
                f"{1 - QUANTILE:.0%} of validation items: this data differs from what the model learned from")

    def _doubt_name(self, sample: Any) -> str:
        """How metrics.json names a doubted training item: its path, or its text."""
        item = self._report_item(sample)
        return item[0] if isinstance(item, tuple) else str(item)

    def _split_logits(self, prepared: Prepared, fabric: Any, split: str) -> Any:
        """The logits of ``prepared.model`` on a split, each device predicting its share (``loop.gather_split``)."""
        import torch
        from torch.utils.data import Dataset, Subset

        from headstart.core import loop
        from headstart.tasks.classification.training import predict_logits

        cfg, task_data, model = self.config, prepared.data, prepared.model
        dataset = task_data.dataset(split, False, 0)

        def compute(items: range, dataset: Dataset = dataset) -> torch.Tensor:
            return predict_logits(fabric, model, dataset if len(items) == len(dataset) else Subset(dataset, items),
                                  loop.inference_batch_size(cfg, fabric, model.backbone.spec.modality),
                                  task_data.collate,
                                  desc=f"Evaluating ({split})" + loop.share_note(fabric, items, len(dataset)))

        return loop.gather_split(fabric, len(dataset), compute)

    def _features(self, prepared: Prepared, fabric: Any, split: str) -> Any:
        """The backbone's features (the head's inputs) of a split's items, at most ``familiarity.KEPT`` of them (a
        seeded random subset), unaugmented."""
        from torch.utils.data import Subset

        from headstart.core import loop
        from headstart.tasks.classification import familiarity
        from headstart.tasks.classification.training import predict_logits

        dataset, model = prepared.data.dataset(split, False, 0), prepared.model
        rows = familiarity.kept_rows(len(dataset), self.config.train.seed)
        return predict_logits(fabric, model, Subset(dataset, rows),
                              loop.inference_batch_size(self.config, fabric, model.backbone.spec.modality),
                              prepared.data.collate, desc=f"Features ({split}, for unfamiliar inputs)",
                              features=True)[1]

    def _refit_scores(self, prepared: Prepared, fabric: Any) -> dict[str, Any]:
        """DATA's test split scored again with the refitted model, the one saved (neither model saw it); the
        unfamiliar-input check moved to the refitted model's features (``familiarity.refitted``)."""
        from headstart.tasks.classification import familiarity

        if self.familiar_ is not None:
            self.familiar_ = familiarity.refitted(self.familiar_, self._features(prepared, fabric, "train"))
            self.metrics_["familiarity"] = {**self.familiar_.summary(), "cut_from": "the refitted training items' "
                                            "spread, scaled as validation's was before the refit"}
        if not prepared.data.splits["test"]:
            return {}
        logits = self._split_logits(prepared, fabric, "test")
        return {"test": self._split_report("test", logits, prepared.data.labels("test"))}

    def _split_report(self, split: str, logits: Any, labels: Any) -> dict[str, Any]:
        """The final report of one split (``val`` comes first: it fits the temperature every later score and
        prediction uses, unless ``train.calibrate`` is off)."""
        from headstart.tasks.classification import calibration

        how, choices = None, None
        if split == "val":
            self.temperature_, how = calibration.fit_temperature(logits, labels) if self.config.train.calibrate \
                else (1.0, "off (train.calibrate=false)")
            choices = self._choose_operating_point(logits, labels)
            confidence, decided = self._confidence(logits)  # how far the model could decide alone (report.md)
            self.selective_ = calibration.selective_thresholds(confidence, decided == labels)
        report = self._scored(logits, labels)
        if how:
            report["calibration"]["temperature_fit"] = how
        if choices:
            report["operating_points"] = choices
        return report

    def _scored(self, logits: Any, labels: Any) -> dict[str, Any]:
        """The classification report of these logits: calibrated by the temperature, decided at the operating point,
        with how the items above each of validation's confidence thresholds fare (``selective``)."""
        from headstart.tasks.classification import calibration
        from headstart.tasks.classification.metrics import classification_report

        report = classification_report(logits, labels, self.classes_, self.train_counts_, self.temperature_,
                                       self.operating_point_)
        if self.selective_:
            confidence, decided = self._confidence(logits)
            report["selective"] = calibration.selective(confidence, decided == labels, self.selective_)
        return report

    def _confidence(self, logits: Any) -> tuple[Any, Any]:
        """``(probability of the decided class, decided class)`` of each item, as ``predict`` gives them."""
        from headstart.tasks.classification import operating_point

        return operating_point.decisions(logits.float() / self.temperature_, self.operating_point_)

    def _choose_operating_point(self, logits: Any, labels: Any) -> dict[str, Any] | None:
        """Set ``operating_point_`` by ``train.operating_point`` on these validation logits (None for argmax), and
        return what each rule of ``operating_point.SHOWN`` would give (report.md lists them): for two classes, or
        for more when ``train.positive_class`` names the one to threshold (else None)."""
        from headstart.progress import warn
        from headstart.tasks.classification import operating_point

        rule, named = self.config.train.operating_point, self.config.train.positive_class
        self.operating_point_ = None
        if len(self.classes_) < 2 or (len(self.classes_) > 2 and named is None):
            return None
        positive = operating_point.positive_class(self.classes_, self.train_counts_, named)
        probs = (logits.float() / self.temperature_).softmax(dim=1)
        scores, truth = probs[:, positive].tolist(), (labels == positive).tolist()
        if rule != "argmax":
            try:
                threshold, met = operating_point.choose(scores, truth, rule)
            except ValueError as exc:
                warn(f"{exc}: the decisions stay the argmax")
            else:
                self.operating_point_ = operating_point.OperatingPoint(positive, threshold, rule)
                if not met:
                    warn(f"No threshold reaches {rule} on validation: the most precise one is kept "
                         f"({self.operating_point_.describe(self.classes_)})")
        argmax = (probs.argmax(dim=1) == positive).tolist() if len(self.classes_) > 2 else None
        return {"positive": self.classes_[positive],
                "rules": operating_point.alternatives(scores, truth, rule, argmax)}

    def _check_prepared(self, prepared: Prepared) -> None:
        """An operating point among more than two classes needs its positive class named (``train.positive_class``),
        one of the data's classes: said before training starts."""
        from headstart.errors import ConfigError
        from headstart.tasks.classification import operating_point

        train = self.config.train
        if train.operating_point != "argmax" or train.positive_class is not None:
            try:
                operating_point.positive_class(prepared.splits.classes, [], train.positive_class)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def decided(self, p: Any) -> int:
        """The class decided for one item's probabilities: the argmax, or at the operating point."""
        return int(p.argmax()) if self.operating_point_ is None else self.operating_point_.decide_one(p)

    def _headline(self, val: dict[str, Any]) -> dict[str, Any]:
        """The validation scores metrics.json also holds at its top level."""
        return {"val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]}

    def _activate(self, logits: Any) -> Any:
        """Probabilities from the model's logits (one label per item: softmax of the logits / the temperature)."""
        return (logits.float() / self.temperature_).softmax(dim=1)

    def _spec_info(self) -> dict[str, Any]:
        return {"backbone": self.model_.backbone.spec.to_dict(), "train_counts": self.train_counts_,
                "head": {"type": "linear", "dropout": self.config.model.dropout}, "temperature": self.temperature_,
                **({} if self.operating_point_ is None else {
                    "operating_point": self.operating_point_.to_dict(self.classes_)}),
                **({"selective": [list(pair) for pair in self.selective_]} if self.selective_ else {}),
                **({"class_aliases": self.class_aliases_} if self.class_aliases_ else {})}

    def _model_from_spec(self, info: dict[str, Any], run: Path) -> Any:
        from headstart.core.backbones import registry
        from headstart.core.backbones.spec import BackboneSpec
        from headstart.tasks.classification.model import TransferClassifier

        backbone = registry.rebuild(BackboneSpec.from_dict(info["backbone"]))
        return TransferClassifier(backbone, len(info["classes"]), info["head"]["dropout"])

    def _loaded(self, run: Path, info: dict[str, Any]) -> None:
        from headstart.tasks.classification import familiarity

        self.train_counts_ = info.get("train_counts", [])
        self.class_aliases_ = info.get("class_aliases", {})
        self.temperature_ = float(info.get("temperature", 1.0))  # runs saved before calibration: the plain softmax
        point = info.get("operating_point")  # None: the argmax (runs saved before operating points too)
        self.operating_point_ = None if point is None else OperatingPoint.from_dict(point, list(info["classes"]))
        self.selective_ = [(float(t), None if p is None else float(p)) for t, p in info.get("selective", [])]
        self.familiar_ = familiarity.Familiarity.load(run / familiarity.FILE)  # None: a run saved before the check

    def _save_files(self, run: Path) -> None:
        from headstart.tasks.classification import familiarity

        if self.familiar_ is not None:
            self.familiar_.save(run / familiarity.FILE)

    def _unfamiliar(self, logits_and_features: tuple[Any, Any]) -> Any:
        """The logits of a prediction pass; its features set ``unfamiliar_`` (empty for a run without the check:
        its rows have no ``unfamiliar``)."""
        logits, features = logits_and_features
        self.features_ = features
        self.unfamiliar_ = self.familiar_.unfamiliar(features) if self.familiar_ is not None else []
        return logits

    def _write_outputs(self, run: Path, data: str | Path, prepared: Prepared, state: Any) -> None:
        import torch

        from headstart.core.report import html_report, outputs
        from headstart.tasks.classification import calibration

        cfg, metrics, splits = self.config, self.metrics_, prepared.splits
        outputs.write_json(metrics, run / "metrics.json")
        outputs.write_history(state.history, run / "history.csv")
        outputs.plot_learning_curve(state.history, run / "learning_curve.png", metrics["selection_metric"])
        outputs.plot_confusion_matrix(metrics["val"]["confusion_matrix"], self.classes_,
                                      run / "confusion_matrix.png", "Validation confusion matrix")
        summary = {"model": cfg.model.name, "strategy": cfg.train.strategy, "data": str(data),
                   "layout": splits.layout, "classes": self.classes_, "num_train": metrics["num_train"],
                   "num_val": metrics["num_val"], "num_skipped": metrics["skipped"], "device": metrics["device"],
                   "items": self.NOUN, "skipped_what": self.SKIPPED}
        outputs.write_report_md(run, metrics, summary)
        val = self.splits_val_
        labels = torch.tensor([s.label for s in val])
        shown = ([self._report_item(s) for s in val], self.val_logits_.float() / self.temperature_, labels,
                 self.classes_)
        point = self.operating_point_
        mistakes = html_report.confident_mistakes(*shown, is_image=self.REPORT_IMAGES, point=point)
        hits = html_report.confident_hits(*shown, is_image=self.REPORT_IMAGES, point=point)
        if not (cfg.train.explain and self._explain(mistakes + hits)):  # nothing shows what the hits rest on
            hits = []
        calibration.plot(self.val_logits_, labels, self.temperature_, run / "calibration.png",
                         f"Validation calibration ({len(val)} {self.NOUN})")
        outputs.plot_roc(self.val_logits_ / self.temperature_, labels, self.classes_, run / "roc.png",
                         f"Validation ROC ({len(val)} {self.NOUN})", point,
                         metrics["val"].get("operating_points", {}).get("positive"))
        doubts = []
        for sample, c, _, sure in self.doubts_[:DOUBTS_SHOWN]:
            name, image = html_report.card_item(self._report_item(sample))
            doubts.append(html_report.Mistake(name, self.classes_[sample.label], self.classes_[c], sure,
                                              self.REPORT_IMAGES, image))
        html_report.write_classifier_report(run, metrics, summary, cfg, mistakes, doubts, hits)
        outputs.print_metrics(metrics["val"], f"Validation ({metrics['num_val']} {self.NOUN})")
        if metrics.get("test"):
            outputs.print_metrics(metrics["test"], f"Test ({metrics['test']['num_samples']} {self.NOUN}, "
                                  f"{outputs.test_model(metrics)})")

    def _explain(self, shown: list[Any]) -> bool:
        """Give the report's validation items (``html_report.Mistake``) what their prediction rests on (images: heat
        maps; texts: words); False where the task has no such explanation."""
        return False

    # ---------------------------------------------------------------- using the model
    def predict_proba(self, inputs: Any) -> tuple[list[Any], Any]:
        """``(items, probabilities[n_items, n_classes])`` of the items that could be read."""
        raise NotImplementedError

    def predict(self, inputs: Any, top_k: int | None = 1, errors: bool = False, **options: Any) -> list[dict[str, Any]]:
        """One row per readable item: the item (``path`` or ``text``), label, probability and the top-k classes.

        ``errors=True``: also one row ``{"path": ..., "error": why}`` (no label) per input that could not be
        read, every row in input order. ``options`` go to ``predict_proba`` (images: ``save_heatmaps``; texts:
        ``evidence``).
        """
        items, probs = self._predicted(inputs, **options)
        rows = [{self.ITEM_KEY: str(item), **self.row(p, top_k), **odd}
                for item, p, odd in zip(items, probs, self._flags(items))]
        return with_error_rows(rows, self.unreadable_, self.ITEM_KEY, self.inputs_) if errors else rows

    def row(self, p: Any, top_k: int | None) -> dict[str, Any]:
        """One item's ``label`` (decided: ``decided``), its ``probability`` and the ``top_k`` most probable classes
        (default 1)."""
        values, indices = p.topk(max(1, min(top_k or 1, len(self.classes_))))
        label = self.decided(p)
        return {"label": self.classes_[label], "probability": float(p[label]),
                "top_k": [(self.classes_[int(i)], float(v)) for v, i in zip(values, indices)]}

    def suggest(self, pool: Any, n: int = 50, chunk: int = 2048) -> list[dict[str, Any]]:
        """The ``n`` items of ``pool`` (unlabelled; what ``predict`` takes) to label next, least sure first: those the
        model is least sure of, unlike one another (``suggest.choose``). Each row is ``predict``'s (every class, most
        probable first) with its ``rank`` and ``margin`` (how sure: ``_margins``). Items labelled already (the run's
        training, validation and test items, same content) and repeats of an item are left out (``weighed_``: how
        many items were read, ``labelled``, ``repeated``). The pool is read ``chunk`` items at a time; only the
        ``suggest.PREFILTER * n`` least sure items so far are kept, with their features."""
        import numpy as np

        from headstart.core import runfolder
        from headstart.tasks.classification import suggest

        if n < 1:
            raise ValueError(f"suggest needs n >= 1 items to pick, found {n}")
        self._require_fitted()
        labelled: set[str] = set()
        for name in (runfolder.TRAINED, runfolder.HELD_OUT):
            labelled |= (runfolder.read_trained_keys(self.run_dir_, name) if self.run_dir_ else None) or set()
        kept: list[_Candidate] = []
        for got, probs, features, flags, new in self._new_items(self, self._pool(pool), labelled, chunk):
            sure = self._margins(probs[new]) if new else []
            kept += [_Candidate(float(sure[j]), got[i], probs[i], np.asarray(features[i], np.float32), flags[i])
                     for j, i in enumerate(new)]
            kept = [kept[j] for j in suggest.kept_candidates(np.array([c.margin for c in kept]), n)]
        if not kept:
            return []
        picked = suggest.choose([c.margin for c in kept], np.stack([c.features for c in kept]), n)
        return [{self.ITEM_KEY: str(kept[i].item), "rank": rank, **self.row(kept[i].probs, len(self.classes_)),
                 "margin": round(kept[i].margin, 4), **kept[i].flags} for rank, i in enumerate(picked, 1)]

    def suggest_first(self, pool: Any, n: int = 50, limit: int = 20000, chunk: int = 2048) -> list[dict[str, Any]]:
        """With no labels yet: the ``n`` items of ``pool`` to label first, by the features of the configured
        pretrained backbone (``model.name``; no training): one typical item of each of ``n`` groups of the pool,
        the biggest groups first (``suggest.first``). Each row is the item, its ``rank`` and its ``group_size``.
        Repeats are left out (``weighed_``); a pool over ``limit`` items is sampled down to that many (seeded)."""
        import copy

        import numpy as np

        from headstart.tasks.classification import suggest

        if n < 1:
            raise ValueError(f"suggest needs n >= 1 items to pick, found {n}")
        items = self._pool(pool)
        if len(items) > limit:
            from headstart.progress import say

            keep = np.sort(np.random.default_rng(self.config.train.seed).permutation(len(items))[:limit])
            say(f"{limit:,} of the {len(items):,} items drawn at random (seeded) to group")
            items = [items[i] for i in keep]
        probe = copy.copy(self)  # this estimator stays as it is: unfitted, or fitted
        probe._use_pretrained()
        found: list[tuple[Any, Any]] = []  # (item, features) of the new items
        for got, _, features, _, new in self._new_items(probe, items, set(), chunk):
            found += [(got[i], np.asarray(features[i], np.float32)) for i in new]
        if not found:
            return []
        picked = suggest.first(np.stack([f for _, f in found]), n, self.config.train.seed)
        return [{self.ITEM_KEY: str(found[i][0]), "rank": rank, "group_size": size}
                for rank, (i, size) in enumerate(picked, 1)]

    def _new_items(self, reader: Any, items: list[Any], labelled: set[str], chunk: int) -> Iterator[tuple]:
        """``(items, probabilities, features, flags, rows new)`` of each ``chunk`` of ``items`` as ``reader`` (this
        estimator, or its pretrained copy) predicts them; a row is new when its content is not in ``labelled`` nor
        in an earlier row. Counts in ``weighed_`` the items read, and those labelled or repeated."""
        seen: set[str] = set()
        self.weighed_ = {"read": 0, "labelled": 0, "repeated": 0}
        for start in range(0, len(items), chunk):
            got, probs = reader._predicted(items[start:start + chunk])
            new = []
            for i, item in enumerate(got):
                key = reader._content_key(item)  # the reader's: it read the items (their bytes, for some)
                if key in labelled or key in seen:
                    self.weighed_["labelled" if key in labelled else "repeated"] += 1
                    continue
                if key is not None:
                    seen.add(key)
                new.append(i)
            self.weighed_["read"] += len(got)
            yield got, probs, reader.features_, reader._flags(got), new

    def _use_pretrained(self) -> None:
        """Make this estimator's model the configured pretrained backbone with an untrained head (its features only
        are used: ``suggest_first``)."""
        raise NotImplementedError

    def _margins(self, probs: Any) -> Any:
        """How sure the model is of each item's decision (``suggest.margins``; at the run's operating point)."""
        from headstart.tasks.classification import suggest

        point = self.operating_point_
        return suggest.margins(probs, positive=point.positive if point else None,
                               threshold=point.threshold if point else None)

    def _pool(self, inputs: Any) -> list[Any]:
        """The items ``inputs`` stand for, one per item, so that a pool is read in chunks (``suggest``)."""
        return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]

    def _content_key(self, item: Any) -> str | None:
        """A predicted item's content key, as ``trained_items.txt`` lists the training items' (None: not known)."""
        return None

    weighed_: dict[str, int] = {}  # the last suggest's items read, and those of them left out: labelled, repeated

    def _predicted(self, inputs: Any, **options: Any) -> tuple[list[Any], Any]:
        """``predict_proba(inputs, **options)``, with one warning when some of its items are unfamiliar
        (``unfamiliar_``: set by the built-in tasks' ``predict_proba``; a task registered from outside may not set
        it)."""
        from headstart.progress import warn
        from headstart.tasks.classification.familiarity import warning

        self.unfamiliar_ = []
        items, probs = self.predict_proba(inputs, **options)
        said = warning(self.unfamiliar_, self.NOUN) if len(self.unfamiliar_) == len(items) else None
        if said:
            warn(said)
        return items, probs

    def _flags(self, items: list[Any]) -> list[dict[str, Any]]:
        """Each predicted item's ``{"unfamiliar": flag}`` for its row (``{}`` where ``predict_proba`` set none)."""
        return self._with([{} for _ in items], "unfamiliar", self.unfamiliar_)

    @staticmethod
    def _with(flags: list[dict[str, Any]], key: str, values: list[Any]) -> list[dict[str, Any]]:
        """``flags`` with ``key: value`` added to each item's, where the last prediction set one value per item."""
        return [{**flag, key: v} for flag, v in zip(flags, values)] if len(values) == len(flags) else flags

    ITEM_KEY = "path"
    unreadable_: list[tuple[str, str]] = []  # (input, why) of the last predict_proba's inputs that could not be read
    inputs_: list[str] = []  # the last predict_proba's inputs, in order

    def print_metrics(self, report: dict[str, Any], title: str) -> None:
        from headstart.core.report.outputs import print_metrics

        print_metrics(report, title)

    @classmethod
    def print_predictions(cls, rows: list[dict[str, Any]], fmt: str, top_k: int) -> None:
        key = cls.ITEM_KEY
        if fmt == "json":
            print(json.dumps(rows, indent=2))
        elif fmt == "csv":  # the columns of predict --out FILE.csv
            from headstart.deploy.batch import EXPLAINED, csv_columns, csv_row

            explained = [c for c in EXPLAINED if any(c in r for r in rows)]
            buf = io.StringIO()
            csv.writer(buf).writerows([csv_columns(key, explained), *(csv_row(r, key, explained) for r in rows)])
            sys.stdout.write(buf.getvalue())
        else:
            from rich.markup import escape
            from rich.table import Table

            table = Table()
            weighed = any("evidence" in r for r in rows)
            # the top-k column repeats the label and its probability unless k > 1 or a threshold decided otherwise
            ranked = top_k > 1 or any(r["top_k"][0][0] != r["label"] for r in rows if "error" not in r)
            for col in ("text" if key == "text" else "file", "label", "probability",
                        *([f"top {top_k}"] if ranked else []), *(["words it rests on"] if weighed else [])):
                table.add_column(col, overflow="fold")
            for r in rows:
                if "error" in r:
                    table.add_row(r[key], f"[red]not read[/]: {escape(r['error'])}", "-", *(["-"] if ranked else []),
                                  *([""] if weighed else []))
                    continue
                table.add_row(r[key], r["label"] + (" [yellow](unfamiliar)[/]" if r.get("unfamiliar") else ""),
                              f"{r['probability']:.3f}",
                              *([", ".join(f"{c} {p:.3f}" for c, p in r["top_k"])] if ranked else []),
                              *([", ".join(f"{w} {v:.2f}" for w, v in r.get("evidence", []))] if weighed else []))
            results().print(table)


class _Candidate(NamedTuple):
    """An item ``suggest`` may pick: how sure the model is of it, the item, its probabilities, features, flags."""

    margin: float
    item: Any
    probs: Any
    features: Any
    flags: dict[str, Any]


def with_error_rows(rows: list[dict[str, Any]], unreadable: list[tuple[str, str]], key: str = "path",
                    order: list[str] | None = None) -> list[dict[str, Any]]:
    """``rows`` and one ``{key: input, "error": why}`` row per unreadable input, in input order (``order``:
    every input; default: predicted rows first, then the errors)."""
    merged = rows + [{key: str(item), "error": why} for item, why in unreadable]
    if order:
        position = {item: i for i, item in reversed(list(enumerate(order)))}
        merged.sort(key=lambda r: position.get(r[key], len(position)))
    return merged

