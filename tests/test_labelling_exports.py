"""Label Studio's JSON export, as people who label their own data save it: image classification (choices, images
uploaded and renamed by Label Studio), detection (rectangles in percent, a rotated one, polygons) and text
classification, each built from real data in ../shared and read as the matching reader reads a table or a folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import HYMENOPTERA, SHARED, needs_shared

from headstart.errors import DataError
from headstart.tasks import infer_task
from headstart.tasks.exports import read_tasks

BCCD = SHARED / "bccd"
SMS = SHARED / "sms_spam" / "SMSSpamCollection.tsv"


def _task(number: int, data: dict, result: list | None, cancelled: bool = False) -> dict:
    """A task as Label Studio exports it (annotations with ids, dates, a prediction that is not a label)."""
    annotations = [] if result is None else [{"id": number, "result": result, "was_cancelled": cancelled,
                                              "created_at": "2026-11-02T10:00:00Z", "completed_by": 1}]
    return {"id": number, "data": data, "annotations": annotations, "meta": {}, "project": 3,
            "predictions": [{"result": [{"type": "choices", "value": {"choices": ["wrong"]}}]}]}


def _choice(*choices: str) -> list[dict]:
    return [{"id": "a1", "type": "choices", "from_name": "choice", "to_name": "image",
             "value": {"choices": list(choices)}}]


@needs_shared(HYMENOPTERA)
def test_an_export_of_image_choices_trains_as_a_table_of_its_images(tmp_path: Path) -> None:
    """Images uploaded to Label Studio are named '8d5e3f2a-photo.jpg' in the export; the user's folder holds
    'photo.jpg'. Tasks not labelled yet, and a cancelled annotation, are left out and counted; predictions are not
    labels."""
    from headstart.tasks.image import data as imagedata

    (tmp_path / "photos").mkdir()
    files = sorted(HYMENOPTERA.glob("train/*/*.jpg"))[::8]
    tasks = []
    for i, f in enumerate(files):
        shutil.copy(f, tmp_path / "photos" / f.name)
        data = {"image": f"/data/upload/3/{i:08x}-{f.name}"}
        tasks.append(_task(i + 1, data, None if i % 10 == 9 else _choice(f.parent.name), cancelled=i == 4))
    export = tmp_path / "project-3-at-2026-11-02-10-00-1a2b3c4d.json"
    export.write_text(json.dumps(tasks))
    assert infer_task(export) == "image" and infer_task(tmp_path) == "image"
    splits = imagedata.discover(export)
    read = splits.train + splits.val
    unlabelled = sum(i % 10 == 9 or i == 4 for i in range(len(files)))
    assert splits.classes == ["ants", "bees"] and len(read) == len(files) - unlabelled
    assert all(s.path.parent == tmp_path / "photos" for s in read)
    truth = {f.name: f.parent.name for f in files}
    assert all(truth[s.path.name] == splits.classes[s.label] for s in read)
    assert f"{unlabelled} task(s) without an annotation (not labelled yet), not read" in splits.layout, splits.layout
    assert "Label Studio export" in splits.layout
    folder = imagedata.discover(tmp_path)  # the folder holding the export and the images
    assert sorted(s.path.name for s in folder.train + folder.val) == sorted(s.path.name for s in read)
    samples, _ = imagedata.labelled_samples(export, ["ants", "bees"])  # evaluate reads it the same way
    assert sorted(s.path.name for s in samples) == sorted(s.path.name for s in read)
    predicted = imagedata.table_images(export)  # `predict RUN export.json`: every task, labelled or not, in order
    assert [f.name for f in predicted] == [f.name for f in files]


@needs_shared(HYMENOPTERA)
def test_several_choices_are_multi_label(tmp_path: Path) -> None:
    from headstart.tasks.multilabel import data as tagdata

    files = sorted(HYMENOPTERA.glob("train/*/*.jpg"))[::10]
    tasks = []
    for i, f in enumerate(files):
        shutil.copy(f, tmp_path / f.name)
        tags = [f.parent.name, *(["insect"] if i % 2 else [])]
        tasks.append(_task(i + 1, {"image": f"/data/local-files/?d={f.name}"}, _choice(*tags)))
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    assert infer_task(tmp_path / "export.json") == "multilabel"
    splits = tagdata.discover(tmp_path / "export.json")
    assert splits.classes == ["ants", "bees", "insect"]
    truth = {f.name: sorted([f.parent.name, *(["insect"] if i % 2 else [])]) for i, f in enumerate(files)}
    assert {s.path.name: sorted(splits.classes[t] for t in s.label) for s in splits.train + splits.val} == truth


@needs_shared(BCCD)
def test_an_export_of_rectangles_gives_the_boxes_of_the_voc_files(tmp_path: Path) -> None:
    """BCCD's VOC boxes written as Label Studio rectangles (percent of the image): the same boxes and classes; a
    rotated rectangle is the box around it, a polygon its box; an image missing is an error naming the task."""
    from headstart.tasks.detection import data as dd

    found = dd.discover(BCCD)
    truth = {s.path.stem: s for s in found.train + found.val + found.test}
    ids = sorted(truth)[:12]
    tasks = []
    (tmp_path / "images").mkdir()
    for i, stem in enumerate(ids):
        shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", tmp_path / "images" / f"{stem}.jpg")
        s = truth[stem]
        result = [{"type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": 640,
                   "original_height": 480, "image_rotation": 0,
                   "value": {"x": 100 * float(b[0]), "y": 100 * float(b[1]), "width": 100 * float(b[2] - b[0]),
                             "height": 100 * float(b[3] - b[1]), "rotation": 0,
                             "rectanglelabels": [found.classes[int(c)]]}}
                  for b, c in zip(s.boxes, s.labels)]
        tasks.append(_task(i + 1, {"image": f"/data/upload/7/{i:08x}-{stem}.jpg"}, result))
    tasks.append(_task(99, {"image": f"/data/upload/7/ffffffff-{ids[0]}.jpg"}, None))  # not labelled yet
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    assert infer_task(export) == "detection" and infer_task(tmp_path) == "detection"
    splits = dd.discover(export)
    read = splits.train + splits.val
    assert len(read) == 12 and splits.issues.get("tasks without an annotation (not labelled yet), "
                                                 "not read") == 1
    for s in read:
        want = truth[s.path.stem]
        names = sorted(zip([splits.classes[int(c)] for c in s.labels], s.boxes.tolist()))
        wanted = sorted(zip([found.classes[int(c)] for c in want.labels], want.boxes.tolist()))
        assert [n for n, _ in names] == [n for n, _ in wanted], s.path
        assert torch.allclose(torch.tensor([b for _, b in names]), torch.tensor([b for _, b in wanted]), atol=1e-5)
    rotated = tmp_path / "rotated.json"  # 40 x 10 px at (20, 10) of a 200 x 100 image, turned 90 degrees
    rotated.write_text(json.dumps([_task(1, {"image": f"images/{ids[0]}.jpg"}, [
        {"type": "rectanglelabels", "original_width": 200, "original_height": 100,
         "value": {"x": 10, "y": 10, "width": 20, "height": 10, "rotation": 90, "rectanglelabels": ["RBC"]}},
        {"type": "polygonlabels", "value": {"points": [[50, 50], [60, 55], [55, 70]], "polygonlabels": ["WBC"]}}])]))
    task = read_tasks(rotated)[0]
    assert [r.label for r in task.regions] == ["RBC", "WBC"]
    assert task.regions[0].box == pytest.approx((0.05, 0.1, 0.1, 0.5))
    assert task.regions[1].box == pytest.approx((0.5, 0.5, 0.6, 0.7))
    (tmp_path / "images" / f"{ids[3]}.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of its 12 labelled task\(s\) name an image not found .* task 4"):
        dd.discover(export)


@needs_shared(SMS)
def test_an_export_of_text_choices_is_text_data(tmp_path: Path) -> None:
    from headstart.tasks.text import data as textdata

    rows = [line.split("\t", 1) for line in SMS.read_text(encoding="utf-8").splitlines()[1:201]]
    tasks = [_task(i + 1, {"text": t, "source": "sms"}, _choice(y) if i < 190 else None)
             for i, (y, t) in enumerate(rows)]
    export = tmp_path / "project-1-at-2026-11-02.json"
    export.write_text(json.dumps(tasks))
    assert infer_task(export) == "text"
    splits = textdata.discover(export)
    assert splits.classes == ["ham", "spam"] and len(splits.train) + len(splits.val) == 190
    assert splits.text_columns == ["text"] and "10 task(s) without an annotation" in splits.layout, splits.layout
    truth = {t.strip(): y for y, t in rows}
    assert all(truth[s.text.strip()] == splits.classes[s.label] for s in splits.train + splits.val)
    assert textdata.table_texts(export, ["text"]) == [t for _, t in rows]  # predict: every task's text
    spans = tmp_path / "ner.json"  # named entities (spans of 'labels'): not what headstart trains, said so
    spans.write_text(json.dumps([_task(1, {"text": rows[0][1]}, [{"type": "labels", "value": {
        "start": 0, "end": 2, "text": rows[0][1][:2], "labels": ["PER"]}}])]))
    with pytest.raises(DataError, match=r"hold no choice and no box \(found: labels x1\)"):
        infer_task(spans)
    not_export = tmp_path / "other.json"  # JSON of another kind is not an export
    not_export.write_text(json.dumps([{"data": 1, "annotations": []}]))
    with pytest.raises(DataError, match="not a Label Studio JSON export"):
        read_tasks(not_export)


@needs_shared(BCCD)
def test_json_min_exports_of_choices_and_of_rectangles(tmp_path: Path) -> None:
    """JSON-MIN: each record is the task's data, each control's result by its name ('choice': 'ants', 'label':
    [{x, y, width, height, rectanglelabels}]) and the annotation's own fields (annotator, annotation_id...)."""
    from headstart.tasks.detection import data as dd
    from headstart.tasks.image import data as imagedata

    meta = {"annotator": 1, "annotation_id": 7, "created_at": "2026-11-02T10:00:00Z", "lead_time": 3.2}
    files = sorted(HYMENOPTERA.glob("train/*/*.jpg"))[::12]
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    choices = tmp_path / "choices.json"
    choices.write_text(json.dumps([{"image": f"/data/upload/3/{i:08x}-{f.name}", "id": i + 1, "choice": f.parent.name,
                                    **meta} for i, f in enumerate(files)]))
    assert infer_task(choices) == "image"
    splits = imagedata.discover(choices)
    truth = {f.name: f.parent.name for f in files}
    assert splits.classes == ["ants", "bees"] and len(splits.train) + len(splits.val) == len(files)
    assert all(truth[s.path.name] == splits.classes[s.label] for s in splits.train + splits.val)

    found = dd.discover(BCCD)
    truth_boxes = {s.path.stem: s for s in found.train + found.val + found.test}
    ids = sorted(truth_boxes)[:6]
    records = []
    for i, stem in enumerate(ids):
        shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", tmp_path / f"{stem}.jpg")
        s = truth_boxes[stem]
        records.append({"image": f"/data/upload/7/{i:08x}-{stem}.jpg", "id": i + 1, **meta, "label": [
            {"x": 100 * float(b[0]), "y": 100 * float(b[1]), "width": 100 * float(b[2] - b[0]),
             "height": 100 * float(b[3] - b[1]), "rotation": 0, "rectanglelabels": [found.classes[int(c)]],
             "original_width": 640, "original_height": 480} for b, c in zip(s.boxes, s.labels)]})
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(records))
    assert infer_task(boxes) == "detection"
    read = dd.discover(boxes)
    for s in read.train + read.val:
        want = truth_boxes[s.path.stem]
        assert sorted(read.classes[int(c)] for c in s.labels) == sorted(found.classes[int(c)] for c in want.labels)
        assert torch.allclose(s.boxes.sum(0), want.boxes.sum(0), atol=1e-4)


@needs_shared(BCCD)
def test_cvat_for_images_xml_of_boxes_and_of_tags(tmp_path: Path) -> None:
    """CVAT's "CVAT for images 1.1" export unpacked: annotations.xml (an <image> per file with its <box>es in pixels,
    a rotated one, a <polygon>, <tag>s) beside images/. Boxes are detection, tags classification."""
    from headstart.tasks.detection import data as dd
    from headstart.tasks.exports import read_tasks
    from headstart.tasks.image import data as imagedata

    found = dd.discover(BCCD)
    truth = {s.path.stem: s for s in found.train + found.val + found.test}
    ids = sorted(truth)[:10]
    export = tmp_path / "cvat"
    (export / "images").mkdir(parents=True)
    images = []
    for i, stem in enumerate(ids):
        shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", export / "images" / f"{stem}.jpg")
        s = truth[stem]
        boxes = "".join(f'<box label="{found.classes[int(c)]}" source="manual" occluded="0" xtl="{640 * float(b[0])}" '
                        f'ytl="{480 * float(b[1])}" xbr="{640 * float(b[2])}" ybr="{480 * float(b[3])}" z_order="0">'
                        '</box>' for b, c in zip(s.boxes, s.labels))
        images.append(f'<image id="{i}" name="images/{stem}.jpg" width="640" height="480">{boxes}</image>')
    head = "<?xml version='1.0' encoding='utf-8'?>\n<annotations><version>1.1</version><meta><task><name>cells</name>" \
           "</task></meta>"
    (export / "annotations.xml").write_text(head + "".join(images) + "</annotations>")
    assert infer_task(export) == "detection" and infer_task(export / "annotations.xml") == "detection"
    splits = dd.discover(export)
    assert splits.classes == found.classes and len(splits.train) + len(splits.val) == 10
    for s in splits.train + splits.val:
        want = truth[s.path.stem]
        assert sorted(splits.classes[int(c)] for c in s.labels) == sorted(found.classes[int(c)] for c in want.labels)
        assert torch.allclose(s.boxes.sum(0), want.boxes.sum(0), atol=1e-4)
    shapes = tmp_path / "shapes.xml"  # a 40 x 20 box at (80, 40) of a 200 x 100 image turned 90 degrees, a polygon
    shapes.write_text(head + f'<image id="0" name="images/{ids[0]}.jpg" width="200" height="100">'
                      '<box label="RBC" xtl="80" ytl="40" xbr="120" ybr="60" rotation="90"></box>'
                      '<polygon label="WBC" points="100.0,50.0;120.0,55.0;110.0,70.0"></polygon></image></annotations>')
    regions = read_tasks(shapes)[0].regions
    assert regions[0].box == pytest.approx((0.45, 0.3, 0.55, 0.7)) and regions[1].box == pytest.approx((0.5, 0.5, 0.6,
                                                                                                          0.7))
    files = sorted(HYMENOPTERA.glob("train/*/*.jpg"))[::12]
    tagged = tmp_path / "tagged"
    tagged.mkdir()
    for f in files:
        shutil.copy(f, tagged / f.name)
    (tagged / "annotations.xml").write_text(head + "".join(
        f'<image id="{i}" name="{f.name}" width="500" height="375"><tag label="{f.parent.name}" source="manual">'
        '</tag></image>' for i, f in enumerate(files)) + "</annotations>")
    assert infer_task(tagged) == "image"
    read = imagedata.discover(tagged)
    assert read.classes == ["ants", "bees"] and len(read.train) + len(read.val) == len(files)
    assert all(f.parent.name == read.classes[s.label] for s in read.train + read.val for f in files
               if f.name == s.path.name)


@needs_shared(BCCD)
def test_via_json_in_train_and_val_folders_as_the_balloon_tutorial_ships_it(tmp_path: Path) -> None:
    """The Mask R-CNN balloon set: train/ and val/ each hold images and via_region_data.json (an entry per image:
    filename, regions of polygons in pixels, no region attribute: one class 'object'). A VIA 2 project file with
    rectangles named by a region attribute reads the same boxes with their classes."""
    from headstart.tasks.detection import data as dd

    found = dd.discover(BCCD)
    truth = {s.path.stem: s for s in found.train + found.val + found.test}
    ids = sorted(truth)[:9]
    root = tmp_path / "balloon"
    for split, chosen in (("train", ids[:6]), ("val", ids[6:])):
        (root / split).mkdir(parents=True)
        entries = {}
        for stem in chosen:
            shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", root / split / f"{stem}.jpg")
            regions = [{"shape_attributes": {"name": "polygon",
                                             "all_points_x": [640 * float(b[0]), 640 * float(b[2]), 640 * float(b[0])],
                                             "all_points_y": [480 * float(b[1]), 480 * float(b[1]), 480 * float(b[3])]},
                        "region_attributes": {}} for b in truth[stem].boxes]
            entries[f"{stem}.jpg123456"] = {"fileref": "", "size": 123456, "filename": f"{stem}.jpg", "base64_img_data": "",
                                            "file_attributes": {}, "regions": regions}
        (root / split / "via_region_data.json").write_text(json.dumps(entries))
    assert infer_task(root) == "detection"
    splits = dd.discover(root)
    assert splits.classes == ["object"] and (len(splits.train), len(splits.val)) == (6, 3)
    for s in splits.train + splits.val:
        assert torch.allclose(s.boxes.sum(0), truth[s.path.stem].boxes.sum(0), atol=1e-4)
    project = tmp_path / "via_project.json"  # VIA 2: _via_img_metadata, rect regions, the class an attribute
    shutil.copy(BCCD / "JPEGImages" / f"{ids[0]}.jpg", tmp_path / f"{ids[0]}.jpg")
    s = truth[ids[0]]
    project.write_text(json.dumps({"_via_settings": {}, "_via_attributes": {}, "_via_img_metadata": {
        f"{ids[0]}.jpg1": {"filename": f"{ids[0]}.jpg", "size": 1, "file_attributes": {}, "regions": [
            {"shape_attributes": {"name": "rect", "x": 640 * float(b[0]), "y": 480 * float(b[1]),
                                  "width": 640 * float(b[2] - b[0]), "height": 480 * float(b[3] - b[1])},
             "region_attributes": {"type": found.classes[int(c)]}} for b, c in zip(s.boxes, s.labels)]}}}))
    tasks = read_tasks(project)
    assert sorted(r.label for r in tasks[0].regions) == sorted(found.classes[int(c)] for c in s.labels)
    assert torch.allclose(torch.tensor([r.box for r in tasks[0].regions]).sum(0), s.boxes.sum(0), atol=1e-4)


@needs_shared(BCCD)
def test_an_exports_polygons_are_drawn_as_masks_for_segmentation(tmp_path: Path) -> None:
    """--task segmentation on an export draws its regions (background 0, the labels after it): a VIA polygon, a
    Label Studio rectangle in percent, a CVAT polygon; the detection reading of polygons says so."""
    import numpy as np

    from headstart.tasks.detection import data as dd
    from headstart.tasks.segmentation import data as sd

    stem, other = sorted(p.stem for p in (BCCD / "JPEGImages").glob("*.jpg"))[:2]
    for name in (stem, other):  # 640 x 480
        shutil.copy(BCCD / "JPEGImages" / f"{name}.jpg", tmp_path / f"{name}.jpg")
    triangle = {"name": "polygon", "all_points_x": [100, 300, 100], "all_points_y": [100, 100, 300]}
    (tmp_path / "via.json").write_text(json.dumps({f"{name}.jpg1": {
        "filename": f"{name}.jpg", "size": 1, "file_attributes": {}, "regions": [
            {"shape_attributes": triangle, "region_attributes": {"name": "cell"}}]} for name in (stem, other)}))
    assert "only polygons: their boxes are read, --task segmentation" in dd.discover(tmp_path / "via.json").layout
    for export, want in (("via.json", 200 * 201 / 2), ("ls.json", 64 * 48)):
        if export == "ls.json":
            (tmp_path / "ls.json").write_text(json.dumps([_task(i + 1, {"image": f"{name}.jpg"}, [
                {"type": "rectanglelabels", "value": {"x": 10, "y": 10, "width": 10, "height": 10,
                                                      "rectanglelabels": ["cell"]}}]) for i, name in
                enumerate((stem, other))]))
        splits = sd.discover(tmp_path / export, val_fraction=0.5)
        assert splits.classes == ["background", "cell"], splits.classes
        mask = (splits.train + splits.val)[0].read_mask()
        assert mask.shape == (480, 640) and set(np.unique(mask).tolist()) == {0, 1}
        assert abs(int((mask == 1).sum()) - want) < 0.05 * want, (export, int((mask == 1).sum()))


def _supervisely(root: Path, images: dict[str, list[Path]], objects, tags, size: tuple[int, int] = (480, 640)) -> Path:
    """A Supervisely project: meta.json beside a folder per dataset of img/ and ann/NAME.json."""
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps({"classes": [], "tags": [], "projectType": "images"}))
    for dataset, files in images.items():
        (root / dataset / "img").mkdir(parents=True)
        (root / dataset / "ann").mkdir()
        for f in files:
            shutil.copy(f, root / dataset / "img" / f.name)
            (root / dataset / "ann" / f"{f.name}.json").write_text(json.dumps({
                "description": "", "size": {"height": size[0], "width": size[1]}, "tags": tags(f),
                "objects": objects(f)}))
    return root


def _bitmap_object(label: str, mask) -> dict:
    """A Supervisely bitmap object as its SDK writes one: the mask cropped to its box, a PNG of a two-colour palette
    whose colour 0 is transparent, compressed with zlib, in base64, its top-left corner the origin."""
    import base64
    import io
    import zlib

    import numpy as np
    from PIL import Image

    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    png = Image.fromarray(crop.astype(np.uint8))
    png.putpalette([0, 0, 0, 255, 255, 255])
    buffer = io.BytesIO()
    png.save(buffer, format="PNG", transparency=0, optimize=0)
    return {"classTitle": label, "geometryType": "bitmap", "tags": [],
            "bitmap": {"data": base64.b64encode(zlib.compress(buffer.getvalue())).decode(),
                       "origin": [int(cols[0]), int(rows[0])]}}


@needs_shared(BCCD)
def test_supervisely_projects_as_dataset_ninja_downloads_them(tmp_path: Path) -> None:
    """meta.json beside datasets of img/ + ann/NAME.json (rectangles of two corners, polygons, a point that is not
    read); datasets named train and test are those splits; image tags alone are classification."""
    from headstart.tasks.detection import data as dd
    from headstart.tasks.image import data as imagedata

    found = dd.discover(BCCD)
    truth = {s.path.stem: s for s in found.train + found.val + found.test}
    ids = sorted(truth)[:9]

    def objects(f: Path) -> list[dict]:
        s = truth[f.stem]
        return [{"classTitle": found.classes[int(c)], "geometryType": "rectangle", "tags": [],
                 "points": {"exterior": [[640 * float(b[0]), 480 * float(b[1])], [640 * float(b[2]), 480 * float(b[3])]],
                            "interior": []}} for b, c in zip(s.boxes, s.labels)] + [
            {"classTitle": "stain", "geometryType": "point", "points": {"exterior": [[5, 5]], "interior": []}}]

    files = [BCCD / "JPEGImages" / f"{i}.jpg" for i in ids]
    project = _supervisely(tmp_path / "cells", {"train": files[:6], "test": files[6:]}, objects, lambda f: [])
    assert infer_task(project) == "detection"
    splits = dd.discover(project)
    assert splits.classes == found.classes and (len(splits.train) + len(splits.val), len(splits.test)) == (6, 3)
    assert "Supervisely export" in splits.layout, splits.layout
    assert splits.issues["marks that are no box, polygon or bitmap (points, lines, key points), not read"] == 9
    for s in splits.train + splits.val + splits.test:
        assert torch.allclose(s.boxes.sum(0), truth[s.path.stem].boxes.sum(0), atol=1e-4)
    ants = sorted(HYMENOPTERA.glob("train/*/*.jpg"))[::12]
    tagged = _supervisely(tmp_path / "insects", {"ds0": ants}, lambda f: [],
                          lambda f: [{"name": f.parent.name, "value": None}])
    assert infer_task(tagged) == "image"
    read = imagedata.discover(tagged)
    assert read.classes == ["ants", "bees"] and len(read.train) + len(read.val) == len(ants)
    assert all(s.path.parent.parent.name == "ds0" and any(f.name == s.path.name and f.parent.name ==
               read.classes[s.label] for f in ants) for s in read.train + read.val)


CAMVID = SHARED / "camvid"


@needs_shared(CAMVID)
def test_supervisely_bitmaps_are_segmentation_masks_as_the_pngs_they_were_drawn_from(tmp_path: Path) -> None:
    """Bitmaps alone (Dataset Ninja's segmentation sets): the task is segmentation and the masks drawn from the
    objects are CamVid's own, pixel for pixel (its unlabelled pixels, in no object, background); detection reads the
    box of each bitmap; a bitmap whose data is not a PNG is an error naming its file."""
    import numpy as np
    from PIL import Image

    from headstart.tasks.detection import data as dd
    from headstart.tasks.segmentation import data as sd

    names = (CAMVID / "classes.txt").read_text().split()
    files = sorted((CAMVID / "images" / "train").glob("*.jpg"))[:5]
    truth = {f.name: np.asarray(Image.open(CAMVID / "masks" / "train" / f"{f.stem}.png")) for f in files}

    def objects(f: Path) -> list[dict]:
        mask = truth[f.name]
        return [_bitmap_object(names[c], mask == c) for c in np.unique(mask) if c != 255]

    project = _supervisely(tmp_path / "download" / "roads", {"ds0": files}, objects, lambda f: [], size=(360, 480))
    (project / "README.md").write_text("Dataset Ninja's notes")
    assert infer_task(project) == infer_task(tmp_path / "download") == "segmentation"  # also as the archive unpacks
    assert len(sd.discover(tmp_path / "download").train) == 4
    splits = sd.discover(project, val_fraction=0.4)
    present = sorted({names[c] for m in truth.values() for c in np.unique(m) if c != 255})
    assert splits.classes == ["background", *present], splits.classes
    assert (len(splits.train), len(splits.val)) == (3, 2) and not splits.skipped
    for sample in splits.train + splits.val:
        want = truth[sample.image.name]
        expected = np.zeros_like(want)
        for c in np.unique(want[want != 255]):
            expected[want == c] = splits.classes.index(names[c])
        assert np.array_equal(sample.read_mask(), expected), sample.image.name

    boxes = dd.discover(project, val_fraction=0.4)
    assert "only bitmaps: their boxes are read" in boxes.layout, boxes.layout
    sample = next(s for s in boxes.train + boxes.val if s.path.name == files[0].name)
    car = truth[files[0].name] == names.index("car")
    ys, xs = np.nonzero(car)
    got = [b.tolist() for b, c in zip(sample.boxes, sample.labels) if boxes.classes[int(c)] == "car"]
    assert got and np.allclose(got[0], [xs.min() / 480, ys.min() / 360, (xs.max() + 1) / 480, (ys.max() + 1) / 360],
                               atol=1e-5), got

    ann = project / "ds0" / "ann" / f"{files[1].name}.json"
    broken = json.loads(ann.read_text())
    broken["objects"][0]["bitmap"]["data"] = "bm90IGEgcG5n"
    ann.write_text(json.dumps(broken))
    with pytest.raises(DataError, match=rf"{files[1].name}\.json: object 1 .*not a zlib-compressed PNG"):
        sd.discover(project)


def _rle_pack(values) -> list[int]:
    """Bytes packed as Label Studio packs a brush layer (thi.ng's rle-pack; 8-bit words, run-length sizes 3, 4, 8,
    16 bits): a run of one value as one token, other values in blocks of literals."""
    import numpy as np

    sizes = (3, 4, 8, 16)
    out = [f"{len(values):032b}{7:05b}", "".join(f"{s - 1:04b}" for s in sizes)]

    def length(n: int) -> str:
        k = next(k for k, s in enumerate(sizes) if n - 1 < 1 << s)
        return f"{k:02b}{n - 1:0{sizes[k]}b}"

    literal: list[int] = []

    def flush() -> None:
        while literal:
            chunk = literal[:1 << 16]
            del literal[:1 << 16]
            out.append("0" + length(len(chunk)) + "".join(f"{v:08b}" for v in chunk))

    change = np.flatnonzero(np.diff(values)) + 1
    for a, b in zip(np.concatenate([[0], change]), np.concatenate([change, [len(values)]])):
        if b - a == 1:
            literal.append(int(values[a]))
            continue
        flush()
        n = int(b - a)
        while n:
            k = min(n, 1 << 16)
            out.append("1" + length(k) + f"{int(values[a]):08b}")
            n -= k
    flush()
    bits = "".join(out)
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


@needs_shared(CAMVID)
def test_label_studio_brushes_are_segmentation_masks(tmp_path: Path) -> None:
    """brushlabels results (the painted layer's RGBA packed as Label Studio packs it: grey levels as its exporter
    writes them, a coloured layer as its older one did) are read as their pixels: the task is segmentation, the masks
    are CamVid's own; detection reads each brush's box; an rle of the wrong size is an error naming the task."""
    import numpy as np
    from PIL import Image

    from headstart.tasks.detection import data as dd
    from headstart.tasks.segmentation import data as sd

    names = (CAMVID / "classes.txt").read_text().split()
    files = sorted((CAMVID / "images" / "train").glob("*.jpg"))[5:9]
    truth = {f.name: np.asarray(Image.open(CAMVID / "masks" / "train" / f"{f.stem}.png")) for f in files}
    painted = ["road", "car", "sky"]

    def brush(mask, label: str, coloured: bool) -> dict:
        layer = np.zeros((*mask.shape, 4), dtype=np.uint8)
        layer[mask] = (250, 30, 60, 255) if coloured else 255
        return {"id": label, "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": 480,
                "original_height": 360, "image_rotation": 0,
                "value": {"format": "rle", "rle": _rle_pack(layer.ravel()), "brushlabels": [label]}}

    for f in files:
        shutil.copy(f, tmp_path / f.name)
    export = tmp_path / "project-3.json"
    export.write_text(json.dumps([_task(i + 1, {"image": f"/data/upload/3/0a1b2c3d-{f.name}"}, [
        brush(truth[f.name] == names.index(label), label, coloured=i % 2 == 1) for label in painted
        if (truth[f.name] == names.index(label)).any()]) for i, f in enumerate(files)]))
    assert infer_task(export) == infer_task(tmp_path) == "segmentation"
    splits = sd.discover(tmp_path, val_fraction=0.25)
    assert splits.classes == ["background", "car", "road", "sky"] and len(splits.train) + len(splits.val) == 4
    for sample in splits.train + splits.val:
        want = truth[sample.image.name]
        expected = np.zeros_like(want)
        for label in painted:
            expected[want == names.index(label)] = splits.classes.index(label)
        assert np.array_equal(sample.read_mask(), expected), sample.image.name

    boxes = dd.discover(export, val_fraction=0.25)
    assert "only bitmaps: their boxes are read" in boxes.layout, boxes.layout
    sample = next(s for s in boxes.train + boxes.val if s.path.name == files[0].name)
    ys, xs = np.nonzero(truth[files[0].name] == names.index("road"))
    got = [b.tolist() for b, c in zip(sample.boxes, sample.labels) if boxes.classes[int(c)] == "road"]
    assert got and np.allclose(got[0], [xs.min() / 480, ys.min() / 360, (xs.max() + 1) / 480, (ys.max() + 1) / 360],
                               atol=1e-5), got

    tasks = json.loads(export.read_text())
    tasks[2]["annotations"][0]["result"][0]["original_height"] = 300
    export.write_text(json.dumps(tasks))
    with pytest.raises(DataError, match=r"task 3: a brushlabels region .* holds 691200 values, not the 300 x 480"):
        sd.discover(export)


@needs_shared(HYMENOPTERA)
@needs_shared(SMS)
def test_classification_exports_in_split_folders_are_those_splits(tmp_path: Path) -> None:
    """An export in each of train/ and val/ (test/), as people keep a project per split: image choices with images
    beside each export, a Supervisely project's train and val datasets of image tags, text choices (a task not
    labelled yet in val/ counted); each split read as given, each image found in its own folder."""
    from headstart.tasks.image import data as imagedata
    from headstart.tasks.text import data as textdata

    images = tmp_path / "insects"
    given = {"train": sorted(HYMENOPTERA.glob("train/*/*.jpg"))[::8], "val": sorted(HYMENOPTERA.glob("val/*/*.jpg"))[::8]}
    for split, files in given.items():
        (images / split / "upload").mkdir(parents=True)
        for f in files:
            shutil.copy(f, images / split / "upload" / f.name)
        (images / split / "project-2-at-2026-11-30.json").write_text(json.dumps([
            _task(i + 1, {"image": f"/data/local-files/?d=upload/{f.name}"}, _choice(f.parent.name))
            for i, f in enumerate(files)]))
    (images / "val" / "upload" / given["train"][0].name).write_bytes(given["val"][0].read_bytes())  # same name
    assert infer_task(images) == "image"
    read = imagedata.discover(images)
    assert read.classes == ["ants", "bees"] and "Label Studio export" in read.layout, read.layout
    for split in ("train", "val"):
        got = sorted((s.path.parent.parent.name, s.path.name, read.classes[s.label]) for s in getattr(read, split))
        assert got == sorted((split, f.name, f.parent.name) for f in given[split]), split

    tagged = _supervisely(tmp_path / "project", {"train": given["train"], "val": given["val"]}, lambda f: [],
                          lambda f: [{"name": f.parent.name, "value": None}])
    read = imagedata.discover(tagged)
    assert (len(read.train), len(read.val)) == (len(given["train"]), len(given["val"]))
    assert all(s.path.parent.parent.name == "val" for s in read.val)

    rows = [line.split("\t", 1) for line in SMS.read_text(encoding="utf-8").splitlines()[1:301]]
    texts = tmp_path / "sms"
    for split, part in (("train", rows[:200]), ("val", rows[200:])):
        (texts / split).mkdir(parents=True)
        (texts / split / "export.json").write_text(json.dumps([_task(i + 1, {"text": t}, _choice(y) if i else None)
                                                               for i, (y, t) in enumerate(part)]))
    assert infer_task(texts) == "text"
    splits = textdata.discover(texts)
    assert (len(splits.train), len(splits.val)) == (199, 99) and splits.classes == ["ham", "spam"]
    assert "val: 1 task(s) without an annotation" in splits.layout, splits.layout
    truth = {t.strip(): y for y, t in rows[201:]}
    assert all(truth[s.text.strip()] == splits.classes[s.label] for s in splits.val)


@needs_shared(BCCD)
def test_create_ml_json_in_split_folders_as_roboflow_exports_it(tmp_path: Path) -> None:
    """Roboflow's "CreateML JSON" export: train/ and valid/ each of images beside _annotations.createml.json (boxes
    by their centre and size in pixels): detection, the splits as given, the boxes of BCCD's VOC files; an image
    without annotations is a background image."""
    from headstart.tasks.detection import data as dd

    found = dd.discover(BCCD)
    truth = {s.path.stem: s for s in found.train + found.val + found.test}
    ids = sorted(truth)[:10]
    for split, stems in (("train", ids[:7]), ("valid", ids[7:])):
        (tmp_path / split).mkdir()
        entries = []
        for stem in stems:
            name = f"{stem}_jpg.rf.{abs(hash(stem)) % 10**6:06d}.jpg"
            shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", tmp_path / split / name)
            s = truth[stem]
            entries.append({"image": name, "annotations": [] if stem == ids[1] else [
                {"label": found.classes[int(c)], "coordinates": {
                    "x": 320 * float(b[0] + b[2]), "y": 240 * float(b[1] + b[3]), "width": 640 * float(b[2] - b[0]),
                    "height": 480 * float(b[3] - b[1])}} for b, c in zip(s.boxes, s.labels)]})
        (tmp_path / split / "_annotations.createml.json").write_text(json.dumps(entries))
    assert infer_task(tmp_path) == "detection"
    splits = dd.discover(tmp_path)
    assert "Create ML export" in splits.layout and (len(splits.train), len(splits.val)) == (7, 3), splits.layout
    for s in splits.train + splits.val:
        stem = s.path.name.split("_jpg.rf.")[0]
        if stem == ids[1]:
            assert len(s.boxes) == 0
            continue
        want = truth[stem]
        got = sorted(zip([splits.classes[int(c)] for c in s.labels], s.boxes.tolist()), key=_rounded)
        wanted = sorted(zip([found.classes[int(c)] for c in want.labels], want.boxes.tolist()), key=_rounded)
        assert [n for n, _ in got] == [n for n, _ in wanted], stem
        assert torch.allclose(torch.tensor([b for _, b in got]), torch.tensor([b for _, b in wanted]), atol=1e-5)


def _rounded(named_box: tuple[str, list[float]]) -> tuple[str, list[float]]:
    """A (label, box) to sort by: boxes read two ways differ in the last digits of a float32."""
    return named_box[0], [round(v * 640) for v in named_box[1]]


@needs_shared(HYMENOPTERA)
def test_label_studio_csv_export_finds_uploads_by_their_own_names(tmp_path: Path) -> None:
    """Label Studio's CSV export (a row per task: annotation_id, annotator, the control's column 'choice', id, image
    as '/data/upload/3/8d5e3f2a-photo.jpg'...) beside the folder of the photos uploaded, under their own names: each
    row's photo found by its name without Label Studio's 8 hex digits."""
    from headstart.tasks.image import data as imagedata

    files = sorted(HYMENOPTERA.glob("train/*/*.jpg"))[::9]
    (tmp_path / "photos").mkdir()
    lines = ["annotation_id,annotator,choice,created_at,id,image,lead_time,updated_at"]
    for i, f in enumerate(files):
        shutil.copy(f, tmp_path / "photos" / f.name)
        lines.append(f"{i + 10},1,{f.parent.name},2026-11-30T10:00:00Z,{i + 1},/data/upload/3/{i:08x}-{f.name},4.2,"
                     "2026-11-30T10:00:04Z")
    (tmp_path / "project-3-at-2026-11-30.csv").write_text("\n".join(lines) + "\n")
    assert infer_task(tmp_path) == "image"
    read = imagedata.discover(tmp_path)
    assert read.classes == ["ants", "bees"] and len(read.train) + len(read.val) == len(files), read.layout
    assert "files found by their names under" in read.layout, read.layout
    truth = {f.name: f.parent.name for f in files}
    assert all(truth[s.path.name] == read.classes[s.label] for s in read.train + read.val)


@needs_shared(BCCD)
def test_hugging_face_imagefolder_metadata_of_boxes(tmp_path: Path) -> None:
    """Hugging Face's imagefolder for detection: train/ and test/ each of images beside a metadata.jsonl of
    file_name and objects (COCO boxes [x, y, width, height] in pixels: lists of bbox and categories in train/, a list
    of objects in test/): detection, the boxes of BCCD's VOC files, the test split as given and validation held out
    of train; an image without objects is a background image; categories written as indices are classes '0', '1'...;
    a bbox that is no box is an error naming its line."""
    from headstart.tasks.detection import data as dd

    found = dd.discover(BCCD)
    truth = {s.path.stem: s for s in found.train + found.val + found.test}
    ids = sorted(truth)[:14]

    def coco(b) -> list[float]:
        return [640 * float(b[0]), 480 * float(b[1]), 640 * float(b[2] - b[0]), 480 * float(b[3] - b[1])]

    for split, stems in (("train", ids[:10]), ("test", ids[10:])):
        (tmp_path / split).mkdir()
        lines = []
        for stem in stems:
            shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", tmp_path / split / f"{stem}.jpg")
            s = truth[stem]
            if split == "train":
                objects: dict | list = {"bbox": [] if stem == ids[1] else [coco(b) for b in s.boxes], "categories":
                                        [] if stem == ids[1] else [found.classes[int(c)] for c in s.labels]}
            else:
                objects = [{"bbox": coco(b), "category": found.classes[int(c)]} for b, c in zip(s.boxes, s.labels)]
            lines.append(json.dumps({"file_name": f"{stem}.jpg", "objects": objects}))
        (tmp_path / split / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    assert infer_task(tmp_path) == "detection"
    splits = dd.discover(tmp_path)
    assert "Hugging Face imagefolder export" in splits.layout, splits.layout
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (10, 4) and splits.val
    assert splits.classes == found.classes
    for s in splits.train + splits.val + splits.test:
        if s.path.stem == ids[1]:
            assert len(s.boxes) == 0
            continue
        want = truth[s.path.stem]
        got = sorted(zip([splits.classes[int(c)] for c in s.labels], s.boxes.tolist()), key=_rounded)
        wanted = sorted(zip([found.classes[int(c)] for c in want.labels], want.boxes.tolist()), key=_rounded)
        assert [n for n, _ in got] == [n for n, _ in wanted], s.path.stem
        assert torch.allclose(torch.tensor([b for _, b in got]), torch.tensor([b for _, b in wanted]), atol=1e-5)

    shutil.rmtree(tmp_path / "test")
    indexed = [json.loads(line) for line in (tmp_path / "train" / "metadata.jsonl").read_text().splitlines()]
    for row in indexed:
        row["objects"]["categories"] = [found.classes.index(c) for c in row["objects"]["categories"]]
    (tmp_path / "train" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in indexed))
    assert dd.discover(tmp_path).classes == [str(i) for i in range(len(found.classes))]

    (tmp_path / "test").mkdir()
    shutil.copy(BCCD / "JPEGImages" / f"{ids[10]}.jpg", tmp_path / "test")
    (tmp_path / "test" / "metadata.jsonl").write_text(json.dumps(
        {"file_name": f"{ids[10]}.jpg", "objects": {"bbox": [[1, 2, 3]], "categories": ["RBC"]}}) + "\n")
    with pytest.raises(DataError, match=r"metadata.jsonl:1 \(.*\): a bbox is not four numbers"):
        dd.discover(tmp_path)
