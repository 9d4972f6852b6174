"""Training: one run (engine), the study grid (study), where runs execute (backends), the run
store (store), study configs (config) and metrics. See ``docs/training.md``.

Names are imported lazily so that ``medattn.runs.store`` (read by the analysis parts) does not
pull in torch.
"""

from importlib import import_module

_EXPORTS = {
    "RunSpec": "config", "StudyConfig": "config", "TrainSettings": "config",
    "load_config": "config", "Hooks": "engine", "train": "engine", "train_run": "engine",
    "StudyResult": "study", "run_study": "study",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"medattn.training.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'medattn.training' has no attribute {name!r}")
