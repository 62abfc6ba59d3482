"""The LiteRT (TFLite) flatbuffer of an export, checked against the Keras model.

``model.tflite`` is the ``serve`` function (preprocessed float32 input, builtin ops only,
dynamic batch). Float, it is published only when it reproduces the Keras probabilities
to `LITERT_TOLERANCE` on a seeded random batch. Quantized (`QUANTIZATIONS`, see
`serving.quantization`) it cannot: its accuracy on the run's test split is measured
beside the Keras model's instead, and a drop of more than `max_accuracy_drop` points
fails the export.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from cnnbuilder.errors import ExportError
from cnnbuilder.serving.metadata import LABELS, METADATA, model_input, write_labels
from cnnbuilder.serving.quantization import QUANTIZATIONS, configure, measure_accuracy
from cnnbuilder.serving.saved_model import captured_variables, serve_function

__all__ = ["LITERT_TOLERANCE", "QUANTIZATIONS", "TFLITE", "run_litert", "write_litert"]

TFLITE = "model.tflite"
# The LiteRT flatbuffer must reproduce the Keras probabilities to this accuracy.
LITERT_TOLERANCE = 1e-4
# Size of the seeded random batch that check is made on (>1: exercises the dynamic batch).
_LITERT_CHECK_BATCH = 4


@contextlib.contextmanager
def native_stderr_silenced():
    """File descriptor 2 sent to /dev/null for the block: the converter's and the
    interpreter's C++ code log there, bypassing Python ("fully_quantize: 0,
    inference_type: 6, ...", "Created TensorFlow Lite XNNPACK delegate"); their failures
    still arrive as exceptions."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def write_litert(model, path: Path, class_names, input_shape, preprocessing, *,
                 quantize: str | None = None, run_data=None, max_accuracy_drop: float = 2.0,
                 filename: str = TFLITE) -> dict:
    """Convert the `serve` function to `filename` in `path` and check it against Keras.

    Args:
        quantize: None (float32) or one of `QUANTIZATIONS`.
        run_data: the run's `serving.run_data.RunData` (needed to quantize: int8
            calibrates on it and every quantized file is scored on its test split).
        max_accuracy_drop: percentage points of test accuracy a quantized file may lose.

    Raises:
        ExportError: the conversion fails, a float file disagrees with the Keras model,
            or a quantized one loses more accuracy than allowed.
    """
    root = tf.Module()
    root.serve = serve_function(model, input_shape)
    serve = root.serve.get_concrete_function()
    root.model_variables = captured_variables(serve)  # see captured_variables: why
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve], root)
    # Builtin ops only: a Flex (SELECT_TF_OPS) model would need the TF runtime on device.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    quantization = configure(converter, quantize, run_data)
    try:
        with native_stderr_silenced():
            flatbuffer = converter.convert()
    except Exception as error:  # noqa: BLE001 -- converter errors are many and unexported
        raise ExportError(
            f"LiteRT conversion of model {model.name!r} failed: "
            f"{' '.join(str(error).split())[:500]}. Expected a model made of TFLite builtin "
            "ops; export it as format='savedmodel' instead."
        ) from error
    (path / filename).write_bytes(flatbuffer)
    write_labels(path / LABELS, class_names)
    runtime, diff = _check_litert(model, path / filename, input_shape)
    if quantize is not None:
        quantization["accuracy"] = measure_accuracy(
            model, lambda batch: run_litert(path / filename, batch)[0], run_data,
            max_accuracy_drop, what=f"{quantize} LiteRT file")
    elif not diff <= LITERT_TOLERANCE:
        raise ExportError(
            f"The LiteRT conversion of model {model.name!r} disagrees with the Keras model: "
            f"max abs difference of probabilities {diff:.3g} > {LITERT_TOLERANCE:g} on a random "
            "batch. Nothing was written; export it as format='savedmodel' instead."
        )
    return {
        "files": [filename, LABELS, METADATA],
        "litert": {
            "file": filename,
            "input": model_input(input_shape, preprocessing),
            "output": {"dtype": "float32", "shape": [None, len(class_names)]},
            "interpreter": runtime,
            "check_batch": _LITERT_CHECK_BATCH,
            "max_abs_diff": diff,
            "tolerance": None if quantize else LITERT_TOLERANCE,
            "quantization": quantization,
        },
    }


def litert_interpreter(model_path: Path):
    """(interpreter, runtime name): ai_edge_litert's, else TensorFlow's bundled one."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter(model_path=str(model_path)), "ai_edge_litert"
    except ImportError:
        return tf.lite.Interpreter(model_path=str(model_path)), "tf.lite"


def run_litert(model_path: Path, batch: np.ndarray) -> tuple[np.ndarray, str]:
    """Probabilities of the .tflite model on `batch` and the runtime that computed them."""
    interpreter, runtime = litert_interpreter(model_path)
    (input_detail,) = interpreter.get_input_details()
    # The flatbuffer keeps the dynamic batch (shape_signature -1); size it to this batch.
    interpreter.resize_tensor_input(input_detail["index"], list(batch.shape))
    with native_stderr_silenced():  # "INFO: Created TensorFlow Lite XNNPACK delegate..."
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_detail["index"], batch)
        interpreter.invoke()
    (output_detail,) = interpreter.get_output_details()
    return np.array(interpreter.get_tensor(output_detail["index"])), runtime


def _check_litert(model, model_path: Path, input_shape) -> tuple[str, float]:
    """(runtime, max abs difference) between LiteRT and Keras on a seeded random batch."""
    batch = np.random.default_rng(0).random(
        (_LITERT_CHECK_BATCH, *input_shape), dtype=np.float32
    )
    litert_out, runtime = run_litert(model_path, batch)
    keras_out = np.asarray(model(batch, training=False))
    return runtime, float(np.max(np.abs(litert_out - keras_out)))
