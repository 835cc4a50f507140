"""Segmentation data: CamVid read as it is, masks aligned through augmentation, VOC and COCO readers agreeing on
the same annotation, and the errors/skips of bad pairs (each naming the file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, needs_shared
from PIL import Image, ImageDraw

from headstart.core.backbones.spec import BackboneSpec
from headstart.errors import DataError
from headstart.tasks.segmentation.data import IGNORE_INDEX, discover, pixel_counts
from headstart.tasks.segmentation.transforms import SegmentationDataset, collate, eval_transform, train_transform

CAMVID = SHARED / "camvid"
pytestmark = needs_shared(CAMVID)
SPEC = BackboneSpec("test", "packaged", "none", None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def camvid():
    return discover(CAMVID)


def _frames(n: int) -> list[str]:
    return sorted(p.stem for p in (CAMVID / "images" / "train").glob("*.jpg"))[:n]


def _mask_folder(root: Path, train: int = 3, val: int = 2, flat: bool = False) -> Path:
    """images/ + masks/ (split folders unless ``flat``) linking real CamVid frames, and classes.txt."""
    stems = _frames(train + val)
    for i, stem in enumerate(stems):
        split = "" if flat else ("train" if i < train else "val")
        for kind, ext in (("images", ".jpg"), ("masks", ".png")):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
            (root / kind / split / f"{stem}{ext}").symlink_to(CAMVID / kind / "train" / f"{stem}{ext}")
    shutil.copy(CAMVID / "classes.txt", root / "classes.txt")
    return root


def _replace(link: Path, write) -> None:
    """Replace a linked file by a real one written by ``write(path)``."""
    link.unlink()
    write(link)


# ------------------------------------------------------------------------------------------ CamVid
def test_camvid_classes_splits_and_masks(camvid) -> None:
    names = (CAMVID / "classes.txt").read_text().split()
    assert camvid.layout == "masks" and camvid.classes == names and len(names) == 11
    assert (len(camvid.train), len(camvid.val), len(camvid.test)) == (123, 51, 0)
    assert camvid.skipped == []
    for s in camvid.train[::10] + camvid.val[::10]:
        mask = s.read_mask()
        with Image.open(s.image) as im:
            assert mask.shape == (im.height, im.width) == (360, 480)
        values = set(np.unique(mask).tolist())
        assert values <= set(range(11)) | {IGNORE_INDEX}, (s.mask, values)
    keys = [s.key for s in camvid.train + camvid.val]
    assert len(set(keys)) == len(keys) and all(len(k) == 40 for k in keys)
    known = next(s for s in camvid.train if s.image.name == "0001TP_006690.jpg")
    direct = np.bincount(np.asarray(Image.open(CAMVID / "masks" / "train" / "0001TP_006690.png")).ravel(), minlength=256)
    assert np.array_equal(np.bincount(known.read_mask().ravel(), minlength=256), direct)
    assert known.class_pixels == direct[:11].tolist() and direct[IGNORE_INDEX] > 0  # this frame has unlabelled pixels
    every = sum(np.bincount(np.asarray(Image.open(s.mask)).ravel(), minlength=256) for s in camvid.train)
    assert pixel_counts(camvid.train, 11) == every[:11].tolist()


def test_exif_rotated_image_needs_the_mask_of_its_displayed_pixels(camvid, tmp_path: Path) -> None:
    """EXIF orientation 6 (turn 90 degrees clockwise to display): the mask is of the displayed image."""
    root = _mask_folder(tmp_path, train=2, val=1)
    stem = _frames(1)[0]
    mask = np.asarray(Image.open(CAMVID / "masks" / "train" / f"{stem}.png"))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = root / "images" / "train" / f"{stem}.jpg"
    _replace(image, lambda p: Image.fromarray(_coded_image(camvid.train[0])).save(p.with_suffix(".png"), exif=exif))
    stored_mask = root / "masks" / "train" / f"{stem}.png"
    with pytest.raises(DataError, match=rf"{stem}.png: the mask is 480 x 360 .* is 360 x 480 .*after EXIF rotation"):
        discover(root)
    _replace(stored_mask, lambda p: Image.fromarray(np.ascontiguousarray(np.rot90(mask, k=-1))).save(p))
    sample = next(s for s in discover(root).train if s.image.stem == stem)
    x, m = SegmentationDataset([sample], eval_transform(SPEC, 360))[0]
    assert m.shape == (480, 360)
    red = ((x[0] * 0.25 + 0.5) * 255 / CODE).round().long()
    assert torch.equal(red[m != IGNORE_INDEX], m[m != IGNORE_INDEX])  # the pixels and the mask turned together


def test_flat_folders_get_a_seeded_split(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path, train=10, val=0, flat=True)
    a, b = discover(root, val_fraction=0.2, seed=0), discover(root, val_fraction=0.2, seed=0)
    assert (len(a.train), len(a.val)) == (8, 2) and a.val_held_out and a.layout == "masks"
    # the split made is how the data was read, not a warning: a clean folder passes `check --fail-on-warnings`
    assert a.read == ["validation: 2 pairs split off the 10 (20%, seed 0)"] and a.notes == [], (a.read, a.notes)
    assert [s.image for s in a.val] == [s.image for s in b.val]
    assert {s.image for s in a.train} | {s.image for s in a.val} == set((root / "images").glob("*.jpg"))
    other = [discover(root, val_fraction=0.2, seed=seed).val for seed in (1, 2, 3)]
    assert any({s.image for s in v} != {s.image for s in a.val} for v in other)


# ------------------------------------------------------------------------------------------ transforms
CODE = 20  # the red channel codes the class: index * 20 (0..200); ignore (255) -> 250


def _coded_image(sample) -> np.ndarray:
    """An image whose red channel encodes the mask, green a left-to-right ramp, blue a top-down ramp (never 0)."""
    mask = sample.read_mask()
    h, w = mask.shape
    red = np.where(mask == IGNORE_INDEX, 250, mask.astype(np.int32) * CODE)
    green = np.broadcast_to(np.linspace(0, 255, w), (h, w))
    blue = np.broadcast_to(np.linspace(30, 230, h)[:, None], (h, w))
    return np.stack([red, green, blue], axis=-1).round().astype(np.uint8)


def test_masks_follow_pixels_through_augmentation(camvid, tmp_path: Path) -> None:
    sample = camvid.train[0]
    coded = tmp_path / "coded.png"
    Image.fromarray(_coded_image(sample)).save(coded)
    sample = type(sample)(coded, key=sample.key, mask=sample.mask)
    light = SegmentationDataset([sample], train_transform(SPEC, 160, "light"), seed=3)
    standard = SegmentationDataset([sample], train_transform(SPEC, 160, "standard"), seed=3)
    flips, padded, sizes = set(), 0, set()
    for epoch in range(8):
        light.epoch = standard.epoch = epoch
        x, m = light[0]
        assert x.shape == (3, 160, 160) and m.shape == (160, 160) and m.dtype == torch.int64
        pixels = (x * 0.25 + 0.5) * 255  # undo the normalisation
        fill = (pixels < 0.5).all(dim=0)  # exactly 0 in every channel: padding (the blue ramp is never 0)
        assert (m[fill] == IGNORE_INDEX).all()
        padded += int(fill.any())
        # interior pixels (3 x 3 neighbourhood of one class): the image there encodes the same class
        mf = m[None, None].float()
        same = (torch.nn.functional.max_pool2d(mf, 3, 1, 1) == -torch.nn.functional.max_pool2d(-mf, 3, 1, 1))[0, 0]
        inside = same & (m != IGNORE_INDEX)
        decoded = (pixels[0] / CODE).round().long()
        agree = (decoded[inside] == m[inside]).float().mean().item()
        assert inside.sum() > 2000 and agree > 0.995, (epoch, agree)
        valid = ~fill
        r = int(valid.sum(dim=1).argmax())
        row = pixels[1, r][valid[r]]
        flips.add(bool(row[-1] < row[0]))  # the green ramp runs right-to-left after a flip
        sizes.add(round(float((row[-1] - row[0]).abs()) / max(1, len(row)), 1))  # ramp slope: the scale drawn
        xs, ms = standard[0]
        assert torch.equal(ms, m) and not torch.equal(xs, x)  # colour jitter: the image only, the mask as is
    assert flips == {True, False}, "horizontal flips should happen in some of 8 draws, not all"
    assert padded > 0 and len(sizes) > 2, (padded, sizes)
    light.epoch = 5
    again = SegmentationDataset([sample], train_transform(SPEC, 160, "light"), seed=3)
    again.epoch = 5
    assert all(torch.equal(a, b) for a, b in zip(light[0], again[0]))  # reproducible from (seed, epoch, pair)


def test_eval_transform_and_collate(camvid) -> None:
    ds = SegmentationDataset(camvid.val[:2], eval_transform(SPEC, 180))
    x, m = ds[0]
    assert x.shape == (3, 180, 240) and m.shape == (180, 240)  # shorter side to 180, aspect kept
    direct = torch.from_numpy(camvid.val[0].read_mask())[::2, ::2].long()  # 360x480 -> 180x240: nearest = every 2nd
    assert (m == direct).float().mean() > 0.97
    small = (x[:, :100, :120], m[:100, :120])
    images, masks = collate([(x, m), small])
    assert images.shape == (2, 3, 180, 240) and masks.shape == (2, 180, 240)
    assert (masks[1, 100:] == IGNORE_INDEX).all() and (images[1, :, :, 120:] == 0).all()
    assert torch.equal(masks[1, :100, :120], m[:100, :120])


# ------------------------------------------------------------------------------------------ VOC == COCO
def _runs(binary: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major, starting with zeros), computed here."""
    flat = binary.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat[0] else counts


def _voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


POLYGONS = [[(60, 200), (170, 170), (230, 260), (120, 330)], [(300, 40), (420, 70), (440, 150), (350, 180), (310, 120)]]


@pytest.fixture(scope="module")
def voc_and_coco(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """The same annotation of two CamVid frames (+ two polygon "cars") as a VOC folder and as COCO jsons."""
    from faster_coco_eval.core import mask as coco_mask

    names = (CAMVID / "classes.txt").read_text().split()
    tmp_path = tmp_path_factory.mktemp("voc-coco")
    voc, coco = tmp_path / "voc", tmp_path / "coco"
    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / d).mkdir(parents=True)
    (voc / "classes.txt").write_text("\n".join(["background", *names]) + "\n")
    cat_ids = {c: 3 * c + 5 for c in range(1, 12)}  # non-contiguous ids (their order is the class order), listed shuffled
    jsons = {}
    stems = _frames(2)
    for split, stem in zip(("train", "val"), stems):
        (voc / "ImageSets/Segmentation" / f"{split}.txt").write_text(stem + "\n")
        shutil.copy(CAMVID / "images/train" / f"{stem}.jpg", voc / "JPEGImages")
        (coco / "images" / split).mkdir(parents=True)
        shutil.copy(CAMVID / "images/train" / f"{stem}.jpg", coco / "images" / split)
        camvid_mask = np.asarray(Image.open(CAMVID / "masks/train" / f"{stem}.png"))
        target = np.where(camvid_mask == IGNORE_INDEX, IGNORE_INDEX, camvid_mask + 1).astype(np.uint8)  # 0 = background
        drawn = Image.fromarray(target)
        for poly in POLYGONS:
            ImageDraw.Draw(drawn).polygon(poly, fill=9)  # two "car" objects drawn over the scene (PIL's rasteriser)
        target = np.asarray(drawn)
        png = Image.fromarray(target, "P")
        png.putpalette(_voc_palette())
        png.save(voc / "SegmentationClass" / f"{stem}.png")
        polys = np.zeros_like(target, dtype=bool)
        for poly in POLYGONS:
            outline = Image.new("L", (480, 360))
            ImageDraw.Draw(outline).polygon(poly, fill=1)
            polys |= np.asarray(outline, dtype=bool)
        anns = []
        for c in sorted(set(np.unique(target).tolist()) - {0, IGNORE_INDEX}):
            region = np.asfortranarray((target == c) & ~polys).astype(np.uint8)
            if c % 2:  # compressed RLE (encoded by faster-coco-eval) for odd classes, uncompressed counts for even
                rle = coco_mask.encode(region)
                seg = {"size": [360, 480], "counts": rle["counts"].decode()}
            else:
                seg = {"size": [360, 480], "counts": _runs(region.astype(bool))}
            anns.append({"category_id": cat_ids[c], "segmentation": seg, "iscrowd": 0})
        for poly in POLYGONS:
            anns.append({"category_id": cat_ids[9], "segmentation": [[float(v) for xy in poly for v in xy]], "iscrowd": 0})
        ignore = np.asfortranarray(target == IGNORE_INDEX)
        anns.append({"category_id": cat_ids[1], "iscrowd": 1,
                     "segmentation": {"size": [360, 480], "counts": _runs(ignore)}})
        for i, ann in enumerate(anns):
            ann.update(id=i + 1, image_id=7, area=0, bbox=[0, 0, 1, 1])
        jsons[split] = {"images": [{"id": 7, "file_name": f"{stem}.jpg", "height": 360, "width": 480}],
                        "annotations": anns,
                        "categories": [{"id": cat_ids[c], "name": names[c - 1]} for c in (5, 2, 11, 1, 8, 3, 4, 6, 7, 9, 10)]}
    (coco / "annotations").mkdir()
    for split, content in jsons.items():
        (coco / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return voc, coco, names


def _agree_up_to_polygon_outlines(va: np.ndarray, vb: np.ndarray) -> None:
    assert va.shape == vb.shape == (360, 480)
    assert (va == 9).sum() > 20_000 and (va == IGNORE_INDEX).any()  # the polygons and the ignore region are there
    agree = (va == vb).mean()
    assert agree >= 0.99, agree  # tolerance: PIL vs COCO polygon rasterisation on the polygons' boundaries
    band = Image.new("L", (480, 360))
    for poly in POLYGONS:
        ImageDraw.Draw(band).line([*poly, poly[0]], fill=1, width=5)
    off_boundary = ~np.asarray(band, dtype=bool)
    assert np.array_equal(va[off_boundary], vb[off_boundary])  # exactly equal more than 2 px from an outline


def test_voc_and_coco_readers_give_the_same_masks(voc_and_coco) -> None:
    voc, coco, names = voc_and_coco
    from_voc, from_coco = discover(voc), discover(coco)
    assert (from_voc.layout, from_coco.layout) == ("voc", "coco")
    assert from_voc.classes == from_coco.classes == ["background", *names]
    for split in ("train", "val"):
        (a,), (b,) = getattr(from_voc, split), getattr(from_coco, split)
        assert a.image.name == b.image.name
        _agree_up_to_polygon_outlines(a.read_mask(), b.read_mask())


def test_voc_devkit_without_lists_and_a_coco_json_given_directly(voc_and_coco, tmp_path: Path) -> None:
    voc, coco, names = voc_and_coco
    nested = tmp_path / "VOCdevkit" / "VOC2012"
    shutil.copytree(voc, nested, ignore=shutil.ignore_patterns("ImageSets", "classes.txt"))
    (nested / "labelmap.txt").write_text("# label:color_rgb:parts:actions\n" + "".join(
        f"{n}:{i},0,0::\n" for i, n in enumerate(["background", *names])))
    from_voc = discover(tmp_path, val_fraction=0.5)
    assert from_voc.layout == "voc" and from_voc.val_held_out and from_voc.classes == ["background", *names]
    assert (len(from_voc.train), len(from_voc.val)) == (1, 1)
    both = {"images": [], "annotations": [], "categories": None}  # the two jsons in one: a split is made here
    for image_id, split in enumerate(("train", "val"), start=1):
        content = json.loads((coco / "annotations" / f"instances_{split}.json").read_text())
        (im,) = content["images"]
        both["images"].append({**im, "id": image_id, "file_name": f"{split}/{im['file_name']}"})
        both["annotations"] += [{**a, "id": 100 * image_id + a["id"], "image_id": image_id} for a in content["annotations"]]
        both["categories"] = content["categories"]
    shutil.copytree(coco / "images", tmp_path / "images")
    (tmp_path / "all.json").write_text(json.dumps(both))
    from_coco = discover(tmp_path / "all.json", val_fraction=0.5)
    assert from_coco.layout == "coco" and from_coco.classes == from_voc.classes and from_coco.val_held_out
    by_name = {s.image.name: s for s in from_coco.train + from_coco.val}
    for a in from_voc.train + from_voc.val:
        _agree_up_to_polygon_outlines(a.read_mask(), by_name[a.image.name].read_mask())


# ------------------------------------------------------------------------------------------ errors and skips
def test_mask_of_another_size_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path)
    bad = root / "masks" / "train" / f"{_frames(1)[0]}.png"
    _replace(bad, lambda p: Image.new("L", (240, 180)).save(p))
    with pytest.raises(DataError, match=rf"{bad.name}.*240 x 180.*480 x 360"):
        discover(root)


def test_unnamed_class_index_is_an_error_naming_index_file_and_count(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path)
    bad = root / "masks" / "val" / f"{_frames(5)[4]}.png"
    def write(p: Path) -> None:
        mask = np.array(Image.open(CAMVID / "masks" / "train" / p.name))
        mask[:5, :5] = 11
        Image.fromarray(mask).save(p)
    _replace(bad, write)
    with pytest.raises(DataError, match=rf"{bad.name}: class index 11 \(25 pixels\).*names 11 classes"):
        discover(root)


def test_colour_mask_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path)
    bad = root / "masks" / "train" / f"{_frames(2)[1]}.png"
    _replace(bad, lambda p: Image.new("RGB", (480, 360), (10, 200, 30)).save(p))
    with pytest.raises(DataError, match=rf"{bad.name}: a colour \(RGB\) mask"):
        discover(root)


def _colour_camvid(root: Path, mask_folder: str, tail: str, class_file: str,
                   void: str = "Void") -> tuple[Path, np.ndarray]:
    """Kaggle's CamVid layout from real CamVid frames: train/ + train_labels/ with colour masks (the mask of x.jpg is
    x{tail}.png), val/ + val_labels/, and a class file giving each class its colour (255: a ``void`` class, last;
    first when named 'unlabelled')."""
    names = (CAMVID / "classes.txt").read_text().split()
    names = ["unlabelled", *names] if void == "unlabelled" else [*names, void]
    palette = np.array([(17 * i, 255 - 13 * i, (97 * i) % 256) for i in range(len(names))], dtype=np.uint8)
    index_of = np.full(256, names.index(void), dtype=np.uint8)  # CamVid's index -> the class file's
    index_of[: len(names) - 1] = [names.index(n) for n in (CAMVID / "classes.txt").read_text().split()]
    rows = [(n, *map(int, c)) for n, c in zip(names, palette)]
    if class_file == "class_dict.csv":
        (root / class_file).parent.mkdir(parents=True, exist_ok=True)
        (root / class_file).write_text("name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for n, r, g, b in rows))
    else:  # CVAT's labelmap.txt
        (root / class_file).parent.mkdir(parents=True, exist_ok=True)
        (root / class_file).write_text("# label:color_rgb:parts:actions\n"
                                       + "".join(f"{n}:{r},{g},{b}::\n" for n, r, g, b in rows))
    for i, stem in enumerate(_frames(5)):
        split = "train" if i < 3 else "val"
        for folder in (split, f"{split}{mask_folder}"):
            (root / folder).mkdir(parents=True, exist_ok=True)
        (root / split / f"{stem}.jpg").symlink_to(CAMVID / "images" / "train" / f"{stem}.jpg")
        index = np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png"))
        Image.fromarray(palette[index_of[index]]).save(root / f"{split}{mask_folder}" / f"{stem}{tail}.png")
    return root, palette


def test_colour_masks_of_kaggle_camvid_and_segnet_layouts_read_by_their_class_colours(tmp_path: Path) -> None:
    from headstart.tasks import infer_task

    root, palette = _colour_camvid(tmp_path / "kaggle", "_labels", "_L", "class_dict.csv")
    assert infer_task(root) == "segmentation"
    splits = discover(root)
    assert splits.classes == (CAMVID / "classes.txt").read_text().split()  # 'Void' marks unlabelled pixels
    assert (len(splits.train), len(splits.val)) == (3, 2) and not splits.val_held_out
    assert "colour (RGB) masks read by the colours of class_dict.csv" in splits.read
    assert "class(es) ['Void'] of class_dict.csv mark unlabelled pixels: ignored (255), not learned or scored" in (
        splits.read)
    for sample in splits.train + splits.val:  # every pixel back to its class index, 'Void' to 255
        original = np.array(Image.open(CAMVID / "masks" / "train" / f"{sample.image.stem}.png"))
        assert np.array_equal(sample.read_mask(), original)
    # the SegNet tutorial's names (trainannot/), CVAT's labelmap.txt of colours, the unlabelled class first
    root, _ = _colour_camvid(tmp_path / "segnet", "annot", "", "labelmap.txt", void="unlabelled")
    splits = discover(root)
    assert [s.image.stem for s in splits.train] == _frames(3) and "unlabelled" not in splits.classes
    for sample in splits.train:  # indices above the unlabelled class moved down by one: CamVid's own again
        original = np.array(Image.open(CAMVID / "masks" / "train" / f"{sample.image.stem}.png"))
        assert np.array_equal(sample.read_mask(), original)
    # a colour no class has is named, with its pixels
    mask = root / "trainannot" / f"{_frames(1)[0]}.png"
    pixels = np.array(Image.open(mask))
    pixels[:2, :5] = (1, 2, 3)
    Image.fromarray(pixels).save(mask)
    with pytest.raises(DataError, match=r"colour rgb\(1, 2, 3\) on 10 pixel\(s\) is no class's colour"):
        discover(root)


def test_missing_masks_and_corrupt_images_are_reported_skips(tmp_path: Path) -> None:
    root = _mask_folder(tmp_path, train=4)
    stems = _frames(4)
    (root / "masks" / "train" / f"{stems[0]}.png").unlink()
    corrupt = root / "images" / "train" / f"{stems[1]}.jpg"
    _replace(corrupt, lambda p: p.write_bytes((CAMVID / "images" / "train" / p.name).read_bytes()[:300]))
    splits = discover(root)
    assert len(splits.train) == 2 and len(splits.val) == 2
    why = dict(splits.skipped)
    assert set(why) == {str(root / "images" / "train" / f"{stems[0]}.jpg"), str(corrupt)}
    assert "no mask" in why[str(root / "images" / "train" / f"{stems[0]}.jpg")]
    assert why[str(corrupt)].startswith("not a readable image")
    for stem in stems[1:]:
        (root / "masks" / "train" / f"{stem}.png").unlink()
    (root / "masks" / "train" / "unrelated.png").symlink_to(CAMVID / "masks" / "train" / f"{stems[0]}.png")
    with pytest.raises(DataError, match=r"No image in .*train has a mask.*unrelated\.png"):
        discover(root)


def test_empty_unknown_and_incomplete_folders_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=rf"{empty} is empty"):
        discover(empty)
    other = tmp_path / "other"
    (other / "pictures").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no segmentation layout.*images/ \+ masks/.*JPEGImages.*COCO.*pictures/"):
        discover(other)
    no_classes = _mask_folder(tmp_path / "noclasses")
    (no_classes / "classes.txt").unlink()
    with pytest.raises(DataError, match=r"no class file, and the masks hold values \[0, 1, 2, 3, .*classes\.txt"):
        discover(no_classes)  # CamVid's 11 classes: not binary
    no_images = tmp_path / "noimages"
    for d in ("images/train", "images/val", "masks/train", "masks/val"):
        (no_images / d).mkdir(parents=True)
    (no_images / "classes.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"No images in .*images/train"):
        discover(no_images)


def test_coco_unknown_category_names_json_and_annotation(tmp_path: Path) -> None:
    stem = _frames(1)[0]
    shutil.copy(CAMVID / "images/train" / f"{stem}.jpg", tmp_path)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": f"{stem}.jpg", "height": 360, "width": 480}],
        "annotations": [{"id": 42, "image_id": 1, "category_id": 3, "iscrowd": 0,
                         "segmentation": [[10, 10, 50, 10, 50, 50]]}],
        "categories": [{"id": 1, "name": "car"}],
    }))
    with pytest.raises(DataError, match=r"instances\.json: annotation id 42: category_id 3"):
        discover(path)


def test_binary_masks_without_a_class_file_as_kvasir_carvana_and_isic_ship_them(tmp_path: Path) -> None:
    """Medical and other binary sets come without a class file: Kvasir-SEG (images/ + masks/ of JPEGs, in the one
    folder of its archive), Carvana (train/ + train_masks/, x_mask.gif of 0/1) and ISIC's 0/255 PNGs; each reads
    as background and foreground with the same pixels. A JPEG mask beside a class file is refused."""
    from headstart.tasks import infer_task

    stems = _frames(6)
    truth = {}
    for root in ("kvasir-seg/Kvasir-SEG", "carvana", "isic"):
        (tmp_path / root).mkdir(parents=True)
    for stem in stems:
        road = np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png")) == 3  # CamVid's road
        truth[stem] = road.astype(np.uint8)
        for folder in ("kvasir-seg/Kvasir-SEG/images", "carvana/train", "isic/images"):
            (tmp_path / folder).mkdir(parents=True, exist_ok=True)
            (tmp_path / folder / f"{stem}.jpg").symlink_to(CAMVID / "images" / "train" / f"{stem}.jpg")
        for folder, name, values, fmt in (("kvasir-seg/Kvasir-SEG/masks", f"{stem}.jpg", road * 255, {"quality": 90}),
                                          ("carvana/train_masks", f"{stem}_mask.gif", road * 1, {}),
                                          ("isic/masks", f"{stem}.png", road * 255, {})):
            (tmp_path / folder).mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(values.astype(np.uint8))
            (image.convert("P") if name.endswith(".gif") else image).save(tmp_path / folder / name, **fmt)
    (tmp_path / "kvasir-seg" / "Kvasir-SEG" / "kavsir_bboxes.json").write_text("{}")
    for root, how in (("kvasir-seg", "JPEG, grey level 128 and up the foreground"), ("carvana", "0 and 1"),
                      ("isic", "0 and 255")):
        assert infer_task(tmp_path / root) == "segmentation"
        splits = discover(tmp_path / root)
        assert splits.classes == ["background", "foreground"]
        assert f"no class file: binary masks ({how}) read as background and foreground" in " ".join(splits.read)
        for s in splits.train + splits.val:
            mask = s.read_mask()
            edges = mask != truth[s.image.stem]
            assert edges.mean() < (0.002 if root == "kvasir-seg" else 1e-9), (root, s.image.stem, edges.mean())
    assert "read inside Kvasir-SEG/" in discover(tmp_path / "kvasir-seg").read[0]
    (tmp_path / "kvasir-seg" / "Kvasir-SEG" / "classes.txt").write_text("background\npolyp\n")
    with pytest.raises(DataError, match=r"a JPEG mask \(6 of them\) blurs the class indices of classes\.txt"):
        discover(tmp_path / "kvasir-seg")


def test_a_folder_of_images_beside_a_folder_named_for_their_masks(tmp_path: Path) -> None:
    """ISIC 2018's task 1 as downloaded: ISIC2018_Task1-2_Training_Input/ (images, and LICENSE.txt) beside
    ISIC2018_Task1_Training_GroundTruth/ (ISIC_0000000_segmentation.png, 0/255). Two class folders whose names hold
    'mask' (with_mask/, without_mask/) share no file stem: image data, not segmentation."""
    from headstart.tasks import infer_task

    root = tmp_path / "isic2018"
    images, masks = root / "ISIC2018_Task1-2_Training_Input", root / "ISIC2018_Task1_Training_GroundTruth"
    images.mkdir(parents=True)
    masks.mkdir()
    for stem in _frames(6):
        (images / f"{stem}.jpg").symlink_to(CAMVID / "images" / "train" / f"{stem}.jpg")
        road = np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png")) == 3
        Image.fromarray((road * 255).astype(np.uint8)).save(masks / f"{stem}_segmentation.png")
    (images / "LICENSE.txt").write_text("CC-BY-NC\n")
    assert infer_task(root) == "segmentation"
    splits = discover(root)
    assert splits.classes == ["background", "foreground"] and len(splits.train) + len(splits.val) == 6
    assert all(s.mask.name == f"{s.image.stem}_segmentation.png" for s in splits.train + splits.val)
    faces = tmp_path / "face-mask"
    for cls, frames in (("with_mask", _frames(4)[:2]), ("without_mask", _frames(4)[2:])):
        (faces / cls).mkdir(parents=True)
        for stem in frames:
            (faces / cls / f"{stem}.jpg").symlink_to(CAMVID / "images" / "train" / f"{stem}.jpg")
    assert infer_task(faces) == "image"
    boxes = tmp_path / "raccoon_dataset"  # labelImg's annotations/*.xml beside images/: boxes, not masks
    (boxes / "annotations").mkdir(parents=True)
    (boxes / "images").mkdir()
    for stem in _frames(3):
        (boxes / "images" / f"{stem}.jpg").symlink_to(CAMVID / "images" / "train" / f"{stem}.jpg")
        (boxes / "annotations" / f"{stem}.xml").write_text("<annotation></annotation>")
    assert infer_task(boxes) == "detection"
    pets = tmp_path / "oxford-iiit-pet"  # images/ (named by breed) beside annotations/{trimaps,xmls}/ and lists
    for folder in ("images", "annotations/trimaps", "annotations/xmls"):
        (pets / folder).mkdir(parents=True)
    for i, stem in enumerate(_frames(6)):
        name = f"{'Bengal' if i % 2 else 'beagle'}_{i + 1}"
        (pets / "images" / f"{name}.jpg").symlink_to(CAMVID / "images" / "train" / f"{stem}.jpg")
        road = np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png")) == 3
        Image.fromarray(np.where(road, 1, 2).astype(np.uint8)).save(pets / "annotations" / "trimaps" / f"{name}.png")
        (pets / "annotations" / "xmls" / f"{name}.xml").write_text("<annotation></annotation>")
    (pets / "annotations" / "trainval.txt").write_text("beagle_1 1 2 1\n")
    assert infer_task(pets) == "image"  # classes in the file names: classification unless --task segmentation
    with pytest.raises(DataError, match=r"masks hold values \[1, 2\]: name the class of each value in a classes.txt "
                       r"beside images/ \+ annotations/trimaps/"):
        discover(pets)
    (pets / "classes.txt").write_text("unused\npet\nbackground\n")
    splits = discover(pets)
    assert splits.layout.startswith("images/ + annotations/trimaps/") and len(splits.train) + len(splits.val) == 6
    assert splits.classes == ["unused", "pet", "background"]


def test_one_layout_deeper_beside_other_folders_and_its_class_file_above(tmp_path: Path) -> None:
    """The Semantic Drone Dataset as Kaggle gives it: class_dict_seg.csv (name, r, g, b) beside dataset/
    semantic_drone_dataset/{original_images, label_images_semantic}/ and RGB_color_image_masks/ (the same masks in
    colour). The folder was read as two image classes, 'dataset' and 'RGB_color_image_masks'; the inner folder given
    alone found no class file (it is two levels up)."""
    from headstart.tasks import infer_task

    root = tmp_path / "semantic-drone-dataset"
    inner = root / "dataset" / "semantic_drone_dataset"
    for folder in (inner / "original_images", inner / "label_images_semantic",
                   root / "RGB_color_image_masks" / "RGB_color_image_masks"):
        folder.mkdir(parents=True)
    for stem in _frames(5):
        (inner / "original_images" / f"{stem}.jpg").symlink_to(CAMVID / "images" / "train" / f"{stem}.jpg")
        (inner / "label_images_semantic" / f"{stem}.png").symlink_to(CAMVID / "masks" / "train" / f"{stem}.png")
        shutil.copy(CAMVID / "masks" / "train" / f"{stem}.png", root / "RGB_color_image_masks" /
                    "RGB_color_image_masks" / f"{stem}.png")
    names = (CAMVID / "classes.txt").read_text().split()
    (root / "class_dict_seg.csv").write_text("name, r, g, b\n" + "".join(f"{n}, {i}, {2 * i}, {3 * i}\n"
                                                                       for i, n in enumerate(names)))
    assert infer_task(root) == "segmentation"
    for given in (root, inner):
        splits = discover(given)
        assert splits.classes == names and len(splits.train) + len(splits.val) == 5, given
        assert all(s.image.parent.name == "original_images" and s.mask.parent.name == "label_images_semantic"
                   and s.mask.stem == s.image.stem for s in splits.train + splits.val)
    assert "read in dataset/semantic_drone_dataset/, the one image-mask layout under semantic-drone-dataset/; not " \
           "read: RGB_color_image_masks/" in discover(root).read[0]
    roads = tmp_path / "massachusetts-roads"  # tiff/{train,val}{,_labels}/ beside label_class_dict.csv, metadata.csv
    for i, stem in enumerate(_frames(5)):
        split = "train" if i < 3 else "val"
        for folder in (f"{split}", f"{split}_labels"):
            (roads / "tiff" / folder).mkdir(parents=True, exist_ok=True)
        Image.open(CAMVID / "images" / "train" / f"{stem}.jpg").save(roads / "tiff" / split / f"{stem}.tiff")
        road = np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png")) == 3
        Image.fromarray(np.stack([road * 255] * 3, -1).astype(np.uint8)).save(roads / "tiff" / f"{split}_labels" /
                                                                              f"{stem}.tif")
    (roads / "label_class_dict.csv").write_text("name,r,g,b\nbackground,0,0,0\nroad,255,255,255\n")
    (roads / "metadata.csv").write_text("image_id,tiff_image_path,tif_label_path,split\n")
    assert infer_task(roads) == "segmentation"
    splits = discover(roads)
    assert splits.classes == ["background", "road"] and (len(splits.train), len(splits.val)) == (3, 2)
    assert pixel_counts(splits.train, 2)[1] > 0 and "read in tiff/" in splits.read[0]
    for cls in ("a", "b"):  # two such layouts under one folder: not one dataset, no segmentation layout
        (tmp_path / "two" / cls).mkdir(parents=True)
        shutil.copytree(inner, tmp_path / "two" / cls / "x", symlinks=True)
    with pytest.raises(DataError, match="no segmentation layout recognised"):
        discover(tmp_path / "two")


def test_masks_beside_their_images_as_lgg_and_busi_ship_them(tmp_path: Path) -> None:
    """LGG's brain MRI (``kaggle_3m/`` of a folder per patient, ``x_1.tif`` beside ``x_1_mask.tif``) is
    segmentation, each patient's slices on one side of the validation split. BUSI (``benign/``, ``malignant/``,
    ``normal/``: ``benign (1).png`` beside ``benign (1)_mask.png``, a second lesion's ``_mask_1.png``) stays image
    classification, its masks no longer read as images of their class."""
    from headstart.tasks import infer_task
    from headstart.tasks.image import data as imagedata
    from headstart.tasks.segmentation import CASE_FOLDERS

    stems = _frames(2 * (CASE_FOLDERS + 1))
    truth = {}
    lgg = tmp_path / "lgg" / "kaggle_3m"
    for i, stem in enumerate(stems):
        patient = lgg / f"TCGA_CS_{4900 + i // 2}_1996090{i // 2 % 10}"
        patient.mkdir(parents=True, exist_ok=True)
        road = (np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png")) == 3).astype(np.uint8)
        name = f"{patient.name}_{i % 2 + 1}"
        Image.open(CAMVID / "images" / "train" / f"{stem}.jpg").save(patient / f"{name}.tif")
        Image.fromarray(road * 255).save(patient / f"{name}_mask.tif")
        truth[patient / f"{name}.tif"] = road
    (lgg / "data.csv").write_text("Patient,RNASeqCluster\nTCGA_CS_4900,2\n")
    assert infer_task(tmp_path / "lgg") == "segmentation"
    splits = discover(tmp_path / "lgg")
    assert splits.classes == ["background", "foreground"] and len(splits.train) + len(splits.val) == len(stems)
    assert splits.layout.startswith("images with their masks beside them (") and f"in {CASE_FOLDERS + 1} folders" in \
        splits.layout, splits.layout
    assert "each folder's on one side" in " ".join(splits.read)
    assert not {s.image.parent for s in splits.train} & {s.image.parent for s in splits.val}
    assert all((s.read_mask() == truth[s.image]).all() for s in splits.train + splits.val)
    from headstart.tasks.image.decode import image_files  # predict FOLDER: its images, not their masks

    patient = splits.val[0].image.parent
    assert image_files([patient]) == sorted(p for p in patient.iterdir() if not p.stem.endswith("_mask"))
    busi = tmp_path / "Dataset_BUSI_with_GT"
    for c, name in enumerate(("benign", "malignant", "normal")):
        (busi / name).mkdir(parents=True)
        for k, stem in enumerate(stems[c * 6:(c + 1) * 6]):
            Image.open(CAMVID / "images" / "train" / f"{stem}.jpg").save(busi / name / f"{name} ({k + 1}).png")
            Image.new("L", (480, 360)).save(busi / name / f"{name} ({k + 1})_mask.png")
            if k == 0:
                Image.new("L", (480, 360)).save(busi / name / f"{name} ({k + 1})_mask_1.png")
    assert infer_task(busi) == "image"
    found = imagedata.discover(busi)
    assert found.classes == ["benign", "malignant", "normal"] and len(found.train) + len(found.val) == 18
    assert "(21 mask(s) beside their images, e.g. benign (1)_mask.png: not read" in found.layout, found.layout
    assert not any("mask" in s.path.name for s in found.train + found.val)
    masked = discover(busi)  # --task segmentation: the same folders as image-mask pairs
    assert len(masked.train) + len(masked.val) == 18 and "3 image(s) have several masks" in " ".join(masked.notes)


@needs_shared(CAMVID)
def test_a_yolo_segment_dataset_draws_its_polygons_as_masks(tmp_path: Path) -> None:
    """Roboflow's "YOLOv8 segmentation" export (data.yaml of '../train/images', train/ and valid/ of images/ +
    labels/ of 'class x1 y1 x2 y2 ...' normalised): --task segmentation draws each polygon (background 0, the yaml's
    names after it) as PIL draws it, a box line as its rectangle; the default task, detection, reads their boxes and
    says so; an image without a label file is all background."""
    from headstart.tasks import infer_task
    from headstart.tasks.detection import data as dd

    rng = np.random.default_rng(0)
    files = sorted((CAMVID / "images" / "train").glob("*.jpg"))[:6]
    names = ["crack", "pothole"]
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['crack', "
                                        "'pothole']\n")
    truth = {}
    for i, f in enumerate(files):
        split = "train" if i < 4 else "valid"
        (tmp_path / split / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / split / "labels").mkdir(parents=True, exist_ok=True)
        shutil.copy(f, tmp_path / split / "images" / f.name)
        if i == 3:
            truth[f.name] = np.zeros((360, 480), dtype=np.uint8)
            continue  # no label file: background
        canvas, lines = Image.new("L", (480, 360)), []
        for cls in (1, 0):  # the larger first, as masks draw the smaller over the larger
            cx, cy, r = rng.uniform(120, 360), rng.uniform(100, 260), 90 if cls else 45
            angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
            points = [(cx + r * np.cos(a) * rng.uniform(0.6, 1), cy + r * np.sin(a) * rng.uniform(0.6, 1))
                      for a in angles]
            ImageDraw.Draw(canvas).polygon(points, fill=cls + 1)
            lines.append(f"{cls} " + " ".join(f"{x / 480:.6f} {y / 360:.6f}" for x, y in points))
        if i == 0:
            ImageDraw.Draw(canvas).rectangle([10, 10, 57, 33], fill=1)
            lines.append("0 0.070833 0.061111 0.100000 0.066667")  # the box (10, 10)-(58, 34): cx cy w h
        (tmp_path / split / "labels" / f"{f.stem}.txt").write_text("\n".join(lines) + "\n")
        truth[f.name] = np.asarray(canvas)
    assert infer_task(tmp_path) == "detection"
    assert "its labels are polygons (segments): their boxes are read, --task segmentation" in \
        dd.read_yolo(tmp_path).layout
    splits = discover(tmp_path / "data.yaml")
    assert splits.classes == ["background", *names] and (len(splits.train), len(splits.val)) == (4, 2)
    assert "1 shape(s) are boxes (class cx cy w h), not polygons: drawn as rectangles" in splits.notes
    assert "1 image(s) without a label file: all background" in splits.read
    for sample in splits.train + splits.val:
        got, want = sample.read_mask(), truth[sample.image.name]
        for c in (1, 2):
            inter, union = np.logical_and(got == c, want == c).sum(), np.logical_or(got == c, want == c).sum()
            assert union == 0 or inter / union > 0.95, (sample.image.name, c, inter / union)
    assert len(discover(tmp_path).train) == 4  # the folder as the yaml


@needs_shared(CAMVID)
def test_roboflow_semantic_segmentation_masks_export(tmp_path: Path) -> None:
    """Roboflow's "Semantic Segmentation Masks" export: train/, valid/, test/ of NAME_jpg.rf.HASH.jpg beside
    NAME_jpg.rf.HASH_mask.png (class indices) and a _classes.csv of 'Pixel Value, Class' in each: segmentation, each
    split as given, the classes in the order of their values (its 'unlabelled' ignored), each mask as written."""
    from headstart.tasks import infer_task

    names = (CAMVID / "classes.txt").read_text().split()
    written = {}
    for split, source, files in (("train", "train", slice(0, 4)), ("valid", "val", slice(0, 2)),
                                 ("test", "val", slice(2, 3))):
        (tmp_path / split).mkdir()
        for f in sorted((CAMVID / "images" / source).glob("*.jpg"))[files]:
            stem = f"{f.stem}_jpg.rf.{abs(hash(f.name)) % 10**8:08d}"
            shutil.copy(f, tmp_path / split / f"{stem}.jpg")
            mask = np.asarray(Image.open(CAMVID / "masks" / source / f"{f.stem}.png")).astype(np.int32)
            written[f"{stem}.jpg"] = np.where(mask == 255, 0, mask + 1).astype(np.uint8)  # 0: unlabelled
            Image.fromarray(written[f"{stem}.jpg"]).save(tmp_path / split / f"{stem}_mask.png")
        (tmp_path / split / "_classes.csv").write_text(
            "Pixel Value, Class\n" + "".join(f"{v}, {n}\n" for v, n in reversed(list(enumerate(["unlabelled",
                                                                                               *names])))))
    assert infer_task(tmp_path) == "segmentation"
    splits = discover(tmp_path)
    assert splits.classes == names, splits.classes  # 'unlabelled' marks pixels to ignore (255)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 1)
    assert "in split folders test/, train/, valid/" in splits.layout, splits.layout
    for sample in splits.train + splits.val + splits.test:
        want = written[sample.image.name].astype(np.int32) - 1
        assert np.array_equal(sample.read_mask(), np.where(want < 0, IGNORE_INDEX, want)), sample.image.name
    (tmp_path / "train" / "_classes.csv").write_text("Pixel Value, Class\n0, road\n2, car\n")
    with pytest.raises(DataError, match=r"_classes.csv: its pixel values are \[0, 2\]; expected each of 0, 1, 2"):
        discover(tmp_path)


# ------------------------------------------------------------------------------------------ Hugging Face datasets
def _hub_rows(stems: list[str], shift: bool = True, binary: bool = False) -> list[dict]:
    """Rows of CamVid frames and their masks as a Hub segmentation dataset holds them: the files' bytes. ``shift``:
    0 is 'unlabeled' and the classes follow (segments/sidewalk-semantic's way), CamVid's 255 becoming 0;
    ``binary``: road 255, the rest 0."""
    import io

    rows = []
    for stem in stems:
        mask = np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png"))
        if binary:
            mask = np.where(mask == 3, 255, 0)
        elif shift:
            mask = np.where(mask == IGNORE_INDEX, 0, mask + 1)
        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8)).save(buf, format="PNG")
        image = CAMVID / "images" / "train" / f"{stem}.jpg"
        rows.append({"image": {"bytes": image.read_bytes(), "path": image.name},
                     "mask": {"bytes": buf.getvalue(), "path": f"{stem}.png"}})
    return rows


def test_a_hub_repository_of_images_and_masks_reads_as_sidewalk_semantic_ships_it(tmp_path: Path) -> None:
    """A Hub dataset repository as downloaded: data/{split}-00000-of-00001.parquet of two Image columns
    (``pixel_values`` and ``label``, written by the datasets library, row groups of 3) and id2label.json whose
    0 is 'unlabeled'. It is segmentation; the splits are the files'; the classes are id2label's but 'unlabeled'
    (ignored, 255); each pair reads back CamVid's own image bytes and mask; one file alone is a training split."""
    datasets = pytest.importorskip("datasets")
    from headstart.tasks import infer_task
    from headstart.tasks.image.hf_datasets import ParquetRow

    classes = (CAMVID / "classes.txt").read_text().split()
    stems = _frames(10)
    features = datasets.Features({"pixel_values": datasets.Image(), "label": datasets.Image()})
    (tmp_path / "data").mkdir()
    for split, part in (("train", stems[:7]), ("validation", stems[7:])):
        rows = [{"pixel_values": r["image"], "label": r["mask"]} for r in _hub_rows(part)]
        datasets.Dataset.from_list(rows, features=features).to_parquet(
            str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"), batch_size=3)
    (tmp_path / "id2label.json").write_text(json.dumps({str(i): n for i, n in enumerate(["unlabeled", *classes])}))
    train_file = tmp_path / "data" / "train-00000-of-00001.parquet"
    assert infer_task(tmp_path) == "segmentation" and infer_task(train_file) == "segmentation"
    splits = discover(tmp_path)
    assert splits.classes == classes and (len(splits.train), len(splits.val)) == (7, 3)
    assert splits.layout.endswith("(train/ 7, validation/ 3; images 'pixel_values', masks 'label')"), splits.layout
    assert any("['unlabeled'] of id2label.json mark unlabelled pixels" in r for r in splits.read), splits.read
    for split, part in ((splits.train, stems[:7]), (splits.val, stems[7:])):
        for s in split:
            stem = part[int(s.image.name.split(":")[1])]
            assert isinstance(s.data, ParquetRow) and s.source == (CAMVID / "images" / "train" / f"{stem}.jpg").read_bytes()
            assert np.array_equal(s.read_mask(), np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png")))
    dataset = SegmentationDataset(splits.val, eval_transform(SPEC, 128))
    image, mask = dataset[0]
    assert image.shape[0] == 3 and mask.shape == image.shape[1:] and (mask != IGNORE_INDEX).any()
    alone = discover(train_file)
    assert alone.val_held_out and len(alone.train) + len(alone.val) == 7 and alone.classes == classes

    (tmp_path / "id2label.json").write_text(json.dumps({"0": "unlabeled", "2": "sky"}))
    with pytest.raises(DataError, match=r"id2label.json: its ids are \[0, 2\]; expected each of 0, 1, 2\.\.\. once"):
        discover(tmp_path)
    (tmp_path / "id2label.json").unlink()
    with pytest.raises(DataError, match=r"no class file, and the masks hold values \[0, 1, 2, .*an id2label.json"):
        discover(tmp_path)


def test_a_datasets_folder_of_images_and_binary_masks_and_compare_s_splits_of_it(tmp_path: Path) -> None:
    """``save_to_disk`` of ``image`` and ``annotation`` columns (the mask column first: its name tells), 0/255 masks
    and no class file: background and foreground, as a folder of such masks reads. compare's seeded split folders
    write the rows' images and their masks' indices (foreground 1, not 255), and read back as the same pairs."""
    datasets = pytest.importorskip("datasets")
    from headstart.evidence.compare import SegmentationPool
    from headstart.tasks import get_task, infer_task

    stems = _frames(8)
    rows = [{"annotation": r["mask"], "image": r["image"]} for r in _hub_rows(stems, binary=True)]
    features = datasets.Features({"annotation": datasets.Image(), "image": datasets.Image()})
    folder = tmp_path / "polyps"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=features)}).save_to_disk(str(folder))
    assert infer_task(folder) == "segmentation"
    splits = discover(folder)
    assert splits.classes == ["background", "foreground"] and splits.val_held_out
    assert splits.layout.startswith("datasets folder polyps (train/ 8; images 'image', masks 'annotation')")
    road = {stem: (np.array(Image.open(CAMVID / "masks" / "train" / f"{stem}.png")) == 3).astype(np.uint8)
            for stem in stems}
    for s in splits.train + splits.val:
        assert np.array_equal(s.read_mask(), road[stems[int(s.image.name.split(":")[1])]])

    pool = SegmentationPool(get_task("segmentation"), folder, 0.25, {})
    train, val = pool.split(0, 0.25)
    written = discover(pool.write(tmp_path / "cmp", "seed0", train, val))
    assert written.classes == ["background", "foreground"] and (len(written.train), len(written.val)) == (6, 2)
    for s in written.train + written.val:
        i = int(s.image.stem[:6])
        assert s.image.read_bytes() == pool.items[i].source
        assert np.array_equal(s.read_mask(), road[stems[int(pool.items[i].image.name.split(":")[1])]])

    isic = tmp_path / "isic"  # the same masks as files of 0 and 255: linked as they are, 255 would be 'ignore'
    for kind in ("images", "masks"):
        (isic / kind).mkdir(parents=True)
    for stem in stems:
        (isic / "images" / f"{stem}.jpg").symlink_to(CAMVID / "images" / "train" / f"{stem}.jpg")
        Image.fromarray(road[stem] * 255).save(isic / "masks" / f"{stem}.png")
    pool = SegmentationPool(get_task("segmentation"), isic, 0.25, {})
    written = discover(pool.write(tmp_path / "cmp_isic", "seed0", *pool.split(0, 0.25)))
    assert written.classes == ["background", "foreground"]
    for s in written.train + written.val:
        assert np.array_equal(s.read_mask(), road[pool.items[int(s.image.stem[:6])].image.stem])
