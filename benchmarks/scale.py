"""How cost grows with the number of images: time and peak memory of reading, feature extraction and the head.

    python benchmarks/scale.py [--counts 1000 4000 12000] [--preload-mb 256] [--out benchmarks/results/scale.json]

Synthetic 64x64 JPEGs (two classes: a horizontal or a vertical gradient under per-image noise, every file distinct,
so the content-keyed cache holds one entry per image) are written to a temporary folder; each count trains on the
first N of them, listed in a CSV (80/20 stratified split). Each count runs in a fresh process with an empty feature
cache: EfficientNet-Lite0, the default linear phase (one augmented view + the plain images of the training split, the
validation images; the L-BFGS head with 5-fold CV), bf16 where the CPU has it. Measured per count: ``read`` (every
file hashed, decoded, checked; decoded images kept up to ``data.preload_mb``), ``extract`` (every image through the
frozen backbone into the cache), ``head`` (the head fitted on the cached features), ``warm`` (the same extraction
again: everything is read from the cache, nothing computed) and the process's peak RSS (``ru_maxrss``) after each.
Linear cost: seconds per 1000 images stay level across counts; flat memory: the peak grows only by what is kept
per image (the pooled features, 1280 float32 per view, ~5 KB), not by the decoded images beyond ``data.preload_mb``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HEADSTART_QUIET", "1")
RESULTS = Path(__file__).parent / "results" / "scale.json"


def machine() -> str:
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB"


def write_images(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct JPEGs, half of each class, in class order a, b, a, b..."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    rows = []
    for i in range(n):
        label = "ab"[i % 2]
        base = np.broadcast_to(ramp[None, :] if label == "a" else ramp[:, None], (size, size))
        color = rng.uniform(0.3, 1.0, 3).astype(np.float32)
        pixels = base[..., None] * color + rng.normal(0, 25, (size, size, 3)).astype(np.float32)
        path = folder / label / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=85)
        rows.append((str(path), label))
    return rows


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(csv_path: str, cache_dir: str, preload_mb: int) -> dict:
    """One count, in this process: read, extract, head, warm extraction; seconds and peak RSS after each."""
    from headstart.config import load_config
    from headstart.core import loop, strategies
    from headstart.core.backbones import registry
    from headstart.tasks.classification.model import TransferClassifier
    from headstart.tasks.classification.training import ClassificationSteps
    from headstart.tasks.image.data import ImageData, discover

    out: dict = {"rss_start_mb": round(peak_mb())}
    cfg = load_config(overrides={"cache.dir": cache_dir, "cache.views": 1, "data.preload_mb": preload_mb})
    backbone = registry.create_backbone(cfg.model.name)
    fabric = loop.make_fabric(cfg.device)
    out["rss_model_mb"] = round(peak_mb())
    started = time.perf_counter()
    data = ImageData(discover(csv_path, cfg.data.val_fraction, cfg.train.seed), backbone.spec, preload_mb=preload_mb)
    out.update(read_s=round(time.perf_counter() - started, 2), rss_read_mb=round(peak_mb()),
               num_train=len(data.keys("train")), num_val=len(data.keys("val")))
    model = TransferClassifier(backbone, len(data.classes))
    phase = strategies.plan("linear", backbone.num_groups, cfg.train)[0]
    strategies.apply(model, phase)
    steps = ClassificationSteps(data, cfg)
    cut = steps.cut(model, phase)
    started = time.perf_counter()
    steps.prepare(fabric, model, phase, cut)  # the augmented view of train, and val
    steps.features(fabric, model, "train", cut, False, 0)  # the plain training images (the L-BFGS head uses both)
    out.update(extract_s=round(time.perf_counter() - started, 2), rss_extract_mb=round(peak_mb()),
               items_computed=sum(c.computed for c in steps.caches))
    started = time.perf_counter()
    solved = steps.solve(fabric, model, phase, cut)
    out.update(head_s=round(time.perf_counter() - started, 2), rss_head_mb=round(peak_mb()),
               head_l2=solved["head_l2"] if solved else None)
    scores, _ = steps.validate(fabric, model, cut)
    out["val_accuracy"] = round(float(scores["accuracy"]), 4)
    warm = ClassificationSteps(data, cfg)
    started = time.perf_counter()
    warm.prepare(fabric, model, phase, cut)
    warm.features(fabric, model, "train", cut, False, 0)
    out.update(warm_s=round(time.perf_counter() - started, 3), warm_computed=sum(c.computed for c in warm.caches),
               rss_end_mb=round(peak_mb()))
    return out


def run_count(csv_path: Path, cache_dir: Path, preload_mb: int) -> dict:
    """``measure`` in a fresh process (its own peak RSS); the child's whole-life peak from ``wait4``."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(csv_path), str(cache_dir), str(preload_mb)],
                            stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"the run on {csv_path} failed ({proc.returncode})")
    row = json.loads(stdout.strip().splitlines()[-1])
    row["rss_peak_mb"] = round(usage.ru_maxrss / 1024)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 4000, 12000])
    parser.add_argument("--preload-mb", type=int, default=256, help="data.preload_mb of the runs (default 256)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], int(args.child[2]))))
        return
    import csv

    counts = sorted(args.counts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="headstart-scale-") as tmp:
        started = time.perf_counter()
        images = write_images(Path(tmp) / "images", counts[-1])
        print(f"wrote {len(images)} synthetic 64x64 JPEGs in {time.perf_counter() - started:.1f} s", flush=True)
        for n in counts:
            chosen = images[:n]
            random.Random(n).shuffle(chosen)
            table = Path(tmp) / f"images_{n}.csv"
            with table.open("w", newline="") as f:
                csv.writer(f).writerows([("path", "label"), *chosen])
            started = time.perf_counter()
            row = {"images": n, **run_count(table, Path(tmp) / f"cache_{n}", args.preload_mb)}
            row["wall_s"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    first = rows[0]
    for row in rows:
        scale = row["images"] / first["images"]
        row["extract_ms_per_image"] = round(1000 * row["extract_s"] / (row["num_train"] * 2 + row["num_val"]), 2)
        row["time_ratio_over_count_ratio"] = {k: round(row[k] / max(first[k], 1e-3) / scale, 2)
                                              for k in ("read_s", "extract_s", "head_s")}
        row["rss_above_model_mb"] = row["rss_peak_mb"] - row["rss_model_mb"]
        row["rss_kb_per_image_above_model"] = round(1024 * row["rss_above_model_mb"] / row["images"], 1)
    print(f"\n{'images':>7} {'read s':>7} {'extract s':>9} {'ms/img':>7} {'head s':>7} {'warm s':>7} "
          f"{'peak RSS MB':>11} {'above model':>11} {'time/count vs first (read, extract, head)':>42}")
    for r in rows:
        ratio = r["time_ratio_over_count_ratio"]
        print(f"{r['images']:>7} {r['read_s']:>7.1f} {r['extract_s']:>9.1f} {r['extract_ms_per_image']:>7.2f} "
              f"{r['head_s']:>7.1f} {r['warm_s']:>7.1f} {r['rss_peak_mb']:>11} {r['rss_above_model_mb']:>11} "
              f"{ratio['read_s']:>14.2f} {ratio['extract_s']:>8.2f} {ratio['head_s']:>8.2f}")
    import torch

    from headstart.core.loop import resolve_precision

    result = {"machine": machine(), "torch": torch.__version__, "model": "efficientnet_lite0",
              "precision": resolve_precision("auto"),
              "images": "synthetic 64x64 JPEGs (upscaled to the model's 256/224 px)", "preload_mb": args.preload_mb,
              "extraction_passes": "train x2 (one augmented view, the plain images), val x1",
              "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{args.out}")


if __name__ == "__main__":
    main()
