"""User-facing errors.

Every error a user can cause (a bad file, row, option or config key) is raised as a subclass of
:class:`MedattnError` with a message that names the culprit and says how to fix it. The CLI prints
the message without a traceback and exits with the error's ``exit_code`` (2 unless it says other).
"""


class MedattnError(Exception):
    """Base class of errors caused by user input; the message says what to fix."""

    exit_code = 2


class DataError(MedattnError):
    """A data set on disk is missing, malformed or inconsistent."""


class ConfigError(MedattnError):
    """A study config or command-line option is invalid."""


class ArgumentError(ConfigError):
    """A library argument has a bad value. The message is written with the argument names in
    braces (``"{margin} must be > 0 pp, got -1."``): ``str(err)`` shows the library names
    (``margin``), :meth:`render` any others, so the CLI can name its flags (``--margin``)."""

    def __init__(self, template: str, *arguments: str):
        self.template = template
        self.arguments = arguments
        super().__init__(self.render({}))

    @property
    def argument(self) -> str | None:
        """The first argument the message names (the one whose value is bad)."""
        return self.arguments[0] if self.arguments else None

    def render(self, names: dict[str, str]) -> str:
        """The message with each ``{argument}`` replaced by ``names[argument]`` (default: the
        argument's own name); ``{alpha}=1.5`` reads ``--alpha 1.5`` when the name is a flag."""
        text = self.template
        for a in self.arguments:
            name = names.get(a, a)
            if name.startswith("-"):
                text = text.replace("{" + a + "}=", name + " ")
            text = text.replace("{" + a + "}", name)
        return text


class WeightsError(MedattnError):
    """A weight file or checkpoint cannot be used for the requested model."""


class StoreError(MedattnError):
    """The run store cannot be used: not writable, disk full, a malformed file, or in use by
    another process."""


class IncompleteStudyError(MedattnError):
    """Runs of a study failed or were lost. ``runs`` lists ``(run_id, status, message)``;
    ``result`` is the partial :class:`~medattn.training.study.StudyResult` where there is one.
    Running the study again retries them (finished runs are kept)."""

    exit_code = 1

    def __init__(self, message: str, runs: list | None = None, result=None):
        super().__init__(message)
        self.runs = list(runs or [])
        self.result = result
