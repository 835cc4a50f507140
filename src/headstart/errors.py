"""Exceptions raised on user input; each message names what was expected, what was found, the fix."""


class HeadstartError(Exception):
    """Base class of every error headstart raises on user input."""


class WeightsNotFoundError(HeadstartError):
    """Pretrained weights could not be found locally or downloaded."""


class DataError(HeadstartError):
    """The dataset is missing, empty, malformed or inconsistent."""


class ConfigError(HeadstartError):
    """An unknown configuration key or an invalid value."""


class RunFolderError(HeadstartError):
    """A run folder is missing files or belongs to another model, task or version."""


class NotFittedError(HeadstartError):
    """A model was used before ``fit`` or ``load``."""


class ExportError(HeadstartError):
    """An export could not be made, or the exported model does not reproduce the PyTorch model (parity)."""


class DiskSpaceError(HeadstartError):
    """The disk of a folder headstart must write to has less free space than the run needs."""
