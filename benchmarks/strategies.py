"""Which default? Validation accuracy and wall seconds of each strategy on the same data, cold cache.

    python benchmarks/strategies.py [DATA] [--model efficientnet_lite0] [--out benchmarks/results/strategies.json]

Each strategy starts with an empty feature cache, so its time includes feature extraction.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HEADSTART_QUIET", "1")

from headstart.tasks.image.task import ImageClassifier  # noqa: E402

RECIPES = {
    "linear (10 epochs, 4 cached views)": {"strategy": "linear", "epochs": 10},
    "partial:2 (5 epochs, cached)": {"strategy": "partial:2", "epochs": 5},
    "lp-ft (10 head + 2 fine-tune)": {"strategy": "lp-ft", "epochs": 2},
    "lp-ft (10 head + 3 fine-tune)": {"strategy": "lp-ft", "epochs": 3},
    "full (3 epochs)": {"strategy": "full", "epochs": 3},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/hymenoptera_data"))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "strategies.json"))
    args = parser.parse_args()
    rows = []
    for name, recipe in RECIPES.items():
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["HEADSTART_CACHE"] = str(Path(tmp) / "cache")
            started = time.perf_counter()
            clf = ImageClassifier(model=args.model, **recipe).fit(args.data, out=Path(tmp) / "run")
            wall = time.perf_counter() - started
        acc = clf.metrics_["val_accuracy"]
        rows.append({"recipe": name, **recipe, "val_accuracy": acc, "macro_f1": clf.metrics_["val_macro_f1"],
                     "wall_seconds": round(wall, 1), "accuracy_per_minute": round(acc / (wall / 60), 3)})
        print(f"{name:<38} acc {acc:.4f}  macro-F1 {clf.metrics_['val_macro_f1']:.4f}  {wall:7.1f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, "
                                                     f"{os.cpu_count()} cores", "data": args.data,
                                          "model": args.model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
