"""The optional parts of cnnbuilder and the pip extra that installs each: ONNX export and
its check (``[onnx]``), the LiteRT interpreter (``[litert]``), the JAX backend (``[jax]``);
``[all]`` installs every one. A missing one is a `UsageError` naming its extra."""

from __future__ import annotations

import importlib
import importlib.util

from cnnbuilder.errors import UsageError

# module -> (extra, what needs it)
EXTRAS = {
    "tf2onnx": ("onnx", "ONNX export"),
    "onnx": ("onnx", "ONNX export"),
    "onnxruntime": ("onnx", "running an .onnx model"),
    "jax": ("jax", "the JAX backend (--backend jax)"),
    "ai_edge_litert": ("litert", "the LiteRT interpreter"),
}


def missing_message(module: str) -> str:
    """What to install for `module`, in one sentence."""
    extra, purpose = EXTRAS[module]
    return (f"{purpose} needs the optional package {module!r}, which is not installed: "
            f"pip install 'cnnbuilder[{extra}]' (or 'cnnbuilder[all]').")


def available(module: str) -> bool:
    """Whether `module` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def require(module: str):
    """Import `module`, or raise a `UsageError` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if available(module):
            raise  # installed but broken: not the user's missing extra
        raise UsageError(missing_message(module)) from None
