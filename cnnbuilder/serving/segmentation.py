"""Exporting and predicting with segmentation models: per-pixel classes at the input's size.

A segmentation model takes images (B, H, W, C) and gives softmax probabilities
(B, h, w, K) per pixel (at its input's size, h = H and w = W, for the zoo's recipes). Its
export is told from a classifier by the run's record (``run.json``'s ``task``), or, for a
bare ``.keras`` file, by its output's rank (4 rather than 2): `model_task`.

- SavedModel: ``serving_default`` takes raw uint8 images of any size (as a classifier's:
  `cnnbuilder.data.preprocess` inside), and returns ``probabilities`` (B, H, W, K) and
  ``classes`` (B, H, W) int64 at the **raw image's** size: the model's probabilities are
  resized back bilinearly (`resize_probabilities`), then the argmax taken. ``serve``
  is the model itself.
- LiteRT / ONNX: the model itself (B, h, w, K), checked against Keras as a classifier's
  file is; `predict` resizes and takes the argmax with the same function.
- `predict` of a segmentation export (`predict_segmentation`) gives each image's class
  areas (pixels and fraction per class name) and, with ``output=MASK_DIR``, writes
  ``MASK_DIR/STEM.png``, a palette PNG of the class map (pixel value = class index,
  colours `cnnbuilder.plots.segmentation.palette`) and ``MASK_DIR/STEM.json``, the areas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnbuilder.errors import CnnBuilderError, ExportError, RunError

__all__ = ["CLASSIFICATION", "SEGMENTATION", "check_segmentation_preprocessing", "class_areas",
           "class_map", "export_task",
           "model_task", "predict_segmentation", "resize_probabilities",
           "segmentation_serving_function", "segmentation_shape", "write_mask"]

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
TASKS = (CLASSIFICATION, SEGMENTATION)
# Images of one size go through the model together, at most this many at a time.
_BATCH_SIZE = 16


# ------------------------------------------------------------------------------ export


def model_task(source) -> str:
    """``classification`` or ``segmentation`` of a `serving.source.Source`: its run.json's
    ``task`` when recorded, else from the model's output rank (4: per-pixel classes).

    Raises:
        RunError: run.json records another task name.
    """
    task = (source.run or {}).get("task")
    if task is not None:
        if task not in TASKS:
            raise RunError(f"{source.directory}/run.json records task {task!r}; expected one of "
                           f"{', '.join(TASKS)}.")
        return task
    outputs = list(getattr(source.model, "outputs", None) or [])
    return SEGMENTATION if len(outputs) == 1 and len(outputs[0].shape) == 4 else CLASSIFICATION


def segmentation_shape(source) -> tuple[tuple[int, int, int], int]:
    """((H, W, C), K) of a one-input image model with one (None, h, w, K) output.

    Raises:
        RunError: the model is not such a segmentation model.
    """
    model = source.model
    where = source.path or f"model {model.name!r}"
    inputs, outputs = list(model.inputs or []), list(model.outputs or [])
    in_shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
    out_shape = tuple(outputs[0].shape) if len(outputs) == 1 else ()
    if not (len(in_shape) == 4 and all(isinstance(d, int) and d > 0 for d in in_shape[1:])
            and len(out_shape) == 4 and isinstance(out_shape[3], int) and out_shape[3] > 0):
        raise RunError(
            f"Cannot export {where} as a segmentation model: expected one input of fixed "
            f"shape (H, W, C) and one output of per-pixel class probabilities (H, W, K), got "
            f"inputs {[tuple(t.shape) for t in inputs]} and outputs "
            f"{[tuple(t.shape) for t in outputs]}.")
    return tuple(int(d) for d in in_shape[1:]), int(out_shape[3])


def export_task(source, quantize) -> str:
    """The task of `source` (`model_task`), refusing what a segmentation export cannot do.

    Raises:
        ExportError: a quantized segmentation export (its check measures classification
            accuracy).
    """
    task = model_task(source)
    if task == SEGMENTATION and quantize is not None:
        raise ExportError(
            f"--quantize {quantize} is not available for segmentation models yet: a quantized "
            "file is checked by its test-split accuracy as a classifier. Export the float "
            "LiteRT file (no --quantize), or the SavedModel or ONNX formats.")
    return task


def check_segmentation_preprocessing(preprocessing: dict) -> None:
    """Refuse a preprocessing record with a centre crop (``crop_from``): the class map is
    resized back onto the whole image, which a crop would misplace.

    Raises:
        ExportError: the record crops.
    """
    if preprocessing.get("crop_from") is not None:
        raise ExportError(
            f"The run's preprocessing resizes to {preprocessing['crop_from']} and centre-crops "
            f"to {preprocessing['input_shape'][:2]} (a PyTorch-world evaluation transform); a "
            "segmentation export resizes its class map back onto the whole image, which a crop "
            "would misplace. Train the segmentation model without crop_from.")


def segmentation_details(details: dict, model, num_classes: int) -> dict:
    """The format writer's `details` with the output shapes of a segmentation model (the
    writers describe a classifier's (None, K))."""
    shape = [None if d is None else int(d) for d in model.outputs[0].shape]
    for key in ("litert", "onnx"):
        if key in details:
            details[key]["output"] = {"dtype": "float32", "shape": shape,
                                      "meaning": "per-pixel class probabilities"}
    signatures = details.get("signatures")
    if signatures:
        signatures["serve"]["outputs"]["output_0"] = {
            "dtype": "float32", "shape": shape, "meaning": "per-pixel class probabilities"}
        signatures["serving_default"]["outputs"] = {
            "probabilities": {"dtype": "float32", "shape": [None, None, None, num_classes],
                              "meaning": "per-pixel class probabilities at the image's size"},
            "classes": {"dtype": "int64", "shape": [None, None, None],
                        "meaning": "class map at the image's size (argmax)"},
        }
    return details


def resize_probabilities(probabilities, size):
    """(B, h, w, K) probabilities bilinearly resized to `size` (height, width): the one
    resize of the SavedModel signature and of `predict` on LiteRT / ONNX files."""
    import tensorflow as tf

    return tf.image.resize(tf.cast(probabilities, tf.float32), size, method="bilinear")


def class_map(probabilities, size):
    """(B, H, W) int64 argmax of `probabilities` resized to `size`, and the resized ones."""
    import tensorflow as tf

    resized = resize_probabilities(probabilities, size)
    return tf.argmax(resized, axis=-1, output_type=tf.int64), resized


def segmentation_serving_function(model, preprocessing):
    """tf.function: raw uint8 images (None, None, None, None) -> ``probabilities``
    (B, H, W, K) and ``classes`` (B, H, W) at the images' own size."""
    import tensorflow as tf

    from cnnbuilder.data.preprocess import preprocess_from_config

    spec = tf.TensorSpec((None, None, None, None), tf.uint8, name="images")

    def serving_default(images):
        x = preprocess_from_config(images, preprocessing)
        classes, probabilities = class_map(model(x, training=False), tf.shape(images)[1:3])
        return {"probabilities": probabilities, "classes": classes}

    return tf.function(serving_default, input_signature=[spec], autograph=False)


# ----------------------------------------------------------------------------- predict


def export_is_segmentation(directory: Path, probabilities_rank=None) -> bool:
    """Whether the export in `directory` is a segmentation model: its metadata.json's
    ``task``, else the rank of its probabilities (4)."""
    from cnnbuilder.runs import read_json

    task = (read_json(Path(directory) / "metadata.json", what="export metadata") or {}).get("task")
    if task is not None:
        return task == SEGMENTATION
    return probabilities_rank == 4


def class_areas(classes: np.ndarray, class_names: Sequence[str]) -> dict:
    """``{name: {"pixels": n, "fraction": n / all pixels}}`` of a (H, W) class map, every
    class listed (0 pixels included), in class-index order."""
    counts = np.bincount(np.asarray(classes).reshape(-1), minlength=len(class_names))
    total = max(int(counts.sum()), 1)
    return {str(name): {"pixels": int(counts[i]), "fraction": float(counts[i]) / total}
            for i, name in enumerate(class_names)}


def write_mask(path: Path, classes: np.ndarray, num_classes: int) -> Path:
    """Write a (H, W) class map as a PNG whose pixel values are the class indices: a
    palette PNG (`palette` colours) for up to 256 classes, else 16-bit grey."""
    from PIL import Image

    from cnnbuilder.plots.segmentation import PALETTE_SIZE, palette

    classes = np.asarray(classes)
    if num_classes <= PALETTE_SIZE:
        height, width = classes.shape
        image = Image.frombytes("P", (width, height), np.ascontiguousarray(classes, np.uint8).tobytes())
        image.putpalette(palette(PALETTE_SIZE).reshape(-1).tolist())
    else:
        image = Image.fromarray(classes.astype(np.uint16))
    image.save(path, format="PNG")
    return path


def check_mask_names(image_paths: Sequence, output) -> None:
    """Refuse two images whose masks would share a name in `output` (same file stem).

    Raises:
        CnnBuilderError: two images share a stem.
    """
    seen: dict[str, str] = {}
    for path in image_paths:
        stem = Path(path).stem
        if stem in seen and seen[stem] != str(path):
            raise CnnBuilderError(
                f"The images {seen[stem]} and {path} would both write {Path(output) / stem}.png "
                "(masks are named by the image's file stem); predict them into separate "
                "--output directories.")
        seen[stem] = str(path)


def predict_segmentation(run, image_paths: Sequence, images: list, class_names: Sequence[str],
                         output=None) -> list[dict]:
    """Class maps of `images` through `run` and their areas; masks written to `output`.

    Args:
        run: a uint8 batch (B, h, w, c) of equal-sized images -> (B, h, w) class maps
            at that size (the SavedModel's ``classes``, or `file_class_maps` of a file).
        image_paths: the images' paths (names of the masks).
        images: the decoded uint8 images.
        class_names: K names.
        output: a directory for ``STEM.png`` and ``STEM.json``, or None.

    Returns:
        ``[{"image": path, "size": [H, W], "areas": {...}, "mask": path, "areas_file":
        path}]`` (the last two with `output` only), in the order of `images`.
    """
    from cnnbuilder.serving.images import run_by_shape

    maps = run_by_shape(run, images, _BATCH_SIZE)
    directory = None if output is None else Path(output)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    results = []
    for index, path in enumerate(image_paths):
        classes = maps[index]
        result = {"image": str(path), "size": [int(d) for d in classes.shape],
                  "areas": class_areas(classes, class_names)}
        if directory is not None:
            stem = Path(path).stem
            result["mask"] = str(write_mask(directory / f"{stem}.png", classes, len(class_names)))
            result["areas_file"] = str(directory / f"{stem}.json")
            from cnnbuilder.runs import atomic_write_text

            atomic_write_text(Path(result["areas_file"]), json.dumps(
                {"image": str(path), "mask": result["mask"], "size": result["size"],
                 "class_names": list(class_names), "areas": result["areas"]}, indent=2) + "\n")
        results.append(result)
    return results


def file_class_maps(predict_images):
    """A `predict_segmentation` run for a LiteRT / ONNX file: its (B, h, w, K)
    probabilities (`FileModel.predict_images`) resized to the images' size, argmax."""

    def run(batch):
        probabilities = np.asarray(predict_images(batch.numpy()))
        if probabilities.ndim != 4:
            raise RunError(f"The model gave outputs of shape {probabilities.shape}, not "
                           "per-pixel class probabilities (B, H, W, K).")
        return class_map(probabilities, [int(d) for d in batch.shape[1:3]])[0].numpy()

    return run


def format_areas(result: dict) -> str:
    """Lines of one image's class areas (classes present, largest first) for the CLI."""
    lines = [f"{result['image']}  ({result['size'][0]}x{result['size'][1]} pixels)"
             + (f" -> {result['mask']}" if result.get("mask") else "")]
    present = sorted(((a["pixels"], name) for name, a in result["areas"].items() if a["pixels"]),
                     key=lambda item: -item[0])
    width = max((len(name) for _, name in present), default=0)
    for pixels, name in present:
        fraction = result["areas"][name]["fraction"]
        lines.append(f"  {name:<{width}}  {100.0 * fraction:6.2f}%  {pixels} px")
    return "\n".join(lines)
