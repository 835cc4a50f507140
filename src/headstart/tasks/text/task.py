"""``TextClassifier``: text classification with BERT-family encoders, the same API as ``ImageClassifier``.

>>> clf = TextClassifier(text_column="SMS", label_column="Label").fit("sms.tsv", out="runs/sms")
>>> clf.predict(["WINNER! Claim your prize now", "see you at lunch"])
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from headstart.core import loop
from headstart.core.backbones import hf_text, lora, registry
from headstart.core.estimator import REFIT_TRAIN, Prepared
from headstart.errors import ConfigError, RunFolderError
from headstart.progress import say, warn
from headstart.tasks.classification.estimator import ClassifierEstimator
from headstart.tasks.classification.model import TransferClassifier
from headstart.tasks.classification.training import predict_logits
from headstart.tasks.text import PART_SEP, as_texts, is_blank, shown, unshown
from headstart.tasks.text.data import (
    PadCollate,
    TextData,
    TextSample,
    TextSplits,
    TokenDataset,
    discover,
    labelled_texts,
    text_key,
    texts_from_arguments,
    tokenize,
    tokenizer_id,
)

TOKENIZER_DIR = "tokenizer"


class TextClassifier(ClassifierEstimator):
    """Fine-tune a pretrained text encoder on a table of labelled texts.

    >>> clf = TextClassifier(model="minilm", strategy="lp-ft").fit("reviews.csv")
    >>> clf.predict(["great value", "broke after a week"])
    """

    TASK = "text"
    NOUN = "texts"
    SKIPPED = "rows"
    REPORT_IMAGES = False
    ITEM_KEY = "text"
    TAGS = False  # multi-label: a tuple of labels a text (``MultiLabelTextClassifier``)
    evidence_: list[list[tuple[str, float]]] = []  # the last predict_proba(..., evidence=True)'s words per text
    tokenizer_ = None
    text_columns_: list[str] = []  # the column(s) the texts were read from at training
    item_name = staticmethod(shown)  # how a prediction's row names its text

    def _prepare(self, data: str | Path, run: Path) -> Prepared:
        cfg = self.config
        splits = self._training_splits(self._discover(data))
        torch.manual_seed(cfg.train.seed)
        backbone, tokenizer = self._backbone()
        spec, max_length = backbone.spec, backbone.spec.extra["max_length"]
        tdata = TextData(splits, tokenizer, max_length, tokenizer_id=tokenizer_id(spec))
        _summarize_data(data, splits, tdata, self._refitting)
        self._write_skipped(run, splits)
        for note in splits.notes:
            warn(note)
        lora.prepare(backbone, cfg.train)
        torch.manual_seed(cfg.train.seed)
        model = TransferClassifier(backbone, len(splits.classes), cfg.model.dropout)
        self.tokenizer_, self.text_columns_, self.class_aliases_ = tokenizer, splits.text_columns, splits.aliases
        return Prepared(model, tdata, splits, {"truncated": tdata.truncated, "max_length": max_length,
                                               "data_warnings": splits.notes})

    def _backbone(self) -> tuple[Any, Any]:
        """The configured pretrained encoder (``model.name``, said) and its tokenizer; ``spec.extra["max_length"]``
        set (``text.max_length`` within the model's positions)."""
        cfg, tc = self.config, self.config.text
        if not hf_text.is_text_model(cfg.model.name):
            raise ConfigError(f"Model '{cfg.model.name}' is an image backbone; text classification needs a text "
                              f"encoder: {', '.join(hf_text.PACKAGED)}, hf:NAME or a Hugging Face model folder")
        backbone = registry.create_backbone(cfg.model.name, cfg.model.pretrained, cfg.model.weights)
        spec = backbone.spec
        if tc.pooling != "auto":
            spec.extra["pooling"] = tc.pooling
        spec.extra["max_length"] = min(tc.max_length, spec.extra["max_positions"])
        tokenizer = hf_text.load_tokenizer(spec)
        hf_text.use_segments(backbone, tokenizer)
        say(f"[bold]Backbone[/] {spec.name} ({spec.arch}, weights: {spec.weights or 'random init'}, "
            f"{spec.num_params / 1e6:.1f}M params, {backbone.num_groups} layer groups, {spec.extra['pooling']} pooling)")
        return backbone, tokenizer

    def _use_pretrained(self) -> None:
        backbone, self.tokenizer_ = self._backbone()
        self.model_, self.classes_, self.familiar_ = TransferClassifier(backbone, 1), ["(none)"], None
        self.text_columns_ = []

    def _discover(self, data: str | Path) -> TextSplits:
        tc, cfg = self.config.text, self.config
        return discover(data, tc.text_column, tc.label_column, cfg.data.val_fraction, cfg.train.seed, tags=self.TAGS,
                        uncertain=cfg.data.uncertain)

    def _labelled(self, data: str | Path, splits: TextSplits | None = None) -> tuple[list[TextSample],
                                                                                  list[tuple[str, str]]]:
        """Labelled texts, read from the columns of training where ``data`` has them."""
        tc = self.config.text
        classes, columns, known_by, aliases = (
            (self.classes_, self.text_columns_, "the model", self.class_aliases_) if splits is None
            else (splits.classes, splits.text_columns, "DATA", splits.aliases))
        samples, skipped = labelled_texts(data, classes, tc.text_column or columns or None, tc.label_column,
                                          tags=self.TAGS, uncertain=self.config.data.uncertain, known_by=known_by,
                                          aliases=aliases)
        if len(columns) > 1:  # a table 'suggest' wrote holds each text's parts in one column, joined as shown
            samples = [dataclasses.replace(s, text=unshown(s.text, len(columns))) for s in samples]
        return samples, skipped

    def _keys_of(self, samples: list[TextSample]) -> list[str]:
        return [text_key(s.text) for s in samples]

    def _save_files(self, run: Path) -> None:
        super()._save_files(run)
        self.tokenizer_.save_pretrained(str(run / TOKENIZER_DIR))

    def _report_item(self, sample: TextSample) -> str:
        return shown(sample.text)

    def _spec_info(self) -> dict[str, Any]:
        return {**super()._spec_info(), "text_columns": self.text_columns_}

    def _loaded(self, run: Path, info: dict[str, Any]) -> None:
        super()._loaded(run, info)
        self.text_columns_ = list(info.get("text_columns") or [])
        if not (run / TOKENIZER_DIR).is_dir():
            raise RunFolderError(f"{run} has no {TOKENIZER_DIR}/ folder: the run is incomplete; train it again")
        self.tokenizer_ = hf_text.load_tokenizer(self.model_.backbone.spec, run / TOKENIZER_DIR)

    @classmethod
    def cli_inputs(cls, items: list[str], file: Path | None, run: Path | None = None) -> list[str]:
        """Texts from the command line; a table's are read from the run's text column(s) where it has them."""
        from headstart.core import runfolder

        columns = runfolder.read_spec(run).get("text_columns") or [] if run is not None else []
        return texts_from_arguments(items, file, columns)

    # ---------------------------------------------------------------- using the model
    def _pool(self, inputs: Any) -> list[str]:
        return as_texts(inputs)

    def _content_key(self, item: Any) -> str | None:
        """``text_key`` of a predicted text (as shown: its parts joined by " | ", split again)."""
        return text_key(unshown(item, len(self.text_columns_)))

    def predict_proba(self, texts: str | list[str] | list[tuple[str, ...]],
                      evidence: bool = False) -> tuple[list[str], torch.Tensor]:
        """Class probabilities ``(texts, probs[n_texts, n_classes])``; empty texts are left out (with a warning).

        A model trained on several text columns (a title and its body, a pair) takes each text as a tuple of its
        parts in the columns' order (``text_columns_``); the texts returned show them joined by " | ".
        ``evidence``: also weigh each text's words for its most probable class (``evidence_``; rows' ``evidence``).
        """
        model = self._require_fitted()
        texts = as_texts(texts)
        kept = [t for t in texts if not is_blank(t)]
        if len(kept) < len(texts):
            warn(f"{len(texts) - len(kept)} empty text(s) left out")
        probs = self._activate(self._logits(model, kept))
        self.evidence_ = self._weighed(model, kept, probs.argmax(dim=1).tolist()) if evidence and kept else []
        return [shown(t) for t in kept], probs

    def _weighed(self, model: TransferClassifier, texts: list[str], classes: list[int],
                 within: int | None = None) -> list[list[tuple[str, float]]]:
        """The words each text's class ``classes[i]`` rests on (``evidence.weigh``; ``within``: of its first so many
        characters), on the model's calibrated log-odds computed in float32."""
        from headstart.tasks.text import evidence

        return evidence.weigh(texts, classes, lambda many: evidence.log_odds(
            self._pass(model, many, "Weighing words", precise=True)[0] / self.temperature_, sigmoid=self.TAGS),
            within=within)

    def _logits(self, model: TransferClassifier, texts: list[str]) -> torch.Tensor:
        """The texts' logits; sets ``unfamiliar_`` from the same pass."""
        if not texts:
            self.unfamiliar_ = []
            return torch.empty(0, len(self.classes_))
        parts = len(self.text_columns_)
        odd = sum(t.count(PART_SEP) + 1 != parts for t in texts) if parts > 1 else 0
        if odd:
            warn(f"{odd} of {len(texts)} text(s) are not in {parts} parts, while this model was trained on texts read "
                 f"from {' + '.join(self.text_columns_)}: give tables those columns, or predict tuples of {parts} "
                 "parts; a text of other parts is classified, less well")
        max_length = model.backbone.spec.extra["max_length"]
        logits, features, cut = self._pass(model, texts)
        if cut:
            say(f"[dim]{cut} of {len(texts)} text(s) cut to {max_length} tokens[/]")
        return self._unfamiliar((logits, features))

    def _pass(self, model: TransferClassifier, texts: list[str], desc: str = "Predicting",
              precise: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(logits, features, how many texts were cut)`` of the texts, in their order (batched by length);
        ``precise``: in float32 whatever the run's precision (bf16 logits move in steps of 0.06 near 10: a word's
        weight would be such a step)."""
        spec = model.backbone.spec
        ids, cut = tokenize(self.tokenizer_, texts, spec.extra["max_length"])
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        device = self.config.device.model_copy(update={"precision": "32-true"}) if precise else self.config.device
        fabric = loop.make_fabric(device)
        logits, features = predict_logits(fabric, model, TokenDataset([ids[i] for i in order], [-1] * len(ids)),
                                          self.config.train.batch_size * 2,
                                          PadCollate(spec.extra.get("pad_token_id", 0)), desc=desc, features=True)
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.tensor(order)] = torch.arange(len(order))
        return logits[back], features[back], cut

    def _explain(self, shown: list[Any]) -> bool:
        """Each shown validation text's words that its predicted class rests on (report.html marks them)."""
        from headstart.core.report.html_report import TEXT_SHOWN, explained_class

        found = self._weighed(self.model_, [self.splits_val_[m.index].text for m in shown],
                              [explained_class(m, self.classes_) for m in shown],
                              within=TEXT_SHOWN) if shown else []  # the words the report shows: one pass each
        for m, weighed in zip(shown, found):
            m.evidence = weighed
        return True

    def _flags(self, items: list[Any]) -> list[dict[str, Any]]:
        """The unfamiliar flag, and each text's words with their weights where ``predict(..., evidence=True)``."""
        return self._with(super()._flags(items), "evidence", [[list(pair) for pair in found] for found in self.evidence_])

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """Metrics on labelled texts (a table or datasets folder) with the majority baseline and warnings."""
        model = self._require_fitted()
        samples, skipped = self._labelled(data)
        logits = self._logits(model, [s.text for s in samples])
        labels = torch.tensor([s.label for s in samples], dtype=torch.long)
        report = self._scored(logits, labels)
        report["skipped"] = len(skipped)
        self._seen_in_training(report, [text_key(s.text) for s in samples])
        self._count_unfamiliar(report)
        return report


def _summarize_data(data: str | Path, splits: TextSplits, tdata: TextData, refitting: bool = False) -> None:
    counts = {c: 0 for c in splits.classes}
    for s in tdata.splits["train"]:
        for label in s.label if isinstance(s.label, tuple) else (s.label,):
            counts[splits.classes[label]] += 1
    lengths = tdata.lengths("train")
    train = tdata.splits["train"]
    if tdata.tags:  # multi-label: how many labels a text carries
        per = [len(s.label) for s in train]
        what = (f"{len(splits.classes)} labels (multi-label: {sum(per) / max(len(per), 1):.2f} per text, "
                f"{per.count(0)} training text(s) with none, at most {max(per, default=0)})")
    else:
        what = f"{len(splits.classes)} classes"
    say(f"[bold]Data[/] {data}: {splits.layout}; {what}; train {len(train)}"
        f"{REFIT_TRAIN if refitting else ''}, val {len(tdata.splits['val'])}"
        + (f", test {len(tdata.splits['test'])}" if tdata.splits["test"] else "")
        + f"; train per {'label' if tdata.tags else 'class'} {counts}; tokens per text: median "
        f"{sorted(lengths)[len(lengths) // 2]}, max {max(lengths)} (max_length {tdata.max_length})")
    cut = sum(tdata.truncated.values())
    if cut:
        n = sum(len(v) for v in tdata.splits.values())
        warn(f"{cut} of {n} text(s) are longer than max_length={tdata.max_length} tokens and were cut "
             f"(train {tdata.truncated['train']}, val {tdata.truncated['val']}); raise text.max_length to keep more")
