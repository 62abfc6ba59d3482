"""Peak memory of one training step, measured in a fresh Python process.

Used by `make bench` and the ResNet-vs-DenseNet notebook to compare the plain and the
memory-efficient DenseNet (and any two builds) on the CPU, where TensorFlow keeps no
allocator statistics (`tf.config.experimental.get_memory_info` is GPU-only).

How the peak is measured: the child process runs with a fixed glibc mmap threshold
(`MALLOC_MMAP_THRESHOLD_`), so every large tensor buffer is its own mapping that goes back
to the operating system when it is freed, and resident memory follows the live tensors.
After warm-up steps (tracing, first-touch of the weights and optimizer slots), the kernel's
peak-RSS mark is reset (`/proc/self/clear_refs`, Linux) and one more step runs; the result
is that step's peak resident memory minus the resident memory before it: the activations
kept for the backward pass, the gradients and the temporaries — what `memory_efficient`
changes. Every buffer being its own mapping makes the step slower (page faults), so time
steps elsewhere, with the normal allocator (`benchmarks/run.py memory` does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def peak_training_memory(recipe, *, batch_size: int = 64, input_shape=(32, 32, 3),
                         classes: int = 10, steps: int = 2, timeout: float = 1800,
                         **params) -> dict:
    """Train `recipe` for a few steps in a new process; return the memory one step takes.

    Returns ``{"peak_bytes": int, "params": int}``: the largest extra resident memory of
    `steps` measured steps after warm-up (see the module docstring). `recipe` is a name or a path (something the
    child process can load); `params` are recipe params, e.g. ``memory_efficient=True``.
    Linux only (it reads `/proc/self/status`).
    """
    request = {"recipe": str(recipe), "batch_size": batch_size, "input_shape": list(input_shape),
               "classes": classes, "steps": steps, "params": params}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-m", "tools.memory_probe", json.dumps(request)],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {recipe} {params} failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # "reset the peak resident set size"


def _child(request: dict) -> dict:
    import keras
    import numpy as np

    import cnnbuilder

    keras.utils.set_random_seed(0)
    model = cnnbuilder.build(request["recipe"], input_shape=tuple(request["input_shape"]),
                             classes=request["classes"], **request["params"])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    batch = request["batch_size"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, *request["input_shape"])).astype("float32")
    y = rng.integers(0, request["classes"], batch)
    for _ in range(2):  # trace, compile, create the optimizer slots
        model.train_on_batch(x, y)
    peaks = []
    for _ in range(request["steps"]):
        before = _resident_bytes()
        _reset_peak()
        model.train_on_batch(x, y)
        peaks.append(_status_bytes("VmHWM") - before)
    return {"peak_bytes": max(peaks), "params": int(model.count_params())}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
