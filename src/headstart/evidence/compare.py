"""Evidence on the user's own data: strategies against training from scratch, over seeded splits.

``compare(DATA, out=DIR)`` trains every (backbone, strategy) cell on the same seeded, stratified
splits, including ``scratch`` (the same network from random initial weights, strategy ``full``, a
budget never smaller than the pretrained cells'), and reports the mean and a t-interval over seeds
of accuracy and macro-F1, wall seconds and images per second. ``shots`` adds a learning curve.

The splits are written as CSV files (path or text, label, split) under ``DIR/splits`` that all point
at the user's own files, so every cell reads the same content and the feature cache (keyed by
content) is shared by the strategies of a seed and, since the augmentation seed is fixed
(``data.augment_seed``), by the seeds too.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import statistics
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from headstart.core import strategies
from headstart.core.report import html_report, outputs
from headstart.core.splits import stratified_split
from headstart.errors import ConfigError, DataError
from headstart.progress import console, say, warnings_once

SCRATCH = "scratch"
DEFAULT_STRATEGIES = ("linear", "lp-ft", SCRATCH)
# Two-sided 95 % Student t quantiles t(0.975, df) for df = 1..30 (used when scipy is absent).
T95 = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788,
       2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639,
       2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423]


# ------------------------------------------------------------------------------------------ statistics
def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student t quantile ``t((1 + confidence) / 2, df)``, from ``scipy.stats.t``."""
    from scipy.stats import t

    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1, found {confidence}")
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, found {df}")
    return float(t.ppf((1 + confidence) / 2, df))


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and the t-interval ``mean ± t * s / sqrt(n)``.

    With one value the interval is unknown: ``half_width``, ``low`` and ``high`` are None.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = statistics.fmean(values)
    if n == 1:
        return {"mean": mean, "std": None, "half_width": None, "low": None, "high": None, "n": 1}
    std = statistics.stdev(values)
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "half_width": half, "low": mean - half, "high": mean + half, "n": n}


# ------------------------------------------------------------------------------------------- the pool
def _pool(task: str, data: str | Path, val_fraction: float, options: dict[str, Any]) -> dict[str, Any]:
    """Every labelled item of DATA (train and val pooled; test kept aside) and the CSV columns to write."""
    if task in ("image", "image-classification"):
        from headstart.tasks.image.data import discover

        splits = discover(data, val_fraction, 0, options.get("data.path_column"), options.get("data.label_column"))
        item = "path"

        def value(s: Any) -> str:
            return str(Path(s.path).resolve())
    elif task in ("text", "text-classification"):
        from headstart.tasks.text.data import discover

        splits = discover(data, options.get("text.text_column"), options.get("text.label_column"), val_fraction, 0)
        item = "text"

        def value(s: Any) -> str:
            return s.text
    else:
        raise ConfigError(f"compare supports --task image and text, found '{task}': compare detectors with "
                          "separate 'headstart train --task detection' runs")
    pool = splits.train + splits.val
    return {"item": item, "classes": splits.classes, "items": [value(s) for s in pool],
            "labels": [s.label for s in pool], "test": [(value(s), s.label) for s in splits.test],
            "layout": splits.layout}


def _shot_subset(train: list[int], labels: list[int], shots: int | str, seed: int) -> list[int]:
    """``shots`` training items per class (nested: 5 shots are the first 5 of 10), all for 'all'."""
    if shots == "all":
        return train
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in train:
        by_class[labels[i]].append(i)
    rng = random.Random(10_007 * seed + 17)
    kept = []
    for label in sorted(by_class):
        idx = by_class[label][:]
        rng.shuffle(idx)
        kept += idx[: int(shots)]
    return sorted(kept)


def _write_split(path: Path, pool: dict[str, Any], train: list[int], val: list[int]) -> None:
    classes = pool["classes"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([pool["item"], "label", "split"])
        for split, idx in (("train", train), ("val", val)):
            for i in idx:
                writer.writerow([pool["items"][i], classes[pool["labels"][i]], split])
        for value, label in pool["test"]:
            writer.writerow([value, classes[label], "test"])


def parse_shots(text: str | Sequence[str | int] | None) -> list[int | str]:
    """``"5,10,all"`` -> ``[5, 10, "all"]``."""
    if text is None:
        return ["all"]
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else [str(p) for p in text]
    out: list[int | str] = []
    for p in parts:
        if p == "all":
            out.append("all")
        elif p.isdigit() and int(p) >= 1:
            out.append(int(p))
        else:
            raise ConfigError(f"--shots: expected positive integers or 'all' separated by commas (e.g. 5,10,all), "
                              f"found '{p}'")
    return sorted(set(out), key=lambda s: math.inf if s == "all" else s)


@contextlib.contextmanager
def quiet_output(enabled: bool) -> Iterator[None]:
    """Silence progress bars and messages (warnings still print) while ``enabled``."""
    old = os.environ.get("HEADSTART_QUIET")
    if enabled:
        os.environ["HEADSTART_QUIET"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HEADSTART_QUIET", None)
        else:
            os.environ["HEADSTART_QUIET"] = old


def _planned_epochs(strategy: str, num_groups: int, train_cfg: Any) -> int:
    return sum(p.epochs for p in strategies.plan(strategy, num_groups, train_cfg))


# ------------------------------------------------------------------------------------------- compare
def compare(data: str | Path, out: str | Path, task: str = "image", models: Sequence[str] | None = None,
            strategy_names: Sequence[str] = DEFAULT_STRATEGIES, seeds: int = 3,
            shots: Sequence[int | str] | None = None, val_fraction: float = 0.2, epochs: int | None = None,
            overrides: dict[str, Any] | None = None, confidence: float = 0.95, verbose: bool = False) -> dict[str, Any]:
    """Train every (model, strategy, shots, seed) cell on DATA and summarise; writes ``out``.

    Returns the ``compare.json`` contents. ``scratch`` is the same network from random weights
    with strategy ``full`` and the epochs of the pretrained ``full`` cell, or else the largest
    epoch budget among the pretrained cells.
    """
    from headstart.cli import facade
    from headstart.tasks.image.task import build_config

    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, found {seeds}")
    out = Path(out)
    if (out / "compare.json").exists():
        raise ConfigError(f"{out} already holds a comparison (compare.json): choose another --out")
    names = [s.strip() for s in strategy_names if s.strip()]
    if not names:
        raise ConfigError("--strategies is empty: expected e.g. linear,lp-ft,scratch")
    for name in names:
        if name != SCRATCH:
            strategies.parse(name, 10**6)  # K is checked against the backbone when it is built
    pretrained_names = [n for n in names if n != SCRATCH]
    shot_list = parse_shots(list(shots) if shots is not None else None)
    overrides = dict(overrides or {})
    epoch_override = {"train.epochs": epochs} if epochs is not None else {}
    base = build_config(overrides=overrides)
    models = list(models or [base.model.name])
    pool = _pool(task, data, val_fraction, overrides)
    counts = [pool["labels"].count(c) for c in range(len(pool["classes"]))]
    if min(counts) < 2:
        raise DataError(f"compare needs at least 2 items per class for seeded splits; found {dict(zip(pool['classes'], counts))}")
    started = time.perf_counter()

    # one CSV per (seed, shots), all pointing at the same files
    split_files: dict[tuple[int, int | str], Path] = {}
    split_sets: dict[int, dict[str, list[int]]] = {}
    for seed in range(seeds):
        train, val = stratified_split(pool["labels"], val_fraction, seed)
        split_sets[seed] = {"train": train, "val": val}
        for k in shot_list:
            path = out / "splits" / f"seed{seed}-shots{k}.csv"
            _write_split(path, pool, _shot_subset(train, pool["labels"], k, seed), val)
            split_files[seed, k] = path
    cls = facade(task)
    columns = ({"data.path_column": "path", "data.label_column": "label", "data.augment_seed": 0}
               if pool["item"] == "path" else {"text.text_column": "text", "text.label_column": "label"})

    cells: list[dict[str, Any]] = []
    budgets: dict[str, Any] = {}
    shown: set[str] = set()
    total = len(models) * len(shot_list) * seeds * len(names)
    done = 0
    for model in models:
        from headstart.core.backbones import registry

        num_groups = registry.create_backbone(model, pretrained=False).num_groups
        planned = {n: _planned_epochs(n, num_groups, build_config(overrides={**overrides, **epoch_override}).train)
                   for n in pretrained_names}
        if "full" in planned:
            scratch_epochs, rule = planned["full"], "the same epochs as the pretrained 'full' cell"
        elif planned:
            top = max(planned, key=planned.get)
            scratch_epochs = planned[top]
            rule = f"the largest epoch budget among the pretrained cells ('{top}': {scratch_epochs} epochs in all phases)"
        else:
            scratch_epochs = _planned_epochs("full", num_groups, build_config(overrides={**overrides, **epoch_override}).train)
            rule = "the default epochs of strategy 'full' (no pretrained cell to match)"
        budgets[model] = {"epochs": scratch_epochs, "rule": rule, "pretrained_epochs": planned}
        for k in shot_list:
            for seed in range(seeds):
                for name in pretrained_names + ([SCRATCH] if SCRATCH in names else []):
                    done += 1
                    cell_overrides = {**overrides, **columns, "model.name": model, "train.seed": seed}
                    if name == SCRATCH:
                        cell_overrides.update({"train.strategy": "full", "model.pretrained": False,
                                               "train.epochs": scratch_epochs})
                    else:
                        cell_overrides.update({"train.strategy": name, **epoch_override})
                    run = out / "runs" / _slug(model) / _slug(name) / f"shots{k}" / f"seed{seed}"
                    say(f"[bold]compare[/] cell {done}/{total}: {model} / {name} / shots {k} / seed {seed}")
                    t0 = time.perf_counter()
                    with quiet_output(not verbose), warnings_once(shown):  # a data warning once, not once per cell
                        clf = cls(overrides=cell_overrides).fit(split_files[seed, k], out=run)
                    wall = time.perf_counter() - t0
                    cells.append(_cell(clf, model, name, seed, k, wall, run.relative_to(out), len(pool["classes"])))
                    c = cells[-1]
                    say(f"  accuracy {c['accuracy']:.4f}  macro-F1 {c['macro_f1']:.4f}  {c['wall_seconds']:.1f} s  "
                        f"{c['images_per_second']:.1f} images/s  cache {c['cache']}")

    summary = summarize(cells, confidence)
    best = max(summary, key=lambda s: (s["shots"] == shot_list[-1], s["accuracy"]["mean"]))
    best_cell = next(c for c in cells if (c["model"], c["strategy"], c["shots"]) ==
                     (best["model"], best["strategy"], best["shots"]) and c["seed"] == 0)
    result: dict[str, Any] = {
        "data": str(data), "task": task, "layout": pool["layout"], "classes": pool["classes"],
        "num_items": len(pool["items"]), "num_test": len(pool["test"]), "models": models, "strategies": names,
        "seeds": seeds, "shots": shot_list, "val_fraction": val_fraction, "confidence": confidence,
        "scratch_budget": budgets[models[0]] if len(models) == 1 else budgets,
        "images_per_second": "training items processed (items x epochs run) / training seconds; cached phases "
                             "read stored features, so they count far more items per second",
        "splits": {f"seed{s}": {k: len(v) for k, v in sets.items()} for s, sets in split_sets.items()},
        "summary": summary, "cells": cells,
        "cache": {"items_served": sum(c["cache"]["items_served"] for c in cells),
                  "items_computed": sum(c["cache"]["items_computed"] for c in cells)},
        "best": {**best, "run": best_cell["run"], "seed": 0},
        "verdict": verdict(summary, shot_list[-1]),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "config": build_config(overrides={**overrides, **columns, **epoch_override}).to_dict(),
        "environment": html_report.environment(cells[0].get("device"), {"seeds": list(range(seeds)),
                                                                      "data.augment_seed": 0}),
    }
    if isinstance(result["scratch_budget"], dict) and len(models) == 1:
        result["scratch_budget"]["strategy"] = "full"
    _write_outputs(out, result)
    return result


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)


def _cell(clf: Any, model: str, strategy: str, seed: int, shots: int | str, wall: float, run: Path,
          num_classes: int) -> dict[str, Any]:
    m = clf.metrics_
    epochs_run = len(clf.history_)
    train_seconds = float(m.get("train_seconds") or 0.0)
    processed = m["num_train"] * epochs_run
    return {
        "model": model, "strategy": strategy, "seed": seed, "shots": shots,
        "accuracy": m["val_accuracy"], "macro_f1": m["val_macro_f1"],
        "test_accuracy": m.get("test", {}).get("accuracy"),
        "wall_seconds": round(wall, 2), "train_seconds": round(train_seconds, 2),
        "images_per_second": round(processed / train_seconds, 2) if train_seconds > 0 else 0.0,
        "epochs": epochs_run, "num_train": m["num_train"], "num_val": m["num_val"],
        "train_per_class": m["num_train"] / num_classes,
        "cache": m.get("cache", {"items_served": 0, "items_computed": 0}), "device": m.get("device"),
        "warnings": m["val"].get("warnings", []), "run": str(run),
    }


def summarize(cells: Sequence[dict[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """One row per (model, strategy, shots): mean and CI over seeds of each score, mean time."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for c in cells:
        groups[c["model"], c["strategy"], c["shots"]].append(c)
    rows = []
    for (model, strategy, shots), group in groups.items():
        rows.append({
            "model": model, "strategy": strategy, "shots": shots, "n": len(group),
            "accuracy": mean_ci([c["accuracy"] for c in group], confidence),
            "macro_f1": mean_ci([c["macro_f1"] for c in group], confidence),
            "wall_seconds": mean_ci([c["wall_seconds"] for c in group], confidence),
            "images_per_second": mean_ci([c["images_per_second"] for c in group], confidence),
            "train_per_class": statistics.fmean(c["train_per_class"] for c in group),
        })
    return rows


def verdict(summary: Sequence[dict[str, Any]], shots: int | str) -> str:
    """One sentence: the best pretrained strategy against scratch, with whether the CIs overlap."""
    rows = [s for s in summary if s["shots"] == shots]
    scratch = [s for s in rows if s["strategy"] == SCRATCH]
    pretrained = [s for s in rows if s["strategy"] != SCRATCH]
    if not scratch or not pretrained:
        return ""
    best = max(pretrained, key=lambda s: s["accuracy"]["mean"])
    base = max(scratch, key=lambda s: s["accuracy"]["mean"])
    gap = best["accuracy"]["mean"] - base["accuracy"]["mean"]
    a, b = best["accuracy"], base["accuracy"]
    if a["low"] is None or b["low"] is None:
        sure = "one seed only: no interval, run --seeds 3 or more to know"
    elif a["low"] > b["high"] or b["low"] > a["high"]:
        sure = "the 95% intervals do not overlap"
    else:
        sure = "the 95% intervals overlap: the difference is not established"
    word = "beats" if gap > 0 else "does not beat"
    return (f"{best['model']} / {best['strategy']} {word} training from scratch by {gap * 100:+.1f} accuracy points "
            f"({a['mean']:.3f} vs {b['mean']:.3f}; {sure}), at {best['wall_seconds']['mean']:.0f} s vs "
            f"{base['wall_seconds']['mean']:.0f} s per run.")


# -------------------------------------------------------------------------------------------- outputs
def _write_outputs(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    outputs.write_json(result, out / "compare.json")
    plot_scores(result, out / "scores.png")
    if len(result["shots"]) > 1:
        plot_shots(result, out / "shots.png")
    plot_time(result, out / "time.png")
    html_report.write_compare_report(out, result)
    print_table(result)
    say(f"Comparison folder: [bold]{out}[/] (report.html, compare.json, scores.png, time.png"
        + (", shots.png" if len(result["shots"]) > 1 else "") + ")")


def _label(s: dict[str, Any], several_models: bool) -> str:
    return f"{s['model']}\n{s['strategy']}" if several_models else s["strategy"]


def _err(stat: dict[str, Any]) -> float:
    return stat["half_width"] or 0.0


def plot_scores(result: dict[str, Any], path: Path) -> None:
    """Accuracy and macro-F1 per (model, strategy), mean with CI bars (largest shots)."""
    import matplotlib.pyplot as plt

    rows = [s for s in result["summary"] if s["shots"] == result["shots"][-1]]
    several = len(result["models"]) > 1
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows) + 2), 4))
    width = 0.38
    for j, (metric, name) in enumerate((("accuracy", "accuracy"), ("macro_f1", "macro-F1"))):
        ax.bar([i + (j - 0.5) * width for i in x], [s[metric]["mean"] for s in rows], width,
               yerr=[_err(s[metric]) for s in rows], capsize=4, label=name,
               color=["#9aa5b8" if s["strategy"] == SCRATCH else ("#3b75af" if j == 0 else "#72a9d6") for s in rows])
    ax.set_xticks(list(x), [_label(s, several) for s in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("validation score")
    ax.set_title(f"Mean over {result['seeds']} seed(s), {result['confidence']:.0%} CI (scratch in grey)")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shots(result: dict[str, Any], path: Path) -> None:
    """Learning curve: accuracy against training examples per class, one line per (model, strategy)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    lines: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in result["summary"]:
        lines[s["model"], s["strategy"]].append(s)
    for (model, strategy), rows in lines.items():
        rows.sort(key=lambda s: s["train_per_class"])
        label = f"{model} / {strategy}" if len(result["models"]) > 1 else strategy
        ax.errorbar([s["train_per_class"] for s in rows], [s["accuracy"]["mean"] for s in rows],
                    yerr=[_err(s["accuracy"]) for s in rows], marker="o", capsize=3, label=label,
                    linestyle="--" if strategy == SCRATCH else "-")
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ticks = sorted({round(s["train_per_class"], 1) for s in result["summary"]})
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training examples per class")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Learning curve")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time(result: dict[str, Any], path: Path) -> None:
    """Accuracy against mean wall seconds per cell (largest shots), CI bars."""
    import matplotlib.pyplot as plt

    rows = [s for s in result["summary"] if s["shots"] == result["shots"][-1]]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for s in rows:
        ax.errorbar([s["wall_seconds"]["mean"]], [s["accuracy"]["mean"]], yerr=[_err(s["accuracy"])],
                    marker="s" if s["strategy"] == SCRATCH else "o", capsize=3)
        ax.annotate(_label(s, len(result["models"]) > 1).replace("\n", " / "),
                    (s["wall_seconds"]["mean"], s["accuracy"]["mean"]), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    ax.set_xlim(left=0)
    ax.set_xlabel("wall seconds per run (mean over seeds)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.set_title("Score against time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"headstart compare: {result['seeds']} seed(s), mean ± {result['confidence']:.0%} CI half-width")
    for col in ("model", "strategy", "shots", "accuracy", "macro-F1", "wall s", "images/s"):
        table.add_column(col, justify="left" if col in ("model", "strategy") else "right")
    for s in result["summary"]:
        table.add_row(s["model"], s["strategy"], str(s["shots"]), html_report.fmt_ci(s["accuracy"]),
                      html_report.fmt_ci(s["macro_f1"]), f"{s['wall_seconds']['mean']:.1f}",
                      f"{s['images_per_second']['mean']:.1f}")
    console.print(table)
    if result.get("verdict"):
        console.print(result["verdict"])
    budget = result.get("scratch_budget") or {}
    if "epochs" in budget:
        console.print(f"[dim]scratch: strategy 'full' from random weights for {budget['epochs']} epoch(s), "
                      f"{budget['rule']}[/]")
