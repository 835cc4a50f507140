"""headstart on a GPU against a plain PyTorch loop on the same GPU, and against the same runs on a 2-core CPU.

    python benchmarks/gpu.py --device cpu --threads 2 --out benchmarks/results/gpu_cpu_reference.json   # once, on 2 cores
    python benchmarks/gpu.py --device cuda --cpu-reference benchmarks/results/gpu_cpu_reference.json   # on the GPU

Issue 15's targets, measured in one run and printed as ratios:
  * full fine-tuning throughput (train + validation images per second, epochs 2 onward: the first one pays for
    warm-up) of headstart's ``full`` strategy against the plain loop a user writes on the same model and data:
    torchvision ``ImageFolder`` with ``RandomResizedCrop`` + flip, ``DataLoader`` with worker processes and pinned
    memory, AdamW, fp32, and that loop again under bf16 autocast (the ratio is against the faster of the two);
    target >= 1.5x;
  * feature extraction images per second (a ``linear`` run with a cold cache: items computed over the seconds of its
    first phase, which holds the extraction and the L-BFGS head) against the plain loop's frozen forward pass;
  * the default runs of three tasks (image: blood_cells, far from ImageNet photos, so ``auto`` fine-tunes; text:
    1,000 SMS; detection: BCCD), whole wall time on this
    device against the same runs in ``--cpu-reference`` (this script with ``--device cpu --threads 2``, the 2-core
    machine headstart is developed on); target >= 5x for the image default.
Every figure names the device; held-out validation scores are printed beside the times, so a fast run that learned
nothing shows. Data from ../shared/data (or $HEADSTART_SHARED_DATA): blood_cells for throughput (851 + 344 crops).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HEADSTART_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from image_classification import _tutorial_transforms  # noqa: E402 - the plain loop's transforms, as benchmarked there
from torch import nn  # noqa: E402
from torchvision import datasets  # noqa: E402

from headstart.core.backbones import registry  # noqa: E402

SHARED = Path(os.environ.get("HEADSTART_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
MODEL = registry.DEFAULT_IMAGE_MODEL


def device_name(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def overrides(device: str, threads: int | None) -> dict:
    out = {"device.accelerator": device}
    if threads:
        out["device.threads"] = threads
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def fit_cold(cls, data: Path | None, **kwargs):
    """``cls(**kwargs).fit`` with an empty feature cache, in a folder removed afterwards (DATA made there if None:
    the SMS subset); returns the estimator and the wall seconds of its fit."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HEADSTART_CACHE"] = str(Path(tmp) / "cache")
        data = data or sms_subset(Path(tmp))
        started = time.perf_counter()
        est = cls(**kwargs).fit(data, out=Path(tmp) / "run")
        return est, time.perf_counter() - started


# ------------------------------------------------------------------------------------ full fine-tuning
def headstart_finetune(data: Path, device: str, threads: int | None, epochs: int, workers: int,
                       augment_on: str = "auto") -> dict:
    from headstart.tasks.image.task import ImageClassifier

    clf, _ = fit_cold(ImageClassifier, data, model=MODEL, strategy="full", epochs=epochs,
                      overrides={**overrides(device, threads), "data.num_workers": workers, "train.early_stopping": 0,
                                 "data.augment_on": augment_on})
    later = [r["epoch_seconds"] for r in clf.history_[1:]] or [clf.history_[0]["epoch_seconds"]]
    items = clf.metrics_["num_train"] + clf.metrics_["num_val"]
    return {"images_per_s": items / (sum(later) / len(later)), "val_accuracy": clf.metrics_["val_accuracy"],
            "epoch_seconds": [r["epoch_seconds"] for r in clf.history_], "device": clf.metrics_["device"]}


def plain_finetune(data: Path, device: str, epochs: int, workers: int, autocast: bool) -> dict:
    """The loop of PyTorch's fine-tuning tutorial on the same backbone and a new linear head."""
    torch.manual_seed(0)
    backbone = registry.create_backbone(MODEL)
    spec = backbone.spec
    train_tf, val_tf = _tutorial_transforms(spec)
    train_set, val_set = datasets.ImageFolder(data / "train", train_tf), datasets.ImageFolder(data / "val", val_tf)
    pin = device == "cuda"
    train = torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=True, num_workers=workers, pin_memory=pin,
                                        persistent_workers=workers > 0)
    val = torch.utils.data.DataLoader(val_set, batch_size=64, num_workers=workers, pin_memory=pin,
                                      persistent_workers=workers > 0)
    model = nn.Sequential(backbone, nn.Linear(spec.feature_dim, len(train_set.classes))).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    seconds, accuracy = [], 0.0
    for _ in range(epochs):
        _sync(device)
        started = time.perf_counter()
        model.train()
        for x, y in train:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad()
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            for x, y in val:
                correct += int((model(x.to(device, non_blocking=True)).argmax(1).cpu() == y).sum())
        _sync(device)
        seconds.append(time.perf_counter() - started)
        accuracy = correct / len(val_set)
    later = seconds[1:] or seconds
    return {"images_per_s": (len(train_set) + len(val_set)) / (sum(later) / len(later)), "val_accuracy": accuracy,
            "epoch_seconds": [round(s, 2) for s in seconds]}


# ------------------------------------------------------------------------------------ extraction
def headstart_extract(data: Path, device: str, threads: int | None, workers: int) -> dict:
    from headstart.tasks.image.task import ImageClassifier

    clf, _ = fit_cold(ImageClassifier, data, model=MODEL, strategy="linear", epochs=1,
                      overrides={**overrides(device, threads), "data.num_workers": workers, "cache.views": 1})
    computed = clf.metrics_["cache"]["items_computed"]
    return {"images_per_s": computed / clf.history_[0]["seconds"], "items": computed,
            "seconds": clf.history_[0]["seconds"], "val_accuracy": clf.metrics_["val_accuracy"]}


def plain_extract(data: Path, device: str, workers: int, batch: int, autocast: bool) -> dict:
    backbone = registry.create_backbone(MODEL).to(device).eval()
    tf = _tutorial_transforms(backbone.spec)[1]  # resize, centre crop, normalise
    sets = [datasets.ImageFolder(data / split, tf) for split in ("train", "val")]
    _sync(device)
    started = time.perf_counter()
    n = 0
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        for dataset in sets:
            for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers,
                                                    pin_memory=device == "cuda"):
                backbone.extract(x.to(device, non_blocking=True)).float().cpu()
                n += len(x)
    _sync(device)
    seconds = time.perf_counter() - started
    return {"images_per_s": n / seconds, "items": n, "seconds": round(seconds, 2)}


# ------------------------------------------------------------------------------------ default runs
def sms_subset(folder: Path, n_train: int = 1000, n_val: int = 500) -> Path:
    with (SHARED / "sms_spam" / "SMSSpamCollection.tsv").open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        rows = list(reader)
    random.Random(0).shuffle(rows)
    path = folder / "sms.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "text", "split"])
        writer.writerows([(*r, "train") for r in rows[:n_train]] + [(*r, "val") for r in rows[n_train: n_train + n_val]])
    return path


def default_runs(device: str, threads: int | None, only: set[str]) -> dict:
    from headstart.tasks.detection.task import Detector
    from headstart.tasks.image.task import ImageClassifier
    from headstart.tasks.text.task import TextClassifier

    runs = {"image": (ImageClassifier, SHARED / "blood_cells", "val_accuracy"),
            "text": (TextClassifier, None, "val_accuracy"),
            "detection": (Detector, SHARED / "bccd", "val_map_50")}
    out = {}
    for name, (cls, data, metric) in runs.items():
        if name not in only:
            continue
        est, wall = fit_cold(cls, data, overrides=overrides(device, threads))
        out[name] = {"data": data.name if data else "sms.csv", "wall_seconds": round(wall, 2),
                     metric: est.metrics_.get(metric),
                     "strategy": est.metrics_.get("strategy"), "device": est.metrics_.get("device")}
        print(f"default {name}: {wall:.1f} s, {metric} {est.metrics_.get(metric)}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (device.threads), e.g. 2")
    parser.add_argument("--workers", type=int, default=None, help="loader worker processes (default: 8 on cuda, 0)")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs of both loops")
    parser.add_argument("--data", type=Path, default=SHARED / "blood_cells", help="class folders for throughput")
    parser.add_argument("--parts", default="finetune,extract,image,text,detection")
    parser.add_argument("--augment-on", default="auto", help="data.augment_on of headstart's fine-tuning: auto, "
                        "loader, device, or several comma-separated (loader,device: both measured, the first is the "
                        "ratio's)")
    parser.add_argument("--cpu-reference", type=Path, help="this script's JSON from a --device cpu run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here (run with --device cpu for the reference)")
    if args.threads:
        torch.set_num_threads(args.threads)
    workers = args.workers if args.workers is not None else (min(8, os.cpu_count() or 1) if args.device == "cuda" else 0)
    parts = set(args.parts.split(","))
    result: dict = {"device": device_name(args.device), "workers": workers, "epochs": args.epochs,
                    "data": str(args.data.name)}
    if "finetune" in parts:
        settings = args.augment_on.split(",")  # the first is "headstart" (the ratio's); each also as headstart_<it>
        runs = {s: headstart_finetune(args.data, args.device, args.threads, args.epochs, workers, s) for s in settings}
        for s, run in runs.items():
            print(f"full fine-tuning, headstart data.augment_on={s}: {run['images_per_s']:.0f} img/s, "
                  f"val accuracy {run['val_accuracy']:.3f}", flush=True)
        result["finetune"] = {
            "headstart": runs[settings[0]], **({f"headstart_{s}": r for s, r in runs.items()} if len(runs) > 1 else {}),
            "plain_fp32": plain_finetune(args.data, args.device, args.epochs, workers, autocast=False),
            "plain_bf16": plain_finetune(args.data, args.device, args.epochs, workers, autocast=True)}
        f = result["finetune"]
        f["ratio_vs_best_plain"] = round(f["headstart"]["images_per_s"] / max(
            f["plain_fp32"]["images_per_s"], f["plain_bf16"]["images_per_s"]), 2)
        print(f"full fine-tuning: headstart {f['headstart']['images_per_s']:.0f} img/s, plain fp32 "
              f"{f['plain_fp32']['images_per_s']:.0f}, plain bf16 {f['plain_bf16']['images_per_s']:.0f}: "
              f"{f['ratio_vs_best_plain']}x the faster plain loop (target 1.5x)", flush=True)
    if "extract" in parts:
        batch = 256 if args.device == "cuda" else 8
        result["extract"] = {"headstart": headstart_extract(args.data, args.device, args.threads, workers),
                             "plain_fp32": plain_extract(args.data, args.device, workers, batch, autocast=False),
                             "plain_bf16": plain_extract(args.data, args.device, workers, batch, autocast=True)}
        e = result["extract"]
        e["ratio_vs_best_plain"] = round(e["headstart"]["images_per_s"] / max(
            e["plain_fp32"]["images_per_s"], e["plain_bf16"]["images_per_s"]), 2)
        print(f"extraction: headstart {e['headstart']['images_per_s']:.0f} img/s (with the head fit), plain fp32 "
              f"{e['plain_fp32']['images_per_s']:.0f}, plain bf16 {e['plain_bf16']['images_per_s']:.0f}", flush=True)
    result["default_runs"] = default_runs(args.device, args.threads, parts & {"image", "text", "detection"})
    if args.cpu_reference and args.cpu_reference.is_file():
        reference = json.loads(args.cpu_reference.read_text())
        result["cpu_reference"] = reference["device"]
        for name, row in result["default_runs"].items():
            before = reference.get("default_runs", {}).get(name)
            if before:
                row["speedup_vs_cpu_reference"] = round(before["wall_seconds"] / row["wall_seconds"], 2)
                print(f"default {name}: {row['speedup_vs_cpu_reference']}x the CPU reference "
                      f"({before['wall_seconds']} s on {reference['device']})", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
