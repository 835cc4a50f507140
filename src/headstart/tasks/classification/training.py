"""Classification (images, texts) in the training loop: batches, cross-entropy, accuracy and macro-F1.

The data object (``ImageData``, ``TextData``) gives ``classes``, ``keys(split)``, ``labels(split)``,
``dataset(split, train, epoch)``, ``transform_id(train)`` and ``collate``; optionally
``train_batches(batch_size, seed, order)`` (text: length-sorted buckets). Imbalanced classes:
``train.class_weights`` (inverse-frequency loss weights, also in the L-BFGS head) and
``train.balanced_sampling`` (every class equally likely in the training batches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning_fabric import Fabric
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from headstart.config import RunConfig
from headstart.core import loop, strategies
from headstart.core.backbones.fusion import batchnorm_folded
from headstart.core.cache import FeatureCache
from headstart.core.scratch import Scratch
from headstart.errors import ConfigError
from headstart.progress import progress_bar, say
from headstart.tasks.classification.metrics import classification_report, selection_metric
from headstart.tasks.classification.model import head_logits
from headstart.tasks.classification.probe import LogisticFit, fit_head_cv, label_doubts


def inverse_frequency(counts: list[int]) -> torch.Tensor:
    """Loss weight per class, ``n / (classes x count)``: every class weighs as much in total."""
    c = torch.tensor(counts, dtype=torch.float).clamp(min=1)
    return c.sum() / (len(c) * c)


def balanced_draws(labels: torch.Tensor, seed: int) -> list[int]:
    """One epoch of item indices drawn with replacement, every class equally likely (seeded)."""
    weights = inverse_frequency(torch.bincount(labels).tolist())[labels]
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial(weights, len(labels), replacement=True, generator=g).tolist()


class CachedViews(Dataset):
    """Cached features of K views; each epoch picks one view per item (seeded)."""

    def __init__(self, views: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        self.views, self.labels = views, labels
        self.choice = torch.randint(views.shape[0], (views.shape[1],), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return self.views.shape[1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.views[self.choice[i], i], self.labels[i]  # a class index, or a multi-hot row (multi-label)


def predict_logits(fabric: Fabric, model: nn.Module, dataset: Dataset, batch_size: int, collate=None,
                   start: int = 0, desc: str = "Predicting", features: bool = False,
                   forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> Any:
    """Logits of a classifier over a dataset of ``(input, label)`` items; ``features``: ``(logits, features)``, the
    backbone's outputs (the head's inputs) too, from the same pass; ``forward(x) -> (logits, features)`` replaces
    that pass (one that also draws heat maps).

    The backbone's BatchNorms are folded into their convolutions for the pass, as the feature cache's extraction
    folds them (``loop.frozen_outputs``): under bf16 autocast the folded and unfolded networks round differently, and
    a model validated on cached features would otherwise predict its own validation images with other scores."""
    model.eval()
    model = model.to(fabric.device, memory_format=torch.channels_last)
    batches = loop.loader(dataset, batch_size, collate)
    example = loop.first_input(fabric, dataset, collate) if start == 0 else None  # folding from stage 0
    with batchnorm_folded(model.backbone, model.backbone.num_groups, example):
        return _logits(fabric, model, batches, start, desc, features, forward)


def _logits(fabric: Fabric, model: nn.Module, batches: Any, start: int, desc: str, features: bool,
            forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None) -> Any:
    if not features:
        return loop.run_batches(fabric, lambda x: head_logits(model.head, model.backbone(x, start=start)), batches,
                                desc)

    def both(x: Any) -> torch.Tensor:
        if forward is not None:
            return torch.cat(forward(x), 1)
        pooled = model.backbone(x, start=start)
        return torch.cat([head_logits(model.head, pooled), pooled.float()], 1)

    out = loop.run_batches(fabric, both, batches, desc, gradients=forward is not None)
    n = model.head[-1].out_features
    return out[:, :n], out[:, n:]


class ClassificationSteps:
    """The loop's ``Steps`` for a ``TransferClassifier`` on image or text data."""

    scores = ("loss", "accuracy", "macro_f1")

    def __init__(self, data: Any, cfg: RunConfig) -> None:
        self.data, self.cfg = data, cfg
        self.train_labels, self.val_labels = data.labels("train"), data.labels("val")
        self.num_train, self.num_val = len(self.train_labels), len(self.val_labels)
        self.train_counts = self.class_counts(self.train_labels)
        self.metric = self.selection_metric()
        self.criterion = self.make_criterion()
        # training items whose label the held-out heads doubt; None until ``solve`` fits a head by cross-validation
        self.doubts: list[tuple[int, int, float, float]] | None = None
        self.caches: list[FeatureCache] = []
        self.train_views: torch.Tensor | None = None
        self.head_rows: torch.Tensor | None = None  # [plain, *train_views] for ``solve`` (train_views is a view of it)
        self.val_inputs: torch.Tensor | None = None
        self.timed_batches = getattr(data, "timed_batches", 1)  # batches an epoch's time is estimated from

    def class_counts(self, labels: torch.Tensor) -> list[int]:
        """Training items per class."""
        return torch.bincount(labels, minlength=len(self.data.classes)).tolist()

    def selection_metric(self) -> str:
        """The validation score that picks the best epoch."""
        return selection_metric(self.cfg.train.select_metric, self.train_counts)

    def make_criterion(self) -> nn.Module:
        """The training loss: cross-entropy, inverse-frequency weighted with ``train.class_weights``."""
        tc = self.cfg.train
        return nn.CrossEntropyLoss(weight=inverse_frequency(self.train_counts) if tc.class_weights else None,
                                   label_smoothing=tc.label_smoothing)

    def report(self, logits: torch.Tensor) -> dict[str, Any]:
        """The validation report of ``logits`` (its ``scores`` are logged each epoch)."""
        return classification_report(logits, self.val_labels, self.data.classes, self.train_counts)

    def fit_head(self, x: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, plain: torch.Tensor) -> LogisticFit:
        """The L-BFGS head on rows ``x`` (items' views: ``groups``; un-augmented rows: ``plain``), L2 by CV."""
        return fit_head_cv(x, labels, len(self.data.classes), groups, seed=self.cfg.train.seed,
                           class_weight=self.criterion.weight, plain=plain, scratch=Scratch.of(self.cfg.cache))

    def cut(self, model: nn.Module, phase: strategies.Phase) -> int:
        backbone = model.backbone
        if backbone.spec.weights is None or phase.trainable >= backbone.num_groups:
            return 0  # random initial weights change every epoch; nothing frozen
        cut = backbone.num_groups - phase.trainable
        if backbone.spec.modality == "text" and (cut < backbone.num_groups or phase.adapters):
            return 0  # text stages pass hidden states + masks: only pooled features are cached
        return cut

    def features(self, fabric: Fabric, model: nn.Module, split: str, cut: int, train: bool, view: int,
                 also: int = 0) -> torch.Tensor:
        """Outputs of backbone stages ``[0, cut)`` for a split (augmented ``view`` when ``train``), via the cache.

        ``also``: a lower cut whose outputs the same pass stores too (a later phase's, see ``Phase.prefetch``).
        """
        backbone, data, cfg = model.backbone, self.data, self.cfg

        def namespace(at: int) -> dict[str, Any]:
            return loop.feature_namespace(backbone.spec, cfg, at, data.transform_id(train), train, view)

        plain = ", plain texts" if backbone.spec.modality == "text" else ", plain images"
        what = f", view {view + 1}" if train else plain if split == "train" else ""
        out, cache = loop.frozen_outputs(
            fabric, cfg, backbone, cut, data.keys(split), data.dataset(split, train=train, epoch=view), namespace(cut),
            lambda x: backbone.extract(x, cut), f"Extracting features ({split}{what})", data.collate,
            dtype=torch.float32 if cut == backbone.num_groups else torch.float16,
            side=(also, namespace(also)) if also else None, out_dtype=torch.float32)
        self.caches.append(cache)
        return out

    def prepare(self, fabric: Fabric, model: nn.Module, phase: strategies.Phase, cut: int,
                seconds: float | None = None) -> int | None:
        """The training rows (the plain images, then their augmented views) and the validation inputs.

        The solved head fits on all the rows (``head_rows``; ``train_views`` are the augmented ones); a phase that
        trains on cached features draws, each epoch, one row per item among the plain image and its views
        (``CachedViews``). Measured with ``partial:3`` on mobilenet_v2 (validation accuracy, views alone -> with the
        plain images among them): 600 digits 0.800 -> 0.875, 902 mirrored digits 0.641 -> 0.724, hymenoptera
        0.954 -> 0.954: the views' crops and colours are not what validation and prediction see.

        Each view is copied into one buffer as it is read: the features are in memory once, not twice as by stacking.
        Above ``cache.memory_mb`` that buffer (like each view read) is a memory-mapped scratch file (``core.scratch``).
        ``seconds`` (a time budget's share): the plain images are always read; an augmented view only when it and
        the validation pass still fit, at the cost per item the passes so far computed; cached items cost nothing.
        Returns the augmented views extracted.
        """
        self.train_views = self.val_inputs = self.head_rows = None
        if not cut:
            return None
        # without augmentation (texts) a training view is the plain items again: one, and no slot beside it
        augmented, solving = self.augmented, self.solves(model, phase, cut)
        plain = int(augmented)  # slot 0: the plain images
        # a phase's views: recorded (resume, refit) or cache.views; there may be none beside the plain images
        views = phase.views if phase.views is not None else min(self.cfg.cache.views, phase.epochs)
        views = views if augmented else 1
        # the later phase's cut, when its frozen outputs come from this phase's pass (auto's partial candidate)
        also = self.cut(model, strategies.Phase("prefetch", 1, phase.prefetch)) if phase.prefetch else 0
        also = also if 0 < also < cut == model.backbone.num_groups else 0
        clock = loop.ExtractionClock(fabric, seconds, self.num_train, self.num_val, self.caches)
        rows, done = None, 0
        # (augmented, view, side cut) of each training pass; unaugmented items (texts) are read under the plain
        # namespace: cached once, whatever train.seed is
        passes = [(False, 0, also)] if plain else []
        for v, (train, view_index, side) in enumerate([*passes, *[(augmented, v, also) for v in range(views)]]):
            if v >= 1 and not clock.fits():  # at least the plain images (unaugmented items: their one pass)
                kept = ("the plain images" + (f" and {done} view(s)" if done else "")) if plain else f"{done} view(s)"
                say(f"Feature extraction: {done} of {views} augmented views of the {self.num_train} training "
                    f"{self.noun(model)} fit the time budget ({clock.describe()}): the "
                    f"{'head fits on' if solving else 'phase trains on'} {kept} (--time-budget or cache.views to choose)")
                break
            features = clock.timed(self.features, fabric, model, "train", cut, train, view_index, side)
            if views == 1 and not plain:
                rows = features[None]  # nothing to stack
            else:
                if rows is None:  # big: a mapped file
                    rows = Scratch.of(self.cfg.cache).empty((plain + views, *features.shape), features.dtype)
                rows[v] = features
            done += int(v >= plain)
            del features
        rows = rows[: plain + done]
        self.train_views, self.head_rows = (rows[plain:], rows) if solving and plain else (rows, None)
        self.val_inputs = self.features(fabric, model, "val", cut, False, 0, also)
        return done if augmented else None

    @staticmethod
    def noun(model: nn.Module) -> str:
        """What the items are called in messages."""
        return "texts" if model.backbone.spec.modality == "text" else "images"

    @property
    def augmented(self) -> bool:
        """Whether training items are augmented (images), so that a cached training view differs from the plain item."""
        return self.data.transform_id(True) != self.data.transform_id(False)

    def solves(self, model: nn.Module, phase: strategies.Phase, cut: int) -> bool:
        """Whether ``solve`` fits this phase's head (L-BFGS on the pooled features of a linear phase)."""
        return self.cfg.train.head_solver == "lbfgs" and not phase.trainable and cut == model.backbone.num_groups

    def solve(self, fabric: Fabric, model: nn.Module, phase: strategies.Phase, cut: int) -> dict[str, float] | None:
        """With ``train.head_solver=lbfgs`` (the default), a linear phase on cached pooled features fits the head to convergence.

        Multinomial logistic regression over every training item, un-augmented and in each cached view (texts: the
        items alone), its L2 strength chosen by 5-fold cross-validation (views of one item stay in one fold); it
        warm-starts any fine-tuning phase after it.
        """
        if not self.solves(model, phase, cut):
            return None
        # the un-augmented images with their augmented views: on 300 tiny digits the augmented views alone
        # reached 0.70 and with the plain images 0.85, as scikit-learn's LogisticRegressionCV on the plain ones.
        # [plain, *train_views] is one buffer (``prepare``): no copy of the views here; texts: the plain items
        x = self.head_rows if self.head_rows is not None else self.train_views
        views, n = x.shape[0], x.shape[1]
        labels = self.train_labels.repeat(views, *[1] * (self.train_labels.dim() - 1))
        fit = self.fit_head(x.flatten(0, 1), labels, torch.arange(n).repeat(views), torch.arange(views * n) < n)
        linear = model.head[-1]
        with torch.no_grad():
            linear.weight.copy_(fit.weight.to(linear.weight))
            linear.bias.copy_(fit.bias.to(linear.bias))
        rows = (f"the {n} training {self.noun(model)}" if views == 1 else
                f"the plain images and {views - 1} augmented view(s) of each" if fit.augmented else
                "the plain images only: cross-validation found the augmented views hurt here")
        say(f"Linear head fitted by L-BFGS to convergence on {rows}: L2 {fit.l2:g} chosen by cross-validation "
            f"(held-out {fit.cv_metric} per L2: {fit.cv_accuracy}" + (f"; plain images only: {fit.cv_accuracy_plain}"
                                                                if fit.cv_accuracy_plain else "") + ")")
        if fit.held_out is not None:  # said once the run is done (``ClassifierEstimator._finish``)
            self.doubts = label_doubts(fit.held_out, self.train_labels)
        return {"loss": fit.train_loss, "head_l2": fit.l2, "head_augmented": fit.augmented}

    def train_loader(self, fabric: Fabric, cut: int, epoch: int, seed: int) -> DataLoader:
        tc, data = self.cfg.train, self.data
        order = None
        size = tc.batch_size * fabric.world_size  # the global batch; loop.loader gives each device its part
        if tc.balanced_sampling:
            if fabric.world_size > 1:
                raise ConfigError("train.balanced_sampling draws the batches on one device; with several devices use "
                                  "train.class_weights=true instead")
            order = balanced_draws(self.train_labels, seed)
        if hasattr(data, "train_batches"):
            batches = data.train_batches(size, seed, order)
        elif order is not None:
            batches = [order[i: i + size] for i in range(0, len(order), size)]
        else:
            batches = None
        if cut:
            batches_ = loop.loader(CachedViews(self.train_views, self.train_labels, seed), tc.batch_size, None, seed,
                                   fabric=fabric, batches=batches)
        else:
            # data.augment_on: the loader's transform, or uint8 crops + jitter factors that train_step finishes
            where = self.cfg.data.augment_on
            on_device = where == "device" or (where == "auto" and loop.on_cuda(fabric))
            if on_device and not hasattr(data, "device_dataset"):
                if where == "device":
                    raise ConfigError("data.augment_on=device augments image batches on the device; this data has no "
                                      "image augmentation (texts): use data.augment_on=auto or loader")
                on_device = False
            self.batch_augment = data.batch_augment() if on_device else None
            dataset = data.device_dataset("train", epoch) if on_device else data.dataset("train", train=True,
                                                                                          epoch=epoch)
            batches_ = loop.loader(dataset, tc.batch_size, data.collate, seed, self.cfg.data.num_workers, fabric,
                                   batches=batches)
        return fabric.setup_dataloaders(batches_, use_distributed_sampler=False)

    def train_step(self, model: nn.Module, batch: Any, cut: int) -> tuple[torch.Tensor, dict, int]:
        x, y = batch
        augment = getattr(self, "batch_augment", None)  # set by train_loader: data.augment_on=device
        if augment is not None and not cut:  # uint8 crops and jitter factors, finished per batch here
            x = augment(x)
        return self.criterion(model(loop.channels_last(x), start=cut).float(), y), {}, len(y)

    def validate(self, fabric: Fabric, model: nn.Module, cut: int) -> tuple[dict[str, float], torch.Tensor]:
        """Scores and logits of the validation split; on several devices each predicts its share (``gather_split``)."""
        n = self.num_val

        def compute(items: range) -> torch.Tensor:
            note = loop.share_note(fabric, items, n)
            if cut:  # the head on cached features: a bar only to name this device's share
                model.eval()
                chunks = self.val_inputs[items.start: items.stop].split(256)
                with torch.inference_mode(), progress_bar("Validating" + note, len(chunks) if note else 0) as advance:
                    out = []
                    for chunk in chunks:
                        out.append(model(fabric.to_device(chunk), start=cut).float().cpu())
                        advance()
                return torch.cat(out)
            dataset = self.data.dataset("val", train=False, epoch=0)
            return predict_logits(fabric, model, dataset if len(items) == n else Subset(dataset, items),
                                  loop.inference_batch_size(self.cfg, fabric, model.backbone.spec.modality),
                                  self.data.collate, desc="Validating" + note)

        logits = loop.gather_split(fabric, n, compute)
        report = self.report(logits)
        return {k: report[k] for k in self.scores}, logits
