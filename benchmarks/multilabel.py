"""Multi-label image classification on CPU: held-out mAP and seconds per recipe, side by side.

    python benchmarks/multilabel.py [--data ../shared/data/bccd] [--ft-epochs 5] [--out benchmarks/results]

BCCD's microscope images tagged with the cell types their boxes name (``--from-detection``: RBC, WBC,
Platelets), BCCD's own train / val / test lists; every recipe is scored on the test images by the same metric
code (macro average precision; micro-F1 at thresholds tuned on validation), beside the baseline "each label's
training frequency":
  * headstart's default (``MultiLabelClassifier().fit(DATA)``: strategy ``auto``, EfficientNet-Lite0);
  * headstart ``linear`` (frozen backbone, one-vs-rest L-BFGS head on cached features);
  * headstart ``full``: every layer fine-tuned for the plain recipe's epochs (what README advises on such images);
  * headstart ``scratch``: the same network from random weights, every layer training, the plain recipe's epochs;
  * the plain PyTorch recipe a user would write: the same pretrained EfficientNet-Lite0 with a new linear layer,
    ``BCEWithLogitsLoss``, every layer fine-tuned with AdamW for a fixed number of epochs, no feature cache.
and the calibration error of the test probabilities (ECE over every (image, label) pair: headstart's after the
temperature fitted on validation, the plain recipe's sigmoid as it is). CPU seconds are process CPU time (both
cores count). Prints one table with ratios to the plain recipe and writes multilabel.json.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

BCCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "bccd"


def _row(name: str, weights: str, epochs: Any, test: dict, cpu: float, wall: float) -> dict:
    return {"recipe": name, "weights": weights, "epochs": epochs, "test_map": round(test["map"], 4),
            "test_micro_f1": round(test["micro_f1"], 4), "baseline_map": round(test["baseline"]["map"], 4),
            "test_ece": test["calibration"]["ece"], "test_loss": round(test["loss"], 4),
            "per_class_ap": {c: v["ap"] for c, v in test["per_class"].items()},
            "cpu_seconds": round(cpu, 1), "wall_seconds": round(wall, 1)}


def headstart_recipe(name: str, args: argparse.Namespace, root: Path, **kw) -> dict:
    from headstart.tasks.multilabel.task import MultiLabelClassifier

    overrides = {"cache.dir": str(root / "cache"), "train.seed": args.seed, **kw.pop("overrides", {})}
    clf = MultiLabelClassifier(from_detection=True, overrides=overrides, **kw)
    wall, cpu = time.perf_counter(), time.process_time()
    clf.fit(args.data, out=root / name.split()[1])
    m = clf.metrics_
    return {**_row(name, "ImageNet" if clf.config.model.pretrained else "random", len(clf.history_), m["test"],
                   time.process_time() - cpu, time.perf_counter() - wall), "strategy": m["strategy"],
            "temperature": clf.temperature_, "test_ece_plain_sigmoid": m["test"]["calibration"].get(
                "ece_uncalibrated", m["test"]["calibration"]["ece"])}


def plain_recipe(args: argparse.Namespace) -> dict:
    """EfficientNet-Lite0 + nn.Linear, BCEWithLogitsLoss, AdamW 1e-3 (head) / 1e-4 (backbone), cosine, fixed epochs."""
    from PIL import Image
    from torchvision.transforms import v2

    from headstart.core.backbones import registry
    from headstart.tasks.classification import calibration
    from headstart.tasks.multilabel.data import discover, multi_hot
    from headstart.tasks.multilabel.metrics import multilabel_report, tune_thresholds

    wall, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(args.seed)
    splits = discover(args.data, 0.2, args.seed, from_detection=True)
    n = len(splits.classes)
    backbone = registry.create_backbone("efficientnet_lite0")
    spec = backbone.spec
    model = nn.Sequential()
    model.add_module("backbone", backbone)
    model.add_module("head", nn.Linear(spec.feature_dim, n))
    model = model.to(memory_format=torch.channels_last)
    normalise = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)]
    train_tf = v2.Compose([v2.RandomResizedCrop(spec.input_size, scale=(0.6, 1.0)), v2.RandomHorizontalFlip(),
                           *normalise])
    eval_tf = v2.Compose([v2.Resize((spec.input_size, spec.input_size)), *normalise])

    class Tags(torch.utils.data.Dataset):
        def __init__(self, samples, transform) -> None:
            self.samples, self.transform = samples, transform

        def __len__(self) -> int:
            return len(self.samples)

        def __getitem__(self, i):
            s = self.samples[i]
            with Image.open(s.path) as im:
                x = self.transform(im.convert("RGB"))
            return x, multi_hot(s.label, n)

    loader = torch.utils.data.DataLoader(Tags(splits.train, train_tf), batch_size=16, shuffle=True,
                                         generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.AdamW([{"params": model.head.parameters(), "lr": 1e-3},
                                   {"params": model.backbone.parameters(), "lr": 1e-4}], weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.ft_epochs * math.ceil(len(splits.train) / 16))
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(args.ft_epochs):
        model.train()
        for x, y in loader:
            with torch.autocast("cpu", torch.bfloat16):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            loss = loss_fn(logits.float(), y.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"plain recipe: epoch {epoch + 1}/{args.ft_epochs} loss {loss.item():.4f}", flush=True)

    def probabilities(samples) -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        out, targets = [], []
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
            for x, y in torch.utils.data.DataLoader(Tags(samples, eval_tf), batch_size=32):
                out.append(model(x.contiguous(memory_format=torch.channels_last)).float().sigmoid())
                targets.append(y)
        return torch.cat(out), torch.cat(targets)

    counts = torch.stack([multi_hot(s.label, n) for s in splits.train]).sum(0).tolist()
    thresholds = tune_thresholds(*probabilities(splits.val))
    probs, targets = probabilities(splits.test)
    test = multilabel_report(probs, targets, splits.classes, counts, len(splits.train), thresholds)
    test["calibration"] = {"ece": round(calibration.ece(probs, targets, sigmoid=True), 4)}  # the plain sigmoid's
    row = _row("plain PyTorch: BCE, full fine-tuning", "ImageNet", args.ft_epochs, test, time.process_time() - cpu,
               time.perf_counter() - wall)
    return {**row, "strategy": "full (plain PyTorch loop)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=BCCD)
    parser.add_argument("--ft-epochs", type=int, default=5, help="epochs of the plain recipe and of scratch")
    parser.add_argument("--seed", type=int, default=0, help="seeds other than 0 write multilabel-seedN.json")
    parser.add_argument("--only", default="default,linear,full,scratch,plain")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    only = set(args.only.split(","))
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hs-multilabel-bench-") as tmp:
        root = Path(tmp)
        if "default" in only:
            rows.append(headstart_recipe("headstart default (auto)", args, root))
        if "linear" in only:
            rows.append(headstart_recipe("headstart linear", args, root, strategy="linear"))
        if "full" in only:
            rows.append(headstart_recipe("headstart full", args, root, strategy="full", epochs=args.ft_epochs))
        if "scratch" in only:
            rows.append(headstart_recipe("headstart scratch (random init, full)", args, root, strategy="full",
                                         pretrained=False, epochs=args.ft_epochs))
        if "plain" in only:
            rows.append(plain_recipe(args))
    plain = next((r for r in rows if r["recipe"].startswith("plain")), None)
    for r in rows:
        r["map_ratio_to_plain"] = round(r["test_map"] / plain["test_map"], 3) if plain else None
        r["cpu_ratio_to_plain"] = round(r["cpu_seconds"] / plain["cpu_seconds"], 3) if plain else None
    table = Table(title=f"{args.data.name} multi-label (tags from its boxes): held-out test mAP, "
                        f"{torch.get_num_threads()} CPU threads")
    for col in ("recipe", "epochs", "test mAP", "micro-F1", "baseline mAP", "test ECE", "CPU s", "wall s",
                "mAP / plain", "CPU s / plain"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for r in rows:
        table.add_row(r["recipe"], str(r["epochs"]), f"{r['test_map']:.4f}", f"{r['test_micro_f1']:.4f}",
                      f"{r['baseline_map']:.4f}", f"{r['test_ece']:.3f}", f"{r['cpu_seconds']:.0f}",
                      f"{r['wall_seconds']:.0f}",
                      "" if r["map_ratio_to_plain"] is None else f"{r['map_ratio_to_plain']:.2f}",
                      "" if r["cpu_ratio_to_plain"] is None else f"{r['cpu_ratio_to_plain']:.2f}")
    Console(width=160).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"data": str(args.data), "seed": args.seed, "threads": torch.get_num_threads(),
              "total_wall_seconds": round(time.perf_counter() - started, 1), "rows": rows}
    every = only == {"default", "linear", "full", "scratch", "plain"}
    name = ("multilabel.json" if args.seed == 0 else f"multilabel-seed{args.seed}.json") if every \
        else "multilabel-partial-run.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
