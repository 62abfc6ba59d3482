"""Shipping a trained model: export (SavedModel, LiteRT) and predict."""

from cnnbuilder.serving.exporting import export
from cnnbuilder.serving.prediction import predict

__all__ = ["export", "predict"]
