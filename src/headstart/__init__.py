"""headstart: transfer learning and fine-tuning of pretrained models on small datasets."""

__version__ = "0.1.0"

from headstart.api import ImageClassifier  # noqa: E402
from headstart.text_api import TextClassifier  # noqa: E402

__all__ = ["ImageClassifier", "TextClassifier", "__version__"]
