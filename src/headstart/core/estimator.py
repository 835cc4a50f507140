"""The Python API's base class: one ``__init__``, one config builder and one ``fit`` for every task.

``ImageClassifier``, ``TextClassifier``, ``Detector`` (and any registered task) subclass
``Estimator`` and fill in a few hooks: read the data and build the model (``_prepare``), the
loop's ``Steps``, the final evaluation and the task's own outputs. Everything else is here: the
run folder checks, the data fingerprint that guards resume, the training loop, saving and loading
the model, ``resume``, ``save`` and the not-fitted check. As in scikit-learn, ``fit`` returns
``self`` and learned attributes end in ``_``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from headstart.config import RunConfig, load_config, parse_override
from headstart.errors import ConfigError, DataError, NotFittedError, RunFolderError
from headstart.tasks import get_task, other_sections, task_names
from headstart.tasks.base import COMMON_SHORTCUTS, Task

REFIT_TRAIN = " (train + validation, for the refit)"  # after the training count in a refit's Data line


def build_config(task: Task, config: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                 **keywords: Any) -> RunConfig:
    """A validated RunConfig: the task's defaults <- YAML ``config`` <- ``overrides`` <- keyword arguments.

    Keywords are the common ones (``model``, ``strategy``, ``epochs``...) and the task's own
    (``Task.shortcuts``); a keyword or a config key that belongs to another task is an error.
    """
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    merged = dict(overrides or {})
    known = {**COMMON_SHORTCUTS, **task.shortcuts}
    for name, value in keywords.items():
        if name not in known:
            owners = [t for t in task_names() if name in get_task(t).shortcuts]
            where = f" (it is for --task {', '.join(owners)})" if owners else ""
            raise ConfigError(f"Unknown argument '{name}' for task '{task.name}'{where}; expected one of "
                              f"{', '.join(sorted(known))} or overrides={{'section.key': value}}")
        if name == "classes" and isinstance(value, str):
            value = [c.strip() for c in value.split(",") if c.strip()]
        if value is not None:
            merged[known[name]] = value
    cfg = load_config(config, merged, base=copy.deepcopy({**task.defaults, "task": task.name}))
    if cfg.task != task.name:
        raise ConfigError(f"This config is for task '{cfg.task}', not '{task.name}': use the {cfg.task} estimator "
                          f"or --task {cfg.task}")
    foreign = _foreign_keys(task, config, merged)
    if foreign:
        raise ConfigError(f"Config key(s) {', '.join(foreign)} belong to another task; task '{task.name}' does not "
                          "read them (remove them or choose that --task)")
    return cfg


def _foreign_keys(task: Task, config: str | Path | None, merged: dict[str, Any]) -> list[str]:
    """Keys the user gave that sit in another task's config section."""
    import yaml

    other = other_sections(task)
    given = list(merged)
    if config is not None:
        loaded = yaml.safe_load(Path(config).read_text()) or {}
        given += [f"{k}.{kk}" for k, v in loaded.items() if isinstance(v, dict) for kk in v]
    return sorted({k for k in given if k.split(".")[0] in other})


def check_run_target(run: Path, resume: bool) -> None:
    """Refuse to overwrite a finished run or to silently restart an unfinished one."""
    from headstart.core import loop, runfolder

    if resume:
        return
    # complete first: a run killed after it was marked complete may still hold its last checkpoint
    if (run / runfolder.META).exists() and runfolder.read_meta(run).get("status") == "complete":
        raise RunFolderError(f"{run} already holds a trained model; choose another --out (nothing was overwritten)")
    if (run / loop.CHECKPOINT).exists():
        raise RunFolderError(f"{run} holds an unfinished run: continue it with 'headstart train --resume {run}' "
                             "or choose another --out")


def _split_keys(data: Any, split: str) -> list[str] | None:
    """The content keys of a split of a task's data; None for a task without that split (detection: no test)."""
    try:
        return data.keys(split)
    except (KeyError, AttributeError):
        return None


@dataclass
class Prepared:
    """What ``_prepare`` hands to ``fit``: the model, the task's data object, and its summary."""

    model: Any  # an nn.Module with ``backbone`` (layer groups) and ``head``
    data: Any  # the task's data object; ``keys(split)`` gives the items' content hashes
    splits: Any  # what the reader found (classes, layout, skipped files, notes)
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific values for ``_finish``


class Estimator:
    """Base of every task's Python API: ``fit`` / ``predict`` / ``predict_proba`` / ``evaluate`` / ``save`` / ``load``."""

    TASK: ClassVar[str] = ""  # the task's name in the registry
    SKIPPED: ClassVar[str] = "files"  # what a skipped input is called in messages
    LORA: ClassVar[bool] = False  # strategy 'lora' applies (the task adds the adapters: ``lora.prepare``)

    def __init__(self, model: str | None = None, strategy: str | None = None, epochs: int | None = None,
                 config: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                 **kwargs: Any) -> None:
        self.config = build_config(self.task(), config, overrides, model=model, strategy=strategy, epochs=epochs,
                                   **kwargs)
        self.model_: Any = None
        self.classes_: list[str] = []
        self.metrics_: dict[str, Any] = {}
        self.history_: list[dict[str, Any]] = []
        self.run_dir_: Path | None = None

    @classmethod
    def task(cls) -> Task:
        return get_task(cls.TASK)

    # ---------------------------------------------------------------- training
    def fit(self, data: str | Path, out: str | Path | None = None, resume: bool = False):
        """Train on DATA; the run folder ``out`` (default: a temporary folder) receives every output."""
        import torch

        from headstart.core import loop, runfolder, strategies
        from headstart.core.backbones import registry
        from headstart.progress import say

        cfg = self.config
        if (Path(data) / runfolder.META).is_file():
            raise DataError(f"{data} is a run folder (its {runfolder.META}), not data: `headstart train --resume "
                            f"{data}` continues it, `headstart evaluate {data} DATA` and `headstart predict {data} "
                            "FILES` use its model; train on the folder or table of the data itself")
        # with several devices this starts (or joins) the other processes, which run this same code; only the
        # first (rank 0) writes the run folder
        fabric = loop.make_fabric(cfg.device, distributed=True)
        self._lead = lead = fabric.is_global_zero
        say(loop.device_line(fabric, cfg.device))
        run = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"headstart-{self.TASK}-")) if lead else None
        run = loop.agree(fabric, run)
        check_run_target(run, resume)
        kind, _ = strategies.parse(cfg.train.strategy, 10**6)  # a bad strategy or model name fails before any data
        if kind == "lora" and not self.LORA:  # is read
            raise ConfigError(f"Strategy 'lora' adapts a classifier's transformer (text encoders, ViTs); the "
                              f"{self.TASK} task cannot use it: use linear, partial:K, lp-ft or full")
        try:
            registry.parse(cfg.model.name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        created = not run.exists()
        if fabric.world_size > 1:
            fabric.barrier()  # every process checked the folder before the first one writes to it
        run.mkdir(parents=True, exist_ok=True)
        try:  # until config.yaml is written, a failure (bad data, --strict, Ctrl-C) removes the folder it made
            torch.manual_seed(cfg.train.seed)
            prepared = self._prepare(data, run)
            self._check_prepared(prepared)
            self._check_disk(run, prepared)
            keys = prepared.data.keys("train") + prepared.data.keys("val")
            fingerprint = hashlib.sha256("".join(keys).encode()).hexdigest()[:16]
            if resume and runfolder.read_meta(run, self.task().run_kind).get("data_fingerprint") != fingerprint:
                raise RunFolderError(f"The data changed since {run} started (its fingerprint differs): resume needs "
                                     "the same items; start a new run with another --out")
        except BaseException:
            if created and lead:
                shutil.rmtree(run, ignore_errors=True)
            raise
        if lead:
            cfg.dump(run / "config.yaml", without=other_sections(self.task()))
            runfolder.write_meta(run, task=self.task().run_kind, status="running", data=str(Path(data).resolve()),
                                 data_fingerprint=fingerprint)
        steps = self._steps(prepared)
        state = loop.fit(prepared.model, steps, cfg, run, resume=resume, fabric=fabric)
        self.model_, self.classes_, self.history_, self.run_dir_ = prepared.model, prepared.splits.classes, state.history, run
        self.metrics_ = self._finish(run, data, prepared, steps, fabric, state)
        trained = prepared.data.keys("train")  # the items the saved model learned from (``evaluate`` says overlaps)
        if cfg.train.refit is True or (cfg.train.refit == "auto" and prepared.splits.val_held_out):
            plan = loop.refit_plan(prepared.model, steps, cfg, state)
            del steps  # the first fit's features
            if hasattr(prepared.data, "release"):  # the refit reads DATA again: one copy of its decoded images, not two
                prepared.data.release()
            trained += prepared.data.keys("val")  # the saved model trains on validation too
            refit = self.metrics_["refit"] = self._refit(data, run, plan, resume, fabric)
            for split, report in refit.pop("scores", {}).items():  # DATA's test split, scored by the saved model
                refit[f"{split}_before_refit"] = {k: v for k, v in self.metrics_[split].items()
                                                  if isinstance(v, (int, float))}
                self.metrics_[split] = report
        elif cfg.train.refit == "auto":
            say("No refit: DATA has its own validation split, kept out of training (train.refit=auto; --refit "
                "trains on it too)")
        if lead:
            runfolder.save_model(run, self.model_, {"task": self.task().run_kind, "classes": self.classes_,
                                                    **self._spec_info()})
            self._save_files(run)
            runfolder.write_trained_keys(run, trained)
            held_out = {k for split in ("val", "test") for k in _split_keys(prepared.data, split) or []} - set(trained)
            runfolder.write_trained_keys(run, sorted(held_out), runfolder.HELD_OUT)  # labelled too (``suggest``)
            self._write_outputs(run, data, prepared, state)
            runfolder.write_meta(run, status="complete")
            (run / loop.CHECKPOINT).unlink(missing_ok=True)
        say(f"Run folder: [bold]{run}[/] (report.html, report.md, metrics.json, plots)")
        return self

    def _check_prepared(self, prepared: Prepared) -> None:
        """Settings that need the data's classes, refused before training starts: an operating point is for
        single-label classifiers (``ClassifierEstimator``)."""
        if self.config.train.operating_point != "argmax":
            raise ConfigError(f"train.operating_point={self.config.train.operating_point} thresholds one class of a "
                              f"single-label classifier (image, text); the {self.TASK} task decides otherwise (leave "
                              "it at argmax)")

    def _check_disk(self, run: Path, prepared: Prepared) -> None:
        """Before any feature is extracted: a run folder whose disk cannot hold the checkpoints and the model is a
        DiskSpaceError; a feature cache whose disk cannot hold the pooled features (items x views x feature bytes)
        is one warning, and the features stay in memory."""
        from headstart.core import cache, runfolder, strategies

        cfg, model = self.config, prepared.model
        backbone = model.backbone
        phases = strategies.plan(cfg.train.strategy, backbone.num_groups, cfg.train)
        refit = cfg.train.refit is True or (cfg.train.refit == "auto" and prepared.splits.val_held_out)
        need = runfolder.bytes_needed(model, any(p.trainable for p in phases), refit)
        runfolder.check_free_space(run, need, "the checkpoints and the model")
        if cfg.cache.enabled and backbone.spec.weights is not None and any(p.trainable < backbone.num_groups
                                                                            for p in phases):
            train, val = len(prepared.data.keys("train")), len(prepared.data.keys("val"))
            rows = train * (cfg.cache.views + (cfg.train.head_solver == "lbfgs")) + val  # + the un-augmented images
            root = cfg.cache.dir or cache.default_root()
            cache.reserve(root, rows * backbone.spec.feature_dim * 4, runfolder.free_bytes(root))

    def _prepare(self, data: str | Path, run: Path) -> Prepared:
        """Read DATA (reporting what was skipped) and build the model with its new head."""
        raise NotImplementedError

    def check(self, data: str | Path) -> dict[str, Any]:
        """Read DATA as ``fit`` reads it, without training, and say what it holds and what is wrong with it: the
        layout, the classes, each split's size, the items skipped (and why) and every warning about the data
        (duplicates and near-copies across the splits, shortcuts, small classes...). Writes nothing."""
        import torch

        from headstart.progress import say

        self._checking = True
        try:
            with tempfile.TemporaryDirectory(prefix=f"headstart-check-{self.TASK}-") as tmp:
                torch.manual_seed(self.config.train.seed)
                prepared = self._prepare(data, Path(tmp))
        finally:
            self._checking = False
        sizes = {split: len(keys) for split in ("train", "val", "test")
                 if (keys := _split_keys(prepared.data, split)) is not None}
        warnings = list(prepared.extra.get("data_warnings") or [])
        warnings += [f"{n} {what}" for what, n in (prepared.extra.get("issues") or {}).items()]
        report = {"task": self.TASK, "data": str(data), "layout": prepared.splits.layout,
                  "classes": list(prepared.splits.classes), "sizes": sizes,
                  "skipped": [{"item": str(item), "why": why} for item, why in prepared.splits.skipped],
                  "warnings": warnings}
        say(f"[bold]Check[/] {data}: {', '.join(f'{k} {n}' for k, n in sizes.items() if n)}; "
            f"{len(report['skipped'])} {self.SKIPPED} skipped; {len(warnings)} warning(s)")
        return report

    _refitting = False  # ``_prepare`` reads the data for --refit (train + validation)
    _checking = False  # ``_prepare`` reads the data for ``check``: skipped items are said, not written
    _lead = True  # this process writes the run folder (with several devices: rank 0 alone)

    def _training_splits(self, splits: Any) -> Any:
        """What a task's ``_prepare`` trains on: the splits it read (with ``data.add``'s items in training), or for
        ``--refit`` train + validation."""
        splits = self._with_added(splits)
        if not self._refitting:
            return splits
        return dataclasses.replace(splits, train=splits.train + splits.val, notes=[])  # the first read said them

    def _with_added(self, splits: Any) -> Any:
        """DATA's splits with the labelled items of ``data.add`` in training (``_added``), for the tasks whose
        shortcuts take ``add``; the others refuse the key."""
        if not self.config.data.add:
            return splits
        if "add" not in self.task().shortcuts:
            raise ConfigError(f"data.add (--add) adds labelled tables to the training split of image and text "
                              f"classification; the {self.TASK} task does not read it: add the items to DATA instead")
        return self._added(splits)

    def _added(self, splits: Any) -> Any:
        """``splits`` with the items of the ``data.add`` tables in training (``ClassifierEstimator``)."""
        raise NotImplementedError

    def _refit(self, data: str | Path, run: Path, plan: list, resume: bool, fabric: Any) -> dict[str, Any]:
        """``--refit``: a fresh model trained on train + validation by ``plan``; it becomes the saved model."""
        from headstart.core import loop
        from headstart.progress import say

        recipe = ", ".join(f"{p.name} {p.epochs} epoch(s)" for p in plan)
        say(f"[bold]Refit[/] on train + validation: {recipe} (the recipe validation chose; not validated again, "
            "as it trains on the validation items)")
        self._refitting = True
        try:
            prepared = self._prepare(data, run)
        finally:
            self._refitting = False
        folder = run / "refit"
        folder.mkdir(exist_ok=True)
        state = loop.fit(prepared.model, self._steps(prepared), self.config, folder,
                         resume=resume and (folder / loop.CHECKPOINT).is_file(), fabric=fabric, replay=plan)
        if self._lead:
            (folder / loop.CHECKPOINT).unlink(missing_ok=True)
        self.model_ = prepared.model
        scores = self._refit_scores(prepared, fabric)
        say(f"Saved model: refit on {len(prepared.splits.train)} {getattr(self, 'NOUN', 'items')}; the validation "
            "numbers are of the model chosen before refit, on items it did not train on"
            + ("; the test numbers are the saved model's" if "test" in scores else ""))
        tested = "val metrics are" if "test" in scores else "val and test metrics are"
        return {"recipe": [{"phase": p.name, "epochs": p.epochs} for p in plan],
                "num_train": len(prepared.splits.train), "train_seconds": round(state.seconds, 2),
                "saved_model": "refit on train + validation",
                "held_out": f"{tested} of the model chosen on validation before refit; the saved model trained on "
                            "the validation items too and has no held-out validation score"
                            + ("; test metrics are the saved model's (test_before_refit: the model chosen before)"
                               if "test" in scores else ""),
                "scores": scores}

    def _refit_scores(self, prepared: Prepared, fabric: Any) -> dict[str, Any]:
        """Reports of DATA's held-out splits (``{"test": report}``) by the refitted model; {}: those of the model
        chosen before refit stand."""
        return {}

    def _write_skipped(self, run: Path, splits: Any) -> None:
        """``skipped.txt`` (each file or row left out, and why) and a warning that shows the first ten."""
        from headstart.progress import console, warn

        if splits.skipped and self._lead:
            if self._checking:
                warn(f"{len(splits.skipped)} {self.SKIPPED} skipped:")
            else:
                (run / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in splits.skipped))
                warn(f"{len(splits.skipped)} {self.SKIPPED} skipped (listed in {run / 'skipped.txt'}):")
            for p, why in splits.skipped[:10]:
                console.print(f"  {p}: {why}")

    def _steps(self, prepared: Prepared) -> Any:
        """The training loop's ``Steps`` for this task."""
        raise NotImplementedError

    def _finish(self, run: Path, data: str | Path, prepared: Prepared, steps: Any, fabric: Any, state: Any) -> dict:
        """The final metrics of the best weights (validation and test splits)."""
        raise NotImplementedError

    def _save_files(self, run: Path) -> None:
        """What the run folder needs besides the model to load it again (a text run: its tokenizer)."""

    def _write_outputs(self, run: Path, data: str | Path, prepared: Prepared, state: Any) -> None:
        """metrics.json, history.csv, plots, report.md, report.html and the task's own files."""
        raise NotImplementedError

    def _spec_info(self) -> dict[str, Any]:
        """What spec.json records besides the task and classes (backbone spec, head...)."""
        return {"backbone": self.model_.backbone.spec.to_dict()}

    # ---------------------------------------------------------------- using the model
    def _require_fitted(self):
        if self.model_ is None:
            name = type(self).__name__
            raise NotFittedError(f"This {name} is not fitted yet: call .fit(data) or {name}.load(run)")
        return self.model_

    def predict(self, inputs: Any, top_k: int | None = None, errors: bool = False) -> list[dict[str, Any]]:
        """One row per readable input; ``errors=True`` adds ``{"path": ..., "error": why}`` rows for the others."""
        raise NotImplementedError

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def load(cls, run: str | Path):
        """A fitted estimator from a run folder, with the preprocessing it was trained with."""
        from headstart.core import runfolder

        run = Path(run)
        runfolder.read_meta(run, cls.task().run_kind, complete=True)
        est = cls(config=run / "config.yaml")
        if est.config.device.threads:  # predict decodes (ImageStore) with torch's threads, before any Fabric sets them
            import torch

            torch.set_num_threads(est.config.device.threads)
        info = runfolder.read_spec(run)
        try:
            model = est._model_from_spec(info, run)
        except (ValueError, KeyError, TypeError) as exc:  # an unknown architecture, a missing or wrong field
            raise RunFolderError(f"{run / runfolder.SPEC} describes a model this headstart cannot build "
                                 f"({type(exc).__name__}: {exc}); the run folder is damaged or from another "
                                 "version: train it again") from None
        est.model_ = runfolder.load_model(run, model)
        est.classes_, est.run_dir_ = info["classes"], run
        est._loaded(run, info)
        return est

    def _model_from_spec(self, info: dict[str, Any], run: Path) -> Any:
        """The architecture recorded in spec.json, with random weights (``load`` fills them in)."""
        raise NotImplementedError

    def _loaded(self, run: Path, info: dict[str, Any]) -> None:
        """Restore what else the run folder holds (tokenizer, training counts...)."""

    @classmethod
    def resume(cls, run: str | Path):
        """Continue an interrupted run from its last checkpoint (from the first epoch when it stopped before one)."""
        from headstart.core import loop, runfolder

        run = Path(run)
        meta = runfolder.read_meta(run, cls.task().run_kind)
        if meta.get("status") == "complete":
            raise RunFolderError(f"{run} is already complete; nothing to resume")
        if not (run / "config.yaml").is_file() or "data" not in meta:
            raise RunFolderError(f"{run} has no config.yaml or no data path in {runfolder.META}: it stopped before "
                                 "training started; start it again with headstart train DATA --out RUN")
        if not (run / loop.CHECKPOINT).exists():  # stopped while reading or extracting: features cached stay cached
            from headstart.progress import say

            say(f"{run} has no checkpoint yet (it stopped before its first epoch ended): training starts again from "
                "the first epoch with its config")
        return cls(config=run / "config.yaml").fit(meta["data"], out=run, resume=True)

    def save(self, directory: str | Path) -> Path:
        """Copy the run folder (model, spec, config, metrics, plots) to ``directory``."""
        self._require_fitted()
        directory = Path(directory)
        if self.run_dir_ is not None and directory.resolve() != self.run_dir_.resolve():
            shutil.copytree(self.run_dir_, directory, dirs_exist_ok=True)
        return directory

    # ---------------------------------------------------------------- the CLI's view
    @classmethod
    def cli_inputs(cls, items: list[str], file: Path | None, run: Path | None = None) -> list[Any]:
        """What ``headstart predict RUN ITEMS`` passes to ``predict`` (image tasks: files and folders; a CSV or TSV
        table stands for the image files it lists, in its order: ``image.data.table_images``)."""
        if file is not None or (items and not any(Path(i).exists() for i in items)):
            what = str(file or items[0])
            raise ConfigError(f"{what!r} is not an image file or folder, and this run holds a {cls.TASK} model: pass "
                              "image files or folders (classify texts with a text run folder)")
        from headstart.tasks.image.data import table_images
        from headstart.tasks.image.pixel_tables import is_pixel_table
        from headstart.tasks.tables import is_table_file

        inputs: list[Any] = []
        for item in map(Path, items):  # a table (a Label Studio export too) lists the images to predict
            table = item.is_file() and is_table_file(item) and not is_pixel_table(item)
            inputs += [str(f) for f in table_images(item)] if table else [str(item)]  # (pixels: its rows)
        return inputs

    def print_metrics(self, report: dict[str, Any], title: str) -> None:
        raise NotImplementedError

    @classmethod
    def print_predictions(cls, rows: list[dict[str, Any]], fmt: str, top_k: int) -> None:
        raise NotImplementedError
