"""Semantic segmentation on CPU: held-out CamVid mIoU and seconds per recipe, side by side.

    python benchmarks/segmentation.py [--epochs 30] [--ft-epochs 8] [--size 256] [--out benchmarks/results]

Every recipe trains on CamVid's 123 training frames and is scored on its 51 validation frames at their
own size (360x480, logits upsampled; 255 = unlabelled left out), by the same metric code:
  * headstart ``linear`` (the default): frozen EfficientNet-Lite0, FPN decoder on cached stride-8/16/32 maps;
  * headstart ``partial:2``: the top two layer groups train too (stages below served from the cache);
  * headstart ``scratch``: the same network from random weights, every layer training (``full``), with the
    epochs of the plain recipe below (the budget of full fine-tuning);
  * the plain torchvision recipe a user would write: the same pretrained EfficientNet-Lite0 with
    torchvision's ``LRASPPHead`` (the head of ``lraspp_mobilenet_v3_large``) on its stride-8 and stride-32
    features, every layer fine-tuned with AdamW for a fixed number of epochs, no feature cache.
CPU seconds are process CPU time (both cores count); wall seconds include data reading and evaluation.
Prints one table with each recipe's mIoU and seconds as ratios to the plain recipe; writes segmentation.json.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.nn import functional as F

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


def headstart_recipe(name: str, args: argparse.Namespace, root: Path, **kw) -> dict:
    from headstart.tasks.segmentation.task import Segmenter

    overrides = {"cache.dir": str(root / "cache"), "train.seed": args.seed, **kw.pop("overrides", {})}
    seg = Segmenter(image_size=args.size, overrides=overrides, **kw)
    wall, cpu = time.perf_counter(), time.process_time()
    seg.fit(args.data, out=root / name)
    m = seg.metrics_
    return {"recipe": name, "strategy": m["strategy"], "weights": "ImageNet" if seg.config.model.pretrained else "random",
            "epochs": m["epochs_run"], "val_miou": round(m["val_miou"], 4),
            "val_pixel_accuracy": round(m["val_pixel_accuracy"], 4), "baseline_miou": round(m["baseline_miou"], 4),
            "train_seconds": m["train_seconds"], "cpu_seconds": round(time.process_time() - cpu, 1),
            "wall_seconds": round(time.perf_counter() - wall, 1), "cache": m["cache"],
            "per_class_iou": {c: v["iou"] for c, v in m["val"]["per_class"].items()}}


class LiteLRASPP(nn.Module):
    """What a user would write: a pretrained encoder's stride-8 and stride-32 maps into torchvision's LRASPPHead."""

    def __init__(self, backbone, num_classes: int) -> None:
        from torchvision.models.segmentation.lraspp import LRASPPHead

        from headstart.tasks.detection.model import stage_strides

        super().__init__()
        self.backbone = backbone
        strides = stage_strides(backbone, 256)
        self.low = max(g for g, (s, _) in enumerate(strides) if s == 8)
        self.head = LRASPPHead(strides[self.low][1], strides[-1][1], num_classes, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size, h, low = x.shape[-2:], x, None
        for g in range(self.backbone.num_groups):
            h = self.backbone.run_stage(g, h)
            if g == self.low:
                low = h
        return F.interpolate(self.head({"low": low, "high": h}), size=size, mode="bilinear", align_corners=False)


def plain_recipe(args: argparse.Namespace) -> dict:
    """Full fine-tuning of EfficientNet-Lite0 + LRASPPHead: AdamW 1e-3 (head) / 1e-4 (encoder), cosine, fixed epochs."""
    from headstart.core.backbones import registry
    from headstart.tasks.segmentation import transforms as tf
    from headstart.tasks.segmentation.data import IGNORE_INDEX, discover
    from headstart.tasks.segmentation.metrics import confusion, segmentation_report

    wall, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(args.seed)
    splits = discover(args.data)
    backbone = registry.create_backbone("efficientnet_lite0")
    model = LiteLRASPP(backbone, len(splits.classes)).to(memory_format=torch.channels_last)
    train = tf.SegmentationDataset(splits.train, tf.train_transform(backbone.spec, args.size), seed=args.seed)
    loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, collate_fn=tf.collate,
                                         generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.AdamW([{"params": model.head.parameters(), "lr": 1e-3},
                                   {"params": model.backbone.parameters(), "lr": 1e-4}], weight_decay=1e-4)
    steps = args.ft_epochs * math.ceil(len(train) / 8)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    train_started = time.perf_counter()
    for epoch in range(args.ft_epochs):
        train.epoch = epoch
        model.train()
        for x, y in loader:
            with torch.autocast("cpu", torch.bfloat16):
                logits = model(x.contiguous(memory_format=torch.channels_last))
            loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"plain recipe: epoch {epoch + 1}/{args.ft_epochs} loss {float(loss):.4f}", flush=True)
    train_seconds = time.perf_counter() - train_started
    # evaluation at each frame's own size, as headstart's: resized to the training scale, logits upsampled
    model.eval()
    n = len(splits.classes)
    cm = torch.zeros(n, n, dtype=torch.long)
    val = tf.SegmentationDataset(splits.val, tf.eval_transform(backbone.spec, args.size))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        for i, sample in enumerate(splits.val):
            x, _ = val[i]
            truth = torch.from_numpy(sample.read_mask()).long()
            logits = F.interpolate(model(x[None]).float(), size=truth.shape, mode="bilinear", align_corners=False)
            cm += confusion(logits.argmax(1)[0], truth, n)
    pixels = [sum(s.class_pixels[c] for s in splits.train) for c in range(n)]
    report = segmentation_report(cm, splits.classes, pixels)
    return {"recipe": "torchvision LRASPPHead, full fine-tuning", "strategy": "full (plain PyTorch loop)",
            "weights": "ImageNet", "epochs": args.ft_epochs, "val_miou": round(report["miou"], 4),
            "val_pixel_accuracy": round(report["pixel_accuracy"], 4), "baseline_miou": round(report["baseline"]["miou"], 4),
            "train_seconds": round(train_seconds, 2), "cpu_seconds": round(time.process_time() - cpu, 1),
            "wall_seconds": round(time.perf_counter() - wall, 1), "cache": None,
            "per_class_iou": {c: v["iou"] for c, v in report["per_class"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=CAMVID)
    parser.add_argument("--epochs", type=int, default=None, help="linear epochs (default: the task's)")
    parser.add_argument("--partial-epochs", type=int, default=10)
    parser.add_argument("--ft-epochs", type=int, default=8, help="epochs of the plain recipe and of scratch")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="linear,partial,scratch,plain")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    only = set(args.only.split(","))
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hs-seg-bench-") as tmp:
        root = Path(tmp)
        if "linear" in only:
            rows.append(headstart_recipe("headstart linear (default)", args, root, epochs=args.epochs))
        if "partial" in only:
            rows.append(headstart_recipe("headstart partial:2", args, root, strategy="partial:2",
                                         epochs=args.partial_epochs))
        if "scratch" in only:
            rows.append(headstart_recipe("headstart scratch (random init, full)", args, root, strategy="full",
                                         pretrained=False, epochs=args.ft_epochs))
        if "plain" in only:
            rows.append(plain_recipe(args))
    plain = next((r for r in rows if r["recipe"].startswith("torchvision")), None)
    for r in rows:
        r["miou_ratio_to_plain"] = round(r["val_miou"] / plain["val_miou"], 3) if plain else None
        r["cpu_ratio_to_plain"] = round(r["cpu_seconds"] / plain["cpu_seconds"], 3) if plain else None
    table = Table(title=f"{args.data.name} segmentation: held-out val mIoU, {args.size} px crops, "
                        f"{torch.get_num_threads()} CPU threads")
    for col in ("recipe", "epochs", "val mIoU", "pixel acc", "baseline mIoU", "CPU s", "wall s", "mIoU / plain",
                "CPU s / plain"):
        table.add_column(col, justify="left" if col == "recipe" else "right")
    for r in rows:
        table.add_row(r["recipe"], str(r["epochs"]), f"{r['val_miou']:.4f}", f"{r['val_pixel_accuracy']:.4f}",
                      f"{r['baseline_miou']:.4f}", f"{r['cpu_seconds']:.0f}", f"{r['wall_seconds']:.0f}",
                      "" if r["miou_ratio_to_plain"] is None else f"{r['miou_ratio_to_plain']:.2f}",
                      "" if r["cpu_ratio_to_plain"] is None else f"{r['cpu_ratio_to_plain']:.2f}")
    Console(width=160).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"data": str(args.data), "size": args.size, "seed": args.seed, "threads": torch.get_num_threads(),
              "total_wall_seconds": round(time.perf_counter() - started, 1), "rows": rows}
    name = "segmentation.json" if only == {"linear", "partial", "scratch", "plain"} else "segmentation-partial-run.json"
    (args.out / name).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
