"""User-facing errors.

Every error a user can cause (a bad file, row, option or config key) is raised as a subclass of
:class:`MedattnError` with a message that names the culprit and says how to fix it. The CLI prints
the message without a traceback and exits with status 2.
"""


class MedattnError(Exception):
    """Base class of errors caused by user input; the message says what to fix."""


class DataError(MedattnError):
    """A data set on disk is missing, malformed or inconsistent."""


class ConfigError(MedattnError):
    """A study config or command-line option is invalid."""


class WeightsError(MedattnError):
    """A weight file or checkpoint cannot be used for the requested model."""
