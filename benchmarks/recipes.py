"""Does the linear recipe converge? The cached linear head (AdamW epochs vs L-BFGS to convergence) against
scikit-learn's LogisticRegressionCV on the same frozen features of the same pretrained weights, in one run.

    python benchmarks/recipes.py [DATA ...] [--model efficientnet_lite0] [--seed 0] [--out FILE]

Default data: 300 of scikit-learn's 8x8 digits (30 per class), ../shared/data/blood_cells (microscopy
crops) and ../shared/data/hymenoptera_data (photos). For each: headstart ``linear`` with
``train.head_solver=adamw`` (10 one-cycle epochs on 4 cached views, the default) and with
``train.head_solver=lbfgs``; then LogisticRegressionCV (standardised features, 5-fold CV over 10 C values)
on the un-augmented features of the same training images, scored on the same validation images.
Prints accuracy, macro-F1 and seconds side by side with ratios; writes benchmarks/results/recipes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HEADSTART_QUIET", "1")

import torch  # noqa: E402
from sklearn.linear_model import LogisticRegressionCV  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from headstart.core import loop  # noqa: E402
from headstart.datasets import write_digits  # noqa: E402
from headstart.tasks.classification.training import ClassificationSteps  # noqa: E402
from headstart.tasks.image.data import ImageData, discover  # noqa: E402
from headstart.tasks.image.task import ImageClassifier  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def digits_subset(folder: Path, per_class: int = 30) -> Path:
    full = write_digits(folder / "all")
    out = folder / f"digits{per_class}"
    for class_dir in sorted(p for p in full.iterdir() if p.is_dir()):
        (out / class_dir.name).mkdir(parents=True, exist_ok=True)
        for f in sorted(class_dir.iterdir())[:per_class]:
            (out / class_dir.name / f.name).write_bytes(f.read_bytes())
    return out


def sklearn_probe(clf: ImageClassifier, data: Path) -> dict:
    """LogisticRegressionCV on the eval-transform features of the run's own train and validation images."""
    cfg, model = clf.config, clf.model_
    started = time.perf_counter()
    images = ImageData(discover(data, cfg.data.val_fraction, cfg.train.seed), model.backbone.spec)
    steps, fabric = ClassificationSteps(images, cfg), loop.make_fabric(cfg.device)
    cut = model.backbone.num_groups
    xtr, xva = (steps.features(fabric, model, split, cut, False, 0).numpy() for split in ("train", "val"))
    ytr, yva = images.labels("train").numpy(), images.labels("val").numpy()
    probe = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=3000, scoring="accuracy")).fit(xtr, ytr)
    pred = probe.predict(xva)
    return {"accuracy": float((pred == yva).mean()), "macro_f1": float(f1_score(yva, pred, average="macro")),
            "seconds": round(time.perf_counter() - started, 1)}


def run(data: Path, model: str, seed: int, work: Path) -> dict:
    row: dict = {"data": str(data)}
    for solver in ("adamw", "lbfgs"):
        started = time.perf_counter()
        clf = ImageClassifier(model=model, strategy="linear", seed=seed,
                              overrides={"train.head_solver": solver}).fit(data, out=work / f"{data.name}-{solver}")
        row[solver] = {"accuracy": clf.metrics_["val_accuracy"], "macro_f1": clf.metrics_["val_macro_f1"],
                       "seconds": round(time.perf_counter() - started, 1)}
    row["sklearn"] = sklearn_probe(clf, data)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", type=Path)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "recipes.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="headstart-recipes-"))
    sets = args.data or [digits_subset(work), SHARED / "blood_cells", SHARED / "hymenoptera_data"]
    rows = [run(Path(d), args.model, args.seed, work) for d in sets if Path(d).exists()]
    print(f"{'data':<22} {'adamw acc':>9} {'lbfgs acc':>9} {'sklearn acc':>11} {'lbfgs-sk':>8} "
          f"{'adamw s':>7} {'lbfgs s':>7} {'s ratio':>7}")
    for r in rows:
        a, b, s = r["adamw"], r["lbfgs"], r["sklearn"]
        print(f"{Path(r['data']).name:<22} {a['accuracy']:>9.4f} {b['accuracy']:>9.4f} {s['accuracy']:>11.4f} "
              f"{b['accuracy'] - s['accuracy']:>+8.4f} {a['seconds']:>7.1f} {b['seconds']:>7.1f} "
              f"{b['seconds'] / a['seconds']:>7.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "seed": args.seed, "torch": torch.__version__,
                                    "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
