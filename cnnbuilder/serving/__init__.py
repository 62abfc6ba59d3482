"""Shipping a trained model: export (SavedModel, LiteRT float or quantized, ONNX), a model
card, and one predict for all three."""

from cnnbuilder.serving.exporting import export
from cnnbuilder.serving.prediction import predict

__all__ = ["export", "predict"]
