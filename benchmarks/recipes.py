"""The default recipe against what a user would otherwise run, on every development set, in one run.

    python benchmarks/recipes.py [--only digits,faces,blood_cells,hymenoptera,sms100,sms500,sms2000]
                                 [--skip fastai,trainer] [--set KEY=VALUE] [--draws 0,1,2,3,4]
                                 [--out benchmarks/results/recipes.json]

Every tool gets the same training items and is scored on the same held-out items that none of them saw:
  images (EfficientNet-Lite0 ImageNet weights): 300 scikit-learn digits (30 per class) and scikit-image's
  200 faces / non-faces (both split 70/30, stratified, seed 0), ../shared/data/blood_cells (train 851,
  scored on test 282) and ../shared/data/hymenoptera_data (train 244, scored on val 153);
  texts (all-MiniLM-L6-v2): SMS spam with 100 / 500 / 2,000 training texts, scored on the same 1,115.
Compared, each as its user would run it:
  * headstart's default, ``ImageClassifier().fit(TRAIN)`` / ``TextClassifier().fit(TRAIN)``: it holds out its
    own validation share of the training items (as for any class-folder layout or table without a split);
  * scikit-learn ``LogisticRegressionCV`` (standardised features, 5-fold CV over 10 C values) on frozen features
    of the same pretrained weights (headstart's extraction, evaluation preprocessing) of all training items;
  * fastai ``Learner(...).fine_tune(3)`` (images, vision_learner's head on the same body) and the
    ``transformers`` ``Trainer`` (texts: 3 epochs, LR 5e-5), on all training items.
Seconds run from the files to the held-out predictions, each tool with a cold feature cache. Prints accuracy,
macro-F1 and seconds side by side with the differences and time ratios to headstart; writes JSON.
``--draws``: the same comparison on other random draws of the training and held-out items (digits, faces: the
70/30 split; SMS: which texts are held out and which train), and a table of the mean macro-F1 difference to
``LogisticRegressionCV`` over the draws with its standard error (paired: both tools get each draw's items);
blood_cells and hymenoptera have fixed splits and run at draw 0 only. Written to ``recipes-draws.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HEADSTART_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sklearn.linear_model import LogisticRegressionCV  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from headstart.core import loop  # noqa: E402
from headstart.core.splits import stratified_split  # noqa: E402
from headstart.datasets import write_digits, write_faces  # noqa: E402
from headstart.tasks.classification.training import ClassificationSteps  # noqa: E402
from headstart.tasks.image.task import ImageClassifier  # noqa: E402
from headstart.tasks.text.task import TextClassifier  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
IMAGE_SETS = ("digits", "faces", "blood_cells", "hymenoptera")
FIXED_SPLITS = ("blood_cells", "hymenoptera")  # their own train / test folders: no other draw
TEXT_SIZES = (100, 500, 2000)
SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"


# ------------------------------------------------------------------------------------------------ data
def _split_folders(source: Path, root: Path, held_out: float = 0.3, seed: int = 0) -> Path:
    """Class folders of ``source`` copied into ``root/train`` and ``root/val`` (stratified)."""
    files = [(f, c.name) for c in sorted(p for p in source.iterdir() if p.is_dir()) for f in sorted(c.iterdir())]
    classes = sorted({c for _, c in files})
    train, val = stratified_split([classes.index(c) for _, c in files], held_out, seed)
    for split, indices in (("train", train), ("val", val)):
        for i in indices:
            f, c = files[i]
            (root / split / c).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, root / split / c / f.name)
    return root


def image_set(name: str, work: Path, draw: int = 0) -> Path:
    """``ROOT`` with ``ROOT/train`` (training class folders) and ``ROOT/val`` (held-out class folders)."""
    if name == "digits":
        return _split_folders(write_digits(work / "digits-all", per_class=30), work / name, seed=draw)
    if name == "faces":
        return _split_folders(write_faces(work / "faces-all"), work / name, seed=draw)
    source, held_out = {"blood_cells": (SHARED / "blood_cells", "test"),
                        "hymenoptera": (SHARED / "hymenoptera_data", "val")}[name]
    root = work / name
    root.mkdir(parents=True)
    (root / "train").symlink_to(source / "train", target_is_directory=True)
    (root / "val").symlink_to(source / held_out, target_is_directory=True)
    return root


def text_set(size: int, work: Path, draw: int = 0) -> tuple[Path, list, list, list]:
    """``(table with a split column, classes, train rows, held-out rows)`` of SMS spam."""
    from text_classification import read_split

    classes, train, val = read_split(SMS, size, seed=draw)
    table = work / f"sms{size}.csv"
    with table.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "text", "split"])
        writer.writerows([(label, text, "train") for label, text in train] + [(label, text, "val") for label, text in val])
    return table, classes, train, val


# ------------------------------------------------------------------------------------------------ tools
def _scores(truth, pred) -> dict:
    truth, pred = torch.as_tensor(truth), torch.as_tensor(pred)
    return {"accuracy": float((truth == pred).float().mean()), "macro_f1": float(f1_score(truth, pred, average="macro"))}


def logreg_cv(estimator, data: Path, work: Path) -> dict:
    """LogisticRegressionCV on frozen pooled features of DATA's train split, scored on its val split."""
    started = time.perf_counter()
    run = work / "probe-run"
    run.mkdir(parents=True, exist_ok=True)
    prepared = estimator._prepare(data, run)
    cfg, model = estimator.config, prepared.model
    steps, fabric = ClassificationSteps(prepared.data, cfg), loop.make_fabric(cfg.device)
    cut = model.backbone.num_groups
    xtr, xva = (steps.features(fabric, model, split, cut, False, 0).numpy() for split in ("train", "val"))
    ytr, yva = prepared.data.labels("train").numpy(), prepared.data.labels("val").numpy()
    probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=3000)).fit(xtr, ytr)
    return {**_scores(yva, probe.predict(xva)), "seconds": round(time.perf_counter() - started, 1),
            "num_train": len(ytr)}


def _probe_settings(work: Path) -> dict:
    return {"cache.dir": str(work / "cache-probe"), "train.refit": False}


def image_row(name: str, work: Path, skip: set[str], settings: dict, draw: int = 0) -> dict:
    root = image_set(name, work, draw)
    row: dict = {"data": name, "kind": "images", "alternative": "fastai", "draw": draw}
    started = time.perf_counter()
    clf = ImageClassifier(overrides={"cache.dir": str(work / "cache-headstart"), **settings}).fit(root / "train",
                                                                                                out=work / "run")
    report = clf.evaluate(root / "val")
    m = clf.metrics_
    row["headstart"] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                        "seconds": round(time.perf_counter() - started, 1), "num_train": m["num_train"],
                        "own_val_accuracy": m["val_accuracy"], "chosen": m.get("chosen", {}).get("phase"),
                        "phases": [{k: p[k] for k in ("phase", "epochs", "seconds", "kept") if k in p}
                                   for p in m.get("phases", [])]}
    row["num_held_out"] = report["num_samples"]
    row["logreg_cv"] = logreg_cv(ImageClassifier(strategy="linear", overrides=_probe_settings(work)), root, work)
    if "fastai" not in skip:
        from image_classification import fastai_fine_tune

        result = fastai_fine_tune(root)
        row["fastai"] = {"accuracy": result["val_accuracy"], "macro_f1": result["val_macro_f1"],
                         "seconds": round(result["wall_seconds"], 1)}
    return row


def text_row(size: int, work: Path, skip: set[str], settings: dict, draw: int = 0) -> dict:
    from text_classification import run_headstart, run_trainer

    table, classes, train, val = text_set(size, work, draw)
    args = SimpleNamespace(epochs=None, max_length=128, threads=torch.get_num_threads(), trainer_epochs=3,
                           set=[f"{k}={v}" for k, v in settings.items()])
    row: dict = {"data": f"sms{size}", "kind": "texts", "alternative": "trainer", "num_held_out": len(val),
                 "draw": draw}
    (work / "headstart").mkdir()
    h = run_headstart(classes, train, val, args, work / "headstart")
    row["headstart"] = {"accuracy": h["accuracy"], "macro_f1": h["macro_f1"], "seconds": h["wall_seconds"],
                        "num_train": len(train), "own_val_macro_f1": h["own_val_macro_f1"], "recipe": h["recipe"]}
    row["logreg_cv"] = logreg_cv(TextClassifier(strategy="linear", overrides=_probe_settings(work)), table, work)
    if "trainer" not in skip:
        (work / "trainer").mkdir()
        t = run_trainer(classes, train, val, args, work / "trainer")
        row["trainer"] = {"accuracy": t["accuracy"], "macro_f1": t["macro_f1"], "seconds": t["wall_seconds"]}
    return row


# ------------------------------------------------------------------------------------------------ report
def print_table(rows: list[dict]) -> None:
    table = Table(title="Default recipe vs LogisticRegressionCV (same frozen features) and fastai / Trainer; "
                        "held-out accuracy / macro-F1 / seconds")
    for col in ("data", "train / held-out", "headstart", "LogRegCV", "fastai or Trainer",
                "F1 vs LogRegCV", "F1 vs alt.", "alt. s / headstart s"):
        table.add_column(col, justify="left" if col == "data" else "right")

    def cell(r: dict | None) -> str:
        return "-" if r is None else f"{r['accuracy']:.3f} / {r['macro_f1']:.3f} / {r['seconds']:.0f}"

    for row in rows:
        h, lr, alt = row["headstart"], row["logreg_cv"], row.get(row["alternative"])
        name = row["data"] + (f" (draw {row['draw']})" if row.get("draw") else "")
        table.add_row(name, f"{h['num_train']} / {row['num_held_out']}", cell(h), cell(lr), cell(alt),
                      f"{h['macro_f1'] - lr['macro_f1']:+.3f}",
                      "-" if alt is None else f"{h['macro_f1'] - alt['macro_f1']:+.3f}",
                      "-" if alt is None else f"{alt['seconds'] / h['seconds']:.2f}")
    Console(width=200).print(table)


def print_draws(rows: list[dict]) -> dict:
    """Mean macro-F1 of headstart and ``LogisticRegressionCV`` over the draws of each data set, and the mean of their
    paired differences with its standard error; returns them by data set."""
    table = Table(title="Over random draws of the training / held-out items: mean held-out macro-F1, and headstart "
                        "minus LogRegCV (mean +- standard error of the paired differences)")
    for col in ("data", "draws", "headstart", "LogRegCV", "difference", "draws headstart ahead / level / behind"):
        table.add_column(col, justify="left" if col == "data" else "right")
    summary = {}
    for name in dict.fromkeys(row["data"] for row in rows):
        ours = torch.tensor([r["headstart"]["macro_f1"] for r in rows if r["data"] == name], dtype=torch.float64)
        theirs = torch.tensor([r["logreg_cv"]["macro_f1"] for r in rows if r["data"] == name], dtype=torch.float64)
        diff = ours - theirs
        se = float(diff.std() / len(diff) ** 0.5) if len(diff) > 1 else None  # one draw: no spread to give
        summary[name] = {"draws": len(diff), "headstart_macro_f1": round(float(ours.mean()), 4),
                         "logreg_cv_macro_f1": round(float(theirs.mean()), 4),
                         "difference": round(float(diff.mean()), 4), "standard_error": se and round(se, 4),
                         "ahead": int((diff > 5e-4).sum()), "level": int((diff.abs() <= 5e-4).sum()),
                         "behind": int((diff < -5e-4).sum())}
        s = summary[name]
        table.add_row(name, str(len(diff)), f"{s['headstart_macro_f1']:.3f}", f"{s['logreg_cv_macro_f1']:.3f}",
                      f"{s['difference']:+.3f}" + ("" if se is None else f" +- {se:.3f}"),
                      f"{s['ahead']} / {s['level']} / {s['behind']}")
    Console(width=200).print(table)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join([*IMAGE_SETS, *(f"sms{n}" for n in TEXT_SIZES)]),
                        help="comma-separated data sets")
    parser.add_argument("--skip", default="", help="alternatives to leave out: fastai, trainer")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="headstart config override, e.g. train.refit=true (repeatable)")
    parser.add_argument("--draws", default="0", help="comma-separated seeds of the draw of training / held-out items")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON written (default: benchmarks/results/recipes.json, recipes-draws.json with --draws)")
    args = parser.parse_args()
    skip, rows = set(filter(None, args.skip.split(","))), []
    settings = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    draws = [int(d) for d in args.draws.split(",")]
    out = args.out or Path(__file__).parent / "results" / ("recipes.json" if draws == [0] else "recipes-draws.json")
    for draw in draws:
        for name in args.only.split(","):
            if draw and name in FIXED_SPLITS:
                continue  # one split only: its draw 0 is the comparison
            with tempfile.TemporaryDirectory(prefix="headstart-recipes-") as tmp:
                if name in IMAGE_SETS:
                    rows.append(image_row(name, Path(tmp), skip, settings, draw))
                elif name.startswith("sms") and int(name[3:]) in TEXT_SIZES:
                    rows.append(text_row(int(name[3:]), Path(tmp), skip, settings, draw))
                else:
                    raise SystemExit(f"unknown data set {name!r}; expected one of {IMAGE_SETS} or sms{TEXT_SIZES}")
            r = rows[-1]
            print(f"{name} (draw {draw}): " + ", ".join(f"{k} {r[k]['macro_f1']:.3f} F1 {r[k]['seconds']:.0f} s"
                                                        for k in ("headstart", "logreg_cv", r["alternative"]) if k in r),
                  flush=True)
    print_table(rows)
    summary = print_draws(rows) if len(draws) > 1 else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "image_model": "efficientnet_lite0 (ImageNet)", "text_model": "minilm (all-MiniLM-L6-v2)", "seed": 0,
        "draws": draws, "headstart_settings": settings, **({"over_draws": summary} if summary else {}),
        "rows": rows}, indent=2))
    print(f"Wrote {out}")


if __name__ == "__main__":
    main()
