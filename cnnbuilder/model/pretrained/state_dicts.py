"""Reading PyTorch state dicts into NumPy: `.safetensors` without PyTorch, `.pth`/`.pt` with it.

A `.pth` file is a pickle, and unpickling can run any code the file names. It is read only
with `torch.load(weights_only=True)`, PyTorch's restricted unpickler that accepts tensors,
containers and numbers and refuses everything else; a `.safetensors` file is plain data by
construction and is read by the `safetensors` package into NumPy arrays, so the runtime needs
no PyTorch for it (nor for timm's weights, which the Hugging Face hub serves as
`model.safetensors`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnbuilder.errors import WeightsError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin")
# Bookkeeping tensors of BatchNorm that no Keras layer holds.
IGNORED_SUFFIXES = (".num_batches_tracked",)


def is_state_dict_file(weights) -> bool:
    """Whether `weights` names a PyTorch state-dict file by its suffix."""
    return isinstance(weights, (str, Path)) and Path(str(weights)).suffix.lower() in (
        SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES)


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a state-dict file as float32 NumPy arrays, by name.

    Args:
        path: a `.safetensors` file, or a `.pth`/`.pt`/`.bin` PyTorch file (a state dict,
            or a checkpoint dict holding one under ``state_dict`` or ``model``).

    Returns:
        `{tensor name: array}`, the ``module.`` prefix of DataParallel checkpoints removed.

    Raises:
        WeightsError: a missing, truncated or unreadable file, a pickle that would run
            code, or PyTorch missing for a `.pth` file.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found.")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        state = _read_safetensors(path)
    else:
        state = _read_pickle(path)
    arrays = {}
    for name, value in state.items():
        if name.startswith("module."):  # saved from torch.nn.DataParallel
            name = name[len("module."):]
        arrays[name] = np.asarray(value, dtype=np.float32) if value.dtype != np.int64 else value
    if not arrays:
        raise WeightsError(f"weights file {path} holds no tensors.")
    return arrays


def _read_safetensors(path: Path) -> dict:
    """A `.safetensors` file into NumPy (no PyTorch needed)."""
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise WeightsError(f"reading {path} needs the `safetensors` package "
                           "(pip install safetensors).") from None
    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - SafetensorError, truncated headers, bad dtypes
        raise WeightsError(f"weights file {path} cannot be read as safetensors: {exc}. It may "
                           "be truncated (an interrupted download): delete it and fetch it "
                           "again.") from None


def _read_pickle(path: Path) -> dict:
    """A PyTorch pickle through `torch.load(weights_only=True)`, as NumPy arrays."""
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"reading the PyTorch file {path} needs PyTorch: pip install 'cnnbuilder[torch]' "
            "(or convert the file to .safetensors, which needs no PyTorch)."
        ) from None
    import pickle

    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"weights file {path} was refused: it is a pickle that holds more than tensors "
            f"(loading it would run code it names), and cnnbuilder reads .pth files only "
            f"with torch.load(weights_only=True). PyTorch said: {first}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - truncated zips, not a torch file at all
        raise WeightsError(f"weights file {path} cannot be read by torch.load: {exc}. It may "
                           "be truncated (an interrupted download) or not a PyTorch file: "
                           "delete it and fetch it again.") from None
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(hasattr(v, "numpy") for v in loaded.values()):
        raise WeightsError(f"weights file {path} is not a state dict (a mapping of tensor "
                           "names to tensors).")
    return {name: tensor.detach().cpu().numpy() for name, tensor in loaded.items()}


__all__ = ["IGNORED_SUFFIXES", "PICKLE_SUFFIXES", "SAFETENSORS_SUFFIXES", "is_state_dict_file",
           "read_state_dict"]
