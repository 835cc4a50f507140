"""Images with little intensity range: 16-bit, float and low-range 8-bit files decode with their structure,
``data.intensity=auto`` windows them when most training images need it, and the choice travels in spec.json."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from headstart.core.backbones.spec import BackboneSpec
from headstart.tasks.image.data import discover
from headstart.tasks.image.dataset import ImageStore
from headstart.tasks.image.transforms import decode, intensity_issue, open_image


def _camera() -> np.ndarray:
    from skimage import data

    return data.camera()  # 512 x 512, 8-bit grey, a real photograph


def _old_decode(data: bytes | Path, short_side: int, interpolation: str) -> Image.Image:
    """``decode`` as it was before intensity handling (the reference for 8-bit files)."""
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    if image.format == "JPEG":
        image.draft("RGB", (2 * short_side, 2 * short_side))
    image.load()
    image = ImageOps.exif_transpose(image).convert("RGB")
    w, h = image.size
    scale = short_side / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _saved(array: np.ndarray, path: Path, **kw) -> Path:
    Image.fromarray(array).save(path, **kw)
    return path


def _structure(image: Image.Image, original: np.ndarray) -> tuple[float, int, np.ndarray]:
    grey = np.asarray(image)
    assert grey.dtype == np.uint8 and grey.shape[2] == 3
    grey = grey[..., 0].astype(np.float64)
    small = np.asarray(Image.fromarray(original).resize(image.size, Image.Resampling.BILINEAR), dtype=np.float64)
    return float(np.corrcoef(grey.ravel(), small.ravel())[0, 1]), len(np.unique(grey)), grey


@pytest.mark.parametrize("intensity", ["off", "window", "auto"])
def test_16bit_and_float_images_keep_their_structure(tmp_path, intensity):
    camera = _camera()
    files = {
        "16-bit PNG": _saved(camera.astype(np.uint16) * 257, tmp_path / "full16.png"),  # 0..65535
        "12-bit in 16-bit PNG": _saved(camera.astype(np.uint16) * 16, tmp_path / "twelve.png"),  # 0..4080
        "16-bit big-endian TIFF": _saved((camera.astype(np.uint16) * 240 + 2000).astype(">u2"), tmp_path / "b.tif"),
        "float TIFF in [0, 1]": _saved(camera.astype(np.float32) / 255, tmp_path / "unit.tif"),
        "float TIFF, any range": _saved(camera.astype(np.float32) * 3.5 - 400, tmp_path / "any.tif"),
        "32-bit integer TIFF": _saved(camera.astype(np.int32) * 1000 - 70_000, tmp_path / "int32.tif"),
    }
    assert Image.open(files["16-bit PNG"]).mode == "I;16"  # what convert("RGB") used to clip to white
    for what, path in files.items():
        assert intensity_issue(open_image(path.read_bytes(), 256)) is not None, what
        image = decode(path.read_bytes(), 256, "bilinear", intensity)
        assert image.mode == "RGB" and image.size == (256, 256), what
        corr, levels, grey = _structure(image, camera)
        assert corr > 0.9, (what, corr)
        assert levels > 2 and (grey < 255).mean() > 0.5, (what, levels)
        if intensity != "off" or "12-bit" not in what:
            assert grey.max() - grey.min() > 200, what  # windowed (or full range): uses 0..255
    # a 12-bit scan in a 16-bit file is dark but intact when kept raw: values / 257, not clipped
    raw = np.asarray(decode(files["12-bit in 16-bit PNG"], 256, "bilinear", "off"))
    assert 10 <= raw.max() <= 16


def test_low_range_8bit_image_is_windowed_to_its_levels(tmp_path):
    camera = _camera()
    path = _saved((camera // 64).astype(np.uint8), tmp_path / "four_levels.png")  # values 0..3
    assert "little range" in intensity_issue(open_image(path, 256))
    off = np.asarray(decode(path, 256, "bilinear", "off"))
    assert off.max() <= 3  # raw: nearly black
    windowed = decode(path, 256, "bilinear", "window")
    corr, levels, grey = _structure(windowed, camera)
    assert corr > 0.9 and levels > 2 and grey.min() == 0 and grey.max() == 255
    assert not (grey == 255).all()
    assert decode(path, 256, "bilinear", "auto") == windowed


def test_8bit_photos_decode_bit_identically_with_normalisation_off(tmp_path):
    from skimage import data

    astronaut = data.astronaut()  # 512 x 512 RGB photograph
    files = [
        _saved(astronaut, tmp_path / "photo.jpg", quality=90),  # 64 < 512 / 2: JPEG draft decoding
        _saved(astronaut, tmp_path / "photo.png"),
        _saved(_camera(), tmp_path / "grey.png"),
        _saved(np.dstack([astronaut, np.full(astronaut.shape[:2], 200, np.uint8)]), tmp_path / "alpha.png"),
    ]
    Image.fromarray(astronaut).convert("P").save(tmp_path / "palette.png")
    files.append(tmp_path / "palette.png")
    for path in files:
        for side in (64, 224, 300):
            old = np.asarray(_old_decode(_on_white(path), side, "bilinear"))
            assert np.array_equal(np.asarray(decode(path.read_bytes(), side, "bilinear", "off")), old), path.name
            assert np.array_equal(np.asarray(decode(path, side, "bilinear")), old), path.name
        assert intensity_issue(open_image(path, 224)) is None, path.name
        assert np.array_equal(np.asarray(decode(path, 224, "bilinear", "auto")),
                              np.asarray(_old_decode(_on_white(path), 224, "bilinear"))), path.name


def _on_white(path: Path) -> bytes:
    """The file's bytes; for a file with transparent pixels, its image composited on white (``decode.on_white``),
    written as PNG."""
    with Image.open(path) as image:
        if image.mode != "RGBA":
            return path.read_bytes()
        flat = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    out = io.BytesIO()
    flat.save(out, "PNG")
    return out.getvalue()


def test_preprocessing_key_and_spec_json_carry_the_intensity():
    spec = BackboneSpec(name="m", source="tv", arch="tv:m", weights=None)
    raw_key = spec.preprocessing_key()
    assert "intensity" not in raw_key  # raw decoding keeps the cache keys of earlier runs
    spec.extra["intensity"] = "off"
    assert spec.preprocessing_key() == raw_key
    spec.extra["intensity"] = "window"
    assert spec.preprocessing_key() != raw_key and spec.preprocessing_key()["intensity"] == "window"
    assert BackboneSpec.from_dict(json.loads(spec.to_json())).preprocessing_key() == spec.preprocessing_key()


def _low_range_digits(root: Path, classes=(0, 1), per_class: int = 20, levels: int = 3) -> Path:
    """scikit-learn digits as 8-bit PNGs whose values are 0..levels-1 (a scan that looks black)."""
    from sklearn.datasets import load_digits

    digits, kept = load_digits(), {}
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if label not in classes or kept.get(label, 0) >= per_class:
            continue
        kept[label] = kept.get(label, 0) + 1
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        pixels = np.rint(image * (levels - 1) / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((32, 32), Image.Resampling.NEAREST).save(root / str(label) / f"{i:04d}.png")
    return root


def test_store_auto_decides_from_training_images_and_rereads_consistently(digits_dir, tmp_path):
    low = _low_range_digits(tmp_path / "low", per_class=6)
    splits = discover(low, 0.5, 0)
    store = ImageStore(splits.train + splits.val, 64, "bilinear", intensity="auto")
    assert "windowed" in store.settle(splits.train) and store.intensity == "window"
    unbuffered = ImageStore(splits.train + splits.val, 64, "bilinear", budget_mb=0, intensity="window")
    for s in splits.train + splits.val:  # in memory or decoded again on demand: the same pixels
        assert np.array_equal(np.asarray(store.get(s.path)), np.asarray(unbuffered.get(s.path)))
        assert np.asarray(store.get(s.path)).max() == 255
    assert any("windowed" in w for w in store.warnings())
    assert not any("nearly uniform" in w for w in store.warnings())

    raw = ImageStore(splits.train + splits.val, 64, "bilinear", intensity="off")
    assert any("kept raw" in w for w in raw.warnings()) and any("nearly uniform" in w for w in raw.warnings())
    assert any("(data.intensity=off;" in w for w in raw.warnings())  # the user's own choice, named as such

    full = discover(digits_dir, 0.5, 0)  # ordinary 8-bit digits: nothing to window
    some = full.train[:10] + full.val[:10]
    normal = ImageStore(some, 64, "bilinear", intensity="auto")
    assert "raw values" in normal.settle(full.train[:10]) and normal.intensity == "off"
    for s in some[:5]:
        assert np.array_equal(np.asarray(normal.get(s.path)), np.asarray(_old_decode(s.path, 64, "bilinear")))

    # a minority of low-range training images: auto keeps raw values, and what auto windowed is decoded again
    mixed = [*full.train[:10], *splits.train[:3]]
    store = ImageStore(mixed, 64, "bilinear", intensity="auto")
    assert store.settle(mixed).startswith("[bold]Intensity[/] raw values") and store.intensity == "off"
    kept = [w for w in store.warnings() if "kept raw" in w]  # auto's choice, not one the user made
    assert len(kept) == 1 and "data.intensity=auto kept raw values" in kept[0] and "=off" not in kept[0], kept
    for s in splits.train[:3]:
        assert np.asarray(store.get(s.path)).max() <= 2


def test_low_range_scans_train_predict_and_reuse_the_window(tmp_path, session_cache):
    from headstart.tasks.image.task import ImageClassifier

    data = _low_range_digits(tmp_path / "scans")  # 2 classes x 20 PNGs, values 0..2
    run = tmp_path / "run"
    # the saved model is the validated one (no refit); fp32, so that the cached validation features and predict's
    # forward pass agree to 2e-4 (under bf16 autocast, folded and unfolded BatchNorms round differently)
    clf = ImageClassifier(model="mobilenet_v2", strategy="linear", epochs=5, cache_views=1, refit=False,
                          overrides={"data.val_fraction": 0.5, "device.precision": "32-true"}).fit(data, out=run)
    spec = json.loads((run / "spec.json").read_text())
    assert spec["backbone"]["extra"]["intensity"] == "window"
    assert clf.metrics_["intensity"] == "window"
    val = clf.metrics_["val"]
    assert val["accuracy"] >= val["baseline"]["accuracy"] + 0.25, val  # raw values: one class for everything

    loaded = ImageClassifier.load(run)
    assert loaded.model_.backbone.spec.extra["intensity"] == "window"
    files = [s.path for s in clf.splits_val_]
    got, probs = loaded.predict_proba(files)
    assert got == files
    torch.testing.assert_close(probs, clf.val_logits_.float().softmax(dim=1), atol=2e-4, rtol=0)
    assert loaded.evaluate(data)["accuracy"] >= val["baseline"]["accuracy"] + 0.25

    # advise decodes as training does: its probe sees the windowed scans and reads the run's cached features
    from headstart.evidence.advise import advise

    advice = advise(data, budget_s=30, models=["mobilenet_v2"], overrides={"device.precision": "32-true"})  # as trained
    assert advice["dataset"]["intensity"] == "window" and advice["dataset"]["images"]["low_range_fraction"] == 1.0
    assert "little intensity range" in advice["dataset"]["summary"]
    probe = advice["probes"][0]
    assert probe["cache"]["items_computed"] == 0 and probe["cache"]["items_served"] == 40, probe["cache"]
    assert probe["accuracy"] >= 0.75, probe  # raw values: every scan nearly black, one class for everything
