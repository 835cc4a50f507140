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
