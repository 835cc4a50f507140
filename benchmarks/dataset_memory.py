"""Memory of reading images stored inside a Hugging Face dataset, against the same images as files in class folders.

    python benchmarks/dataset_memory.py [--counts 1000 4000] [--size 256] [--out benchmarks/results/dataset_memory.json]
                                        [--note TEXT] [--baseline OTHER.json]

Synthetic JPEGs (``scale.write_images``: two classes, every file distinct; ``--size`` px, about 60 kB at 256 px) are
written once as a folder of class folders (``files``), as ``load_dataset(...).save_to_disk`` writes them (``datasets``:
the bytes inside Arrow files), as a Hub dataset repository (``parquet``: ``data/train-00000-of-00001.parquet``,
row groups of 100 images as ``datasets`` writes image sets) and as PatchCamelyon's HDF5 files (``hdf5``: the decoded
pixels, ``*_train_x.h5`` and ``*_train_y.h5``). Each layout and count is read in a fresh process as
training reads it: the splits found (``discover``), then every image hashed, decoded and checked (``ImageStore``, with
``data.preload_mb=0``: no decoded image kept). Memory is ``RssAnon`` (the process's own memory; file-backed pages of
memory-mapped files, which the kernel drops at will, are ``RssFile``) after glibc's ``malloc_trim``, above what the
process held before reading (``datasets``, ``pyarrow`` and ``h5py`` already imported, in every layout). Flat memory: the same
RssAnon at every count, near the ``files`` layout's, far below the images' bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HEADSTART_QUIET", "1")
sys.path.insert(0, str(Path(__file__).parent))
from scale import machine, status_mb, trim, write_images  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "dataset_memory.json"
LAYOUTS = ("files", "datasets", "parquet", "hdf5")


def write_layouts(root: Path, n: int, size: int) -> dict[str, Path]:
    """The same ``n`` images as class folders, a ``save_to_disk`` folder and a Hub repository's Parquet file."""
    import datasets

    files = write_images(root / "files", n, size)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})

    def rows():
        for path, label in files:
            yield {"image": {"bytes": Path(path).read_bytes(), "path": Path(path).name}, "label": "ab".index(label)}

    ds = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(root / "hf_cache"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(root / "datasets"))
    ds.to_parquet(str(root / "parquet" / "data" / "train-00000-of-00001.parquet"), batch_size=100)
    import h5py
    import numpy as np
    from PIL import Image

    (root / "hdf5").mkdir()
    with h5py.File(root / "hdf5" / "camelyonpatch_level_2_split_train_x.h5", "w") as f:
        x = f.create_dataset("x", (n, size, size, 3), np.uint8, chunks=(1, size, size, 3))
        for i, (path, _) in enumerate(files):
            x[i] = np.asarray(Image.open(path).convert("RGB"))
    with h5py.File(root / "hdf5" / "camelyonpatch_level_2_split_train_y.h5", "w") as f:
        f.create_dataset("y", data=np.array(["ab".index(label) for _, label in files], np.uint8).reshape(-1, 1, 1, 1))
    return {"files": root / "files", "datasets": root / "datasets", "parquet": root / "parquet",
            "hdf5": root / "hdf5"}


def measure(folder: str) -> dict:
    """Read ``folder`` as training does, in this process: seconds and RssAnon above the start."""
    import datasets  # noqa: F401 - imported before the start: its modules are a fixed cost, not the images'
    import h5py  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from headstart.core.backbones import registry
    from headstart.tasks.image.data import discover
    from headstart.tasks.image.dataset import ImageStore

    spec = registry.create_backbone("efficientnet_lite0").spec
    trim()
    start = status_mb("RssAnon")
    started = time.perf_counter()
    splits = discover(folder, 0.2, 0)
    trim()
    found = status_mb("RssAnon") - start
    samples = [*splits.train, *splits.val]
    store = ImageStore(samples, spec.resize_size, spec.interpolation, budget_mb=0)
    seconds = time.perf_counter() - started
    trim()
    return {"images": len(store.samples), "read_s": round(seconds, 1), "anon_discover_mb": round(found, 1),
            "anon_read_mb": round(status_mb("RssAnon") - start, 1), "file_read_mb": round(status_mb("RssFile"))}


def derive(rows: list[dict]) -> None:
    """Each row's memory as a ratio to the ``files`` layout's of the same count, and to the images' bytes."""
    files = {r["count"]: r for r in rows if r["layout"] == "files"}
    for r in rows:
        r["anon_over_files"] = round(r["anon_read_mb"] / max(files[r["count"]]["anon_read_mb"], 1.0), 2)
        r["anon_share_of_image_bytes"] = round(r["anon_read_mb"] / r["image_bytes_mb"], 3)


def table(rows: list[dict], title: str) -> str:
    lines = [title, f"{'layout':>9} {'images':>7} {'image MB':>9} {'read s':>7} {'RssAnon MB':>11} {'MB/1000':>8} "
                    f"{'x files':>8} {'of bytes':>9}"]
    lines += [f"{r['layout']:>9} {r['count']:>7} {r['image_bytes_mb']:>9.1f} {r['read_s']:>7.1f} "
              f"{r['anon_read_mb']:>11.1f} {r['anon_mb_per_1000']:>8.2f} {r['anon_over_files']:>8.2f} "
              f"{r['anon_share_of_image_bytes']:>9.3f}" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--size", type=int, default=256, help="the images' side in pixels (default 256)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--note", help="what the measured code is (kept in the results)")
    parser.add_argument("--baseline", help="a results file whose rows are kept as 'baseline' (e.g. before a change)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="headstart-dsmem-") as tmp:
        for n in sorted(args.counts):
            folders = write_layouts(Path(tmp) / str(n), n, args.size)
            image_mb = sum(p.stat().st_size for p in folders["files"].rglob("*.jpg")) / 2**20
            for layout in LAYOUTS:
                proc = subprocess.run([sys.executable, __file__, "--child", str(folders[layout])],
                                      stdout=subprocess.PIPE, text=True)
                if proc.returncode:
                    raise SystemExit(f"reading {layout} of {n} images failed ({proc.returncode})")
                row = {"layout": layout, "count": n, "image_bytes_mb": round(image_mb, 1),
                       **json.loads(proc.stdout.strip().splitlines()[-1])}
                row["anon_mb_per_1000"] = round(1000 * row["anon_read_mb"] / n, 2)
                rows.append(row)
                print(json.dumps(row), flush=True)
    derive(rows)
    result = {"machine": machine(), "size": args.size, "command": "python benchmarks/dataset_memory.py "
              + " ".join(sys.argv[1:]), "note": args.note, "rows": rows}
    if args.baseline:
        base = json.loads(Path(args.baseline).read_text())
        result["baseline"] = {"note": base.get("note"), "command": base.get("command"), "rows": base["rows"]}
        print("\n" + table(base["rows"], f"baseline: {base.get('note') or args.baseline}"))
    print("\n" + table(rows, f"this run: {args.note or ''}"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{out}")


if __name__ == "__main__":
    main()
