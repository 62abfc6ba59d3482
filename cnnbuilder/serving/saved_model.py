"""The TF Serving SavedModel of an export: two signatures and the labels asset.

- ``serve``: the model itself, ``inputs`` float32 ``(None, H, W, C)`` (already
  preprocessed) -> ``output_0`` float32 ``(None, K)`` probabilities (what
  ``keras.Model.export`` writes).
- ``serving_default``: ``images`` uint8 ``(None, None, None, None)`` of any size and 1-4
  channels -> ``probabilities`` ``(N, K)`` float32, ``classes`` ``(N,)`` int64 and
  ``labels`` ``(N,)`` string, with `cnnbuilder.data.preprocess` (as the run's record
  says) inside: the conversion the training pipeline applied.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import tensorflow as tf

from cnnbuilder.data.preprocess import preprocess_from_config
from cnnbuilder.serving.foreign import DIGEST_KEY, saved_model_digest
from cnnbuilder.serving.metadata import LABELS, LABELS_ASSET, METADATA, model_input, write_labels

__all__ = ["captured_variables", "serve_function", "write_saved_model"]


def serve_function(model, input_shape) -> tf.types.experimental.GenericFunction:
    """tf.function of the model itself: float32 (None, H, W, C) -> probabilities."""
    spec = tf.TensorSpec((None, *input_shape), tf.float32, name="inputs")

    def serve(inputs):
        return model(inputs, training=False)

    return tf.function(serve, input_signature=[spec], autograph=False)


def _serving_default_function(model, input_shape, class_names, preprocessing):
    """tf.function: raw uint8 images (None, None, None, None) -> probabilities/classes/labels.

    `preprocessing` is the run's `preprocessing_config` record for `input_shape`.
    """
    labels = tf.constant(list(class_names), dtype=tf.string)
    spec = tf.TensorSpec((None, None, None, None), tf.uint8, name="images")

    def serving_default(images):
        x = preprocess_from_config(images, preprocessing)
        probabilities = tf.cast(model(x, training=False), tf.float32)
        classes = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            "probabilities": probabilities,
            "classes": classes,
            "labels": tf.gather(labels, classes),
        }

    return tf.function(serving_default, input_signature=[spec], autograph=False)


def captured_variables(*functions) -> list:
    """The tf.Variables the concrete `functions` read, deduplicated, in first-use order.

    These, not the keras.Variable wrappers of `model.variables`, must be tracked: a
    SavedModel tracking the wrappers reloads fine in TF, but the TFLite converter then
    cannot match the captured handles to saved values and leaves uninitialised
    VAR_HANDLE ops (NaN outputs). keras.export.ExportArchive tracks them the same way.
    """
    seen, variables = set(), []
    for function in functions:
        for variable in function.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables


def write_saved_model(model, path: Path, class_names, input_shape, preprocessing, *,
                      task: str = "classification") -> dict:
    """Write the two-signature SavedModel (and assets/labels.txt) into `path`.

    A ``task="segmentation"`` model's ``serving_default`` returns per-pixel
    ``probabilities`` and ``classes`` at the images' size instead
    (`serving.segmentation.segmentation_serving_function`).

    A bare tf.Module holding the functions' variables and the two tf.functions is saved,
    not the Keras model object: the approach of keras.export.ExportArchive, but with
    public TF API only and room for the labels asset.
    """
    scratch = Path(tempfile.mkdtemp(prefix="cnnbuilder-labels-"))
    try:
        write_labels(scratch / LABELS, class_names)
        root = tf.Module()
        root.serve = serve_function(model, input_shape)
        if task == "segmentation":
            from cnnbuilder.serving.segmentation import segmentation_serving_function

            root.serving_default = segmentation_serving_function(model, preprocessing)
        else:
            root.serving_default = _serving_default_function(
                model, input_shape, class_names, preprocessing
            )
        signatures = {
            "serve": root.serve.get_concrete_function(),
            "serving_default": root.serving_default.get_concrete_function(),
        }
        root.model_variables = captured_variables(*signatures.values())
        # An Asset is copied into assets/ by the saver and revived as a path on load.
        root.labels_file = tf.saved_model.Asset(str(scratch / LABELS))
        tf.saved_model.save(root, str(path), signatures=signatures)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "files": ["saved_model.pb", "variables/", str(LABELS_ASSET), METADATA],
        # What predict checks before running the graph (`serving.foreign`).
        DIGEST_KEY: saved_model_digest(path),
        "signatures": {
            "serve": {
                "inputs": {"inputs": model_input(input_shape, preprocessing)},
                "outputs": {"output_0": {"dtype": "float32", "shape": [None, len(class_names)],
                                         "meaning": "class probabilities"}},
            },
            "serving_default": {
                "inputs": {"images": {"dtype": "uint8", "shape": [None, None, None, None],
                                      "channels": "1 grey, 2 grey+alpha, 3 RGB, 4 RGBA"}},
                "outputs": {
                    "probabilities": {"dtype": "float32", "shape": [None, len(class_names)]},
                    "classes": {"dtype": "int64", "shape": [None], "meaning": "top class index"},
                    "labels": {"dtype": "string", "shape": [None], "meaning": "top class name"},
                },
            },
        },
    }
