"""Which items to label next: ``headstart suggest`` against labelling items at random, on real data.

    python benchmarks/active_learning.py [--datasets sms,blood_cells] [--seeds 3] [--rounds 4]
                                         [--out benchmarks/results/active_learning.json]

A user has a pile of unlabelled items. The ``suggest`` and ``random`` arms start from the same random labelled
items, train a run on them, and add a batch of labels per round: the batch ``suggest`` picks from the pile, or a
random batch (what a user does without the tool). The ``first`` arm starts instead from the items ``suggest
--first`` picks with no run (one typical item of each group of the pile, by the pretrained features), then goes on
as ``suggest``. The pile's true labels stand in for the person labelling. Each round's run is scored on a test set
that is never labelled or suggested from. Printed: test macro-F1 and the rarest class's recall of the arms against
the labels spent, and the ratios to random.

- ``sms``: the UCI SMS Spam Collection (13 % spam); 1,500 messages for the test, a pile of 2,000.
- ``blood_cells``: the microscopy crops (3 classes); the pile is the training split, the test the test split.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HEADSTART_QUIET", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETTINGS = {"sms": {"start": 40, "batch": 40}, "blood_cells": {"start": 30, "batch": 30}}


def sms(folder: Path, seed: int) -> dict:
    """The SMS set: a pile of 2,000 messages and a test table of 1,500 others (seeded shuffle)."""
    with (SHARED / "sms_spam" / "SMSSpamCollection.tsv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    order = np.random.default_rng(seed).permutation(len(rows))
    test, pile = [rows[i] for i in order[:1500]], [rows[i] for i in order[1500:3500]]
    _write(folder / "test.csv", ["label", "text"], test)
    return {"items": [t for _, t in pile], "labels": [lab for lab, _ in pile], "test": folder / "test.csv",
            "task": "text", "columns": ["label", "text"]}


def blood_cells(folder: Path, seed: int) -> dict:
    """The blood-cell crops: the training split as the pile, the test split as the test."""
    files = sorted((SHARED / "blood_cells" / "train").glob("*/*.jpg"))
    return {"items": [str(f) for f in files], "labels": [f.parent.name for f in files],
            "test": SHARED / "blood_cells" / "test", "task": "image", "columns": ["path", "label"]}


def _write(path: Path, header: list[str], rows: list) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def _estimator(task: str, strategy: str):
    if task == "text":
        from headstart.tasks.text.task import TextClassifier

        return TextClassifier(strategy=strategy, refit=False)
    from headstart.tasks.image.task import ImageClassifier

    return ImageClassifier(strategy=strategy, refit=False)


def simulate(data: dict, arm: str, start: list[int], batch: int, rounds: int, strategy: str, seed: int,
             folder: Path) -> list[dict]:
    """One arm's rounds: train on the labelled items, score on the test, label a batch more."""
    rng = np.random.default_rng(seed + 1)
    labelled = list(start)
    rarest = min(set(data["labels"]), key=data["labels"].count)
    rounds_out = []
    for r in range(rounds + 1):
        rows = [((data["labels"][i], data["items"][i]) if data["task"] == "text" else (data["items"][i],
                 data["labels"][i])) for i in labelled]
        table = _write(folder / f"{arm}-{r}.csv", data["columns"], rows)
        started = time.perf_counter()
        clf = _estimator(data["task"], strategy).fit(table, out=folder / f"{arm}-{r}")
        report = clf.evaluate(data["test"])
        recall = report["per_class"][rarest]["recall"]
        rounds_out.append({"labels": len(labelled), f"{rarest}_labelled": sum(data["labels"][i] == rarest
                                                                               for i in labelled),
                           "macro_f1": round(report["macro_f1"], 4), "accuracy": round(report["accuracy"], 4),
                           f"{rarest}_recall": round(recall, 4), "seconds": round(time.perf_counter() - started, 1)})
        if r == rounds:
            break
        taken = set(labelled)
        pile = [i for i in range(len(data["items"])) if i not in taken]
        if arm != "random":  # (an item's row in the pile: repeats of a text are one item to suggest)
            where = {data["items"][i]: i for i in pile}
            picked = [where[row[clf.ITEM_KEY]] for row in clf.suggest([data["items"][i] for i in pile], batch)]
        else:
            picked = rng.choice(pile, size=batch, replace=False).tolist()
        labelled += picked
    return rounds_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="sms,blood_cells")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--strategy", default="linear", help="the runs' strategy (linear: the head on cached features)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "active_learning.json"))
    args = parser.parse_args()
    results = {}
    for name in args.datasets.split(","):
        settings = SETTINGS[name]
        per_seed = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                os.environ["HEADSTART_CACHE"] = str(folder / "cache")  # shared by both arms: features read once
                data = {"sms": sms, "blood_cells": blood_cells}[name](folder, seed)
                start = np.random.default_rng(seed).choice(len(data["items"]), settings["start"], replace=False)
                where = {item: i for i, item in enumerate(data["items"])}
                clf = _estimator(data["task"], args.strategy)
                first = [where[r[clf.ITEM_KEY]] for r in clf.suggest_first(data["items"], settings["start"])]
                arms = {arm: simulate(data, arm, begin, settings["batch"], args.rounds, args.strategy, seed, folder)
                        for arm, begin in (("suggest", start.tolist()), ("random", start.tolist()), ("first", first))}
            per_seed.append(arms)
            _print(name, seed, arms)
        results[name] = {**settings, "seeds": per_seed, "mean": _means(per_seed)}
        _print(name, "mean", results[name]["mean"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": f"{platform.processor() or platform.machine()}, "
                                                     f"{os.cpu_count()} cores", "strategy": args.strategy,
                                          "rounds": args.rounds, "results": results}, indent=2))


def _means(per_seed: list[dict]) -> dict:
    """Each arm's rounds, averaged over the seeds."""
    out = {}
    for arm in per_seed[0]:
        rounds = zip(*(seed[arm] for seed in per_seed))
        out[arm] = [{k: round(float(np.mean([r[k] for r in same])), 4) for k in same[0]} for same in rounds]
    return out


def _print(name: str, seed: object, arms: dict) -> None:
    recall = next(k for k in arms["suggest"][0] if k.endswith("_recall"))
    print(f"\n{name}, seed {seed}: test macro-F1 and {recall} against labels: suggest / random = ratio;  first "
          "(suggest from a --first start) / random = ratio")
    for s, r, f in zip(arms["suggest"], arms["random"], arms["first"]):
        print(f"  {s['labels']:>4.0f} labels   macro-F1 {s['macro_f1']:.3f} / {r['macro_f1']:.3f} = "
              f"{s['macro_f1'] / max(r['macro_f1'], 1e-9):.2f}x;  {f['macro_f1']:.3f} = "
              f"{f['macro_f1'] / max(r['macro_f1'], 1e-9):.2f}x   {recall} {s[recall]:.3f} / {r[recall]:.3f} / "
              f"{f[recall]:.3f}", flush=True)


if __name__ == "__main__":
    main()
