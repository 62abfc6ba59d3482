"""Post-training quantization of a LiteRT export, and the accuracy check it must pass.

`QUANTIZATIONS` are TFLite's three post-training modes (`tf.lite.TFLiteConverter`):

- ``dynamic``: weights stored as int8, activations float (dequantized, or quantized on
  the fly by the kernels that can); about 4x smaller, no data needed to convert.
- ``float16``: weights stored as float16 (2x smaller), computed in float32 on CPU.
- ``int8``: weights and activations int8 (builtin int8 kernels only,
  ``TFLITE_BUILTINS_INT8``); activation ranges are calibrated on a representative
  sample of the run's training images (`RunData.calibration_sample`). The file keeps
  float32 input and output (a quantize op in, a dequantize op out), so it is fed and
  read like the float file.

A quantized model cannot match the float one to a tolerance; `measure_accuracy` scores
it on the run's test split beside the Keras model and fails the export when it loses
more than the allowed percentage points.
"""

from __future__ import annotations

import numpy as np

from cnnbuilder.errors import ExportError

__all__ = ["QUANTIZATIONS", "configure", "measure_accuracy"]

QUANTIZATIONS = ("dynamic", "float16", "int8")


def configure(converter, quantize: str | None, run_data) -> dict | None:
    """Set `converter` up for `quantize` (None: float); the record for the metadata.

    Raises:
        ExportError: quantizing without the run's data (nothing to calibrate or score on).
    """
    import tensorflow as tf

    if quantize is None:
        return None
    if run_data is None or not run_data.available:
        raise ExportError(
            f"A {quantize}-quantized LiteRT export is checked on the test split of the "
            "model's training data, and this model has none: export a training run "
            "directory (whose run.json names its dataset), or pass dataset=."
        )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    record = {"mode": quantize, "input": "float32", "output": "float32"}
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
        record["weights"] = "float16"
    elif quantize == "dynamic":
        record["weights"] = "int8"
    else:
        sample, record["calibration"] = run_data.calibration_sample()

        def representative():
            for image in sample:
                yield [image[np.newaxis]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        record.update(weights="int8", activations="int8")
    return record


def measure_accuracy(model, predict, run_data, max_accuracy_drop: float, *, what: str) -> dict:
    """Test accuracy of `predict` and of the Keras `model`; ExportError on a large drop.

    Args:
        model: the Keras model the file was converted from.
        predict: float batch -> (N, K) probabilities of the converted file.
        run_data: the run's `RunData`.
        max_accuracy_drop: allowed loss, in percentage points.
        what: the file, for the message.
    """
    converted, examples = run_data.accuracy(predict)
    keras_accuracy, _ = run_data.accuracy(lambda batch: model(batch, training=False))
    drop = 100.0 * (keras_accuracy - converted)
    record = {"split": "test", "dataset": run_data.name, "examples": examples,
              "keras": keras_accuracy, "exported": converted, "drop_points": drop,
              "max_drop_points": float(max_accuracy_drop)}
    if drop > max_accuracy_drop:
        raise ExportError(
            f"The {what} reaches {100 * converted:.2f}% test accuracy on {examples} images "
            f"of {run_data.name}, {drop:.2f} points below the Keras model's "
            f"{100 * keras_accuracy:.2f}% (allowed: {max_accuracy_drop:g} points, "
            "--max-accuracy-drop). Nothing was written; try a milder quantization "
            "(float16, dynamic) or raise the bound."
        )
    return record
