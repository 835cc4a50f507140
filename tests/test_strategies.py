import pytest
import torch

from headstart.config import TrainConfig
from headstart.core import strategies
from headstart.core.backbones import registry
from headstart.errors import ConfigError
from headstart.tasks.image.task import ImageClassifier


def test_plans():
    cfg = TrainConfig(epochs=4, head_epochs=6)
    assert strategies.plan("linear", 9, cfg) == [strategies.Phase("linear", 4, 0)]
    assert strategies.plan("partial:3", 9, cfg) == [strategies.Phase("partial:3", 4, 3)]
    assert [(p.epochs, p.trainable) for p in strategies.plan("lp-ft", 9, cfg)] == [(6, 0), (4, 9)]
    assert [(p.epochs, p.trainable) for p in strategies.plan("gradual", 9, cfg)] == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert [(p.epochs, p.trainable) for p in strategies.plan("gradual", 2, cfg)] == [(1, 0), (1, 1), (2, 2)]
    defaults = TrainConfig()
    assert strategies.plan("linear", 9, defaults)[0].epochs == 10
    assert [p.epochs for p in strategies.plan("lp-ft", 9, defaults)] == [10, 3]
    with pytest.raises(ConfigError, match="K must be between 1 and 9"):
        strategies.plan("partial:12", 9, cfg)
    with pytest.raises(ConfigError, match="Unknown strategy 'frozen'"):
        strategies.plan("frozen", 9, cfg)


def test_auto_is_the_default_and_fine_tuning_has_a_step_floor():
    defaults = TrainConfig()
    assert defaults.strategy == "auto" and defaults.head_solver == "lbfgs" and defaults.min_steps == 50
    auto = strategies.plan("auto", 9, defaults, steps_per_epoch=8)  # 250 images in batches of 32
    assert [(p.name, p.trainable, p.candidate) for p in auto] == [
        ("linear", 0, False), ("partial:3", 3, True), ("fine-tune", 9, True)]
    assert auto[1].epochs == auto[2].epochs == 7  # ceil(50 steps / 8 per epoch)
    assert auto[2].head_lr_scale == defaults.backbone_lr_ratio  # the solved head moves at the top group's LR
    assert [p.epochs for p in strategies.plan("lp-ft", 9, defaults, steps_per_epoch=100)] == [10, 3]  # 300 steps
    assert [p.epochs for p in strategies.plan("lp-ft", 9, defaults, steps_per_epoch=2)] == [10, 25]
    assert strategies.plan("lp-ft", 9, TrainConfig(epochs=1), steps_per_epoch=2)[1].epochs == 1  # given epochs win
    assert strategies.plan("linear", 9, defaults, steps_per_epoch=2)[0].epochs == 10  # no floor on frozen phases
    assert strategies.time_budget(defaults) == strategies.AUTO_BUDGET
    assert strategies.time_budget(TrainConfig(strategy="lp-ft")) == 0
    assert strategies.time_budget(TrainConfig(time_budget=20)) == 20


@pytest.mark.slow
def test_auto_respects_its_time_budget_and_never_ends_below_the_linear_head(digits_dir, tmp_path, session_cache):
    budget = 30.0
    clf = ImageClassifier(model="mobilenet_v2", time_budget=budget, cache_views=1).fit(digits_dir, out=tmp_path / "r")
    metrics = clf.metrics_
    assert metrics["strategy"] == "auto" and metrics["time_budget"] == budget
    assert metrics["train_seconds"] <= budget * 1.25, metrics["train_seconds"]
    phases = metrics["phases"]
    assert [p["phase"] for p in phases] == ["linear", "partial:3", "fine-tune"]
    linear = phases[0][f"best_val_{metrics['selection_metric']}"]
    assert metrics["val"][metrics["selection_metric"]] >= linear - 1e-6  # fine-tuning never ends below the head
    assert sum(p["kept"] for p in phases) == 1 and metrics["chosen"]["phase"] in {p["phase"] for p in phases}
    for p in phases[1:]:  # each candidate ran within the budget, or says why not
        assert p["epochs"] >= 1 or p["note"].startswith("skipped")
    # a phase's seconds hold its preparation too: the linear phase's are its head's solve (and any extraction),
    # not the milliseconds of its one validation; together the phases' seconds are the run's
    assert phases[0]["seconds"] > phases[0]["epoch_seconds"] + 0.1, phases[0]
    assert all(p["seconds"] >= p["epoch_seconds"] for p in phases), phases
    assert sum(p["seconds"] for p in phases) == pytest.approx(metrics["train_seconds"], abs=0.2), phases
    html = (clf.run_dir_ / "report.html").read_text()
    assert "Phases tried" in html and metrics["chosen"]["why"].split(":")[0] in html


def test_discriminative_learning_rates_decay_towards_the_stem():
    cfg = TrainConfig(lr=1e-3, backbone_lr_ratio=0.1, layer_decay=0.5)
    lrs = strategies.group_lrs(4, cfg)
    assert lrs == pytest.approx([1e-4 / 8, 1e-4 / 4, 1e-4 / 2, 1e-4])
    assert strategies.group_lrs(4, cfg, discriminative=False) == pytest.approx([1e-4] * 4)  # scratch: lr / 10


def _changed(before: dict, after: dict, names) -> dict[str, bool]:
    return {n: not torch.equal(before[n], after[n]) for n in names}


@pytest.mark.parametrize("cache", [False, True])
def test_partial_trains_exactly_the_last_k_groups(digits_dir, tmp_path, session_cache, cache):
    fresh = registry.create_backbone("mobilenet_v2")
    before = {k: v.clone() for k, v in fresh.body.state_dict().items()}
    # uncached: BatchNorm statistics train too (train.batchnorm=train); cached: the default keeps them
    batchnorm = "frozen" if cache else "train"
    clf = ImageClassifier(model="mobilenet_v2", strategy="partial:2", epochs=1, cache=cache, cache_views=1,
                          overrides={"train.lr": 1e-2, "train.backbone_lr_ratio": 1.0, "train.batchnorm": batchnorm})
    clf.fit(digits_dir, out=tmp_path / "run")
    backbone = clf.model_.backbone
    after = backbone.body.state_dict()
    g = backbone.num_groups
    for index in range(g):
        names = [n for n, _ in backbone.group_parameters(index)]
        changed = _changed(before, after, names)
        if index >= g - 2:
            assert all(changed.values()), f"group {index} should train: {changed}"
        else:
            assert not any(changed.values()), f"group {index} should stay frozen"
    # frozen groups keep their BatchNorm statistics; trainable groups update them only with train.batchnorm=train
    buffers = [n for n in after if n.endswith("running_mean")]
    frozen_bn = [n for n in buffers if backbone._module_groups[n.rsplit(".", 1)[0]] < g - 2]
    trained_bn = [n for n in buffers if backbone._module_groups[n.rsplit(".", 1)[0]] >= g - 2]
    assert frozen_bn and trained_bn
    assert not any(_changed(before, after, frozen_bn).values())
    if batchnorm == "train":
        assert all(_changed(before, after, trained_bn).values())
    else:
        assert not any(_changed(before, after, trained_bn).values())


def test_linear_keeps_every_backbone_tensor_including_batchnorm_statistics(digits_dir, tmp_path, session_cache):
    fresh = registry.create_backbone("efficientnet_lite0")
    before = {k: v.clone() for k, v in fresh.body.state_dict().items()}
    clf = ImageClassifier(strategy="linear", epochs=1, cache=False).fit(digits_dir, out=tmp_path / "run")
    after = clf.model_.backbone.body.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    head = clf.model_.head[1].weight
    torch.manual_seed(0)
    assert not torch.equal(head, torch.nn.Linear(head.shape[1], head.shape[0]).weight)  # the head did train


@pytest.mark.slow
def test_fine_tuning_keeps_pretrained_batchnorm_statistics_on_unusual_images(digits_dir, tmp_path, session_cache):
    """200 tiny greyscale digits: batch statistics of such images shift every feature the head learned."""
    data = digits_dir
    jump, fine_tuned, final = {}, {}, {}
    for batchnorm in ("frozen", "train"):
        clf = ImageClassifier(model="mobilenet_v2", strategy="lp-ft", epochs=3,
                              overrides={"train.batchnorm": batchnorm, "train.head_solver": "adamw"})
        clf.fit(data, out=tmp_path / batchnorm)
        head = clf.config.train.head_epochs
        jump[batchnorm] = clf.history_[head]["train_loss"] / clf.history_[head - 1]["train_loss"]
        fine_tuned[batchnorm] = max(h["val_accuracy"] for h in clf.history_[head:])
        final[batchnorm] = clf.metrics_["val_accuracy"]
    # the popular recipe (batch statistics) throws the trained head off: the loss jumps when fine-tuning starts
    assert jump["train"] > 2.0 > 1.6 > jump["frozen"], jump
    assert fine_tuned["frozen"] > fine_tuned["train"] + 0.1, fine_tuned
    assert final["frozen"] >= final["train"], final


def _history(phases: list[tuple[str, list[float]]]) -> list[dict]:
    rows, epoch = [], 0
    for name, scores in phases:
        for score in scores:
            epoch += 1
            rows.append({"epoch": epoch, "phase": name, "val_accuracy": score})
    return rows


def test_refit_replays_the_path_to_the_best_epoch():
    """--refit's recipe: each phase up to the epoch the next phase (or the end) started from, on a fresh schedule."""
    from types import SimpleNamespace

    from headstart.config import RunConfig
    from headstart.core.loop import FitState, refit_plan

    model = SimpleNamespace(backbone=SimpleNamespace(num_groups=9))
    steps = SimpleNamespace(num_train=250, metric="accuracy")
    # auto: candidates start from the best weights before them (partial's 2nd epoch), lp-ft from the last ones
    auto = FitState(best_epoch=8, history=_history([("linear", [0.70]), ("partial:3", [0.72, 0.80, 0.78, 0.79, 0.77]),
                                                    ("fine-tune", [0.81, 0.83, 0.82])]))
    plan = refit_plan(model, steps, RunConfig(), auto)
    assert [(p.name, p.epochs, p.trainable, p.candidate) for p in plan] == [
        ("linear", 1, 0, False), ("partial:3", 2, 3, False), ("fine-tune", 2, 9, False)]
    assert plan[2].head_lr_scale == RunConfig().train.backbone_lr_ratio  # the same phase, only shorter
    head_only = FitState(best_epoch=1, history=_history([("linear", [0.90]), ("partial:3", [0.85, 0.88])]))
    assert [(p.name, p.epochs) for p in refit_plan(model, steps, RunConfig(), head_only)] == [("linear", 1)]
    # the augmented views each phase extracted (a time budget may have cut them) are replayed as they were
    auto.phase_views = {"0": 2, "1": 4}
    assert [p.views for p in refit_plan(model, steps, RunConfig(), auto)] == [2, 4, None]
    lpft = FitState(best_epoch=12, history=_history([("linear", [0.5] * 10), ("fine-tune", [0.7, 0.9, 0.8])]))
    cfg = RunConfig(train={"strategy": "lp-ft", "head_solver": "adamw"})
    assert [(p.name, p.epochs) for p in refit_plan(model, steps, cfg, lpft)] == [("linear", 10), ("fine-tune", 2)]


def test_phases_after_a_perfect_validation_score_are_skipped(digits_dir, tmp_path, session_cache):
    """lp-ft whose head already gets every validation image right: the final weights are the best validation epoch's
    (ties to the earlier one), so fine-tuning could not be chosen; it is skipped, saying why, and refit keeps the head."""
    import shutil

    data = tmp_path / "zeros-and-ones"  # 0 against 1: a frozen ImageNet backbone separates them
    for digit in ("0", "1"):
        shutil.copytree(digits_dir / digit, data / digit)
    clf = ImageClassifier(model="mobilenet_v2", strategy="lp-ft", epochs=3, cache_views=1).fit(data, out=tmp_path / "r")
    m = clf.metrics_
    assert m["val_accuracy"] == 1.0 and [r["phase"] for r in clf.history_] == ["linear"]
    linear, fine = m["phases"]
    assert linear["kept"] and fine["epochs"] == 0 and not fine["kept"]
    assert fine["note"].startswith("skipped: validation accuracy is already 1.0"), fine
    assert [p["phase"] for p in m["refit"]["recipe"]] == ["linear"]  # class folders: refit on train + val


def test_a_tight_time_budget_extracts_fewer_views_and_refit_replays_them(digits_dir, tmp_path, capsys, monkeypatch):
    """auto's head extracts augmented views only while they fit half the time left (large data, slow machines): here
    none fit, the head fits the plain images alone, the run records 0 views and --refit extracts none either.
    Extracting the plain images alone takes more than the budget: the head's one (validated) epoch runs all the same,
    so the run ends with a model (it ended with none, and refit failed, when the budget stopped it)."""
    cache = tmp_path / "cache"  # nothing cached: the first pass is timed as computed
    monkeypatch.setenv("HEADSTART_QUIET", "0")  # the run's messages are what is checked
    clf = ImageClassifier(model="mobilenet_v2", time_budget=0.5, refit=True,
                          overrides={"cache.dir": str(cache)}).fit(digits_dir, out=tmp_path / "r")
    out = " ".join(capsys.readouterr().err.split())
    m = clf.metrics_
    linear = m["phases"][0]
    assert linear["phase"] == "linear" and linear["kept"] and linear["views"] == 0 and linear["epochs"] == 1, linear
    assert m["train_seconds"] > 0.5 and all(p["epochs"] == 0 and p["note"] for p in m["phases"][1:]), m["phases"]
    assert ">cached views</th>" in (clf.run_dir_ / "report.html").read_text()
    assert "0 of 4 augmented views of the 160 training images fit the time budget" in out, out
    assert "the head fits on the plain images (--time-budget or cache.views to choose)" in out
    assert "Linear head fitted by L-BFGS to convergence on the 160 training images" in out
    assert m["val_accuracy"] > 0.5  # the plain images alone still make a head (10 classes: baseline 0.1)
    assert [p["phase"] for p in m["refit"]["recipe"]] == ["linear"]
    # the refit's head, on train + validation: the plain images again, no view; its Data line says what it trains on
    assert "train 200 (train + validation, for the refit), val 40" in out, out
    assert "Linear head fitted by L-BFGS to convergence on the 200 training images" in out, out


def test_the_extraction_clock_takes_the_views_that_fit():
    """Each view after the first is extracted only when it and the validation pass fit the seconds left, at the cost
    per computed item of the passes so far; items served from the cache cost nothing."""
    import time
    from types import SimpleNamespace

    from headstart.core.loop import ExtractionClock

    fabric, caches = SimpleNamespace(world_size=1), []

    def computed(v: int) -> int:  # 10 training items computed in 0.05 s: 0.075 s for a view and 5 validation items
        time.sleep(0.05)
        caches.append(SimpleNamespace(computed=10))
        return v

    def cached(v: int) -> int:
        caches.append(SimpleNamespace(computed=0))
        return v

    assert ExtractionClock(fabric, None, 10, 5, caches).views(4, computed) == [0, 1, 2, 3]  # no budget
    assert ExtractionClock(fabric, 1.0, 10, 5, caches).views(4, computed) == [0, 1, 2, 3]
    assert ExtractionClock(fabric, 0.08, 10, 5, caches).views(4, computed) == [0]
    assert ExtractionClock(fabric, 0.08, 10, 5, caches).views(4, cached) == [0, 1, 2, 3]
