"""The training engine used by `train`, every tuning trial and fine-tuning alike."""

from cnnbuilder.training.engine import TrainResult, train

__all__ = ["TrainResult", "train"]
