"""The prediction server: requests/s and p50/p95 latency, dynamic batching vs one request one forward pass.

    python benchmarks/serving.py [--run RUN] [--requests 40] [--clients 1,4,16] [--out benchmarks/results]

Trains a tiny image run (a linear head on 20 real hymenoptera photos; or serves ``--run``), then starts
``headstart serve`` twice on 127.0.0.1, in its own process each time: with dynamic batching
(``--max-batch 32 --max-wait-ms 5``) and as the plain baseline (``--max-batch 1``: every request is
its own forward pass). At each level of concurrency, that many client threads send one real JPEG per
request (by default 40 requests with 1 client, 160 with 4 and with 16, after two warm-up requests per
client) and every answer is checked against
``ImageClassifier.predict`` on the same files. Prints the table and writes ``serving.json``.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="an image run folder (default: train a tiny one)")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--requests", type=int, default=40, help="requests per client thread")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
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
           "rows": rows, "machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                                     "python": platform.python_version(), "processor": platform.processor()},
           "seconds": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out / 'serving.json'} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
