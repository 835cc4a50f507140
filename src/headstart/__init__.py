"""headstart: transfer learning and fine-tuning of pretrained models on small datasets."""

__version__ = "0.1.0"

__all__ = ["__version__"]
