"""`load_model`: a trained network back from a .keras file, a run or a search directory."""

from __future__ import annotations

import os
from pathlib import Path

from cnnbuilder.errors import RunError
from cnnbuilder.training import rundir


def model_file(path) -> Path:
    """The .keras file that `path` names: the file itself, a run directory's model.keras,
    or the best model of a search directory (best/model.keras)."""
    if not isinstance(path, (str, os.PathLike)):
        raise RunError(f"load_model takes a path to a .keras file, a run directory or a "
                       f"search directory, got {type(path).__name__}.")
    path = Path(path)
    if path.is_file():
        if path.suffix != ".keras":
            raise RunError(f"{path} is not a .keras file; load_model reads Keras 3 .keras files, "
                           "run directories (cnnbuilder train) and search directories (cnnbuilder tune).")
        return path
    if path.is_dir():
        for candidate in (path / rundir.MODEL, path / rundir.BEST_DIR / rundir.MODEL):
            if candidate.is_file():
                return candidate
        raise RunError(f"{path} holds no {rundir.MODEL} (a finished `cnnbuilder train` run) and no "
                       f"{rundir.BEST_DIR}/{rundir.MODEL} (a finished `cnnbuilder tune` search).")
    raise RunError(f"{path} does not exist; expected a .keras file, a run directory or a search directory.")


def load_model(path, *, compile: bool = True):
    """Load a trained model (`safe_mode=True`: no Lambda code is ever run).

    Args:
        path: a `.keras` file, a run directory written by `cnnbuilder.train` (its best
            epoch's model.keras) or a search directory written by `cnnbuilder.tune` (the
            best trial's best/model.keras).
        compile: restore the training configuration saved with the model, as
            `keras.saving.load_model` does.

    Returns:
        The `keras.Model`.
    """
    import keras

    import cnnbuilder.model.layers  # noqa: F401  (registers cnnbuilder's serializable layers)

    file = model_file(path)
    try:
        return keras.saving.load_model(file, compile=compile, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - corrupt zips, foreign configs, Lambda layers
        detail = " ".join(str(exc).split())[:500]
        raise RunError(f"cannot load the Keras model {file}: {type(exc).__name__}: {detail}") from None
