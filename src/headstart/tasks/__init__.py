"""The task registry: every task headstart trains, by name (as Ultralytics' ``task_map``).

The CLI, the Python API, ``compare``, ``advise``, ``evaluate`` and ``predict`` find a task here.
A new task is one folder (data, model, training steps, estimator) plus one ``register`` call.
Importing this module imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from headstart.errors import ConfigError, RunFolderError
from headstart.tasks.base import Task

TEXT_BUDGET = 600.0  # seconds of training of the text default (a laptop CPU's 10 minutes; the refit comes on top)
_TASKS: dict[str, Task] = {}
_ALIASES: dict[str, str] = {}


def register(task: Task) -> Task:
    """Add a task (or replace one of the same name); returns it."""
    _TASKS[task.name] = task
    for alias in (task.name, task.run_kind, *task.aliases):
        _ALIASES[alias] = task.name
    return task


def get_task(name: str) -> Task:
    """The task called ``name`` (or one of its aliases, or the kind recorded in a run folder)."""
    if name not in _ALIASES:
        raise ConfigError(f"Unknown task '{name}'; expected one of {', '.join(task_names())}")
    return _TASKS[_ALIASES[name]]


def task_names() -> list[str]:
    return list(_TASKS)


def other_sections(task: Task) -> set[str]:
    """The config sections that only other tasks read (e.g. ``detection`` for the image task)."""
    return {t.section for t in _TASKS.values()} - {task.section, None}


def task_of_run(run: str | Path) -> Task:
    """The task that made a run folder (read from its headstart.json, without loading the model)."""
    path = Path(run) / "headstart.json"
    if not Path(run).is_dir():
        raise RunFolderError(f"Run folder not found: {run}")
    if not path.is_file():
        from headstart.core.runfolder import not_a_run

        raise not_a_run(run)
    try:
        kind = json.loads(path.read_text()).get("task")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise RunFolderError(f"{path} is not valid JSON ({exc}); the run folder is damaged") from None
    try:
        return get_task(str(kind))
    except ConfigError:
        raise RunFolderError(f"{run} holds a '{kind}' model, which this headstart has no task for "
                             f"(known: {', '.join(task_names())})") from None


def infer_task(data: str | Path) -> str:
    """The task a dataset is for, from its files: detection layouts, image tag lists, tables of texts, else images."""
    path = Path(data)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        return "detection"
    if path.is_dir() and ((path / "data.yaml").is_file()):
        return "detection"
    from headstart.tasks.exports import export_splits, is_export, task_of

    export = path if is_export(path) else export_splits(path).get("train")
    if export is not None:
        return task_of(export)  # Label Studio's JSON export: boxes, or choices of images or of texts
    from headstart.tasks.detection import coco_files, is_coco_json

    if path.is_file() and path.suffix.lower() == ".json" and is_coco_json(path):
        return "detection"
    from headstart.tasks.segmentation import (
        deeper_layout,
        inner_folder,
        named_mask_folder,
        paired_folders,
        pairs_beside,
    )

    inner = inner_folder(path)
    if path.is_dir() and (((inner / "images").is_dir() and (inner / "masks").is_dir())
                          or any(path.glob("SegmentationClass")) or any(path.glob("VOC*/SegmentationClass"))
                          or any(path.glob("VOCdevkit/VOC*/SegmentationClass"))):
        return "segmentation"  # images/ + masks/ (also in an archive's one folder), or Pascal VOC with class masks
    if paired_folders(path) or named_mask_folder(inner):
        return "segmentation"  # train/ + train_labels/ (Kaggle's CamVid), train/ + trainannot/ (SegNet's), ISIC's
    if pairs_beside(path):
        return "segmentation"  # x.tif beside x_mask.tif, in one folder or in a folder of cases (LGG's patients)
    if deeper_layout(path):
        return "segmentation"  # one such layout deeper, beside other folders (the Semantic Drone Dataset's)
    from headstart.tasks.detection import (
        box_table_splits,
        box_tables_in,
        is_box_table,
        names_file,
        split_exports,
        voc_folders,
    )
    from headstart.tasks.labelme import labelme_splits

    if labelme_splits(path):
        return "detection"  # LabelMe's .json beside each image (its shapes' boxes)
    if is_box_table(path) or box_table_splits(path) or box_tables_in(path):
        return "detection"  # boxes in a table (TensorFlow Object Detection CSV: Roboflow's export, the raccoon set)
    if split_exports(path) is not None:
        return "detection"  # train/, valid/, test/ of images beside a COCO json or VOC .xml files (Roboflow's exports)
    if coco_files(path):
        return "detection"  # annotations/instances_*.json (COCO's layout; CVAT's and Label Studio's COCO exports)

    if path.is_dir() and (voc_folders(path) or any(path.glob("VOC*/Annotations"))
                          or any(path.glob("VOCdevkit/VOC*/Annotations"))):
        return "detection"  # Pascal VOC boxes, also annotations/*.xml + images/ (--task multilabel: image tags)

    if names_file(path) is not None:
        return "detection"  # labelImg's YOLO export: images, their .txt boxes and classes.txt
    from headstart.tasks.text import table_folder

    tables = table_folder(path)  # a folder of text tables (Kaggle's), or of pixel tables: its train table tells
    if path.is_dir():
        from headstart.tasks.multilabel import LABELS_FILE
        from headstart.tasks.text import is_datasets_folder, is_text_folder

        if is_text_folder(path):
            return "text"  # class folders of .txt files (IMDB's aclImdb/, BBC News)
        from headstart.tasks.detection import is_parquet_detection
        from headstart.tasks.image.hf_datasets import is_image_dataset, is_tags_dataset
        from headstart.tasks.segmentation import is_hf_segmentation

        if is_parquet_detection(path):
            return "detection"  # a Hub dataset repository of images and their boxes (cppe-5's Parquet files)
        if is_hf_segmentation(path):
            return "segmentation"  # a Hub dataset of images and masks (segments/sidewalk-semantic's Parquet files)
        if is_tags_dataset(path):
            return "multilabel"  # a Hub dataset of images with a list of labels each
        if is_image_dataset(path):
            return "image"  # a datasets folder of images (load_dataset("beans").save_to_disk)
        from headstart.tasks.tables import TABLE_FILES, split_tables

        tabled = any(p.suffix.lower() in TABLE_FILES and p.is_file() for p in path.iterdir()) or bool(
            split_tables(path))  # tags in train.csv? in train/_classes.csv (Roboflow's)?
        if not (path / LABELS_FILE).is_file() and not is_datasets_folder(path) and tables is None and not tabled:
            return "image"  # class folders (or train/ val/ of them): nothing to read, no torch to import
    from headstart.tasks.detection import is_parquet_detection
    from headstart.tasks.image.arrays import is_array_data
    from headstart.tasks.image.hf_datasets import is_image_dataset
    from headstart.tasks.image.pixel_tables import is_pixel_table

    if path.is_file() and is_parquet_detection(path):
        return "detection"  # one Parquet file of images and their boxes
    from headstart.tasks.segmentation import is_hf_segmentation

    if path.is_file() and is_hf_segmentation(path):
        return "segmentation"  # one Parquet file of images and their masks
    from headstart.tasks.image.hf_datasets import is_tags_dataset

    if path.is_file() and is_tags_dataset(path):
        return "multilabel"  # one Parquet file of images with a list of labels each
    if is_pixel_table(path) or tables and is_pixel_table(tables.first) or is_array_data(path) or is_image_dataset(path):
        return "image"  # rows of pixel values (Kaggle's Digit Recognizer, Fashion-MNIST, FER-2013)
    from headstart.tasks.multilabel.data import looks_like_multilabel

    if looks_like_multilabel(data):  # image paths with label lists ('a;b'): unambiguous, else --task multilabel
        return "multilabel"
    from headstart.tasks.text.data import text_task_of

    return text_task_of(data) or "image"


def resolve_task(task: str | None, data: str | Path) -> Task:
    """The task of ``--task`` (inferred from DATA when None); ``multilabel`` of a table of texts is
    ``text-multilabel``."""
    chosen = get_task(task or infer_task(data))
    if chosen.name == "multilabel" and task is not None:
        from headstart.tasks.text.data import looks_like_text_data

        if looks_like_text_data(data):
            return get_task("text-multilabel")
    return chosen


register(Task(
    name="image", estimator="headstart.tasks.image.task:ImageClassifier", run_kind="image-classification",
    summary="image classification: class folders, train/ val/ folders or a CSV of paths and labels",
    aliases=("image-classification", "classification"),
    # refit=auto: when validation was held out of DATA (class folders, a CSV without a split), the recipe validation
    # chose is trained again on train + validation: on 210 digits the held-out macro-F1 went from 0.762 to 0.810
    # (benchmarks/recipes.py, README "Choosing the default"); DATA's own val/ split stays out of training.
    defaults={"train": {"refit": "auto"}},
    shortcuts={"label_column": "data.label_column", "path_column": "data.path_column", "add": "data.add"},
))
register(Task(
    name="multilabel", estimator="headstart.tasks.multilabel.task:MultiLabelClassifier", run_kind="multilabel",
    summary="multi-label image classification: a CSV of paths and label lists ('a;b') or 0/1 columns, a folder with "
            "labels.csv, or a detection set with --from-detection",
    aliases=("multi-label", "tagging"), metric="map",
    # the image classifier's defaults with no refit: the per-label thresholds are tuned on validation, which a model
    # refitted on train + validation would have seen. No 'add' shortcut (data.add): in a table of tags an empty label
    # says that no label applies, not that the row is left to fill
    defaults={"train": {"refit": False}},
    shortcuts={"label_column": "data.label_column", "path_column": "data.path_column",
               "from_detection": "data.from_detection"},
))
# lp-ft: the L-BFGS head, then fine-tuning of every layer (top layer at 5e-5, 0.85x per layer below; a cached linear
# phase needs no LR); one cached view (texts are not augmented); --refit by default: 2,000 movie-review sentences
# (Pang & Lee), held-out macro-F1 0.813 in 215 s against transformers' Trainer (3 epochs, LR 5e-5) 0.805 in 254 s;
# without refit 0.792, with the AdamW head 0.766 (benchmarks/text_classification.py, README). Fine-tuning epochs that
# would not fit TEXT_BUDGET are not started: on a CPU, a table of 25,000 reviews gets the head on frozen embeddings in
# minutes, not an epoch of hours.
TEXT_DEFAULTS = {"model": {"name": "minilm", "dropout": 0.1},
                 "train": {"strategy": "lp-ft", "head_solver": "lbfgs", "refit": "auto", "head_epochs": 10, "lr": 2e-2,
                           "backbone_lr_ratio": 0.0025, "time_budget": TEXT_BUDGET,
                           "layer_decay": 0.85, "batch_size": 32, "label_smoothing": 0.0},
                 "cache": {"views": 1}}
TEXT_SHORTCUTS = {"text_column": "text.text_column", "label_column": "text.label_column",
                  "max_length": "text.max_length"}
register(Task(
    name="text", estimator="headstart.tasks.text.task:TextClassifier", run_kind="text-classification",
    summary="text classification: a csv/tsv/jsonl/json/parquet table or a datasets folder", section="text",
    aliases=("text-classification",), inputs="texts", defaults=TEXT_DEFAULTS,
    shortcuts={**TEXT_SHORTCUTS, "add": "data.add"},
))
register(Task(
    name="text-multilabel", estimator="headstart.tasks.multilabel.text:MultiLabelTextClassifier",
    run_kind="text-multilabel",
    summary="multi-label text classification: a table with a 0/1 column per label (Jigsaw) or a column of label lists",
    section="text", aliases=("multilabel-text",), inputs="texts", metric="map",
    # the text default with no refit: the per-label thresholds are tuned on validation (as for multilabel images)
    defaults={**TEXT_DEFAULTS, "train": {**TEXT_DEFAULTS["train"], "refit": False}}, shortcuts=TEXT_SHORTCUTS,
))
register(Task(
    name="detection", estimator="headstart.tasks.detection.task:Detector", run_kind="detection",
    summary="object detection: a YOLO folder (data.yaml) or a COCO json", section="detection",
    aliases=("object-detection",), metric="map_50",
    # A frozen backbone on cached features: the one recipe that trains a detector in minutes on a CPU
    # (benchmarks/detection.py); lp-ft / partial:K are one flag away when a GPU is at hand. fp32: box
    # regression and decoding lose pixels in bf16. Gradients clipped at norm 10, warmup 20 % of each phase.
    defaults={"model": {"name": "mobilenet_v2"},
              "train": {"strategy": "linear", "epochs": 24, "head_epochs": 12, "batch_size": 8, "lr": 3e-3,
                        "weight_decay": 1e-4, "backbone_lr_ratio": 0.1, "warmup": 0.2, "clip_grad_norm": 10.0},
              "data": {"augment": "standard"}, "device": {"precision": "32-true"}},
    shortcuts={"classes": "detection.classes", "family": "detection.family", "image_size": "detection.image_size"},
))
register(Task(
    name="segmentation", estimator="headstart.tasks.segmentation.task:Segmenter", run_kind="segmentation",
    summary="semantic segmentation: images/ + masks/ (+ classes.txt), Pascal VOC (SegmentationClass) or COCO json",
    section="segmentation", aliases=("semantic-segmentation",), metric="miou",
    # A frozen encoder on cached multi-scale maps: the decoder trains for many cheap epochs (benchmarks/segmentation.py);
    # partial:K / lp-ft are one flag away. No refit: validation picks the epoch.
    defaults={"model": {"name": "efficientnet_lite0"},
              "train": {"strategy": "linear", "epochs": 30, "batch_size": 8, "lr": 3e-3, "weight_decay": 1e-4,
                        "backbone_lr_ratio": 0.1, "refit": False, "warmup": 0.1},
              "cache": {"views": 4}},
    shortcuts={"image_size": "segmentation.image_size"},
))
