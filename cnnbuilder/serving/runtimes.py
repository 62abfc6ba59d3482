"""Which export a path is, and running a LiteRT or ONNX file on raw images.

`resolve_export` tells the three formats apart: a SavedModel directory (or a base path
of numbered versions), a ``.tflite`` file (LiteRT's ``TFL3`` identifier at bytes 4-8) or a
``.onnx`` file, given as the file or as the directory that holds it. `FileModel` runs
the two file formats: the images are converted with the ``preprocessing`` record of the
``metadata.json`` written beside the file at export (`preprocess_from_config`, the
training pipeline's own function), then fed to the LiteRT interpreter or ONNX Runtime.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cnnbuilder.errors import DataError, RunError
from cnnbuilder.serving.foreign import check_file_model
from cnnbuilder.serving.metadata import METADATA
from cnnbuilder.runs import read_json

__all__ = ["FileModel", "resolve_export"]

_SUFFIXES = {".tflite": "litert", ".onnx": "onnx"}
_MODEL_FILES = ("model.tflite", "model.onnx")
_EXPECTED = ("Expected what `cnnbuilder export` writes: a SavedModel directory "
             "(saved_models/NAME/VERSION), a .tflite file or an .onnx file (or the "
             "directory holding one).")


def resolve_export(path, *, saved_model_dir) -> tuple[str, Path]:
    """("savedmodel" | "litert" | "onnx", the SavedModel directory or model file).

    Args:
        path: a model file, an export directory or a base path of numbered versions.
        saved_model_dir: resolves a directory that holds no model file as a SavedModel
            directory or base path (`prediction.resolve_saved_model_dir`).

    Raises:
        RunError: the path does not exist or is none of the three formats.
    """
    path = Path(path)
    if path.is_file():
        return _file_kind(path), path
    if path.is_dir():
        files = _model_files(path)
        if len(files) == 1:
            return _file_kind(files[0]), files[0]
        if not files and not _is_saved_model(path):
            latest = _latest_file_version(path)
            if latest is not None:
                return _file_kind(latest), latest
    return "savedmodel", saved_model_dir(path)


def _file_kind(path: Path) -> str:
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise RunError(f"{path} is a file of none of the three export formats. {_EXPECTED}")
    if kind == "litert":
        with open(path, "rb") as stream:
            head = stream.read(8)
        if head[4:8] != b"TFL3":
            raise RunError(f"{path} is not a LiteRT flatbuffer (no TFL3 identifier). {_EXPECTED}")
    return kind


def _model_files(directory: Path) -> list[Path]:
    return [directory / name for name in _MODEL_FILES if (directory / name).is_file()]


def _is_saved_model(directory: Path) -> bool:
    return any((directory / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt"))


def _latest_file_version(base: Path) -> Path | None:
    """The model file of the highest numbered version of `base` holding a LiteRT or ONNX
    file, unless a higher one holds a SavedModel (that one is then the latest)."""
    versions = sorted(
        (int(child.name), child) for child in base.iterdir()
        if re.fullmatch(r"[0-9]+", child.name) and child.is_dir()
        and (_is_saved_model(child) or len(_model_files(child)) == 1)
    )
    if not versions or _is_saved_model(versions[-1][1]):
        return None
    return _model_files(versions[-1][1])[0]


class FileModel:
    """A LiteRT or ONNX export file with the preprocessing its metadata.json records.

    Raises:
        RunError: no metadata.json beside the file, a malformed record, or a file the
            runtime cannot load.
    """

    def __init__(self, kind: str, path: Path):
        from cnnbuilder.data.preprocess import check_preprocessing_config

        self.kind, self.path = kind, Path(path)
        meta = read_json(self.path.parent / METADATA, what="export metadata")
        if not meta or "preprocessing" not in meta:
            raise RunError(
                f"{self.path} has no {METADATA} beside it recording its preprocessing; "
                "without it the images cannot be converted as in training. Export the "
                "model with `cnnbuilder export`, which writes both."
            )
        try:
            self.preprocessing = check_preprocessing_config(meta["preprocessing"])
        except DataError as error:
            raise RunError(f"{self.path.parent / METADATA}: {error}") from None
        self._run = self._load()
        # Before any image goes in: the file must be the one its metadata.json describes.
        check_file_model(self.path, meta, *self.io_shapes)

    def _load(self):
        """A float batch -> probabilities function of the runtime."""
        from cnnbuilder.errors import UsageError

        try:
            if self.kind == "onnx":
                from cnnbuilder.serving.onnx_export import onnx_session

                session = onnx_session(self.path)
                (model_input,) = session.get_inputs()
                self.io_shapes = (model_input.shape, session.get_outputs()[0].shape)
                return lambda batch: session.run(None, {model_input.name: batch})[0]
            from cnnbuilder.serving.litert import litert_interpreter, native_stderr_silenced

            interpreter, _ = litert_interpreter(self.path)
        except UsageError:
            raise  # a missing extra (onnxruntime): its own message
        except Exception as error:  # noqa: BLE001 -- corrupt files raise many types
            raise RunError(
                f"Cannot load {self.path}: {type(error).__name__}: "
                f"{' '.join(str(error).split())[:300]}. {_EXPECTED}"
            ) from error
        inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise RunError(f"{self.path} has {len(inputs)} inputs and {len(outputs)} outputs; "
                           f"expected one of each, as `cnnbuilder export` writes. {_EXPECTED}")
        (input_detail,), (output_detail,) = inputs, outputs
        self.io_shapes = (list(input_detail["shape_signature"]), list(output_detail["shape_signature"]))

        def run(batch):
            interpreter.resize_tensor_input(input_detail["index"], list(batch.shape))
            with native_stderr_silenced():  # the runtime's INFO lines, not the user's news
                interpreter.allocate_tensors()
                interpreter.set_tensor(input_detail["index"], batch)
                interpreter.invoke()
            return np.array(interpreter.get_tensor(output_detail["index"]))

        return run

    def predict_images(self, images) -> np.ndarray:
        """(N, K) probabilities of a uint8 (N, h, w, c) batch of stored images."""
        from cnnbuilder.data.preprocess import preprocess_from_config

        x = preprocess_from_config(images, self.preprocessing).numpy().astype(np.float32)
        return np.asarray(self._run(x))
