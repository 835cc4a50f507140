"""How cost grows with the number of images: time and memory of reading, feature extraction and the head.

    python benchmarks/scale.py [--counts 1000 5000 20000] [--preload-mb 256] [--memory-mb 1024]
                               [--out benchmarks/results/scale.json] [--merge] [--baseline OTHER.json]

Synthetic 64x64 JPEGs (two classes: a horizontal or a vertical gradient under per-image noise, every file distinct,
so the content-keyed cache holds one entry per image) are written to a temporary folder; each count trains on the
first N of them, listed in a CSV (80/20 stratified split). Each count runs in a fresh process with an empty feature
cache: EfficientNet-Lite0, the default linear phase (one augmented view + the plain images of the training split, the
validation images; the L-BFGS head with 5-fold CV), bf16 where the CPU has it. Measured per count: ``read`` (every
file hashed, decoded, checked; decoded images kept up to ``data.preload_mb``), ``extract`` (every image through the
frozen backbone into the cache), ``head`` (the head fitted on the cached features), ``warm`` (the same extraction
again: everything is read from the cache, nothing computed). Memory, from /proc/self/status: the peak RSS of each
phase alone (``VmHWM`` after resetting it through /proc/self/clear_refs) and ``RssAnon`` after it: the process's own
memory, without the file-backed pages of memory-mapped cache shards, which the kernel reclaims at will (measured after
glibc's ``malloc_trim``, so that it counts live memory, not the free pages the allocator keeps for reuse), and the
largest ``RssAnon`` seen while the phase runs (``anon_peak_*``, sampled every 10 ms).
Linear cost: ms per image stay level across counts; flat memory: ``RssAnon`` grows only by the features the head
needs (``features_mb``: 1280 float32 per row, two training rows and one validation row per image), not by the decoded
images beyond ``data.preload_mb`` nor by copies of the features. With ``--memory-mb`` (``cache.memory_mb``) below the
feature matrices' size, those live in memory-mapped scratch files: they show in ``RssFile`` (``file_*``), pages the
kernel writes out and drops as it needs, and ``RssAnon`` stays flat in the image count. The counts can be run one at
a time (``--merge`` adds a count's row to the results file); ``--baseline`` keeps another results file's rows (e.g.
measured before a change) beside these, with a before/after table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
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


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise SystemExit(f"/proc/self/status has no {field} line: this benchmark measures memory on Linux only")


def trim() -> None:
    """Hand the allocator's free pages back to the system (glibc's ``malloc_trim``), so that ``RssAnon`` is live memory."""
    import contextlib
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):  # not glibc: RssAnon also holds what the allocator keeps
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def reset_peak() -> None:
    """Start a new ``VmHWM`` (peak RSS) at the current RSS: the peak of the next phase alone."""
    Path("/proc/self/clear_refs").write_text("5")


class AnonPeak:
    """The largest ``RssAnon`` while a phase runs, sampled every 10 ms by a thread (``VmHWM`` counts the pages of mapped
    files too, so it cannot tell the process's own memory from the kernel's page cache)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, status_mb("RssAnon"))
            if self._stop.wait(0.01):
                return

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return round(max(self.peak, status_mb("RssAnon")))


def measure(csv_path: str, cache_dir: str, preload_mb: int, memory_mb: int) -> dict:
    """One count, in this process: read, extract, head, warm extraction; seconds and memory of each."""
    from headstart.config import load_config
    from headstart.core import loop, strategies
    from headstart.core.backbones import registry
    from headstart.tasks.classification.model import TransferClassifier
    from headstart.tasks.classification.training import ClassificationSteps
    from headstart.tasks.image.data import discover
    from headstart.tasks.image.dataset import ImageData

    sampler: list[AnonPeak] = []

    def start() -> None:
        reset_peak()
        sampler[:] = [AnonPeak()]

    def memory(phase: str) -> dict:
        peak, anon_peak = round(status_mb("VmHWM")), sampler[0].stop()
        trim()
        return {f"peak_{phase}_mb": peak, f"anon_peak_{phase}_mb": anon_peak, f"anon_{phase}_mb": round(status_mb("RssAnon")),
                f"file_{phase}_mb": round(status_mb("RssFile"))}

    cfg = load_config(overrides={"cache.dir": cache_dir, "cache.views": 1, "data.preload_mb": preload_mb,
                                 "cache.memory_mb": memory_mb})
    backbone = registry.create_backbone(cfg.model.name)
    fabric = loop.make_fabric(cfg.device)
    trim()
    out: dict = {"anon_model_mb": round(status_mb("RssAnon")), "rss_model_mb": round(status_mb("VmRSS"))}
    start()
    started = time.perf_counter()
    data = ImageData(discover(csv_path, cfg.data.val_fraction, cfg.train.seed), backbone.spec, preload_mb=preload_mb)
    out.update(read_s=round(time.perf_counter() - started, 2), **memory("read"),
               num_train=len(data.keys("train")), num_val=len(data.keys("val")))
    model = TransferClassifier(backbone, len(data.classes))
    phase = strategies.plan("linear", backbone.num_groups, cfg.train)[0]
    strategies.apply(model, phase)
    steps = ClassificationSteps(data, cfg)
    cut = steps.cut(model, phase)
    start()
    started = time.perf_counter()
    steps.prepare(fabric, model, phase, cut)  # the augmented view of train, and val
    steps.features(fabric, model, "train", cut, False, 0)  # the plain training images (the L-BFGS head uses both)
    out.update(extract_s=round(time.perf_counter() - started, 2), **memory("extract"),
               items_computed=sum(c.computed for c in steps.caches))
    start()
    started = time.perf_counter()
    solved = steps.solve(fabric, model, phase, cut)
    out.update(head_s=round(time.perf_counter() - started, 2), **memory("head"),
               head_l2=solved["head_l2"] if solved else None)
    scores, _ = steps.validate(fabric, model, cut)
    out["val_accuracy"] = round(float(scores["accuracy"]), 4)
    warm = ClassificationSteps(data, cfg)
    start()
    started = time.perf_counter()
    warm.prepare(fabric, model, phase, cut)
    warm.features(fabric, model, "train", cut, False, 0)
    out.update(warm_s=round(time.perf_counter() - started, 3), warm_computed=sum(c.computed for c in warm.caches),
               **memory("warm"), feature_dim=backbone.spec.feature_dim)
    return out


def run_count(csv_path: Path, cache_dir: Path, preload_mb: int, memory_mb: int) -> dict:
    """``measure`` in a fresh process (its own memory); its whole-life peak RSS is the largest phase's."""
    proc = subprocess.run([sys.executable, __file__, "--child", str(csv_path), str(cache_dir), str(preload_mb),
                           str(memory_mb)], stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise SystemExit(f"the run on {csv_path} failed ({proc.returncode})")
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    row["rss_peak_mb"] = max(row[f"peak_{phase}_mb"] for phase in ("read", "extract", "head", "warm"))
    return row


def derive(rows: list[dict]) -> None:
    """Per-image figures and ratios to the smallest count (linear cost: ratios near 1)."""
    first = rows[0]
    for row in rows:
        scale = row["images"] / first["images"]
        row["extract_ms_per_image"] = round(1000 * row["extract_s"] / row["images"], 2)
        row["extract_ms_per_item"] = round(1000 * row["extract_s"] / (row["num_train"] * 2 + row["num_val"]), 2)
        row["head_ms_per_image"] = round(1000 * row["head_s"] / row["images"], 3)
        row["time_ratio_over_count_ratio"] = {k: round(row[k] / max(first[k], 1e-3) / scale, 2)
                                              for k in ("read_s", "extract_s", "head_s")}
        # what the head needs in memory: plain + augmented training rows and the validation rows, float32
        row["features_mb"] = round((row["num_train"] * 2 + row["num_val"]) * row.get("feature_dim", 1280) * 4 / 2**20)
        for phase in ("extract", "head"):
            above = row[f"anon_{phase}_mb"] - row["anon_model_mb"] - row["features_mb"]
            row[f"anon_{phase}_above_features_mb"] = above


def table(rows: list[dict], title: str) -> str:
    lines = [title, f"{'images':>7} {'read s':>7} {'extract s':>9} {'ms/img':>7} {'head s':>7} {'warm s':>7} "
                    f"{'features MB':>11} {'peak MB extract/head':>21} {'RssAnon MB extract/head':>24} "
                    f"{'anon above model+features':>26} {'RssFile MB extract/head':>24} "
                    f"{'RssAnon peak extract/head':>26}"]
    for r in rows:
        lines.append(f"{r['images']:>7} {r['read_s']:>7.1f} {r['extract_s']:>9.1f} {r['extract_ms_per_image']:>7.2f} "
                     f"{r['head_s']:>7.1f} {r['warm_s']:>7.2f} {r['features_mb']:>11} "
                     f"{r['peak_extract_mb']:>10} / {r['peak_head_mb']:>8} {r['anon_extract_mb']:>11} / "
                     f"{r['anon_head_mb']:>10} {r['anon_extract_above_features_mb']:>12} / "
                     f"{r['anon_head_above_features_mb']:>11} {r['file_extract_mb']:>11} / {r['file_head_mb']:>10} "
                     f"{r.get('anon_peak_extract_mb', '-'):>12} / {r.get('anon_peak_head_mb', '-'):>11}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--preload-mb", type=int, default=256, help="data.preload_mb of the runs (default 256)")
    parser.add_argument("--memory-mb", type=int, default=1024,
                        help="cache.memory_mb of the runs: feature matrices above it in mapped files (default 1024)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--merge", action="store_true", help="keep the other counts' rows already in --out")
    parser.add_argument("--baseline", help="a results file whose rows are kept as 'baseline' (e.g. before a change)")
    parser.add_argument("--note", help="what the measured code is (kept in the results)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))))
        return
    import csv

    counts = sorted(args.counts)
    rows = []
    with tempfile.TemporaryDirectory(prefix="headstart-scale-") as tmp:
        started = time.perf_counter()
        images = write_images(Path(tmp) / "images", counts[-1])  # the first N are the same for every count
        print(f"wrote {len(images)} synthetic 64x64 JPEGs in {time.perf_counter() - started:.1f} s", flush=True)
        for n in counts:
            chosen = images[:n]
            random.Random(n).shuffle(chosen)
            csv_path = Path(tmp) / f"images_{n}.csv"
            with csv_path.open("w", newline="") as f:
                csv.writer(f).writerows([("path", "label"), *chosen])
            started = time.perf_counter()
            row = {"images": n, "memory_mb": args.memory_mb,
                   **run_count(csv_path, Path(tmp) / f"cache_{n}", args.preload_mb, args.memory_mb)}
            row["wall_s"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if args.merge and out.is_file() else {}
    if previous:
        rows += [r for r in previous.get("rows", []) if r["images"] not in counts]
    rows.sort(key=lambda r: r["images"])
    derive(rows)
    import torch

    from headstart.core.loop import resolve_precision

    result = {"machine": machine(), "torch": torch.__version__, "model": "efficientnet_lite0",
              "precision": resolve_precision("auto"),
              "images": "synthetic 64x64 JPEGs (upscaled to the model's 256/224 px)", "preload_mb": args.preload_mb,
              "memory_mb": args.memory_mb,
              "extraction_passes": "train x2 (one augmented view, the plain images), val x1",
              "memory": "peak_*: VmHWM of the phase alone; anon_*: RssAnon after it and malloc_trim (file-backed pages "
                        "of mapped shards and scratch files excluded); file_*: RssFile (those pages)",
              "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
              "note": args.note or previous.get("note"), "rows": rows}
    if args.baseline or "baseline" in previous:
        base = json.loads(Path(args.baseline).read_text()) if args.baseline else previous["baseline"]
        result["baseline"] = {"note": base.get("note"), "command": base.get("command"), "rows": base["rows"]}
        print("\n" + table(base["rows"], f"baseline: {base.get('note') or args.baseline}"))
    print("\n" + table(rows, f"this run: {result['note'] or ''}"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{out}")


if __name__ == "__main__":
    main()
