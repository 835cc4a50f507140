"""Phone photos: HEIC/HEIF (what iPhones take) and AVIF, read like JPEGs in training, predict and the server.

The photos are hymenoptera's, written in those formats by pillow-heif and Pillow as a phone or an export would.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import HYMENOPTERA, needs_shared, train_cli
from PIL import Image
from typer.testing import CliRunner

from headstart.tasks.image import decode

pytestmark = needs_shared(HYMENOPTERA)
ORIENTATION = 0x0112


def _photo(jpg: Path, fmt: str, rotated: bool = False, longest: int | None = None) -> bytes:
    """The photo in ``fmt``; ``rotated``: its pixels turned on their side with EXIF orientation 6 saying so,
    as a phone held upright stores them; ``longest``: shrunk to that longest side first (AVIF encodes slowly)."""
    image = Image.open(jpg).convert("RGB")
    if longest:
        image.thumbnail((longest, longest))
    exif = Image.Exif()
    if rotated:
        image = image.transpose(Image.Transpose.ROTATE_90)  # what orientation 6 turns back
        exif[ORIENTATION] = 6
    out = io.BytesIO()
    image.save(out, format=fmt, quality=90, exif=exif.tobytes())
    return out.getvalue()


def _write_photos(root: Path, counts: dict[str, int]) -> Path:
    """hymenoptera's first photos of each class, alternately as .HEIC and .avif (a phone's and a web export's),
    shrunk to 256 pixels (training sees 224)."""
    for split, n in counts.items():
        for cls in ("ants", "bees"):
            (root / split / cls).mkdir(parents=True)
            for i, jpg in enumerate(sorted((HYMENOPTERA / split / cls).glob("*.jpg"))[:n]):
                fmt, suffix = ("HEIF", ".HEIC") if i % 2 == 0 else ("AVIF", ".avif")
                (root / split / cls / f"{jpg.stem}{suffix}").write_bytes(_photo(jpg, fmt, rotated=i % 3 == 0,
                                                                                        longest=256))
    return root


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_decode_upright_with_the_pixels_of_the_jpeg(fmt):
    jpg = sorted((HYMENOPTERA / "train" / "bees").glob("*.jpg"))[3]
    upright = np.asarray(decode.open_image(jpg.read_bytes()).convert("RGB"), dtype=np.float32)
    for rotated in (False, True):
        data = _photo(jpg, fmt, rotated=rotated)
        image = decode.open_image(data)
        assert image.size == (upright.shape[1], upright.shape[0]), (fmt, rotated, image.size)
        assert decode.image_header(data) == (fmt, upright.shape[1], upright.shape[0])
        diff = np.abs(np.asarray(image.convert("RGB"), dtype=np.float32) - upright).mean()
        assert diff < 6, (fmt, rotated, diff)  # lossy re-encoding, not another picture (a wrong turn gives > 30)


def test_a_heic_photo_without_its_decoder_names_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(decode, "HEIF_READABLE", False)  # as where pillow-heif is not installed
    jpg = sorted((HYMENOPTERA / "train" / "ants").glob("*.jpg"))[0]
    damaged = _photo(jpg, "HEIF")[:64]  # the ISO header only: no plugin reads it either
    with pytest.raises(decode.CodecError, match="pip install pillow-heif") as caught:
        decode.open_image(damaged)
    assert "HEIC" in decode.unreadable_reason(caught.value)
    (tmp_path / "x.heic").write_bytes(damaged)
    with pytest.raises(decode.CodecError, match="iPhones"):
        decode.image_header(tmp_path / "x.heic")
    monkeypatch.setattr(decode, "HEIF_READABLE", True)
    with pytest.raises(Image.UnidentifiedImageError):  # the decoder is there: a damaged file is only damaged
        decode.open_image(damaged)


def test_a_folder_of_phone_photos_trains_and_predicts(tmp_path, session_cache):
    from headstart.cli import app

    data = _write_photos(tmp_path / "photos", {"train": 20, "val": 12})
    run = tmp_path / "run"
    val = train_cli(data, run, "--strategy", "linear", "cache.views=1")["val"]
    assert not (run / "skipped.txt").exists()
    assert val["num_samples"] == 24 and val["accuracy"] >= val["baseline"]["accuracy"] + 0.25, val

    res = CliRunner().invoke(app, ["predict", str(run), str(data / "val" / "bees"), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert {Path(r["path"]).suffix for r in rows} == {".HEIC", ".avif"} and len(rows) == 12
    assert sum(r["label"] == "bees" for r in rows) >= 8, rows


def test_videos_and_raw_files_in_class_folders_are_named_and_jfif_is_read(tmp_path):
    from headstart.tasks.image.data import discover

    data = _write_photos(tmp_path / "photos", {"train": 6, "val": 3})
    ants, bees = data / "train" / "ants", data / "train" / "bees"
    jpg = sorted((HYMENOPTERA / "train" / "bees").glob("*.jpg"))[10]
    (bees / "from_the_web.jfif").write_bytes(jpg.read_bytes())  # how browsers save some JPEGs
    (ants / "IMG_0007.MOV").write_bytes(b"\x00\x00\x00\x14ftypqt  " + bytes(64))  # a Live Photo's clip
    (bees / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    (ants / "DSC_0001.NEF").write_bytes(b"MM\x00*" + bytes(64))  # a camera's RAW photo
    for sidecar in ("IMG_0007.AAE", "Thumbs.db", "desktop.ini"):  # metadata beside photos: not worth a word
        (ants / sidecar).write_bytes(b"x")
    splits = discover(data, 0.0, 0)
    assert "from_the_web.jfif" in {s.path.name for s in splits.train} and len(splits.train) == 13
    note = next(n for n in splits.notes if "not images" in n)
    assert note.startswith("3 file(s) in the class folders are not images") and "1 .mov" in note, note
    assert "ffmpeg -i" in note and "RAW photos (.nef)" in note, note
    assert not any(s in note.lower() for s in (".aae", "thumbs", "desktop")), note
    assert decode.image_header(bees / "from_the_web.jfif")[0] == "JPEG"
