"""Typed run configuration: YAML file + dotted ``key=value`` overrides; unknown keys fail loudly."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from headstart.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = "efficientnet_lite0"
    weights: str | None = Field(None, description="local state dict / safetensors file replacing the weights")
    pretrained: bool = True
    dropout: float = Field(0.2, ge=0.0, lt=1.0)


class DataConfig(_Section):
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="validation split when DATA has no val/")
    path_column: str | None = None
    label_column: str | None = None
    group_column: str | None = Field(None, description="a table's column saying which images belong together (one "
                                     "patient's scans, one lesion's photos): each group stays on one side of the "
                                     "validation split. Default: a column named patient_id, patient, subject_id, "
                                     "lesion_id, case_id or study_id (any case, blanks or '_'); 'none': no groups")
    small_val: Literal["hold_out", "keep"] = Field(
        "hold_out", description="a validation split DATA gives (val/, a split column) of fewer than 50 items and under "
        "5% of the training items is too small to choose epochs and phases by: 'hold_out' holds validation out of the "
        "training items instead and scores the given items as the test split (left out when DATA has a test split); "
        "'keep' uses it as it is (image and multi-label tasks)")
    uncertain: Literal["negative", "positive"] = Field(
        "negative", description="multilabel: a -1 in a table's 0/1 class columns (CheXpert's uncertain finding) is "
        "read as this (the CheXpert paper's U-Zeros / U-Ones); a blank is a negative")
    from_detection: bool = Field(False, description="multilabel: DATA is a detection set (YOLO data.yaml, COCO json, "
                                 "Pascal VOC folder); each image is tagged with the classes of its boxes")
    add: list[str] = Field(default_factory=list, description="image and text classification: labelled tables (a "
                           "filled to_label.csv of 'headstart suggest', any CSV of path,label or text,label) whose "
                           "items join DATA's training split, never its validation or test split (scores stay "
                           "comparable from round to round); rows with an empty label are skipped and named, items "
                           "already in DATA are left out and counted")
    strict: bool = Field(False, description="stop at the first unreadable image instead of skipping it")
    preload_mb: int = Field(2048, ge=0, description="keep decoded, resized images in memory up to this size")
    max_pixels: int = Field(89_478_485, ge=1, le=89_478_485, description="images with more pixels are skipped "
                            "(and reported) from their header, before they are decoded; at most PIL's own limit")
    num_workers: int | None = Field(None, ge=0, description="loader worker processes that decode and augment; "
                                    "default: 0 on a CPU (the cores compute the model), on a GPU one per core but "
                                    "one, at most 8")
    inference_batch_size: int | None = Field(
        None, ge=1, description="items per forward pass when nothing trains (feature extraction, validation, "
        "prediction); default: 8 images on a CPU (activations stay in cache: about 2x faster than 64), "
        "else 2 x train.batch_size")
    augment: Literal["none", "light", "standard"] = "standard"
    flip: Literal["auto", "horizontal", "vertical", "both", "none"] = Field(
        "auto", description="random flips in training (image tasks; augment light or standard): 'auto' flips "
        "horizontally unless the classes come in mirror pairs (names differing only by left/right, as a traffic "
        "sign's 'Turn left' / 'Turn right', or the letters b/d, p/q: a flipped item would carry the wrong label), "
        "then not at all; 'vertical' and 'both' add up-down flips, for images without an up (microscopy, "
        "aerial views)")
    augment_on: Literal["auto", "loader", "device"] = Field(
        "auto", description="where image training batches are augmented when the whole backbone trains (image and "
        "multi-label classification; phases on cached features always extract with the loader's transform): "
        "'loader': each item on the CPU (crop, flip, colour jitter, float, normalise); 'device': the loader crops and "
        "flips as uint8 and draws each item's jitter factors (the same draws: runs resume exactly), the model's "
        "device jitters each sample, normalises and goes channels-last per batch (a quarter of the bytes to copy); "
        "jittered pixels differ slightly from the loader's (float formulas, not PIL's uint8 ones). 'auto': device "
        "on CUDA, else loader")
    intensity: Literal["auto", "off", "window"] = Field(
        "auto", description="pixel values -> 8-bit: 'window' stretches every image to its own 0.5-99.5th "
        "percentiles (min..max when it has few levels: scans stored as 0..2, 16-bit, float); 'off' keeps 8-bit values "
        "as they are; 'auto' windows when most training images have little range (under 1/8 of 0-255) or are "
        "16-bit/float. The choice is saved in spec.json and reused by evaluate and predict (image task)")
    augment_seed: int | None = Field(None, description="seed of the augmentation draws (and of the cached views); "
                                     "default: train.seed. compare fixes it so that seeds share cached views")

    @field_validator("add", mode="before")
    @classmethod
    def _absolute(cls, value: Any) -> list[str]:
        """Each table by its absolute path (config.yaml then resumes from any folder); one path: a list of one."""
        values = [value] if isinstance(value, (str, Path)) else list(value or [])
        return [str(Path(v).expanduser().resolve()) for v in values]


class TrainConfig(_Section):
    strategy: str = Field("auto", description="auto (the linear head, then fine-tuning while validation improves and "
                          "the time budget lasts), linear, partial:K, full, gradual, lp-ft, lora: README, Strategies")
    epochs: int | None = Field(None, ge=1, description="epochs of the main phase (fine-tuning phase for lp-ft); "
                               "default per strategy: linear 10, partial 5, gradual groups+1, full 3, lp-ft 3, "
                               "auto 5 per candidate; fine-tuning phases are lengthened to train.min_steps")
    min_steps: int = Field(50, ge=0, description="optimizer steps a fine-tuning phase runs at least when train.epochs "
                           "is not given, however small the data (300 images in batches of 32 are 10 steps an epoch)")
    head_epochs: int = Field(10, ge=0, description="epochs of the linear (head-only) phase of lp-ft")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-2, gt=0, description="learning rate of the new head (measured: README)")
    backbone_lr_ratio: float = Field(0.02, gt=0, description="top backbone group's LR / head LR")
    layer_decay: float = Field(0.7, gt=0, le=1.0, description="LR multiplier per group going down")
    weight_decay: float = Field(0.01, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    calibrate: bool = Field(True, description="single-label classification: divide the logits by one temperature "
                            "fitted on validation, so predicted probabilities match how often the model is right "
                            "(classes and scores unchanged; metrics.json 'calibration', calibration.png)")
    explain: bool = Field(True, description="classification: report.html shows what its validation mistakes and "
                          "surest right predictions rest on (heat maps of images, words of texts); compare's cells "
                          "leave it out")
    operating_point: str = Field(
        "argmax", description="single-label classification: the rule that sets the threshold on p(positive) deciding "
        "the positive class, chosen on validation: argmax, f1, youden, recall>=X (sensitivity), specificity>=X or "
        "precision>=X; report.md lists what each would give")
    positive_class: str | None = Field(None, description="single-label classification: the class operating_point "
                                       "thresholds (below it: the most probable other class); default, of two "
                                       "classes: the rarer in training; more classes need it named")
    batchnorm: Literal["frozen", "train"] = Field(
        "frozen", description="BatchNorm statistics of a pretrained backbone while it fine-tunes: 'frozen' keeps the "
        "pretrained ones (batch statistics of small, unusual data shift every feature the head learned: README); "
        "random initial weights always train them")
    early_stopping: int = Field(0, ge=0, description="stop after this many validations without improvement; 0: off")
    eval_every: int = Field(1, ge=1, description="validate every this many epochs (and at the end of each phase)")
    time_budget: float | None = Field(
        None, ge=0.0, description="seconds of training (feature extraction included): no epoch starts that would not "
        "fit (after the first phase: a run ends with a model); default: 300 for strategy auto, 600 for the text "
        "task, else no limit; 0: no limit")
    warmup: float = Field(0.25, gt=0.0, lt=1.0, description="share of each phase's steps spent warming the LR up")
    head_solver: Literal["adamw", "lbfgs"] = Field(
        "lbfgs", description="how a linear phase on cached features fits the head: 'adamw' (epochs of the one-cycle "
        "schedule) or 'lbfgs' (multinomial logistic regression to convergence, L2 chosen by 5-fold CV)")
    clip_grad_norm: float | None = Field(None, gt=0, description="clip the gradient norm to this; default: no clipping")
    checkpoint_seconds: float = Field(
        10.0, ge=0, description="write the resume checkpoint at most this often (and at every phase end); 0: each epoch")
    compile: bool = Field(False, description="torch.compile the model in the phases whose training step runs backbone "
                          "stages (fine-tuning; not a head on cached features): a one-off compile per phase (reported "
                          "in seconds, metrics.json 'phases') for faster steps, worth it on a GPU for long runs")
    select_metric: Literal["accuracy", "macro_f1", "auto"] = "auto"
    class_weights: bool = Field(False, description="weight the loss (and the L-BFGS head) by inverse class frequency")
    balanced_sampling: bool = Field(False, description="draw training batches with every class equally likely "
                                    "(one device)")
    refit: Literal["auto"] | bool = Field(
        False, description="after the recipe and its epochs are chosen on validation, train again on train + "
        "validation with them and save that model (validation numbers stay those of the model chosen before, on items "
        "it did not train on); auto: only when the validation items were held out of DATA's training items, not when "
        "DATA gave its own validation split")
    lora_r: int = Field(8, ge=1, description="rank of the LoRA adapters (strategy 'lora')")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling: the adapters' update is scaled by alpha / r")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    lora_targets: list[str] | None = Field(None, description="module names to adapt; default: the attention "
                                           "projections (query/key/value of text encoders, qkv of timm ViTs...)")
    seed: int = 0

    @field_validator("operating_point")
    @classmethod
    def _known_rule(cls, rule: str) -> str:
        from headstart.tasks.classification.operating_point import parse

        parse(rule)
        return rule.strip().lower().replace(" ", "")


class CacheConfig(_Section):
    enabled: bool = True
    views: int = Field(4, ge=1, description="augmented views per training image kept in the feature cache")
    dir: str | None = Field(None, description="cache folder; default ~/.cache/headstart/features")
    memory_mb: int = Field(1024, ge=0, description="feature matrices larger than this are kept in memory-mapped "
                           "scratch files beside the cache (the temp folder without it) instead of in RAM: memory "
                           "stays flat in the image count; same numbers")


class DeviceConfig(_Section):
    accelerator: str = "auto"
    devices: int | str = Field(1, description="devices per machine; several train with device.strategy (ddp), "
                               "train.batch_size items on each (README: Several GPUs / machines)")
    num_nodes: int = Field(1, ge=1, description="machines, each with device.devices devices (torchrun, SLURM)")
    precision: str = Field("auto", description="auto (bf16 where native, else fp32) or a Lightning precision: "
                           "32-true, bf16-mixed, 16-mixed")
    strategy: str = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads, also the image-decoding threads; "
                                "default: all cores (OMP_NUM_THREADS when set)")


class TextConfig(_Section):
    text_column: str | list[str] | None = Field(
        None, description="column holding the text, or several read as one text (title,description; a pair: "
        "sentence1,sentence2); default: guessed (text, sentence...; a title before its body; a pair of texts)")
    label_column: str | None = Field(None, description="column holding the label; default: guessed (label, class...)")
    max_length: int = Field(128, ge=4, le=8192, description="tokens per text; longer texts are cut (and counted)")
    pooling: Literal["auto", "mean", "cls"] = Field("auto", description="auto: what the model was trained with")


class DetectionConfig(_Section):
    family: Literal["fcos", "retinanet", "fasterrcnn", "ssdlite", "ssd"] = Field(
        "fcos", description="detector built on model.name (ignored for 'tv:' COCO detectors, which bring their own)")
    classes: list[str] | None = Field(None, description="train on these classes only (e.g. [person, car])")
    image_size: int = Field(320, ge=64, le=2048, description="letterbox size: longer side resized to this, padded square")
    neck_channels: int = Field(32, ge=8, description="FPN channels (32: as good as 64 on coco128 person at half the CPU time)")
    head_convs: int = Field(1, ge=0, le=4, description="conv layers per FCOS head branch")
    score_thresh: float = Field(0.05, ge=0.0, lt=1.0, description="keep detections above this score (0.05: for mAP)")
    nms_thresh: float = Field(0.5, gt=0.0, le=1.0)
    detections_per_img: int = Field(100, ge=1)
    draw_score: float = Field(0.3, ge=0.0, le=1.0, description="score above which boxes are drawn on images")


class SegmentationConfig(_Section):
    image_size: int = Field(256, ge=32, le=4096, description="training crop size; validation and prediction resize "
                            "each image to this scale, and the logits are upsampled to the image's own size")
    decoder_channels: int = Field(64, ge=8, description="channels of the FPN decoder on the backbone's stride-8/16/32 "
                                  "stages (ignored for 'tv:' segmentation models, which bring their own head)")
    overlays: int = Field(6, ge=0, le=64, description="validation images shown as image | truth | prediction in "
                          "report.html")


class RunConfig(_Section):
    task: str = Field("image", description="the task (see headstart.tasks): image, text, detection...")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    cache: CacheConfig = CacheConfig()
    device: DeviceConfig = DeviceConfig()
    text: TextConfig = TextConfig()
    detection: DetectionConfig = DetectionConfig()
    segmentation: SegmentationConfig = SegmentationConfig()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def dump(self, path: Path, without: set[str] | frozenset[str] = frozenset()) -> None:
        """Write the resolved config, leaving out the sections ``without`` (those only other tasks read)."""
        data = {k: v for k, v in self.to_dict().items() if k not in without}
        path.write_text(yaml.safe_dump(data, sort_keys=False))


# Keys that moved: configs (and run folders) written before keep working.
MOVED_KEYS = {"text.class_weights": "train.class_weights", "text.balanced_sampling": "train.balanced_sampling",
              **{f"text.lora_{k}": f"train.lora_{k}" for k in ("r", "alpha", "dropout", "targets")}}


def _move_keys(data: dict) -> None:
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            value = data[section].pop(key)
            new_section, new_key = new.split(".")
            target = data.setdefault(new_section, {})
            if isinstance(target, dict):
                target.setdefault(new_key, value)


def _check_keys(data: dict, model: type[BaseModel], where: str = "") -> None:
    """Raise ConfigError naming the closest valid key for every unknown one."""
    if not isinstance(data, dict):
        raise ConfigError(f"Config section '{where or '<root>'}' must be a mapping, found {type(data).__name__}")
    fields = model.model_fields
    for key, value in data.items():
        full = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" Did you mean '{where + '.' if where else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown config key '{full}'.{hint} Valid keys here: {', '.join(fields)}")
        annotation = fields[key].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            _check_keys(value, annotation, full)


def set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"Config key '{key}': '{part}' is a value, not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``train.lr=3e-4`` -> ``("train.lr", 0.0003)`` (values parsed as YAML scalars)."""
    if "=" not in text:
        raise ConfigError(f"Override '{text}' is not of the form key=value (e.g. train.lr=3e-4)")
    key, _, raw = text.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Override '{text}': cannot parse value '{raw}': {exc}") from exc
    return key.strip(), value


def load_config(
    file: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Defaults <- ``base`` <- YAML ``file`` <- dotted ``overrides``; validated."""
    data: dict[str, Any] = dict(base or {})
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"Config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of keys, found {type(loaded).__name__}")
        for key, value in _flatten(loaded).items():
            set_dotted(data, key, value)
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        set_dotted(data, key, value)
    _move_keys(data)
    _check_keys(data, RunConfig)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"'{key}': {err['msg']} (found {err.get('input')!r})")
        raise ConfigError("Invalid config value " + "; ".join(problems)) from None


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_flatten(value, full))
        else:
            out[full] = value
    return out
