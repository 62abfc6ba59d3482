"""Development helper (not part of the runtime package): the memory a training step adds,
measured in a fresh Python process.

Used by `make bench` and the ResNet-vs-DenseNet notebook to compare the plain and the
memory-efficient DenseNet (and any two builds) on the CPU, where TensorFlow keeps no
allocator statistics (`tf.config.experimental.get_memory_info` is GPU-only).

How the peak is measured: the child process runs with a fixed glibc mmap threshold
(`MALLOC_MMAP_THRESHOLD_`), so every large tensor buffer is its own mapping that goes back
to the operating system when it is freed, and resident memory follows the live tensors.
The baseline is the resident memory of the built, compiled model before its first step;
the kernel's peak-RSS mark is reset there (`/proc/self/clear_refs`, Linux), the steps run,
and the result is the peak resident memory over the steps minus that baseline: the
optimizer slots, the activations kept for the backward pass, the gradients and the
temporaries (what `memory_efficient` changes), plus the traced graphs.

Why not "resident memory right before a step" as the baseline: TensorFlow with oneDNN
keeps buffers of the previous step alive between steps (its primitive caches and scratch
pads), so that baseline already holds most of what the step needs and the difference
measures nearly nothing (seen: 0.85 MB plain vs 1.78 MB memory-efficient for
DenseNet-BC-40). Memory present before the first step cannot be the step's, whatever
the allocator keeps afterwards, so the post-build baseline holds on every machine.

Every buffer being its own mapping makes the steps slower (page faults), so time steps
elsewhere, with the normal allocator (`benchmarks/run.py memory` does).

`peak_training_memory(..., backend="jax")` measures the same on the JAX backend. There
XLA also states what the compiled training step needs: `compiled_training_memory`
lowers and compiles one SGD-with-momentum step (`jax.jit` of `stateless_call`, its
gradient and the optimizer update, model state donated) and returns
`memory_analysis().temp_size_in_bytes`, the buffers the step allocates beyond its
arguments and results — a figure of the compiled program, free of allocator behaviour
and of what tracing costs, and nothing runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def peak_training_memory(recipe, *, batch_size: int = 64, input_shape=(32, 32, 3),
                         classes: int = 10, steps: int = 2, timeout: float = 1800,
                         backend: str | None = None, **params) -> dict:
    """Train `recipe` for a few steps in a new process; return the memory one step takes.

    Returns ``{"peak_bytes": int, "params": int}``: the peak resident memory over
    `steps` training steps minus that of the built, compiled model (see the module
    docstring). `recipe` is a name or a path (something the
    child process can load); `params` are recipe params, e.g. ``memory_efficient=True``;
    `backend` the child's Keras backend (default: this process's environment).
    Linux only (it reads `/proc/self/status`).
    """
    request = {"recipe": str(recipe), "batch_size": batch_size, "input_shape": list(input_shape),
               "classes": classes, "steps": steps, "params": params}
    return _run_child(request, backend, timeout)


def compiled_training_memory(recipe, *, batch_size: int = 64, input_shape=(32, 32, 3),
                             classes: int = 10, timeout: float = 1800, **params) -> dict:
    """Compile one training step of `recipe` with XLA on the JAX backend, in a new
    process; return what XLA says the step allocates.

    Returns ``{"temp_bytes": int, "params": int}``: `temp_size_in_bytes` of the compiled
    step's `memory_analysis()` (see the module docstring). Arguments as
    `peak_training_memory`'s.
    """
    request = {"recipe": str(recipe), "batch_size": batch_size, "input_shape": list(input_shape),
               "classes": classes, "params": params, "measure": "compiled"}
    return _run_child(request, "jax", timeout)


def _run_child(request: dict, backend: str | None, timeout: float) -> dict:
    """The result of `_child(request)` run as a script in a fresh process."""
    recipe, params = request["recipe"], request["params"]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TF_CPP_MIN_LOG_LEVEL="3")
    if backend:
        env["KERAS_BACKEND"] = backend
    # Run as a script: the child needs cnnbuilder (installed), not this checkout's tools/.
    done = subprocess.run([sys.executable, os.path.abspath(__file__), json.dumps(request)],
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
    """Build the requested model and measure it (in the child process)."""
    import keras
    import numpy as np

    import cnnbuilder

    keras.utils.set_random_seed(0)
    model = cnnbuilder.build(request["recipe"], input_shape=tuple(request["input_shape"]),
                             classes=request["classes"], **request["params"])
    if request.get("measure") == "compiled":
        return _compiled_step_memory(model, request)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    batch = request["batch_size"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, *request["input_shape"])).astype("float32")
    y = rng.integers(0, request["classes"], batch)
    baseline = _resident_bytes()  # the built, compiled model; nothing of a step yet
    _reset_peak()
    for _ in range(request["steps"]):
        model.train_on_batch(x, y)
    return {"peak_bytes": _status_bytes("VmHWM") - baseline, "params": int(model.count_params())}


def _compiled_step_memory(model, request: dict) -> dict:
    """XLA's temp memory of one jit-compiled SGD-with-momentum training step of `model`
    (JAX backend), lowered on arrays of the requested batch; nothing runs."""
    import jax
    import keras
    import numpy as np

    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def loss(trainable, non_trainable, x, y):
        outputs, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, outputs), non_trainable

    gradient = jax.value_and_grad(loss, has_aux=True)

    def step(trainable, non_trainable, slots, x, y):
        (value, non_trainable), grads = gradient(trainable, non_trainable, x, y)
        trainable, slots = optimizer.stateless_apply(slots, grads, trainable)
        return value, trainable, non_trainable, slots

    state = [[v.value for v in variables] for variables in
             (model.trainable_variables, model.non_trainable_variables, optimizer.variables)]
    x = np.zeros((request["batch_size"], *request["input_shape"]), "float32")
    y = np.zeros((request["batch_size"],), "int32")
    compiled = jax.jit(step, donate_argnums=(0, 1, 2)).lower(*state, x, y).compile()
    return {"temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
            "params": int(model.count_params())}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
