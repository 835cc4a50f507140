"""DICOM files, as scanners and PACS exports write them: read as their viewer shows them (modality LUT, the
file's window, MONOCHROME1 inverted), found in class folders with or without a .dcm name, trained on,
predicted, and refused with a reason when they hold no single image (multi-frame, RT plans, damaged files)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, needs_shared, write_dicom
from PIL import Image
from typer.testing import CliRunner

from headstart.tasks.image.decode import image_header, is_image_file, open_image, to_rgb, unreadable_reason

pydicom = pytest.importorskip("pydicom")
SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"  # real files from scanners, shipped with pydicom
BLOOD = SHARED / "blood_cells"


def test_scanner_files_read_as_a_viewer_shows_them():
    # a CT: values are Hounsfield units (stored value + Rescale Intercept -1024), kept for windowing (no window given)
    ct = pydicom.dcmread(SAMPLES / "CT_small.dcm")
    image = open_image(SAMPLES / "CT_small.dcm")
    assert image.mode == "F" and image.size == (128, 128)
    hu = np.asarray(image)
    assert hu.min() == ct.pixel_array.min() - 1024 and hu.max() == ct.pixel_array.max() - 1024
    assert image_header(SAMPLES / "CT_small.dcm") == ("DICOM", 128, 128)
    # an MR with Window Center 600 / Width 1600: 8-bit as the file says to show it
    mr = pydicom.dcmread(SAMPLES / "MR_small.dcm")
    shown = np.asarray(open_image(SAMPLES / "MR_small.dcm"))
    expected = np.clip(((mr.pixel_array - 599.5) / 1599 + 0.5) * 255, 0, 255)
    assert shown.dtype == np.uint8 and np.abs(shown - expected).max() <= 0.5 + 1e-6
    # compressed copies of the same MR decode to the same image (RLE by pydicom, JPEG-LS by the dicom extra)
    assert np.array_equal(np.asarray(open_image(SAMPLES / "MR_small_RLE.dcm")), shown)
    # the report's thumbnails of misclassified items show scans too (a CT's values windowed to be seen)
    import base64
    import io

    from headstart.core.report.html_report import thumbnail_uri

    uri = thumbnail_uri(SAMPLES / "CT_small.dcm", size=64)
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert thumb.shape == (64, 64, 3) and thumb.std() > 20
    # colour: palette and YBR become RGB
    assert open_image(SAMPLES / "examples_palette.dcm").mode == "RGB"
    ybr = open_image(SAMPLES / "SC_ybr_full_422_uncompressed.dcm")
    assert ybr.mode == "RGB" and to_rgb(ybr).size == (100, 100)


def test_files_without_a_single_image_are_refused_with_their_reason():
    def reason(name: str) -> str:
        with pytest.raises(Exception) as info:
            open_image(SAMPLES / name)
        return unreadable_reason(info.value)

    assert "multi-frame DICOM file (30 frames" in reason("examples_ybr_color.dcm")
    assert "DICOM file with no image (a RTPLAN object)" in reason("rtplan.dcm")
    assert "damaged DICOM file" in reason("MR_truncated.dcm") and "less than expected" in reason("MR_truncated.dcm")


def test_the_data_line_says_how_dicom_files_were_shown(tmp_path):
    from headstart.tasks.image.data import Sample
    from headstart.tasks.image.dataset import ImageStore

    pixels = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32)
    files = [write_dicom(tmp_path / "a.dcm", pixels, window=(512, 1024)), write_dicom(tmp_path / "b.dcm", pixels),
             write_dicom(tmp_path / "c.dcm", pixels, window=(512, 1024)), SAMPLES / "examples_palette.dcm"]
    store = ImageStore([Sample(f, 0) for f in files], short_side=32, interpolation="bilinear")
    assert store.dicom == {"own window": 2, "stored values": 1, "colour": 1}
    assert store.formats == {"DICOM": 4}  # one format: no "formats differ" warning
    note = store.read_note()
    assert note.startswith("; DICOM: 2 shown with their own window") and "1 as stored values" in note


def test_monochrome1_is_inverted_so_dense_is_white_either_way(tmp_path):
    pixels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 4096)
    for window in (None, (2048, 4096)):
        two = open_image(write_dicom(tmp_path / "m2.dcm", pixels, window=window))
        one = open_image(write_dicom(tmp_path / "m1.dcm", pixels, "MONOCHROME1", window=window))
        a, b = np.asarray(to_rgb(two), dtype=int), np.asarray(to_rgb(one), dtype=int)
        assert np.corrcoef(a[..., 0].ravel(), b[..., 0].ravel())[0, 1] < -0.99  # the same image, negated
        assert abs((a + b).mean() - 255) < 2


def test_pacs_names_without_a_suffix_are_images_but_dicomdir_and_other_files_are_not(tmp_path):
    pixels = np.zeros((8, 8), dtype=np.uint16)
    assert is_image_file(write_dicom(tmp_path / "IM000001", pixels))
    assert is_image_file(write_dicom(tmp_path / "1.2.840.113619.2.55.3.504", pixels))
    assert not is_image_file(write_dicom(tmp_path / "DICOMDIR", pixels))
    (tmp_path / "notes").write_text("not an image")
    (tmp_path / "1.2.3").write_bytes(b"\0" * 200)
    assert not is_image_file(tmp_path / "notes") and not is_image_file(tmp_path / "1.2.3")


def _as_scanner_export(src: Path, dst: Path, per_class: int) -> list[Path]:
    """``per_class`` crops of each class of ``src`` as 12-bit greyscale DICOM (Rescale Intercept -1024, a window that
    shows them), named as exports name them: ``.dcm`` files and, in one class, UIDs without a suffix."""
    written = []
    for cls in sorted(p.name for p in src.iterdir() if p.is_dir()):
        (dst / cls).mkdir(parents=True)
        for i, f in enumerate(sorted((src / cls).iterdir())[:per_class]):
            grey = np.asarray(Image.open(f).convert("L"), dtype=np.uint16)
            stored = grey * 12 + 300  # 300..3360 of 0..4095, shown by its window
            name = f"1.2.826.0.1.3680043.8.498.{i + 1}" if cls == "WBC" else f"{f.stem}.dcm"
            written.append(write_dicom(dst / cls / name, stored, intercept=-1024, window=(1830 - 1024, 3200)))
    return written


@needs_shared(BLOOD)
def test_a_folder_of_dicom_scans_trains_predicts_and_reports_what_it_skipped(tmp_path, session_cache):
    from headstart.cli import app

    data = tmp_path / "scans"
    _as_scanner_export(BLOOD / "train", data / "train", per_class=24)
    _as_scanner_export(BLOOD / "val", data / "val", per_class=12)
    shutil.copy(SAMPLES / "examples_ybr_color.dcm", data / "train" / "RBC" / "cine.dcm")  # 30 frames: skipped
    shutil.copy(SAMPLES / "rtplan.dcm", data / "train" / "RBC" / "plan.dcm")  # no pixels: skipped
    write_dicom(data / "train" / "DICOMDIR", np.zeros((8, 8), dtype=np.uint16))  # an export's index: not an image
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", str(data), "--out", str(run), "--strategy", "linear", "--model",
                                   "mobilenet_v2", "cache.views=1"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    val = metrics["val"]
    assert val["accuracy"] >= val["baseline"]["accuracy"] + 0.3, val  # 36 val scans, 3 classes
    skipped = (run / "skipped.txt").read_text()
    assert "cine.dcm" in skipped and "multi-frame" in skipped and "plan.dcm" in skipped, skipped
    assert "DICOMDIR" not in skipped

    # predict reads .dcm files and suffixless PACS names, as in training
    wbc = sorted((data / "val" / "WBC").iterdir())
    res = CliRunner().invoke(app, ["predict", str(run), str(wbc[0]), str(data / "val" / "RBC"), "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("["):])
    assert len(rows) == 1 + 12 and {r["label"] for r in rows} <= {"Platelets", "RBC", "WBC"}
    assert sum(r["label"] == "RBC" for r in rows[1:]) >= 8, rows
    assert os.path.basename(rows[0]["path"]) == wbc[0].name


CAMVID, BCCD = SHARED / "camvid", SHARED / "bccd"


def _rgb_dicom(jpg: Path, path: Path) -> Path:
    return write_dicom(path, np.asarray(Image.open(jpg).convert("RGB")), "RGB", bits=8)


@needs_shared(CAMVID)
@needs_shared(BCCD)
def test_detection_and_segmentation_layouts_read_dicom_images_as_their_pixels(tmp_path):
    from headstart.tasks.detection import data as det_data
    from headstart.tasks.detection.task import load_original, original_size
    from headstart.tasks.segmentation import data as seg_data
    from headstart.tasks.segmentation.transforms import read_image

    # segmentation: images/ + masks/ + classes.txt with the images as .dcm (the masks stay PNG)
    seg = tmp_path / "seg"
    seg.mkdir()
    shutil.copy(CAMVID / "classes.txt", seg / "classes.txt")
    for split in ("train", "val"):
        (seg / "images" / split).mkdir(parents=True)
        shutil.copytree(CAMVID / "masks" / split, seg / "masks" / split)
        for jpg in sorted((CAMVID / "images" / split).glob("*.jpg")):
            _rgb_dicom(jpg, seg / "images" / split / f"{jpg.stem}.dcm")
    splits = seg_data.discover(seg)
    assert len(splits.train) == 123 and len(splits.val) == 51 and not splits.skipped
    sample = splits.val[0]
    jpg = CAMVID / "images" / "val" / f"{sample.image.stem}.jpg"
    assert np.array_equal(np.asarray(read_image(sample)), np.asarray(Image.open(jpg).convert("RGB")))

    # detection: Pascal VOC whose <filename> names a .jpg the export replaced by a .dcm
    voc = tmp_path / "voc"
    shutil.copytree(BCCD / "Annotations", voc / "Annotations")
    shutil.copytree(BCCD / "ImageSets", voc / "ImageSets")
    (voc / "JPEGImages").mkdir()
    for jpg in sorted((BCCD / "JPEGImages").glob("*.jpg")):
        _rgb_dicom(jpg, voc / "JPEGImages" / f"{jpg.stem}.dcm")
    as_dicom, as_jpeg = det_data.discover(voc), det_data.discover(BCCD)
    assert [s.path.stem for s in as_dicom.train] == [s.path.stem for s in as_jpeg.train]
    assert all(s.path.suffix == ".dcm" for s in as_dicom.train + as_dicom.val)
    first = as_dicom.train[0]
    assert np.array_equal(first.boxes.numpy(), as_jpeg.train[0].boxes.numpy())
    jpg = BCCD / "JPEGImages" / f"{first.path.stem}.jpg"
    assert original_size(first.path) == (640, 480)
    assert np.array_equal(np.asarray(load_original(first.path)), np.asarray(Image.open(jpg).convert("RGB")))
