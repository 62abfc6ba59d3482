"""The oneDNN strided 1×1 convolution crash on AVX-512 CPUs, and how cnnbuilder avoids it.

TensorFlow 2.21 (oneDNN 3.7, Keras 3.15) kills the process (`double free or corruption`,
SIGABRT or SIGSEGV) while `fit` trains a network with a 1×1 `Conv2D` of stride 2 or more on
fewer than 16 input channels, on CPUs where oneDNN picks its AVX-512 kernels (AVX-512 and
AVX-512/AMX Xeons, AMD Zen 4). The projection shortcut of a residual unit on a narrow stage
is exactly that layer. `docs/known_issues.md` records the reproduction and the measurements.

A strided 1×1 convolution equals a 1×1 pooling with that stride (which only subsamples,
`x[:, ::s, ::s]`) followed by the stride-1 convolution: same weights, same outputs, same
gradients. The layer factory builds that form wherever `is_crash_pattern` holds, on every
machine, so a recipe builds the same graph everywhere. A user's own Keras model is never
rewritten; `find_onednn_crash_pattern` names its offending layers so that training can warn.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

# 4, 8 and 12 input channels crash; 16, 20, 24 and 32 do not (measured, see the docs). An
# AVX-512 register holds 16 float32 values: narrower inputs take another code path.
SAFE_INPUT_CHANNELS = 16

# Environment settings under which oneDNN does not run the crashing AVX-512 kernels.
_WORKAROUNDS = {"TF_ENABLE_ONEDNN_OPTS": {"0", "false"}}
_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
_SAFE_ISAS = {"sse41", "avx", "avx2", "avx2_vnni", "avx2_vnni_2"}


def _pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return tuple(int(v) for v in value)


def is_crash_pattern(kernel, stride, input_channels: int | None) -> bool:
    """True for the convolution oneDNN's AVX-512 kernels crash on when trained.

    Args:
        kernel: kernel size, an int or an (height, width) pair.
        stride: strides, an int or a pair.
        input_channels: channels of the convolution's input; None (unknown) counts as
            crashing, since a narrow input cannot be ruled out.

    Returns:
        Whether the kernel is 1×1, some stride is above 1 and the input has fewer than
        `SAFE_INPUT_CHANNELS` channels.
    """
    if _pair(kernel) != (1, 1) or max(_pair(stride)) <= 1:
        return False
    return input_channels is None or input_channels < SAFE_INPUT_CHANNELS


def _input_channels(layer) -> int | None:
    kernel = getattr(layer, "kernel", None)
    if kernel is not None:  # (kh, kw, in / groups, out): known once built, also nested
        return int(kernel.shape[-2]) * int(getattr(layer, "groups", 1) or 1)
    try:
        return layer.input.shape[-1]
    except (AttributeError, ValueError):
        return None


def find_onednn_crash_pattern(model) -> list[str]:
    """Names of the layers of `model` that oneDNN's AVX-512 kernels crash on in training.

    Looks at every `keras.layers.Conv2D` (nested models and layers included, depth first
    in layer order) and reports those `is_crash_pattern` holds for. Nested layers are named
    `outer/inner`. Models built by cnnbuilder never contain one: the layer factory builds
    the equivalent pooling + stride-1 form instead.

    Args:
        model: a Keras model (or layer).

    Returns:
        The offending layer names, empty when there are none.
    """
    found: list[str] = []
    _walk(model, "", found, set())
    return found


def _walk(layer, prefix: str, found: list[str], seen: set[int]) -> None:
    for child in _children(layer):
        if id(child) in seen:
            continue
        seen.add(id(child))
        name = f"{prefix}{child.name}"
        if isinstance(child, keras.layers.Conv2D) and is_crash_pattern(
                child.kernel_size, child.strides, _input_channels(child)):
            found.append(name)
        _walk(child, f"{name}/", found, seen)


def _children(layer) -> list:
    children = getattr(layer, "layers", None)  # functional and Sequential models
    if children is None:
        children = getattr(layer, "_layers", None) or []  # layers tracked by a custom layer
    return [c for c in children if isinstance(c, keras.layers.Layer)]


def cpu_has_avx512(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises AVX-512 (any `avx512*` flag in /proc/cpuinfo).

    Args:
        cpuinfo: the file to read (for tests).

    Returns:
        True when a `flags` line lists an `avx512` flag; False when it does not, and where
        it cannot be known (no such file: macOS, Windows, a sandbox).
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and any(flag.startswith("avx512") for flag in value.split()):
            return True
    return False


def workaround_active(environ=None) -> bool:
    """Whether the environment keeps oneDNN off its AVX-512 kernels.

    True with `TF_ENABLE_ONEDNN_OPTS=0` (oneDNN off) or `ONEDNN_MAX_CPU_ISA` /
    `DNNL_MAX_CPU_ISA` at AVX2 or below. They only act when set before TensorFlow starts.
    """
    environ = os.environ if environ is None else environ
    if environ.get("TF_ENABLE_ONEDNN_OPTS", "").strip().lower() in _WORKAROUNDS["TF_ENABLE_ONEDNN_OPTS"]:
        return True
    return any(environ.get(name, "").strip().lower() in _SAFE_ISAS for name in _ISA_VARIABLES)


def crash_warning(model, *, cpuinfo: str | os.PathLike = "/proc/cpuinfo", environ=None) -> str | None:
    """The warning `train` gives before fitting `model` where it may crash, else None.

    Args:
        model: the Keras model about to be trained.
        cpuinfo: the CPU description to read (for tests).
        environ: the environment to check for a workaround (default `os.environ`).

    Returns:
        A one-paragraph message naming the offending layers and the workarounds when the
        CPU has AVX-512, no workaround is set and the model has the pattern; None otherwise.
    """
    if workaround_active(environ) or not cpu_has_avx512(cpuinfo):
        return None
    names = find_onednn_crash_pattern(model)
    if not names:
        return None
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"{model.name} has {len(names)} strided 1x1 convolution(s) on fewer than "
        f"{SAFE_INPUT_CHANNELS} input channels ({shown}). On this AVX-512 CPU, TensorFlow's "
        "oneDNN kernels may crash the process while training them (double free or "
        "corruption). Set DNNL_MAX_CPU_ISA=AVX2 (or TF_ENABLE_ONEDNN_OPTS=0, slower) before "
        "starting Python, or replace each such layer by MaxPooling2D(1, strides) followed by "
        "the stride-1 convolution; see `cnnbuilder help known-issues`."
    )


__all__ = ["SAFE_INPUT_CHANNELS", "cpu_has_avx512", "crash_warning", "find_onednn_crash_pattern",
           "is_crash_pattern", "workaround_active"]
