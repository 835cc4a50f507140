"""``TextClassifier``: text classification with BERT-family encoders, the same API as ``ImageClassifier``.

>>> clf = TextClassifier(text_column="SMS", label_column="Label").fit("sms.tsv", out="runs/sms")
>>> clf.predict(["WINNER! Claim your prize now", "see you at lunch"])
"""

from __future__ import annotations

import copy
import hashlib
import tempfile
from pathlib import Path
from typing import Any

import torch

from headstart import engine, registry, runs, strategies
from headstart.api import SHORTCUTS
from headstart.backbones import hf_text
from headstart.config import RunConfig, load_config, parse_override
from headstart.data.text import TextData, TextSample, TextSplits, TokenDataset, discover, labelled_texts, tokenize
from headstart.errors import ConfigError, DataError, RunFolderError
from headstart.facade import ClassifierFacade, check_run_target
from headstart.metrics import classification_report
from headstart.progress import console, say, warn
from headstart.tasks.classification import TransferClassifier

TASK = "text-classification"
TOKENIZER_DIR = "tokenizer"

# Text defaults, under the user's YAML file and overrides: the offline encoder and lp-ft (SMS spam, 1,500 texts,
# the cached linear phase alone reached macro-F1 0.934 and one fine-tuning epoch after it 0.953). A head LR of
# 2e-2 (mean-pooled sentence features are small: the linear probe needs a high LR); the top encoder layer at
# 5e-5, 0.85x per layer below it; one cached view (texts are not augmented); epochs: per strategy (lp-ft: 3).
TEXT_DEFAULTS: dict[str, Any] = {
    "task": "text",
    "model": {"name": hf_text.DEFAULT_TEXT_MODEL, "dropout": 0.1},
    "train": {"strategy": "lp-ft", "head_epochs": 10, "lr": 2e-2, "backbone_lr_ratio": 0.0025,
              "layer_decay": 0.85, "batch_size": 32, "label_smoothing": 0.0},
    "cache": {"views": 1},
}
TEXT_SHORTCUTS = {"text_column": "text.text_column", "label_column": "text.label_column",
                  "max_length": "text.max_length", "class_weights": "text.class_weights",
                  "balanced_sampling": "text.balanced_sampling"}


def build_text_config(config: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                      **shortcuts: Any) -> RunConfig:
    """A validated RunConfig: text defaults <- YAML file <- overrides <- keyword shortcuts."""
    merged: dict[str, Any] = {}
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    merged.update(overrides or {})
    known = {**SHORTCUTS, **TEXT_SHORTCUTS}
    for name, value in shortcuts.items():
        if name not in known:
            raise TypeError(f"Unknown argument '{name}'; expected one of {sorted(known)} or overrides={{...}}")
        if value is not None:
            merged[known[name]] = value
    cfg = load_config(config, merged, base=copy.deepcopy(TEXT_DEFAULTS))
    if cfg.task != "text":
        raise ConfigError(f"TextClassifier needs task 'text', the config says task '{cfg.task}'")
    return cfg


class TextClassifier(ClassifierFacade):
    """Fine-tune a pretrained text encoder on a table of labelled texts.

    >>> clf = TextClassifier(model="minilm", strategy="lp-ft").fit("reviews.csv")
    >>> clf.predict(["great value", "broke after a week"])
    """

    TASK = TASK
    NOUN = "texts"
    SKIPPED = "rows"
    REPORT_IMAGES = False

    def __init__(self, model: str | None = None, strategy: str | None = None, epochs: int | None = None,
                 config: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                 **kwargs: Any) -> None:
        self.config = build_text_config(config, overrides, model=model, strategy=strategy, epochs=epochs, **kwargs)
        self.model_: TransferClassifier | None = None
        self.tokenizer_ = None
        self.classes_: list[str] = []
        self.train_counts_: list[int] = []
        self.metrics_: dict[str, Any] = {}
        self.history_: list[dict[str, Any]] = []
        self.run_dir_: Path | None = None

    # ---------------------------------------------------------------- training
    def fit(self, data: str | Path, out: str | Path | None = None, resume: bool = False) -> TextClassifier:
        """Train on DATA; the run folder ``out`` (default: a temporary folder) receives every output."""
        cfg, tc = self.config, self.config.text
        run = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="headstart-run-"))
        check_run_target(run, resume)
        splits = discover(data, tc.text_column, tc.label_column, cfg.data.val_fraction, cfg.train.seed)
        if not hf_text.is_text_model(cfg.model.name):
            raise ConfigError(f"Model '{cfg.model.name}' is an image backbone; text classification needs a text "
                              f"encoder: {', '.join(hf_text.PACKAGED)}, hf:NAME or a Hugging Face model folder")
        strategies.parse(cfg.train.strategy, 10**6)  # a bad strategy fails before the model loads
        run.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.train.seed)
        backbone = registry.create_backbone(cfg.model.name, cfg.model.pretrained, cfg.model.weights)
        spec = backbone.spec
        if tc.pooling != "auto":
            spec.extra["pooling"] = tc.pooling
        max_length = min(tc.max_length, spec.extra["max_positions"])
        spec.extra["max_length"] = max_length
        tokenizer = hf_text.load_tokenizer(spec)
        say(f"[bold]Backbone[/] {spec.name} ({spec.arch}, weights: {spec.weights or 'random init'}, "
            f"{spec.num_params / 1e6:.1f}M params, {backbone.num_groups} layer groups, {spec.extra['pooling']} pooling)")
        tdata = TextData(splits, tokenizer, max_length, tc.class_weights, tc.balanced_sampling,
                         tokenizer_id=f"{spec.name}:{spec.weights}")
        _summarize_data(data, splits, tdata, run)
        fingerprint = hashlib.sha256("".join(tdata.keys("train") + tdata.keys("val")).encode()).hexdigest()[:16]
        if resume:
            meta = runs.read_meta(run, TASK)
            if meta.get("data_fingerprint") != fingerprint:
                raise RunFolderError(
                    f"The data changed since {run} started (fingerprint {meta.get('data_fingerprint')} != "
                    f"{fingerprint}): resume needs the same texts; start a new run with another --out"
                )
        if strategies.parse(cfg.train.strategy, backbone.num_groups)[0] == "lora":
            n = hf_text.add_lora(backbone, tc.lora_r, tc.lora_alpha, tc.lora_dropout, tc.lora_targets)
            say(f"LoRA adapters (r={tc.lora_r}, alpha={tc.lora_alpha}) on {spec.extra['lora']['targets']}: "
                f"{n:,} parameters")
        torch.manual_seed(cfg.train.seed)
        model = TransferClassifier(backbone, len(splits.classes), cfg.model.dropout)
        cfg.dump(run / "config.yaml")
        runs.write_meta(run, task=TASK, status="running", data=str(Path(data).resolve()), data_fingerprint=fingerprint)
        fabric = engine.make_fabric(cfg.device)
        state = engine.fit(model, tdata, cfg, run, resume=resume, fabric=fabric)

        self.tokenizer_ = tokenizer
        self._finish(run, data, splits, tdata, model, fabric, state, truncated=tdata.truncated,
                     max_length=max_length, data_warnings=splits.notes)
        return self

    def _write_task_outputs(self, run: Path, metrics: dict, summary: dict) -> None:
        self.tokenizer_.save_pretrained(str(run / TOKENIZER_DIR))

    def _report_item(self, sample: TextSample) -> str:
        return sample.text

    # ---------------------------------------------------------------- using the model
    def predict_proba(self, texts: str | list[str]) -> tuple[list[str], torch.Tensor]:
        """Class probabilities ``(texts, probs[n_texts, n_classes])``; empty texts are left out (with a warning)."""
        model = self._require_fitted()
        texts = [texts] if isinstance(texts, str) else list(texts)
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise DataError(f"predict takes strings; found {type(bad[0]).__name__} ({bad[0]!r}). Read files first "
                            "(headstart predict RUN --file texts.txt reads one text per line)")
        kept = [t for t in texts if t.strip()]
        if len(kept) < len(texts):
            warn(f"{len(texts) - len(kept)} empty text(s) left out")
        return kept, self._logits(model, kept).softmax(dim=1)

    def _logits(self, model: TransferClassifier, texts: list[str]) -> torch.Tensor:
        if not texts:
            return torch.empty(0, len(self.classes_))
        spec = model.backbone.spec
        ids, cut = tokenize(self.tokenizer_, texts, spec.extra["max_length"])
        if cut:
            say(f"[dim]{cut} of {len(texts)} text(s) cut to {spec.extra['max_length']} tokens[/]")
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        data = _PlainText(spec.extra.get("pad_token_id", 0))
        fabric = engine.make_fabric(self.config.device)
        logits = engine.predict_logits(fabric, model, TokenDataset([ids[i] for i in order], [-1] * len(ids)), data,
                                       self.config.train.batch_size * 2)
        out = torch.empty_like(logits)
        out[torch.tensor(order)] = logits
        return out

    def predict(self, texts: str | list[str], top_k: int = 1) -> list[dict[str, Any]]:
        """One row per non-empty text: text, label, probability and the top-k classes."""
        kept, probs = self.predict_proba(texts)
        k = max(1, min(top_k, len(self.classes_)))
        rows = []
        for text, p in zip(kept, probs):
            values, indices = p.topk(k)
            rows.append({"text": text, "label": self.classes_[int(indices[0])], "probability": float(values[0]),
                         "top_k": [(self.classes_[int(i)], float(v)) for v, i in zip(values, indices)]})
        return rows

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """Metrics on labelled texts (a table or datasets folder) with the majority baseline and warnings."""
        model = self._require_fitted()
        tc = self.config.text
        samples, skipped = labelled_texts(data, self.classes_, tc.text_column, tc.label_column)
        logits = self._logits(model, [s.text for s in samples])
        labels = torch.tensor([s.label for s in samples], dtype=torch.long)
        report = classification_report(logits, labels, self.classes_, self.train_counts_)
        report["skipped"] = len(skipped)
        return report

    @classmethod
    def load(cls, run: str | Path) -> TextClassifier:
        """A fitted classifier from a run folder, with the tokenizer and settings it was trained with."""
        run = Path(run)
        meta = runs.read_meta(run)
        if meta.get("task") != TASK:
            raise RunFolderError(f"{run} holds a '{meta.get('task')}' model, expected a '{TASK}' model: "
                                 "predict images with an image run folder")
        if not (run / TOKENIZER_DIR).is_dir():
            raise RunFolderError(f"{run} has no {TOKENIZER_DIR}/ folder: the run is incomplete; train it again")
        model, info = runs.load_classifier(run)
        clf = cls(config=run / "config.yaml")
        clf.model_, clf.classes_ = model, info["classes"]
        clf.tokenizer_ = hf_text.load_tokenizer(model.backbone.spec, run / TOKENIZER_DIR)
        clf.train_counts_, clf.run_dir_ = info.get("train_counts", []), run
        return clf


class _PlainText:
    """Collate settings for unlabelled texts (predict/evaluate)."""

    def __init__(self, pad_id: int) -> None:
        from headstart.data.text import PadCollate

        self.collate = PadCollate(pad_id)


def _summarize_data(data: str | Path, splits: TextSplits, tdata: TextData, run: Path) -> None:
    counts = {c: 0 for c in splits.classes}
    for s in tdata.splits["train"]:
        counts[splits.classes[s.label]] += 1
    lengths = tdata.lengths("train")
    say(f"[bold]Data[/] {data}: {splits.layout}; {len(splits.classes)} classes; train {len(tdata.splits['train'])}, "
        f"val {len(tdata.splits['val'])}" + (f", test {len(tdata.splits['test'])}" if tdata.splits["test"] else "")
        + f"; train per class {counts}; tokens per text: median {sorted(lengths)[len(lengths) // 2]}, "
        f"max {max(lengths)} (max_length {tdata.max_length})")
    cut = sum(tdata.truncated.values())
    if cut:
        n = sum(len(v) for v in tdata.splits.values())
        warn(f"{cut} of {n} text(s) are longer than max_length={tdata.max_length} tokens and were cut "
             f"(train {tdata.truncated['train']}, val {tdata.truncated['val']}); raise text.max_length to keep more")
    if splits.skipped:
        (run / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in splits.skipped))
        warn(f"{len(splits.skipped)} row(s) skipped (listed in {run / 'skipped.txt'}):")
        for p, why in splits.skipped[:10]:
            console.print(f"  {p}: {why}")
    for note in splits.notes:
        warn(note)
