"""Multi-label text classification: ``MultiLabelTextClassifier(...).fit(table)``, ``.predict(texts)``, ``.evaluate``.

The text classifier (encoder + head, strategies, embedding cache, tokenised texts, its reading with ``TAGS``) made
multi-label by ``MultiLabel``: a sigmoid per label, thresholds tuned on validation.

>>> MultiLabelTextClassifier().fit("train.csv").predict(["you are an idiot"])  # Jigsaw: toxic, insult...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from headstart.tasks.multilabel.data import multi_hot
from headstart.tasks.multilabel.task import MultiLabel
from headstart.tasks.text.data import text_key
from headstart.tasks.text.task import TextClassifier


class MultiLabelTextClassifier(MultiLabel, TextClassifier):
    """Fine-tune a pretrained text encoder to tag each text with every label that applies (Jigsaw's toxic comments:
    a 0/1 column per label; GoEmotions: a list of labels per text).

    >>> clf = MultiLabelTextClassifier().fit("train.csv")
    >>> clf.predict(["you are an idiot"])
    """

    TASK = "text-multilabel"
    TAGS = True

    def evaluate(self, data: str | Path) -> dict[str, Any]:
        """mAP, F1 at the saved thresholds, per-label scores and the frequency baseline on labelled texts.

        DATA as for training (its test split, else its validation split, else every row).
        """
        model = self._require_fitted()
        samples, skipped = self._labelled(data)
        logits = self._logits(model, [s.text for s in samples])
        targets = torch.stack([multi_hot(s.label, len(self.classes_)) for s in samples])
        report = self._tag_report(logits, targets)
        report["skipped"] = len(skipped)
        self._seen_in_training(report, [text_key(s.text) for s in samples])
        self._count_unfamiliar(report)
        return report
