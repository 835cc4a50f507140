"""The acceptance check of ``compare`` and ``advise`` on small images unlike ImageNet, in one run.

    python benchmarks/evidence.py [DATA ...] [--seeds 3] [--budget 60] [--per-class 30] [--out DIR]

For each DATA folder (default: scikit-image's 200 greyscale 25x25 faces / non-faces, and scikit-learn's
8x8 greyscale digits, ``--per-class`` images of each digit: small, greyscale and far from ImageNet
photos, as medical images are), runs

  * ``headstart advise DATA --budget S`` and
  * ``headstart compare DATA --models ADVISED --strategies linear,lp-ft,scratch --seeds N``

(``compare`` on the backbone ``advise`` recommends), then checks the two promises: every pretrained
strategy is ahead of training from scratch with
non-overlapping 95 % intervals, and the advisor's pick scores within the interval of the best
strategy that ``compare`` found. Prints a table; writes ``benchmarks/results/evidence.json``.
Point it at your own folder (a few hundred medical images in class folders) to see the same on it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HEADSTART_QUIET", "1")

from headstart.datasets import write_digits, write_faces  # noqa: E402
from headstart.evidence.advise import advise  # noqa: E402
from headstart.evidence.compare import compare  # noqa: E402


def digits_subset(folder: Path, per_class: int) -> Path:
    full = write_digits(folder / "all")
    out = folder / f"digits{per_class}"
    for class_dir in sorted(p for p in full.iterdir() if p.is_dir()):
        (out / class_dir.name).mkdir(parents=True)
        for f in sorted(class_dir.iterdir())[:per_class]:
            shutil.copy(f, out / class_dir.name / f.name)
    return out


def check(data: Path, out: Path, seeds: int, budget: float) -> dict:
    advice = advise(data, budget_s=budget)
    rec = advice["recommendation"]  # compare runs on the recommended backbone, so its pick is among the cells
    result = compare(data, out / "compare", models=[rec["model"]], strategy_names=["linear", "lp-ft", "scratch"],
                     seeds=seeds)
    rows = {s["strategy"]: s for s in result["summary"]}
    scratch = rows["scratch"]["accuracy"]
    pretrained = {k: v["accuracy"] for k, v in rows.items() if k != "scratch"}
    best_name = max(pretrained, key=lambda k: pretrained[k]["mean"])
    best = pretrained[best_name]
    picked = rows.get(rec["strategy"], {}).get("accuracy")
    return {
        "data": str(data), "items": result["num_items"], "classes": len(result["classes"]),
        "summary": {k: {"mean": v["accuracy"]["mean"], "low": v["accuracy"]["low"], "high": v["accuracy"]["high"],
                        "seconds": v["wall_seconds"]["mean"]} for k, v in rows.items()},
        "pretrained_clearly_ahead": all(a["low"] is not None and scratch["high"] is not None and a["low"] > scratch["high"]
                                        for a in pretrained.values()),
        "best": best_name, "advice": {"model": rec["model"], "strategy": rec["strategy"],
                                      "expected_accuracy": rec["expected_accuracy"], "seconds": advice["seconds"]},
        # the pick is as good as the best, statistically: its mean lies within the best strategy's interval
        "advice_within_best_interval": picked is not None and best["low"] is not None
                                       and best["low"] <= picked["mean"] <= best["high"] + 1e-9,
        "verdict": result["verdict"], "compare_seconds": result["wall_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="*", help="image folders (default: faces and a digits subset)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=60.0, help="advise's budget in seconds")
    parser.add_argument("--per-class", type=int, default=30, help="digits per class in the default digits subset")
    parser.add_argument("--out", default=None, help="folder for the comparisons (default: a temporary folder)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "evidence.json"))
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be at least 2: the check compares 95% intervals")
    out = Path(args.out or tempfile.mkdtemp(prefix="headstart-evidence-"))
    folders = [Path(d) for d in args.data] or [write_faces(out / "data" / "faces"),
                                               digits_subset(out / "data", args.per_class)]
    results = []
    for i, data in enumerate(folders):
        results.append(check(data, out / f"{i}-{data.name}", args.seeds, args.budget))
        print(json.dumps(results[-1], indent=1), flush=True)
    print("\n| data | items | linear | lp-ft | scratch | pretrained clearly ahead | advice | advice within best |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        s = r["summary"]
        cell = {k: f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" for k, v in s.items()}
        print(f"| {Path(r['data']).name} | {r['items']} | {cell.get('linear', '-')} | {cell.get('lp-ft', '-')} | "
              f"{cell.get('scratch', '-')} | {r['pretrained_clearly_ahead']} | {r['advice']['model']} / "
              f"{r['advice']['strategy']} | {r['advice_within_best_interval']} |")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
