"""The training engine used by `train`, every tuning trial and fine-tuning alike.

`prepare` checks a recipe (or Keras model), its data and training settings into a `Job`;
`Job.build`, `Job.compile`, `Job.fit` and `Job.evaluate` are the steps every caller
takes; `train` adds the resumable run directory (`rundir`, `commit`).
"""

from cnnbuilder.training.engine import Job, TrainResult, prepare, train
from cnnbuilder.training.optimizers import compile_model, learning_rate_schedule, make_optimizer
from cnnbuilder.training.settings import RunSettings, default_augment, steps_per_epoch

__all__ = ["Job", "RunSettings", "TrainResult", "compile_model", "default_augment",
           "learning_rate_schedule", "make_optimizer", "prepare", "steps_per_epoch", "train"]
