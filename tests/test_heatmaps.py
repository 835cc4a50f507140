"""Where an image classifier looked (``heatmaps``): Grad-CAM on the backbone's stages.

The check that can fail is the one from the Grad-CAM paper's cat-and-dog figure: a picture holding an ant photo on
one side and a bee photo on the other. An ants-and-bees model (EfficientNet-Lite0 features, a linear head) must put
the heat of "ants" on the ant and the heat of "bees" on the bee, whichever side each is on. Then the user's ways in:
``predict --save-heatmaps`` and report.html's mistakes; and every backbone family (convolutional maps, transformer
tokens) gets a map.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import HYMENOPTERA, hymenoptera_subset, needs_shared, train_cli
from PIL import Image

from headstart.tasks.image import heatmaps


@pytest.fixture(scope="module")
def ants_and_bees(tmp_path_factory, session_cache) -> Path:
    """A linear-head ants-and-bees run trained from the command line on 60 + 30 photos per class."""
    if not HYMENOPTERA.exists():
        pytest.skip(f"{HYMENOPTERA} is absent (the ../shared data folder)")
    root = tmp_path_factory.mktemp("heat")
    data = hymenoptera_subset(root / "data", {"train": 60, "val": 30}, link=True)
    train_cli(data, root / "run", "--strategy", "linear", "cache.views=1")
    return root / "run"


def _side_by_side(left: Path, right: Path, size: int) -> Image.Image:
    picture = Image.new("RGB", (size, size))
    for i, path in enumerate((left, right)):
        picture.paste(Image.open(path).convert("RGB").resize((size // 2, size)), (i * size // 2, 0))
    return picture


@needs_shared(HYMENOPTERA)
def test_the_heat_of_each_class_lies_on_its_insect(ants_and_bees):
    from headstart import ImageClassifier
    from headstart.tasks.image.transforms import eval_transform

    clf = ImageClassifier.load(ants_and_bees)
    spec = clf.model_.backbone.spec
    # validation photos the run never saw (the subset holds the first 30 of each class)
    ants = sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[-10:]
    bees = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[-10:]
    half = spec.input_size // 2
    pictures, ant_left = [], []
    for ant, bee in zip(ants, bees):
        for left, right, is_ant_left in ((ant, bee, True), (bee, ant, False)):
            pictures.append(eval_transform(spec)(_side_by_side(left, right, spec.input_size)))
            ant_left.append(is_ant_left)
    x = torch.stack(pictures)
    shares = {}
    for name in ("ants", "bees"):
        found = heatmaps.grad_cam(clf.model_, x, torch.full((len(x),), clf.classes_.index(name)))
        assert found.heat.shape == (len(x), spec.input_size, spec.input_size)
        assert float(found.heat.min()) >= 0 and float(found.heat.amax(dim=(1, 2)).min()) == pytest.approx(1.0)
        assert found.stage == clf.model_.backbone.num_groups - 1  # a CNN's last map
        left = found.heat[:, :, :half].sum(dim=(1, 2)) / found.heat.sum(dim=(1, 2))
        on_ant = torch.where(torch.tensor(ant_left), left, 1 - left)
        shares[name] = on_ant if name == "ants" else 1 - on_ant  # the heat's share on that class's own insect
    for name, share in shares.items():
        assert float(share.mean()) > 0.65, (name, share)  # measured: 0.83 (ants), 0.86 (bees)
        assert int((share > 0.5).sum()) >= 0.75 * len(share), (name, share)


@needs_shared(HYMENOPTERA)
def test_the_map_is_captums_grad_cam_of_the_last_stage(ants_and_bees):
    """Where both apply (a convolutional map that one module outputs), the map is the field's reference: captum's
    ``LayerGradCam`` on that module, scaled to the image and to a peak of 1."""
    captum = pytest.importorskip("captum.attr", reason="captum is a test dependency: pip install -e '.[dev]'")
    from headstart import ImageClassifier
    from headstart.tasks.image.transforms import eval_transform

    model = ImageClassifier.load(ants_and_bees).model_.eval()
    backbone = model.backbone
    spec = backbone.spec
    photos = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[-3:] + sorted((HYMENOPTERA / "val" / "ants").glob(
        "*.jpg"))[-3:]
    x = torch.stack([eval_transform(spec)(Image.open(p).convert("RGB").resize((spec.resize_size,) * 2))
                     for p in photos])
    ours = heatmaps.grad_cam(model, x)
    layer = backbone.body.get_submodule(spec.groups[-1].prefixes[-1])  # the module ending the last stage
    theirs = captum.LayerGradCam(model, layer).attribute(x, target=ours.logits.argmax(1), relu_attributions=True)
    theirs = captum.LayerAttribution.interpolate(theirs, tuple(x.shape[-2:]), "bilinear")[:, 0].detach()
    theirs = theirs / theirs.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    assert torch.allclose(ours.heat, theirs, atol=1e-4)


@needs_shared(HYMENOPTERA)
def test_predict_saves_a_heat_map_per_image_and_predicts_as_without(ants_and_bees, tmp_path):
    from typer.testing import CliRunner

    from headstart.cli import app

    photos = sorted((HYMENOPTERA / "val" / "bees").glob("*.jpg"))[-4:]
    args = ["predict", str(ants_and_bees), *map(str, photos), "--format", "json"]
    res = CliRunner().invoke(app, [*args, "--save-heatmaps", str(tmp_path / "heat")])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout[res.stdout.index("["):res.stdout.rindex("]") + 1])
    assert [Path(r["heatmap"]).name for r in rows] == [f"{p.stem}_heatmap.png" for p in photos]
    for r in rows:
        with Image.open(r["heatmap"]) as shown:
            assert shown.size == (224, 224) and shown.mode == "RGB"
    res = CliRunner().invoke(app, args)
    plain = json.loads(res.stdout[res.stdout.index("["):])
    assert "heatmap" not in plain[0]
    assert [r["label"] for r in rows] == [r["label"] for r in plain]  # the same pass predicts
    assert [r["probability"] for r in rows] == pytest.approx([r["probability"] for r in plain], abs=1e-4)
    assert [r["unfamiliar"] for r in rows] == [r["unfamiliar"] for r in plain]

    res = CliRunner().invoke(app, [*args, "--save-heatmaps", str(tmp_path / "x"), "--engine", "onnx"])
    assert res.exit_code == 2 and "drop --engine onnx" in res.output
    assert not (tmp_path / "x").exists()
    res = CliRunner().invoke(app, [*args, "--evidence"])  # the words of a text prediction: text runs only
    assert res.exit_code == 2 and "--evidence applies to text and text-multilabel runs" in " ".join(res.output.split())


def _section(html: str, anchor: str) -> str:
    part = html[html.index(f'id="{anchor}"'):]
    return part[:part.index("</section>")]


@needs_shared(HYMENOPTERA)
def test_report_shows_where_the_model_looked_beside_each_mistake_and_its_surest_hits(ants_and_bees):
    html = (ants_and_bees / "report.html").read_text()
    val = json.loads((ants_and_bees / "metrics.json").read_text())["val"]
    mistakes = _section(html, "sec-mistakes")
    shown = mistakes.count('class="card mistake')
    assert shown == min(12, round(val["num_samples"] * (1 - val["accuracy"])))
    assert mistakes.count('data-heat="1"') == shown and mistakes.count('class="card mistake heat"') == shown
    assert "Grad-CAM" in mistakes or not shown
    hits = _section(html, "sec-hits")  # the two surest right predictions of each class, with their heat maps
    assert hits.count('class="card mistake heat"') == hits.count('data-heat="1"') == 4
    assert hits.count("<b>ants</b>") == hits.count("true: ants") == 2 and hits.count("<b>bees</b>") == 2


@pytest.mark.parametrize("name, last", [("timm:vit_tiny_patch16_224", False), ("timm:convnext_atto", True),
                                        ("tv:resnet18", True)])
def test_every_backbone_family_gives_a_map(name, last):
    """Transformer tokens make a map too: a ViT pooled on its class token weighs its last block's input (its own
    output's patch tokens get no gradient); convolutional backbones weigh their last stage."""
    from headstart.core.backbones import registry
    from headstart.tasks.classification.model import TransferClassifier

    backbone = registry.create_backbone(name, False, None)  # the architecture alone: no download
    torch.manual_seed(0)
    model = TransferClassifier(backbone, 3)
    size = backbone.spec.input_size
    x = torch.randn(2, 3, size, size)
    model.train()
    found = heatmaps.grad_cam(model, x)
    assert model.training  # as it was: the map is drawn in eval mode
    assert found.stage == backbone.num_groups - (1 if last else 2)
    assert found.heat.shape == (2, size, size) and float(found.heat.std()) > 0.01
    with torch.no_grad():
        assert torch.allclose(found.logits, model.eval()(x), atol=1e-5)  # the map's pass predicts as the model does
