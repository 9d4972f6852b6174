"""Training: one run (engine), the study grid (study), where runs execute (backends), study configs
(config) and metrics. See ``docs/training.md``.

Importing this package imports torch (the engine). Nothing that must start without torch imports
it: the run store it writes is :mod:`medattn.runs`, and the CLI imports it inside the commands that
train.
"""

from medattn.training.config import RunSpec, StudyConfig, TrainSettings, load_config
from medattn.training.engine import Hooks, train, train_run
from medattn.training.study import StudyResult, run_study

__all__ = ["Hooks", "RunSpec", "StudyConfig", "StudyResult", "TrainSettings", "load_config",
           "run_study", "train", "train_run"]
