"""headstart: transfer learning and fine-tuning of pretrained models on small datasets.

The estimators load on first use (``headstart.ImageClassifier``...), so that importing the package
(and the CLI) does not import torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_ESTIMATORS = {"ImageClassifier": "image", "TextClassifier": "text", "Detector": "detection",
               "MultiLabelClassifier": "multilabel", "MultiLabelTextClassifier": "text-multilabel",
               "Segmenter": "segmentation"}
__all__ = [*_ESTIMATORS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _ESTIMATORS:
        from headstart.tasks import get_task

        return get_task(_ESTIMATORS[name]).estimator_class()
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
