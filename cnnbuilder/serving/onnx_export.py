"""The ONNX file of an export (ONNX Runtime, TensorRT, OpenVINO...), checked after writing.

``model.onnx`` is Keras' own ONNX export (``model.export(format="onnx")``, tf2onnx on
the TensorFlow backend) of the model itself: input ``inputs`` float32 ``(N, H, W, C)``
already preprocessed, output float32 ``(N, K)`` probabilities, dynamic batch. The raw
image conversion is not in the graph: ``metadata.json`` records it (``preprocessing``),
and `cnnbuilder.predict` applies it before running the file.

It is published only when ONNX Runtime reproduces the Keras probabilities to
`ONNX_TOLERANCE` on a batch of the run's own test images (a seeded random batch for a
model without a run).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np

from cnnbuilder.errors import ExportError
from cnnbuilder.extras import require
from cnnbuilder.serving.metadata import LABELS, METADATA, model_input, write_labels

__all__ = ["ONNX", "ONNX_TOLERANCE", "run_onnx", "write_onnx"]

ONNX = "model.onnx"
ONNX_TOLERANCE = 1e-4
# The single input's name (the serve signature's, so every format names it alike).
INPUT_NAME = "inputs"
_RANDOM_CHECK_BATCH = 8


def write_onnx(model, path: Path, class_names, input_shape, preprocessing, *, run_data=None,
               filename: str = ONNX) -> dict:
    """Write `filename` (and labels.txt) into `path`; check it with ONNX Runtime.

    Raises:
        ExportError: tf2onnx cannot convert the model, or ONNX Runtime disagrees with Keras.
    """
    require("tf2onnx")  # Keras' ONNX export uses it: named with its extra when missing
    require("onnxruntime")
    import tensorflow as tf

    target = path / filename
    spec = tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)
    try:
        # tf2onnx prints its progress and warns about numpy 2 aliases: neither is news.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model.export(str(target), format="onnx", input_signature=[spec], verbose=False)
    except Exception as error:  # noqa: BLE001 -- tf2onnx raises many unexported types
        raise ExportError(
            f"ONNX conversion of model {model.name!r} failed: {type(error).__name__}: "
            f"{' '.join(str(error).split())[:500]}. A network with custom layers (the "
            "memory-efficient DenseNet's recomputed blocks) may not convert: build the "
            "plain network (memory_efficient: false), copy the weights over with "
            "cnnbuilder.model.transfer_weights (they match one to one) and export that."
        ) from error
    write_labels(path / LABELS, class_names)
    if run_data is not None and run_data.available:
        batch, origin = run_data.check_batch(), f"the first test images of {run_data.name}"
    else:
        batch = np.random.default_rng(0).random((_RANDOM_CHECK_BATCH, *input_shape),
                                                dtype=np.float32)
        origin = "a seeded random batch"
    outputs, runtime = run_onnx(target, batch)
    diff = float(np.max(np.abs(outputs - np.asarray(model(batch, training=False)))))
    if not diff <= ONNX_TOLERANCE:
        raise ExportError(
            f"The ONNX file of model {model.name!r} disagrees with the Keras model: max abs "
            f"difference of probabilities {diff:.3g} > {ONNX_TOLERANCE:g} on {len(batch)} "
            f"images ({origin}). Nothing was written; export it as format='savedmodel'."
        )
    return {
        "files": [filename, LABELS, METADATA],
        "onnx": {
            "file": filename,
            "input": {"name": INPUT_NAME, **model_input(input_shape, preprocessing)},
            "output": {"dtype": "float32", "shape": [None, len(class_names)],
                       "meaning": "class probabilities"},
            "opset": _opset(target),
            "runtime": runtime,
            "check": {"images": int(len(batch)), "of": origin, "max_abs_diff": diff,
                      "tolerance": ONNX_TOLERANCE},
        },
    }


def run_onnx(model_path: Path, batch: np.ndarray) -> tuple[np.ndarray, str]:
    """Probabilities of the .onnx file on the float `batch` and the runtime's name."""
    session = onnx_session(model_path)
    (model_input_,) = session.get_inputs()
    return np.asarray(session.run(None, {model_input_.name: batch})[0]), _runtime_name()


def onnx_session(model_path: Path):
    """An ONNX Runtime CPU inference session of `model_path`."""
    onnxruntime = require("onnxruntime")

    return onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


def _runtime_name() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"


def _opset(model_path: Path) -> int | None:
    """The default-domain opset the file was written for."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
