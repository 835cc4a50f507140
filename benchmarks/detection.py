"""Detection on CPU: seconds per epoch and mAP on coco128 (one class), pretrained vs random backbone.

    python benchmarks/detection.py [--epochs 8] [--size 256] [--classes person] [--out benchmarks/results]

Each row trains ``Detector`` on the 128 coco128 train images and evaluates on the 128 val images.
Rows: the packaged ImageNet MobileNetV2 / EfficientNet-Lite0 as frozen backbones (features from the
feature cache, neck + heads train), and the same detector with a randomly initialised backbone at
the same budget: frozen (same epochs) and fully trained (``--random-full``: the same wall time as
the pretrained run). Prints a table and writes ``detection.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from headstart.tasks.detection.task import Detector

COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128"


def run(name: str, model: str, pretrained: bool, strategy: str, args: argparse.Namespace, root: Path,
        time_budget: float = 0.0, family: str = "fcos") -> dict:
    overrides = {"train.eval_every": args.epochs, "detection.neck_channels": args.neck,
                 "detection.head_convs": args.head_convs, "cache.dir": str(root / "cache"),
                 "train.batch_size": args.batch_size, "train.lr": args.lr}
    if time_budget:
        overrides["train.time_budget"] = time_budget
    det = Detector(model=model, family=family, strategy=strategy, epochs=args.epochs, classes=args.classes,
                   pretrained=pretrained, image_size=args.size, cache_views=args.views, seed=args.seed,
                   overrides=overrides)
    started = time.perf_counter()
    det.fit(args.data, out=root / name)
    m = det.metrics_
    return {"run": name, "model": model, "family": family, "weights": "ImageNet" if pretrained else "random",
            "strategy": strategy, "epochs": m["epochs_run"], "seconds_per_epoch": m["seconds_per_epoch"],
            "train_seconds": m["train_seconds"], "wall_seconds": round(time.perf_counter() - started, 1),
            "map": round(m["val_map"], 4), "map_50": round(m["val_map_50"], 4), "cache": m["cache"],
            "precision": det.config.device.precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=COCO128)
    parser.add_argument("--classes", default="person")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--neck", type=int, default=32)
    parser.add_argument("--head-convs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="mobilenet_v2,efficientnet_lite0")
    parser.add_argument("--random-full", action="store_true", help="also train a random backbone fully, same wall time")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"coco128 not found at {args.data}; pass --data")
    os.environ.setdefault("HEADSTART_QUIET", "1")
    root = Path(tempfile.mkdtemp(prefix="headstart-detbench-"))
    rows = []
    for model in args.models.split(","):
        rows.append(run(f"{model}-pretrained", model, True, "linear", args, root))
        rows.append(run(f"{model}-random-frozen", model, False, "linear", args, root))
        if args.random_full:
            rows.append(run(f"{model}-random-full", model, False, "full", args, root,
                            time_budget=rows[-2]["train_seconds"]))
    table = Table(title=f"Detection on coco128 ({args.classes}), FCOS, {args.size} px, CPU threads: "
                        f"{os.environ.get('OMP_NUM_THREADS', 'all')}")
    for col in ("run", "weights", "strategy", "epochs", "s/epoch", "train s", "mAP@0.5:0.95", "mAP@0.5"):
        table.add_column(col, justify="left" if col in ("run", "weights", "strategy") else "right")
    for r in rows:
        table.add_row(r["run"], r["weights"], r["strategy"], str(r["epochs"]),
                      ", ".join(f"{v:.1f}" for v in r["seconds_per_epoch"].values()), f"{r['train_seconds']:.0f}",
                      f"{r['map']:.4f}", f"{r['map_50']:.4f}")
    Console(width=150).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    (args.out / "detection.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    print(f"wrote {args.out / 'detection.json'}")


if __name__ == "__main__":
    main()
