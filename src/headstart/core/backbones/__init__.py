"""Backbone adapters, one module per weight source; ``Backbone`` is the common contract."""

from headstart.core.backbones.base import Backbone

__all__ = ["Backbone"]
