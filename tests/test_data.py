import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import HYMENOPTERA, needs_shared
from PIL import Image

from headstart.core.splits import stratified_split
from headstart.errors import DataError
from headstart.tasks.image.data import discover, labelled_samples
from headstart.tasks.image.dataset import ImageStore
from headstart.tasks.image.decode import output_stems


def _copy_digits(digits_dir: Path, target: Path, classes=("0", "1", "2"), n: int = 8) -> Path:
    for c in classes:
        (target / c).mkdir(parents=True)
        for f in sorted((digits_dir / c).iterdir())[:n]:
            shutil.copy(f, target / c / f.name)
    return target


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = [0] * 50 + [1] * 10 + [2] * 2
    train, val = stratified_split(labels, 0.2, seed=3)
    assert sorted(train + val) == list(range(62))
    assert sum(labels[i] == 0 for i in val) == 10 and sum(labels[i] == 1 for i in val) == 2
    assert sum(labels[i] == 2 for i in val) == 1
    assert stratified_split(labels, 0.2, seed=3) == (train, val)
    assert stratified_split(labels, 0.2, seed=4) != (train, val)


def test_class_folders_get_a_validation_split(digits_dir):
    splits = discover(digits_dir, val_fraction=0.25, seed=0)
    assert splits.classes == [str(i) for i in range(10)]
    assert len(splits.train) == 150 and len(splits.val) == 50
    assert not {s.path for s in splits.train} & {s.path for s in splits.val}
    assert splits.val_held_out  # what train.refit=auto reads: validation came out of the training images


def test_every_reader_says_whether_validation_was_held_out_of_the_training_items(digits_dir, tmp_path):
    from headstart.tasks.text.data import discover as discover_texts

    given = _copy_digits(digits_dir, tmp_path / "given" / "train")
    shutil.copytree(given, tmp_path / "given" / "val")
    assert not discover(tmp_path / "given").val_held_out
    files = sorted(digits_dir.rglob("*.png"))[:40]
    (tmp_path / "split.csv").write_text("path,label,split\n" + "".join(
        f"{f},{f.parent.name},{'val' if i % 4 == 0 else 'train'}\n" for i, f in enumerate(files)))
    (tmp_path / "plain.csv").write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    assert not discover(tmp_path / "split.csv").val_held_out and discover(tmp_path / "plain.csv").val_held_out
    rows = [("spam" if i % 3 == 0 else "ham", f"message number {i}") for i in range(30)]
    (tmp_path / "texts.csv").write_text("label,text\n" + "".join(f"{label},{text}\n" for label, text in rows))
    (tmp_path / "texts_split.csv").write_text("label,text,split\n" + "".join(
        f"{label},{text},{'val' if i % 5 == 0 else 'train'}\n" for i, (label, text) in enumerate(rows)))
    (tmp_path / "texts_train_only.csv").write_text("label,text,split\n" + "".join(
        f"{label},{text},train\n" for label, text in rows))
    assert discover_texts(tmp_path / "texts.csv").val_held_out
    assert not discover_texts(tmp_path / "texts_split.csv").val_held_out
    assert discover_texts(tmp_path / "texts_train_only.csv").val_held_out  # train rows only: some were held out


def test_bad_files_are_skipped_and_listed_or_fail_with_strict(digits_dir, tmp_path):
    root = _copy_digits(digits_dir, tmp_path / "d")
    (root / "0" / "empty.png").write_bytes(b"")
    (root / "1" / "text.jpg").write_text("this is not an image")
    good = next((root / "2").iterdir()).read_bytes()
    (root / "2" / "truncated.png").write_bytes(good[: len(good) // 2])
    splits = discover(root, 0.25, 0)
    samples = splits.train + splits.val
    store = ImageStore(samples, 64, "bilinear")
    reasons = {Path(p).name: why for p, why in store.skipped}
    assert set(reasons) == {"empty.png", "text.jpg", "truncated.png"}
    assert "0 bytes" in reasons["empty.png"]
    assert len(store.samples) == len(samples) - 3
    with pytest.raises(DataError, match=r"Cannot read image .*(empty|text|truncated).*--strict"):
        ImageStore(samples, 64, "bilinear", strict=True)


def test_gif_placeholder_in_hymenoptera_is_reported(hymenoptera):
    splits = discover(hymenoptera)
    gif = [s for s in splits.train if s.path.suffix == ".gif"]
    assert len(gif) == 1
    store = ImageStore(gif + splits.train[:5], 64, "bilinear")
    assert any("GIF" in w for w in store.warnings())
    # a refit reads the data again: the first read lets its decoded images go, and still serves them from the files
    path = splits.train[0].path
    before = np.asarray(store.get(path))
    store.release()
    assert not store.images and np.array_equal(np.asarray(store.get(path)), before)


def test_empty_class_folder_and_single_class(digits_dir, tmp_path):
    root = _copy_digits(digits_dir, tmp_path / "d")
    (root / "empty_class").mkdir()
    with pytest.raises(DataError, match="no images in .*: empty_class"):
        discover(root)
    single = _copy_digits(digits_dir, tmp_path / "s", classes=("7",))
    with pytest.raises(DataError, match="Only one class \\('7'\\)"):
        discover(single)
    with pytest.raises(DataError, match="Data not found"):
        discover(tmp_path / "nothing")


def test_csv_layout_and_missing_columns(digits_dir, tmp_path):
    files = sorted(digits_dir.rglob("*.png"))[:60]
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,kind\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    # the one column besides the paths is the labels, whatever its name
    inferred = discover(csv_path, 0.2, 0)
    assert "label column 'kind'" in inferred.layout and inferred.classes == ["0", "1", "2"]  # 20 files each
    wider = tmp_path / "wider.csv"  # two columns left besides the paths: which one is not guessed
    wider.write_text("file,kind,size\n" + "".join(f"{f},{f.parent.name},8\n" for f in files))
    with pytest.raises(DataError, match=r"which column holds the label; columns found: \['file', 'kind', 'size'\]\. "
                       r"Name it one of .* or give it with --label-column \(data\.label_column\)"):
        discover(wider)
    splits = discover(wider, 0.2, 0, label_column="kind")
    assert len(splits.train) + len(splits.val) == 60 and "CSV" in splits.layout
    assert [s.path for s in splits.train] == [s.path for s in inferred.train]
    assert splits.classes == ["0", "1", "2", "3", "4", "5"][: len(splits.classes)]
    bad = tmp_path / "bad.csv"  # no path column by name or by its values
    bad.write_text("picture,whatever\na,x\nb,y\n")
    with pytest.raises(DataError, match=r"columns found: \['picture', 'whatever'\]"):
        discover(bad)
    named = tmp_path / "named.csv"  # the image file names tell the path column, the one left is the labels
    named.write_text("picture,whatever\n" + "".join(f"{f},{f.parent.name}\n" for f in files))
    assert "path column 'picture', label column 'whatever'" in discover(named, 0.2, 0).layout


def test_evaluation_labels_the_model_never_saw(digits_dir, tmp_path):
    root = _copy_digits(digits_dir, tmp_path / "e", classes=("0", "1", "9"))
    with pytest.raises(DataError, match=r"labels the model never saw: \{'9': 8\}.*knows: 0, 1"):
        labelled_samples(root, ["0", "1"])
    samples, _ = labelled_samples(root, ["0", "1", "9"])
    assert len(samples) == 24


def test_output_names_of_same_named_inputs_stay_apart():
    """--save-masks / --save-images name outputs after the inputs; a shared name must not overwrite another's."""
    assert output_stems(["a/x.jpg", "b/x.jpg", "c.jpg"]) == ["a_x", "b_x", "c"]
    assert output_stems(["d/a/x.jpg", "e/a/x.jpg"]) == ["d_a_x", "e_a_x"]  # as many folders as tell them apart
    assert output_stems(["x.jpg", "x.png"]) == ["x_jpg", "x_png"]
    names = output_stems(["t/x.jpg", "t/sub/x.jpg", "a_x.jpg", "x.jpg", "x.jpg"])
    assert len(set(names)) == len(names)
    # images in memory keep their place (a table's row), in characters any file system takes
    assert output_stems(["<memory 0>", "train.csv:12", "x/train.csv:13", "scan.DCM", "a b.JPG"]) == [
        "memory_0", "train.csv_12", "train.csv_13", "scan", "a_b"]


def test_the_preload_budget_counts_the_memory_pil_takes():
    """data.preload_mb holds decoded images up to what they take in memory: PIL keeps RGB in 4 bytes a pixel, so
    counting 3 went 33 % over the budget (20,000 images under the default 2,048 MB took ~2.9 GB)."""
    import subprocess
    import sys

    from PIL import Image

    from headstart.tasks.image.dataset import pixel_bytes

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc (Linux) to read a process's memory")
    # a fresh process: this one's freed memory would be reused and hide the growth
    measure = """
import numpy as np
from pathlib import Path
from PIL import Image
from headstart.tasks.image.dataset import pixel_bytes
def anon():
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("RssAnon"))
    return int(line.split()[1]) * 1024
rng = np.random.default_rng(0)
arrays = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(300)]
before = anon()
images = [Image.fromarray(a) for a in arrays]
print(anon() - before, sum(pixel_bytes(i) for i in images))
"""
    grown, counted = map(int, subprocess.run([sys.executable, "-c", measure], capture_output=True, text=True,
                                             check=True).stdout.split())
    assert 0.85 <= grown / counted <= 1.2, (grown, counted)
    assert pixel_bytes(Image.new("L", (10, 10))) == 100 and pixel_bytes(Image.new("I;16", (10, 10))) == 200


def test_a_train_and_test_folder_keeps_test_for_the_final_test(digits_dir, tmp_path):
    root = tmp_path / "kaggle"
    _copy_digits(digits_dir, root / "train", n=10)
    test = sorted((digits_dir / "0").iterdir())[10:13] + sorted((digits_dir / "2").iterdir())[10:12]
    for f in test:
        (root / "test" / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / "test" / f.parent.name / f.name)
    splits = discover(root, 0.2, 0)
    assert splits.layout == "train/ class folders, 20% stratified validation split (seed 0), test/ for the final test"
    assert splits.val_held_out and len(splits.train) + len(splits.val) == 30
    assert sorted((s.path.name, splits.classes[s.label]) for s in splits.test) == sorted(
        (f.name, f.parent.name) for f in test)
    assert not {s.path.parent.parent.name for s in splits.train + splits.val} - {"train"}
    assert "test/ has no images of: 1" in splits.notes  # said, not an error: a test set may lack a class
    shutil.copy(root / "train" / "1" / sorted(p.name for p in (root / "train" / "1").iterdir())[0],
                root / "test" / "0" / "copy.png")  # a training image in test/: said loudly
    assert any("test images are byte-identical copies of training images" in n for n in discover(root).notes)
    # test/ of images without class folders (Kaggle's unlabelled test set): named, not used
    shutil.rmtree(root / "test")
    (root / "test").mkdir()
    for f in test:
        shutil.copy(f, root / "test" / f"{f.parent.name}_{f.name}")
    splits = discover(root, 0.2, 0)
    assert not splits.test and splits.layout.startswith("train/ class folders")
    assert [n for n in splits.notes if n.startswith("test/ holds 5 image(s) without labels")]
    # the same beside a val/ folder: not 'test/ has no images of: 0, 1, 2'
    _copy_digits(digits_dir, root / "val", n=3)
    splits = discover(root)
    assert not splits.test and [n for n in splits.notes if n.startswith("test/ holds 5 image(s)")]
    assert not any("has no images of" in n for n in splits.notes)


def test_an_unpacked_archive_folder_is_read_from_the_folder_inside(digits_dir, tmp_path):
    """``unzip data.zip`` gives data/data/train/... and often a __MACOSX/ beside: the data is the folder inside."""
    root = tmp_path / "unzipped"
    _copy_digits(digits_dir, root / "digits" / "train")
    _copy_digits(digits_dir, root / "digits" / "val", n=3)
    (root / "__MACOSX" / "digits" / "train" / "0").mkdir(parents=True)
    (root / "__MACOSX" / "digits" / "train" / "0" / "._0.png").write_bytes(b"\x00\x05\x16\x07")  # AppleDouble
    splits = discover(root)
    assert splits.layout == "digits/: train/ and val/ folders" and splits.classes == ["0", "1", "2"]
    assert (len(splits.train), len(splits.val)) == (24, 9)
    assert len(labelled_samples(root, ["0", "1", "2"])[0]) == 9  # evaluate reads digits/val/
    one = tmp_path / "one" / "0"  # one class folder stays one class: an error, not a folder to go into
    _copy_digits(digits_dir, one.parent, classes=("0",))
    with pytest.raises(DataError, match=r"Only one class \('0'\)"):
        discover(one.parent)


@needs_shared(HYMENOPTERA)
def test_images_named_by_class_in_one_folder_are_classes(tmp_path):
    """Kaggle's Dogs vs. Cats (train/cat.0.jpg..., an unlabelled test1/) and the Oxford-IIIT Pets (images/
    Abyssinian_1.jpg, american_bulldog_10.jpg): no class folders, the class is the name before the number."""
    ants, bees = (sorted((HYMENOPTERA / "train" / c).glob("*.jpg"))[:12] for c in ("ants", "bees"))
    kaggle = tmp_path / "dogs-vs-cats"
    (kaggle / "train").mkdir(parents=True)
    (kaggle / "test1").mkdir()
    for i, (a, b) in enumerate(zip(ants, bees)):
        shutil.copy(a, kaggle / "train" / f"ant.{i}.jpg")
        shutil.copy(b, kaggle / "train" / f"bee.{i}.jpg")
        shutil.copy(a if i % 2 else b, kaggle / "test1" / f"{i + 1}.jpg")
    splits = discover(kaggle, 0.25, 0)
    assert splits.classes == ["ant", "bee"] and (len(splits.train), len(splits.val)) == (18, 6)
    assert splits.layout.startswith("train/ images named by class (ant.0.jpg: 'ant'), 25% stratified")
    assert all(s.path.name.split(".")[0] == splits.classes[s.label] for s in splits.train + splits.val)
    assert not splits.test and [n for n in splits.notes if n.startswith("test1/ holds 12 image(s) without labels")]
    with pytest.raises(DataError, match="holds train/ but no labelled test/ or val/"):
        labelled_samples(kaggle, ["ant", "bee"])  # nothing labelled to evaluate on besides the training images
    assert len(labelled_samples(kaggle / "train", ["ant", "bee"])[0]) == 24

    pets = tmp_path / "oxford-iiit-pet"  # capitalised cats, lower-case dogs, underscores in names; images/ beside
    (pets / "images").mkdir(parents=True)  # annotations/ of trimaps (PNGs named as the images), xmls/ and lists
    (pets / "annotations" / "trimaps").mkdir(parents=True)
    (pets / "annotations" / "xmls").mkdir()
    for i, (a, b) in enumerate(zip(ants, bees)):
        for src, name in ((a, f"Formica_rufa_{i + 1}"), (b, f"honey_bee_{i + 1}")):
            shutil.copy(src, pets / "images" / f"{name}.jpg")
            Image.new("L", (40, 30), 2).save(pets / "annotations" / "trimaps" / f"{name}.png")
            (pets / "annotations" / "xmls" / f"{name}.xml").write_text(f"<annotation><filename>{name}.jpg</filename>")
    (pets / "annotations" / "trainval.txt").write_text("Formica_rufa_1 1 1 1\n")
    from headstart.tasks import infer_task

    assert infer_task(pets) == "image"  # was: 2 classes, 'annotations' (of its trimaps) and 'images'
    splits = discover(pets)
    assert splits.classes == ["Formica_rufa", "honey_bee"] and len(splits.train) + len(splits.val) == 24
    assert splits.layout.startswith("images/: images named by class (Formica_rufa_1.jpg: 'Formica_rufa')")
    (pets / "annotations" / "test.txt").write_text("".join(f"Formica_rufa_{i} 1 1 1\nhoney_bee_{i} 2 2 1\n"
                                                         for i in range(1, 13, 3)))
    splits = discover(pets)
    assert sorted(s.path.stem for s in splits.test) == sorted(f"{c}_{i}" for c in ("Formica_rufa", "honey_bee")
                                                              for i in range(1, 13, 3))
    assert len(splits.train) + len(splits.val) == 16 and "annotations/test.txt does not list" in splits.layout
    assert sorted(s.path for s in labelled_samples(pets, splits.classes)[0]) == sorted(s.path for s in splits.test)

    camera = tmp_path / "camera"  # IMG_0001.jpg...: one name, no classes; the error says both ways to label
    camera.mkdir()
    for i, f in enumerate(ants[:6]):
        shutil.copy(f, camera / f"IMG_{i:04d}.jpg")
    with pytest.raises(DataError, match=r"one folder per class, or name them by class \(cat.0.jpg"):
        discover(camera)


BLOOD = HYMENOPTERA.parent / "blood_cells"


@needs_shared(BLOOD)
def test_a_patient_or_lesion_column_keeps_each_group_on_one_side_of_the_split(tmp_path):
    """HAM10000 as downloaded: HAM10000_metadata.csv (lesion_id, image_id, dx...) and the images spread over two
    folders; several images of one lesion must never be split between training and validation. Here the lesions are
    the microscope slides the blood-cell crops were cut from (BloodImage_00044_*: 11 crops of one slide)."""
    crops = sorted((BLOOD / "train").glob("*/*.jpg"))[::3]
    rows = []
    for i, crop in enumerate(crops):
        part = tmp_path / f"HAM10000_images_part_{1 + i % 2}"
        part.mkdir(exist_ok=True)
        shutil.copy(crop, part / f"ISIC_{i:07d}.jpg")
        rows.append(f"{crop.stem.rsplit('_', 1)[0]},ISIC_{i:07d},{crop.parent.name},histo,{'back' if i % 3 else 'face'}")
    table = tmp_path / "HAM10000_metadata.csv"
    table.write_text("lesion_id,image_id,dx,dx_type,localization\n" + "\n".join(rows) + "\n")
    splits = discover(table, 0.2, 0)
    assert "label column 'dx'" in splits.layout, splits.layout
    assert "files found as HAM10000_images_part_1/ or HAM10000_images_part_2/<value>.jpg" in splits.layout
    lesions = {f"ISIC_{i:07d}": crop.stem.rsplit("_", 1)[0] for i, crop in enumerate(crops)}
    n_lesions = len(set(lesions.values()))
    assert f"split by 'lesion_id': {n_lesions} groups of {len(crops)} images" in splits.layout
    train, val = ({lesions[s.path.stem] for s in part} for part in (splits.train, splits.val))
    assert train and val and not train & val  # no lesion on both sides
    assert len(splits.train) + len(splits.val) == len(crops) and all(s.path.is_file() for s in splits.train)
    # the folder as downloaded from Kaggle: its image folders twice (HAM10000_images_part_1/, ham10000_images_part_1/),
    # hmnist_*.csv tables of pixels: the metadata labels every image, so the folders are not classes
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        shutil.copytree(tmp_path / part, tmp_path / part.lower())
    (tmp_path / "hmnist_8_8_L.csv").write_text("pixel0000,pixel0001,label\n" + "12,200,2\n" * 30)
    folder = discover(tmp_path, 0.2, 0)
    assert folder.classes == splits.classes and folder.layout.startswith(
        "labels from HAM10000_metadata.csv (not the folder names (HAM10000_images_part_1, HAM10000_images_part_2, "
        "ham10000_images_part_1...)): CSV HAM10000_metadata.csv (path column 'image_id', label column 'dx'")
    assert sorted(s.path.name for s in folder.val) == sorted(s.path.name for s in splits.val)
    assert len(labelled_samples(tmp_path, splits.classes)[0]) == len(crops)  # evaluate: the same labels
    named = tmp_path / "named"  # class folders and a table of the same classes by number: the folder names stay
    for cls in ("Platelets", "RBC"):
        (named / cls).mkdir(parents=True)
        for crop in sorted((BLOOD / "train" / cls).glob("*.jpg"))[:6]:
            shutil.copy(crop, named / cls / crop.name)
    (named / "labels.csv").write_text("file,label\n" + "".join(
        f"{cls}/{f.name},{i}\n" for i, cls in enumerate(("Platelets", "RBC")) for f in sorted((named / cls).iterdir())))
    assert discover(named).classes == ["Platelets", "RBC"]
    assert len(labelled_samples(named, ["Platelets", "RBC"])[0]) == 12  # evaluate: the folders too
    # without the group column, a random split puts most multi-image lesions on both sides
    ungrouped = discover(table, 0.2, 0, group_column="none")
    assert "split by" not in ungrouped.layout
    assert {lesions[s.path.stem] for s in ungrouped.train} & {lesions[s.path.stem] for s in ungrouped.val}
    # a given split column that puts a lesion on both sides is said loudly
    lines = table.read_text().splitlines()
    table.write_text("\n".join([lines[0] + ",split"] + [f"{r},{'val' if i % 5 == 0 else 'train'}"
                                                         for i, r in enumerate(lines[1:])]) + "\n")
    noted = [n for n in discover(table).notes if "'lesion_id' group(s) have items in training and in validation" in n]
    assert noted and "optimistic" in noted[0]
    with pytest.raises(DataError, match="no column 'patient' for the groups"):
        discover(table, group_column="patient")


@needs_shared(BLOOD)
def test_multilabel_tables_keep_a_patient_on_one_side_too(tmp_path):
    """NIH ChestX-ray14's Data_Entry_2017.csv: 'Image Index', 'Finding Labels' (a|b), 'Patient ID' with blanks."""
    from headstart.tasks.multilabel import data as tagdata

    crops = sorted((BLOOD / "train").glob("*/*.jpg"))[::4]
    (tmp_path / "images").mkdir()
    lines = []
    for i, crop in enumerate(crops):
        shutil.copy(crop, tmp_path / "images" / f"{i:08d}_000.png")
        extra = "|Cell" if i % 3 else ""
        lines.append(f"{i:08d}_000.png,{crop.parent.name}{extra},0,{crop.stem.rsplit('_', 1)[0][-5:]}")
    table = tmp_path / "Data_Entry_2017.csv"
    table.write_text("Image Index,Finding Labels,Follow-up #,Patient ID\n" + "\n".join(lines) + "\n")
    splits = tagdata.discover(table, 0.25, 0, label_column="Finding Labels")
    assert "split by 'Patient ID'" in splits.layout and set(splits.classes) == {"Cell", "Platelets", "RBC", "WBC"}
    patient = {f"{i:08d}_000": crop.stem.rsplit("_", 1)[0] for i, crop in enumerate(crops)}
    assert not {patient[s.path.stem] for s in splits.train} & {patient[s.path.stem] for s in splits.val}
    assert len(splits.train) + len(splits.val) == len(crops) and splits.val


@needs_shared(BLOOD)
def test_a_given_validation_split_too_small_to_choose_by_is_held_out_of_training_instead(tmp_path):
    """Kaggle's chest X-rays come with val/ of 16 images beside 5,216 for training: here 6 against 851 crops."""
    from headstart.tasks.image.task import ImageClassifier

    root = tmp_path / "chest_xray"
    shutil.copytree(BLOOD / "train", root / "train")
    for cls in ("Platelets", "RBC", "WBC"):
        (root / "val" / cls).mkdir(parents=True)
        for f in sorted((BLOOD / "val" / cls).glob("*.jpg"))[:2]:
            shutil.copy(f, root / "val" / cls / f.name)
    splits = discover(root, 0.2, 0)
    assert splits.val_held_out and len(splits.train) + len(splits.val) == 851
    assert len(splits.val) > 150 and all(s.path.parent.parent.name == "train" for s in splits.val)
    assert sorted(s.path.name for s in splits.test) == sorted(p.name for p in (root / "val").glob("*/*.jpg"))
    assert "20% stratified validation split of the training items (seed 0) as val/ holds too few (6)" in splits.layout
    assert any(n.startswith("val/ holds 6 item(s) against 851 for training: too few") and "as the test split" in n
               for n in splits.notes)
    kept = ImageClassifier(overrides={"data.small_val": "keep"})._discover(root)
    assert not kept.val_held_out and len(kept.val) == 6 and not kept.test
    shutil.copytree(BLOOD / "test", root / "test")  # with a test/ beside: val/ is left out, and said so
    splits = discover(root, 0.2, 0)
    assert len(splits.test) == 282 and any("val/ is left out" in n for n in splits.notes)
    shutil.rmtree(root / "val")
    _copy_digits(BLOOD / "val", root / "val", classes=("Platelets", "RBC", "WBC"), n=20)  # 60 of 851: kept as given
    assert not discover(root).val_held_out


@needs_shared(BLOOD)
def test_the_nih_chest_xray_table_reads_as_multilabel_as_downloaded(tmp_path):
    """Data_Entry_2017.csv as published: 'Image Index' (file names in images/), 'Finding Labels' (a|b, 'No Finding'),
    'Patient ID' and seven more columns: tags, paths and groups found without naming a column."""
    from headstart.tasks import infer_task
    from headstart.tasks.multilabel import data as tagdata

    crops = sorted((BLOOD / "train").glob("*/*.jpg"))[::3]
    (tmp_path / "images").mkdir()
    header = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImageWidth,OriginalImageHeight,OriginalImagePixelSpacing_x,OriginalImagePixelSpacing_y")
    lines = []
    for i, crop in enumerate(crops):
        shutil.copy(crop, tmp_path / "images" / f"{i:08d}_000.png")
        tags = "No Finding" if crop.parent.name == "RBC" and i % 2 else crop.parent.name + ("|Cell" if i % 4 else "")
        lines.append(f"{i:08d}_000.png,{tags},0,{crop.stem.rsplit('_', 1)[0][-5:]},{40 + i % 30},{'MF'[i % 2]},PA,"
                     "2500,2048,0.143,0.143")
    table = tmp_path / "Data_Entry_2017.csv"
    table.write_text(header + "\n" + "\n".join(lines) + "\n")
    assert infer_task(table) == "multilabel"
    splits = tagdata.discover(table)
    assert "path column 'Image Index', labels column 'Finding Labels'" in splits.layout, splits.layout
    assert "split by 'Patient ID'" in splits.layout
    assert set(splits.classes) == {"Cell", "No Finding", "Platelets", "RBC", "WBC"}


@needs_shared(BLOOD)
def test_the_chexpert_table_reads_as_multilabel_with_its_uncertain_labels(tmp_path):
    """CheXpert's train.csv as downloaded: inside CheXpert-v1.0-small/, its paths begin with that folder's name,
    metadata columns beside one column per finding holding 1.0, 0.0, -1.0 (uncertain) or blank (not mentioned)."""
    from headstart.tasks import infer_task
    from headstart.tasks.multilabel import data as tagdata

    root = tmp_path / "CheXpert-v1.0-small"
    findings = ["No Finding", "Cardiomegaly", "Edema", "Pleural Effusion"]
    values = ["1.0", "0.0", "-1.0", ""]
    lines, truth = [], {}
    for i, crop in enumerate(sorted((BLOOD / "train").glob("*/*.jpg"))[::8]):
        rel = f"CheXpert-v1.0-small/train/patient{i // 2:05d}/study1/view{i % 2 + 1}_frontal.jpg"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(crop, tmp_path / rel)
        cells = [values[(i + k) % 4] for k in range(len(findings))]
        cells[1] = "1.0" if crop.parent.name == "WBC" else cells[1]
        truth[rel] = cells
        lines.append(f"{rel},Female,{30 + i % 50},Frontal,AP," + ",".join(cells))
    table = root / "train.csv"
    table.write_text("Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(findings) + "\n" + "\n".join(lines) + "\n")
    assert infer_task(table) == "multilabel"  # rows with two 1s: not ISIC's one-hot single label
    unsure = sum(c == "-1.0" for cells in truth.values() for c in cells)
    for policy, positive in (("negative", {"1.0"}), ("positive", {"1.0", "-1.0"})):
        splits = tagdata.discover(table, uncertain=policy)
        assert splits.classes == sorted(findings)
        assert f"4 0/1 columns, {unsure} uncertain (-1) label(s) read as {policy}" in splits.layout, splits.layout
        assert "paths relative to the folder holding CheXpert-v1.0-small/" in splits.layout
        for s in splits.train + splits.val:  # the path as written, the labels as the policy reads them
            cells = truth[s.path.relative_to(tmp_path).as_posix()]
            assert {splits.classes[t] for t in s.label} == {f for f, c in zip(findings, cells) if c in positive}
        assert len(splits.train) + len(splits.val) == len(truth)
        patient = {s.path.parent.parent.name for s in splits.train}  # a patient's two views stay together
        assert patient and not patient & {s.path.parent.parent.name for s in splits.val}
        assert f"split by the patients the paths name: {(len(truth) + 1) // 2} of {len(truth)} images" in splits.layout
        held = tagdata.labelled_tags(table, splits.classes, uncertain=policy)  # evaluate reads it the same way
        assert sorted((s.path, s.label) for s in held) == sorted((s.path, s.label) for s in splits.train + splits.val)


@needs_shared(BLOOD)
def test_a_patient_named_in_the_file_names_stays_on_one_side_of_the_split(tmp_path):
    """Kaggle's chest X-rays name the patient of each pneumonia image (person1_bacteria_1.jpeg, person1_virus_6.jpeg)
    and not of the normal ones (IM-0115-0001.jpeg); a validation split held out of train/ keeps each person's images
    on one side. Folders above DATA ('case1/') are not read as a patient."""
    root = tmp_path / "case1" / "chest_xray" / "train"
    person = {}
    for i, crop in enumerate(sorted((BLOOD / "train" / "RBC").glob("*.jpg"))[:60]):
        (root / "PNEUMONIA").mkdir(parents=True, exist_ok=True)
        name = f"person{i // 3 + 1}_{('bacteria', 'virus')[i % 2]}_{i}.jpeg"
        shutil.copy(crop, root / "PNEUMONIA" / name)
        person[name] = f"person{i // 3 + 1}"
    for i, crop in enumerate(sorted((BLOOD / "train" / "WBC").glob("*.jpg"))[:40]):
        (root / "NORMAL").mkdir(parents=True, exist_ok=True)
        shutil.copy(crop, root / "NORMAL" / f"IM-{i:04d}-0001.jpeg")
    splits = discover(root.parent)
    assert "split by the patients the paths name: 20 of 60 images (e.g. 'person10')" in splits.layout, splits.layout
    train = {person[s.path.name] for s in splits.train if s.path.name in person}
    val = {person[s.path.name] for s in splits.val if s.path.name in person}
    assert train and val and not train & val
    assert sum(s.path.parent.name == "NORMAL" for s in splits.val) == 8  # ungrouped images split as before
    plain = discover(root.parent, group_column="none")
    assert "patients" not in plain.layout and {person[s.path.name] for s in plain.train if s.path.name in person} & {
        person[s.path.name] for s in plain.val if s.path.name in person}
    faces = tmp_path / "faces"  # classes that are subjects: people to tell apart, not patients to keep together
    for k, cls in enumerate(("Platelets", "RBC", "WBC")):
        (faces / f"subject{k + 1}").mkdir(parents=True)
        for f in sorted((BLOOD / "train" / cls).glob("*.jpg"))[:5]:
            shutil.copy(f, faces / f"subject{k + 1}" / f.name)
    people = discover(faces)
    assert "patients" not in people.layout and len(people.val) == 3


@needs_shared(BLOOD)
def test_versions_of_one_dataset_side_by_side_are_not_taken_for_classes(tmp_path):
    """PlantVillage as downloaded: color/, grayscale/ and segmented/, each holding the same class folders; read as
    3 classes they would teach colour against grey. An error says to give one of them; inside one, it trains."""
    root = tmp_path / "plantvillage dataset"
    for version in ("color", "grayscale", "segmented"):
        _copy_digits(BLOOD / "train", root / version, classes=("Platelets", "RBC", "WBC"), n=4)
    with pytest.raises(DataError, match=r"every folder in it \(color/, grayscale/, segmented/\) holds the same 3 "
                                        r"subfolders \(Platelets, RBC, WBC\).*Give one of them as DATA"):
        discover(root)
    assert discover(root / "color").classes == ["Platelets", "RBC", "WBC"]
    for cls, source in (("cats", "RBC"), ("dogs", "WBC")):  # class folders that each hold train/ and test/: classes
        for split in ("train", "test"):
            (tmp_path / "pets" / cls / split).mkdir(parents=True)
            for f in sorted((BLOOD / "train" / source).glob("*.jpg"))[:3]:
                shutil.copy(f, tmp_path / "pets" / cls / split / f.name)
    assert discover(tmp_path / "pets").classes == ["cats", "dogs"]
    stl = _copy_digits(BLOOD / "train", tmp_path / "stl10", classes=("RBC", "WBC"), n=6)  # STL-10's unlabeled/
    _copy_digits(BLOOD / "train", stl / "unlabeled", classes=("Platelets",), n=6)
    splits = discover(stl)
    assert splits.classes == ["RBC", "WBC"] and "(unlabeled/: images without a class, not read)" in splits.layout
    covid = tmp_path / "COVID-19_Radiography_Dataset"  # class folders of images/ and masks/ (lung masks)
    for cls in ("COVID", "Normal", "Viral Pneumonia"):
        _copy_digits(BLOOD / "train", covid / cls, classes=("Platelets",), n=6)
        (covid / cls / "Platelets").rename(covid / cls / "images")
        shutil.copytree(covid / cls / "images", covid / cls / "masks")
    (covid / "COVID.metadata.xlsx").write_bytes(b"PK")
    from headstart.tasks import infer_task

    assert infer_task(covid) == "image"
    splits = discover(covid)
    assert splits.classes == ["COVID", "Normal", "Viral Pneumonia"] and len(splits.train) + len(splits.val) == 18
    assert all(s.path.parent.name == "images" for s in splits.train + splits.val)
    assert "class folders (each one's images/; masks/ beside them not read)" in splits.layout


@needs_shared(BLOOD)
def test_tensorflows_tutorial_sets_name_their_test_folder_only(tmp_path):
    """Rock-paper-scissors (rps/ beside rps-test-set/) and horses or humans (horse-or-human/ beside
    validation-horse-or-human/) were refused as 'versions of one dataset': the folder beside the one named for a split
    trains."""
    rps = tmp_path / "rps_data"
    _copy_digits(BLOOD / "train", rps / "rps", classes=("Platelets", "RBC", "WBC"), n=6)
    _copy_digits(BLOOD / "val", rps / "rps-test-set", classes=("Platelets", "RBC", "WBC"), n=3)
    splits = discover(rps)
    assert splits.layout.startswith("rps/ class folders, 20% stratified validation split (seed 0), rps-test-set/ "
                                    "for the final test"), splits.layout
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (18, 9)
    assert {s.path.parent.parent.name for s in splits.test} == {"rps-test-set"}
    hoh = tmp_path / "hoh"
    _copy_digits(BLOOD / "train", hoh / "horse-or-human", classes=("RBC", "WBC"), n=30)
    _copy_digits(BLOOD / "val", hoh / "validation-horse-or-human", classes=("RBC", "WBC"), n=5)
    splits = discover(hoh)
    assert splits.layout.startswith("horse-or-human/ and validation-horse-or-human/ folders"), splits.layout
    assert (len(splits.train), len(splits.val)) == (60, 10) and not splits.val_held_out
    _copy_digits(BLOOD / "train", hoh / "extra", classes=("RBC", "WBC"), n=2)  # two folders beside: no guess
    with pytest.raises(DataError, match="versions of one dataset"):
        discover(hoh)


@needs_shared(BLOOD)
def test_one_hot_label_columns_are_single_label_classes(tmp_path):
    """ISIC's ground truth as downloaded: image,MEL,NV,...,UNK with 1.0 / 0.0, one 1 per row, images as ids in a
    folder beside the table; UNK holds no 1 in training."""
    from headstart.tasks import infer_task

    crops = sorted((BLOOD / "train").glob("*/*.jpg"))[::6]
    classes = ["Platelets", "RBC", "WBC"]
    (tmp_path / "ISIC_Training_Input").mkdir()
    lines = []
    for i, crop in enumerate(crops):
        shutil.copy(crop, tmp_path / "ISIC_Training_Input" / f"ISIC_{i:07d}.jpg")
        lines.append(f"ISIC_{i:07d}," + ",".join("1.0" if c == crop.parent.name else "0.0" for c in classes) + ",0.0")
    table = tmp_path / "ISIC_GroundTruth.csv"
    table.write_text("image," + ",".join(classes) + ",UNK\n" + "\n".join(lines) + "\n")
    assert infer_task(table) == "image"
    splits = discover(table)
    assert splits.classes == classes
    assert "one-hot label columns Platelets, RBC, WBC, UNK; UNK hold(s) no 1: not a class" in splits.layout
    truth = {f"ISIC_{i:07d}": crop.parent.name for i, crop in enumerate(crops)}
    assert all(splits.classes[s.label] == truth[s.path.stem] for s in splits.train + splits.val)
    samples, _ = labelled_samples(table, classes)  # evaluate reads it the same way
    assert [classes[s.label] for s in samples] == [truth[f"ISIC_{i:07d}"] for i in range(len(crops))]
    table.write_text(table.read_text().replace(",1.0,0.0,0.0,0.0\n", ",1.0,1.0,0.0,0.0\n", 1))  # two 1s: not one-hot
    with pytest.raises(DataError, match="cannot tell which column holds the label"):
        discover(table)


@needs_shared(BLOOD)
def test_split_folders_named_as_kaggle_sets_name_them_are_splits_not_classes(tmp_path):
    """Brain Tumor MRI (Training/, Testing/), Cat and Dog (training_set/training_set/, test_set/test_set/) and Intel
    Image Classification (seg_train/seg_train/, seg_test/seg_test/, seg_pred/seg_pred/ of unlabelled images) were
    read as 2-3 classes named after their split folders; a class named train_station stays a class."""
    def copy(src: Path, dst: Path, n: int) -> None:
        for cls in ("Platelets", "RBC", "WBC"):
            (dst / cls).mkdir(parents=True)
            for f in sorted((src / cls).glob("*.jpg"))[:n]:
                shutil.copy(f, dst / cls / f.name)

    mri = tmp_path / "brain_tumor_mri"
    copy(BLOOD / "train", mri / "Training", 10)
    copy(BLOOD / "test", mri / "Testing", 4)
    splits = discover(mri, 0.2, 0)
    assert splits.classes == ["Platelets", "RBC", "WBC"] and len(splits.test) == 12
    assert splits.layout.startswith("Training/ class folders, 20% stratified") and "Testing/ for the final test" in splits.layout
    assert len(labelled_samples(mri, splits.classes)[0]) == 12  # evaluate reads Testing/

    cats = tmp_path / "cat-and-dog"
    copy(BLOOD / "train", cats / "training_set" / "training_set", 10)
    copy(BLOOD / "val", cats / "test_set" / "test_set", 3)
    splits = discover(cats, 0.2, 0)
    assert splits.classes == ["Platelets", "RBC", "WBC"] and len(splits.test) == 9
    assert splits.layout.startswith("training_set/training_set/ class folders")

    intel = tmp_path / "intel"
    copy(BLOOD / "train", intel / "seg_train" / "seg_train", 10)
    copy(BLOOD / "val", intel / "seg_test" / "seg_test", 3)
    (intel / "seg_pred" / "seg_pred").mkdir(parents=True)
    for f in sorted((BLOOD / "test" / "RBC").glob("*.jpg"))[:5]:
        shutil.copy(f, intel / "seg_pred" / "seg_pred" / f.name)
    splits = discover(intel, 0.2, 0)
    assert splits.classes == ["Platelets", "RBC", "WBC"] and len(splits.test) == 9
    assert not any("seg_pred" in str(s.path) for s in splits.train + splits.val + splits.test)
    assert "seg_pred/ beside the split folders: not a train, validation or test folder, not read" in splits.notes

    places = tmp_path / "places"  # scene classes whose names hold a split word: classes, as they hold images
    for cls, src in (("train_station", "RBC"), ("testing_lab", "WBC"), ("office", "Platelets")):
        (places / cls).mkdir(parents=True)
        for f in sorted((BLOOD / "train" / src).glob("*.jpg"))[:6]:
            shutil.copy(f, places / cls / f.name)
    assert discover(places).classes == ["office", "testing_lab", "train_station"]

    food = tmp_path / "food-101"  # Food-101, CUB-200: images/ of class folders beside meta/ lists
    copy(BLOOD / "train", food / "images", 6)
    (food / "meta").mkdir()
    (food / "meta" / "train.txt").write_text("RBC/x\n")
    splits = discover(food)
    assert splits.classes == ["Platelets", "RBC", "WBC"] and splits.layout.startswith("images/: class folders")
    listed = sorted(f"{f.parent.name}/{f.stem}" for f in (food / "images").rglob("*.jpg"))[::3]
    (food / "meta" / "test.txt").write_text("\n".join(listed) + "\n")  # the dataset's own test split
    splits = discover(food)
    assert sorted(f"{s.path.parent.name}/{s.path.stem}" for s in splits.test) == listed
    assert len(splits.train) + len(splits.val) == 18 - len(listed) and "the 6 it lists the test split" in splits.layout
    cub = tmp_path / "CUB_200_2011"  # images/ numbered in images.txt, the split by number in train_test_split.txt
    copy(BLOOD / "train", cub / "images", 6)
    files = sorted(f.relative_to(cub / "images").as_posix() for f in (cub / "images").rglob("*.jpg"))
    (cub / "images.txt").write_text("".join(f"{i} {f}\n" for i, f in enumerate(files, start=1)))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {int(i % 3 != 0)}\n" for i in range(1, len(files) + 1)))
    (cub / "classes.txt").write_text("1 Platelets\n2 RBC\n3 WBC\n")
    for folder, name in (("attributes", "image_attribute_labels.txt"), ("parts", "part_locs.txt")):
        (cub / folder).mkdir()
        (cub / folder / name).write_text("1 1 0\n")
    splits = discover(cub)
    assert splits.classes == ["Platelets", "RBC", "WBC"] and splits.layout.startswith("images/: class folders")
    assert sorted(s.path.relative_to(cub / "images").as_posix() for s in splits.test) == files[2::3]
    assert "the 6 it lists the test split" in splits.layout and "train_test_split.txt (is_training 0" in splits.layout
    assert sorted(s.path for s in labelled_samples(cub, splits.classes)[0]) == sorted(s.path for s in splits.test)
    assert len(labelled_samples(food, splits.classes)[0]) == 6  # evaluate: the listed images, not the training ones
    dtd = tmp_path / "dtd"  # images/ beside labels/{train,val,test}{1..10}.txt of class/file.jpg and imdb/imdb.mat
    copy(BLOOD / "train", dtd / "images", 6)
    files = sorted(f.relative_to(dtd / "images").as_posix() for f in (dtd / "images").rglob("*.jpg"))
    (dtd / "labels").mkdir()
    for k in (1, 2):
        for name, part in (("train", files[k::3]), ("val", files[k + 1::3] if k == 1 else files[0::3]),
                           ("test", files[(k + 1) % 3::3])):
            (dtd / "labels" / f"{name}{k}.txt").write_text("".join(f"{f}\n" for f in part))
    (dtd / "imdb").mkdir()
    (dtd / "imdb" / "imdb.mat").write_bytes(b"MATLAB 5.0 MAT-file")
    splits = discover(dtd)
    assert splits.classes == ["Platelets", "RBC", "WBC"] and splits.layout.startswith("images/: class folders")
    assert sorted(s.path.relative_to(dtd / "images").as_posix() for s in splits.test) == files[2::3]  # test1.txt
    assert "labels/test1.txt" in splits.layout
    dogs = tmp_path / "stanford-dogs"  # Images/ beside Annotation/: the same class folders of XML files without a suffix
    copy(BLOOD / "train", dogs / "Images", 6)
    for cls in ("Platelets", "RBC", "WBC"):
        (dogs / "Annotation" / cls).mkdir(parents=True)
        for f in (dogs / "Images" / cls).iterdir():
            (dogs / "Annotation" / cls / f.stem).write_text(f"<annotation>\n<filename>{f.stem}</filename>\n")
    from headstart.tasks import infer_task
    from headstart.tasks.text import is_text_file

    assert infer_task(dogs) == "image" and not is_text_file(next((dogs / "Annotation" / "RBC").iterdir()))
    assert discover(dogs).layout.startswith("Images/: class folders")
    (places / "empty_class").mkdir()  # an empty class folder is still an error, not a folder to pass over
    with pytest.raises(DataError, match="Class folder\\(s\\) with no images"):
        discover(places)


@needs_shared(BLOOD)
def test_a_split_folder_labelled_by_a_table_is_read_with_its_labels(tmp_path):
    """Tiny ImageNet's val/ is images/ beside val_annotations.txt (file, class, box; no header, tabs), GTSRB's Test/ is
    loose PNGs labelled by Test.csv beside it (Width,...,Roi.X1,...,ClassId,Path): both were an error or left out as
    unlabelled. The label column is the one holding training's classes only, not a small box coordinate."""
    cells = {c: sorted((BLOOD / "test" / c).glob("*.jpg")) for c in ("Platelets", "RBC", "WBC")}
    tiny = tmp_path / "tiny-imagenet-200"
    lines = []
    for k, files in enumerate(cells.values()):
        wnid = f"n0{k + 1}443537"
        (tiny / "train" / wnid / "images").mkdir(parents=True)
        for i, f in enumerate(files[:8]):
            shutil.copy(f, tiny / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        (tiny / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
        (tiny / "val" / "images").mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(files[8:12]):
            shutil.copy(f, tiny / "val" / "images" / f"val_{k * 4 + i}.JPEG")
            lines.append(f"val_{k * 4 + i}.JPEG\t{wnid}\t{i}\t{i + 1}\t30\t40\n")
        (tiny / "test" / "images").mkdir(parents=True, exist_ok=True)
        shutil.copy(files[12], tiny / "test" / "images" / f"test_{k}.JPEG")
    (tiny / "val" / "val_annotations.txt").write_text("".join(lines))
    (tiny / "wnids.txt").write_text("n01443537\nn02443537\nn03443537\n")
    splits = discover(tiny)
    truth = {f"val_{k * 4 + i}.JPEG": f"n0{k + 1}443537" for k in range(3) for i in range(4)}
    assert splits.classes == sorted(set(truth.values())) and len(splits.train) == 24 and len(splits.val) == 12
    assert all(splits.classes[s.label] == truth[s.path.name] for s in splits.val)
    assert "val/: 12 image(s) labelled by val/val_annotations.txt" in splits.notes
    assert not splits.test and any(n.startswith("test/ holds 3 image(s) without labels") for n in splits.notes)
    evaluated, _ = labelled_samples(tiny, splits.classes)  # evaluate: the labelled val/, not test/images/
    assert sorted((s.path.name, splits.classes[s.label]) for s in evaluated) == sorted(truth.items())

    gtsrb = tmp_path / "gtsrb"
    rows = ["Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path"]
    (gtsrb / "Test").mkdir(parents=True)
    for k, files in enumerate(cells.values()):
        (gtsrb / "Train" / str(k)).mkdir(parents=True)
        for i, f in enumerate(files[:8]):
            Image.open(f).save(gtsrb / "Train" / str(k) / f"{k:05d}_{i:05d}.png")
        for i, f in enumerate(files[8:11]):
            name = f"{k * 3 + i:05d}.png"
            Image.open(f).save(gtsrb / "Test" / name)
            rows.append(f"36,37,{i + 4},{i % 2},30,31,{k},Test/{name}")  # Roi.Y1: only class names, fewer of them
    (gtsrb / "Test.csv").write_text("\n".join(rows) + "\n")
    splits = discover(gtsrb)
    assert splits.classes == ["0", "1", "2"] and len(splits.test) == 9 and "Test/ for the final test" in splits.layout
    assert all(splits.classes[s.label] == str(int(s.path.stem) // 3) for s in splits.test)
    assert "Test/: 9 image(s) labelled by Test.csv" in splits.notes
    assert len(labelled_samples(gtsrb, splits.classes)[0]) == len(labelled_samples(gtsrb / "Test", ["0", "1", "2"])[0]) == 9


@needs_shared(HYMENOPTERA)
def test_archives_and_arrays_are_named_with_what_to_do(tmp_path):
    """A Kaggle download given as its .zip, a folder holding it, CIFAR-10's 'python version' (pickled arrays without
    a suffix) without its training batches, and .npz arrays: the error says what the files are and what to do."""
    import pickle
    import zipfile

    archive = tmp_path / "hymenoptera.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((HYMENOPTERA / "val" / "ants").glob("*.jpg"))[:4]:
            z.write(f, f"hymenoptera/ants/{f.name}")
    with pytest.raises(DataError, match=r"It is an archive \(hymenoptera.zip\): unpack it first \(`unzip '.*"
                       r"hymenoptera.zip' -d '.*hymenoptera'`\) and give the folder"):
        discover(archive)
    (tmp_path / "download").mkdir()
    shutil.move(archive, tmp_path / "download" / archive.name)
    with pytest.raises(DataError, match=r"No class folders in .*It holds an archive \(hymenoptera.zip\)"):
        discover(tmp_path / "download")
    from headstart.tasks.text import data as textdata

    with pytest.raises(DataError, match=r"found a '.zip' suffix. It is an archive \(hymenoptera.zip\): unpack it"):
        textdata.discover(tmp_path / "download" / archive.name)  # --task text: the same advice
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("batches.meta", "test_batch"):  # the training batches missing
        with open(cifar / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (10, 3072), dtype=np.uint8), b"labels": [0, 1] * 5}, f)
    for data in (cifar.parent, cifar):  # a class folder without images, or no class folders: both say what it holds
        with pytest.raises(DataError, match=r"CIFAR-10's Python pickles of arrays .*\(batches.meta, test_batch\), not "
                           r"image files: headstart reads them as torchvision downloads them: give the folder "
                           r"cifar-10-batches-py/ with data_batch_1"):
            discover(data)
    arrays = tmp_path / "arrays"
    for cls in ("a", "b"):
        (arrays / cls).mkdir(parents=True)
        np.savez(arrays / cls / "x.npz", x=np.zeros((4, 4)))
    with pytest.raises(DataError, match=r"Class folder\(s\) with no images .* It holds NumPy arrays \(x.npz\)"):
        discover(arrays)


@needs_shared(HYMENOPTERA)
def test_caltechs_clutter_folder_is_no_class(tmp_path):
    """Caltech-101 as downloaded: 101_ObjectCategories/<class>/ beside BACKGROUND_Google/ (clutter, no object class),
    left out of training and of evaluation as torchvision's Caltech101 leaves it."""
    root = tmp_path / "caltech101" / "101_ObjectCategories"
    for name, source in (("ants", "train/ants"), ("bees", "train/bees"), ("BACKGROUND_Google", "val/ants")):
        (root / name).mkdir(parents=True)
        for f in sorted((HYMENOPTERA / source).glob("*.jpg"))[:10]:
            shutil.copy(f, root / name / f.name)
    splits = discover(tmp_path / "caltech101")
    assert splits.classes == ["ants", "bees"] and len(splits.train) + len(splits.val) == 20
    assert "BACKGROUND_Google/: clutter images of no class" in splits.layout
    samples, _ = labelled_samples(root, splits.classes)
    assert len(samples) == 20 and all("BACKGROUND_Google" not in str(s.path) for s in samples)


@needs_shared(HYMENOPTERA)
def test_kaggles_gtsrb_keeps_each_track_on_one_side_of_the_validation_split(tmp_path):
    """Kaggle's GTSRB names its training images class_track_frame (Train/1/00001_00004_00012.png): a track's frames,
    one sign photographed as a car passed it, stay together when validation is held out; a class of one track
    leaves the names alone (no split could hold it out otherwise)."""
    root = tmp_path / "gtsrb"
    for k, cls in enumerate(("ants", "bees")):
        (root / "Train" / str(k)).mkdir(parents=True)
        for i, f in enumerate(sorted((HYMENOPTERA / "train" / cls).glob("*.jpg"))[:30]):  # 6 tracks of 5 frames
            shutil.copy(f, root / "Train" / str(k) / f"{k:05d}_{i // 5:05d}_{i % 5:05d}.jpg")
    splits = discover(root)
    assert "split by GTSRB's tracks (file names class_track_frame): 12 tracks" in splits.layout
    train = {(s.label, s.path.name[6:11]) for s in splits.train}
    val = {(s.label, s.path.name[6:11]) for s in splits.val}
    assert val and not train & val
    for i, f in enumerate(sorted((root / "Train" / "1").iterdir())):  # class 1 as one track: no grouping
        f.rename(f.with_name(f"00001_00000_{i:05d}.jpg"))
    assert "GTSRB's tracks" not in discover(root).layout


@needs_shared(HYMENOPTERA)
def test_split_folders_named_as_trainings_but_for_case_or_spacing_are_its_classes(tmp_path):
    from conftest import hymenoptera_subset

    root = hymenoptera_subset(tmp_path / "d", {"train": 6, "val": 4})
    (root / "train" / "ants").rename(root / "train" / "Ants")
    (root / "val" / "bees").rename(root / "val" / "Bees ")  # a trailing space, as some zips keep
    splits = discover(root)
    assert splits.classes == ["Ants", "bees"]
    by_class = {c: sorted(s.path.parent.name for s in splits.val if s.label == i) for i, c in enumerate(splits.classes)}
    assert by_class == {"Ants": ["ants"] * 4, "bees": ["Bees "] * 4}
    assert any("2 class folder(s) named as training's but for case" in n and "'ants' → 'Ants'" in n
               for n in splits.notes), splits.notes
    samples, _ = labelled_samples(root / "val", splits.classes)  # evaluate reads them the same way
    assert sorted(splits.classes[s.label] for s in samples) == ["Ants"] * 4 + ["bees"] * 4
    (root / "train" / "ANTS").mkdir()  # two training classes that fold alike: nothing is guessed
    shutil.copy(next((root / "train" / "Ants").iterdir()), root / "train" / "ANTS")
    shutil.copy(next((root / "train" / "bees").iterdir()), root / "train" / "ANTS" / "b.jpg")
    with pytest.raises(DataError, match=r"val has classes that train/ does not: \{'ants': 4\}"):
        discover(root)
