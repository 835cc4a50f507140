"""The prediction server: requests/s and p50/p95 latency, dynamic batching vs one request one forward pass.

    python benchmarks/serving.py [--run RUN] [--requests 40] [--clients 1,4,16] [--out benchmarks/results]

Trains a tiny image run (a linear head on 20 real hymenoptera photos; or serves ``--run``), then starts
``headstart serve`` twice on 127.0.0.1, in its own process each time: with dynamic batching
(``--max-batch 32 --max-wait-ms 5``) and as the plain baseline (``--max-batch 1``: every request is
its own forward pass). At each level of concurrency, that many client threads send one real JPEG per
request (by default 40 requests with 1 client, 160 with 4 and with 16, after two warm-up requests per
client) and every answer is checked against
``ImageClassifier.predict`` on the same files.

Then, in the same run, ONNX Runtime against PyTorch on batch throughput (``onnx_vs_torch``): the run is
exported (``headstart export RUN``, fp32, parity-checked) and the same model predicts the same 64 real
JPEGs at batch sizes 1, 8 and 32 through ``OnnxEngine.predict_proba`` and through
``ImageClassifier.predict_proba`` (the ``headstart predict`` path, at the run's precision: bf16 autocast
where the CPU has it), end to end from the files and forward passes only (preprocessed inputs), with the
same number of threads; with ``--texts`` also texts/s of a tiny SMS run (all-MiniLM-L6-v2). Prints the
tables and writes ``serving.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

HYMENOPTERA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hymenoptera_data"
SMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam" / "SMSSpamCollection.tsv"


def tiny_run(root: Path) -> Path:
    """A linear head on 10 ants + 10 bees (seconds on a CPU)."""
    from headstart.tasks.image.task import ImageClassifier

    data = root / "data"
    for name in ("ants", "bees"):
        (data / name).mkdir(parents=True)
        for f in sorted((HYMENOPTERA / "train" / name).glob("*.jpg"))[:10]:
            shutil.copy(f, data / name / f.name)
    run = root / "run"
    ImageClassifier(strategy="linear", epochs=1, overrides={"train.refit": False, "cache.views": 1,
                                                            "cache.dir": str(root / "cache")}).fit(data, out=run)
    return run


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(run: Path, max_batch: int, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "headstart.cli", "serve", str(run), "--host", "127.0.0.1", "--port", str(port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--timeout", "60"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, ends = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while time.monotonic() < ends and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the server did not start: {' '.join(command)}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def load(url: str, files: list[Path], expected: dict[str, dict], clients: int, per_client: int) -> dict:
    """``clients`` threads, ``per_client`` requests each (one image per request); every answer checked."""
    blobs = {f.name: f.read_bytes() for f in files}

    def client(c: int, count: int = per_client) -> list[float]:
        latencies = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(count):
                name = files[(c * per_client + i) % len(files)].name
                started = time.perf_counter()
                r = http.post("/predict", files=[("files", (name, blobs[name], "image/jpeg"))])
                latencies.append(time.perf_counter() - started)
                row = r.json()[0] if r.status_code == 200 else {}
                if row.get("label") != expected[name]["label"] or \
                        abs(row["probability"] - expected[name]["probability"]) > 1e-4:
                    raise AssertionError(f"{name}: served {r.status_code} {r.text[:200]}, predict gave {expected[name]}")
        return latencies

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda c: client(c, 2), range(clients), timeout=300))  # warm-up, not counted
        started = time.perf_counter()
        latencies = sorted(t for chunk in pool.map(client, range(clients), timeout=600) for t in chunk)
    seconds = time.perf_counter() - started
    n = len(latencies)
    return {"clients": clients, "requests": n, "seconds": round(seconds, 2), "requests_per_s": round(n / seconds, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p95_ms": round(1000 * latencies[min(n - 1, int(0.95 * n))], 1)}


def _rate(fn, items: int, repeats: int) -> float:
    """Items per second of ``fn()`` (which handles ``items`` items): one warm-up call, best of ``repeats``."""
    fn()
    best = min(_timed(fn) for _ in range(repeats))
    return round(items / best, 1)


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def onnx_vs_torch(run: Path, files: list[Path], batch_sizes: list[int], threads: int, repeats: int = 2) -> dict:
    """Images/s of the run's exported ONNX model (ONNX Runtime) and of its PyTorch predict path, same files."""
    import numpy as np
    import torch

    from headstart.core import loop
    from headstart.deploy import export, onnx_engine
    from headstart.tasks.classification.training import predict_logits
    from headstart.tasks.image.task import ImageClassifier

    meta = export.export_run(run, "onnx")  # fp32, dynamic batch, parity-checked
    engine = onnx_engine.OnnxEngine(run / onnx_engine.DEFAULT_FILE, threads=threads)
    estimator = ImageClassifier.load(run)
    estimator.config.device.threads = threads
    pre = engine.meta["preprocessing"]
    arrays = np.stack([onnx_engine.read_image(f, pre) for f in files])
    fabric = loop.make_fabric(estimator.config.device)
    dataset = [(torch.from_numpy(a), 0) for a in arrays]
    rows = []
    for bs in batch_sizes:
        engine.batch_size = bs
        estimator.config.data.inference_batch_size = bs
        _, p_onnx = engine.predict_proba(files)
        _, p_torch = estimator.predict_proba(files)
        agree = float(np.mean(p_onnx.argmax(1) == p_torch.float().numpy().argmax(1)))

        def ort_forward(bs: int = bs) -> None:
            for i in range(0, len(arrays), bs):
                engine.logits({"pixel_values": arrays[i:i + bs]})

        row = {"batch_size": bs, "images": len(files),
               "onnx_end_to_end": _rate(lambda: engine.predict_proba(files), len(files), repeats),
               "torch_end_to_end": _rate(lambda: estimator.predict_proba(files), len(files), repeats),
               "onnx_forward": _rate(ort_forward, len(files), repeats),
               "torch_forward": _rate(lambda bs=bs: predict_logits(fabric, estimator.model_, dataset, bs), len(files),
                                      repeats),
               "top1_agreement": agree}
        row["end_to_end_ratio"] = round(row["onnx_end_to_end"] / row["torch_end_to_end"], 2)
        row["forward_ratio"] = round(row["onnx_forward"] / row["torch_forward"], 2)
        rows.append(row)
    device = estimator.config.device
    return {"what": "images/s of the same exported model: OnnxEngine.predict_proba (ONNX Runtime, CPU, fp32) vs "
                    "ImageClassifier.predict_proba (PyTorch, the run's precision); end to end from the JPEG files "
                    "(decoding included) and forward passes only (preprocessed inputs); best of "
                    f"{repeats} after a warm-up; ratio = ONNX / PyTorch",
            "threads": threads, "torch_precision": loop.resolve_precision(device.precision, device.accelerator),
            "onnx_precision": meta["precision"], "parity": {k: meta["parity"][k] for k in (
                "items", "max_abs_probability_diff", "top1_agreement", "passed")}, "rows": rows}


def onnx_vs_torch_text(root: Path, batch_sizes: list[int], threads: int, repeats: int = 2) -> dict | None:
    """Texts/s of a tiny SMS run (linear head on all-MiniLM-L6-v2): ONNX Runtime vs PyTorch, end to end."""
    import csv

    import numpy as np

    from headstart.core import loop
    from headstart.core.backbones import hf_text
    from headstart.deploy import export, onnx_engine
    from headstart.tasks.text.task import TextClassifier

    if not SMS.is_file() or hf_text.PACKAGED["minilm"].locate() is None:
        return None
    with SMS.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    picked = [r for r in rows if r[0] == "ham"][:20] + [r for r in rows if r[0] == "spam"][:20]
    table = root / "sms40.csv"
    with table.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("Label", "SMS"), *picked])
    run = root / "text-run"
    estimator = TextClassifier(strategy="linear", epochs=1, overrides={
        "train.refit": False, "cache.views": 1, "text.max_length": 64, "cache.dir": str(root / "cache"),
        "device.threads": threads}).fit(table, out=run)
    texts = [r[1] for r in rows[100:164]]
    meta = export.export_run(run, "onnx")
    engine = onnx_engine.OnnxEngine(run / onnx_engine.DEFAULT_FILE, threads=threads)
    out = []
    for bs in batch_sizes:
        engine.batch_size = bs
        estimator.config.data.inference_batch_size = bs
        _, p_onnx = engine.predict_proba(texts)
        _, p_torch = estimator.predict_proba(texts)
        row = {"batch_size": bs, "texts": len(texts),
               "onnx_end_to_end": _rate(lambda: engine.predict_proba(texts), len(texts), repeats),
               "torch_end_to_end": _rate(lambda: estimator.predict_proba(texts), len(texts), repeats),
               "top1_agreement": float(np.mean(p_onnx.argmax(1) == p_torch.float().numpy().argmax(1)))}
        row["end_to_end_ratio"] = round(row["onnx_end_to_end"] / row["torch_end_to_end"], 2)
        out.append(row)
    device = estimator.config.device
    return {"what": "texts/s (64 real SMS, up to 64 tokens) of the same exported model: OnnxEngine.predict_proba "
                    "vs TextClassifier.predict_proba, end to end (tokenising included); ratio = ONNX / PyTorch",
            "model": estimator.config.model.name, "threads": threads,
            "torch_precision": loop.resolve_precision(device.precision, device.accelerator),
            "parity_passed": meta["parity"]["passed"], "rows": out}


def print_engines(images: dict, texts: dict | None) -> None:
    table = Table(title=f"ONNX Runtime vs PyTorch ({images['torch_precision']}), {images['threads']} threads: images/s "
                        f"of the same model, {images['rows'][0]['images']} JPEGs")
    for col in ("batch", "ONNX end to end", "PyTorch end to end", "ratio", "ONNX forward", "PyTorch forward",
                "ratio ", "top-1 agree"):
        table.add_column(col, justify="right")
    for r in images["rows"]:
        table.add_row(str(r["batch_size"]), f"{r['onnx_end_to_end']:.1f}", f"{r['torch_end_to_end']:.1f}",
                      f"{r['end_to_end_ratio']:.2f}x", f"{r['onnx_forward']:.1f}", f"{r['torch_forward']:.1f}",
                      f"{r['forward_ratio']:.2f}x", f"{r['top1_agreement']:.2f}")
    Console(width=160).print(table)
    if texts:
        table = Table(title=f"ONNX Runtime vs PyTorch ({texts['torch_precision']}): texts/s, {texts['model']}")
        for col in ("batch", "ONNX end to end", "PyTorch end to end", "ratio", "top-1 agree"):
            table.add_column(col, justify="right")
        for r in texts["rows"]:
            table.add_row(str(r["batch_size"]), f"{r['onnx_end_to_end']:.1f}", f"{r['torch_end_to_end']:.1f}",
                          f"{r['end_to_end_ratio']:.2f}x", f"{r['top1_agreement']:.2f}")
        Console(width=160).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="an image run folder (default: train a tiny one)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=40, help="requests per client thread")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--batch-sizes", default="1,8,32", help="ONNX Runtime vs PyTorch: items per forward pass")
    parser.add_argument("--texts", action=argparse.BooleanOptionalAction, default=True,
                        help="also texts/s of a tiny SMS run (ONNX Runtime vs PyTorch)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    os.environ.setdefault("HEADSTART_QUIET", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    levels = [int(c) for c in args.clients.split(",")]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="headstart-serving-") as tmp:
        run = args.run or tiny_run(Path(tmp))
        from headstart.tasks.image.task import ImageClassifier

        files = [f for name in ("ants", "bees") for f in sorted((HYMENOPTERA / "val" / name).glob("*.jpg"))[:16]]
        estimator = ImageClassifier.load(run)
        expected = {Path(r["path"]).name: r for r in estimator.predict(files)}
        servers = {"batched": (args.max_batch, args.max_wait_ms), "baseline": (1, 0.0)}
        results: dict[str, list[dict]] = {}
        for name, (max_batch, wait) in servers.items():
            proc, url = start_server(run, max_batch, wait)
            try:
                results[name] = []
                for clients in levels:
                    per_client = max(4, args.requests * 4 // max(clients, 4))  # 40, 40, 10 x 16 by default
                    results[name].append(load(url, files, expected, clients, per_client))
                results[name + "_batching"] = httpx.get(url + "/health", timeout=10).json()["batching"]
            finally:
                stop_server(proc)
        sizes, threads = [int(b) for b in args.batch_sizes.split(",")], os.cpu_count() or 1
        engine_files = [f for name in ("ants", "bees") for f in sorted((HYMENOPTERA / "val" / name).glob("*.jpg"))[:32]]
        engines = onnx_vs_torch(run, engine_files, sizes, threads)
        engines_text = onnx_vs_torch_text(Path(tmp), sizes, threads) if args.texts else None
    rows = []
    for b, p in zip(results["batched"], results["baseline"]):
        rows.append({"clients": b["clients"], "batched": b, "baseline": p,
                     "throughput_ratio": round(b["requests_per_s"] / p["requests_per_s"], 2),
                     "p50_ratio": round(b["p50_ms"] / p["p50_ms"], 2), "p95_ratio": round(b["p95_ms"] / p["p95_ms"], 2)})
    table = Table(title="headstart serve: dynamic batching vs one request one forward (1 JPEG per request)")
    for col in ("clients", "requests", "batched req/s", "baseline req/s", "ratio", "batched p50 / p95 ms",
                "baseline p50 / p95 ms", "p50 ratio", "p95 ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        b, p = r["batched"], r["baseline"]
        table.add_row(str(r["clients"]), str(b["requests"]), f"{b['requests_per_s']:.1f}", f"{p['requests_per_s']:.1f}",
                      f"{r['throughput_ratio']:.2f}x", f"{b['p50_ms']:.0f} / {b['p95_ms']:.0f}",
                      f"{p['p50_ms']:.0f} / {p['p95_ms']:.0f}", f"{r['p50_ratio']:.2f}", f"{r['p95_ratio']:.2f}")
    Console(width=160).print(table)
    print_engines(engines, engines_text)
    import torch

    from headstart.core.loop import resolve_precision

    device = estimator.config.device
    out = {"benchmark": "serving", "date": time.strftime("%Y-%m-%d"),
           "what": "POST /predict, one real hymenoptera JPEG per request, from N client threads "
           "on 127.0.0.1; every answer checked against ImageClassifier.predict (label, probability within 1e-4)",
           "model": estimator.config.model.name, "precision": resolve_precision(device.precision, device.accelerator),
           "batched_server": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms},
           "baseline_server": {"max_batch": 1, "max_wait_ms": 0.0},
           "batching_stats": {"batched": results["batched_batching"], "baseline": results["baseline_batching"]},
           "rows": rows, "onnx_vs_torch": {"images": engines, "texts": engines_text},
           "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                       "python": platform.python_version(), "processor": platform.processor()},
           "seconds": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out / 'serving.json'} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
