"""GPU figures: cnnbuilder models on Keras/JAX next to torchvision's, in the same run.

Runs without TensorFlow (Keras on the JAX backend), on a machine with an NVIDIA GPU:

    KERAS_BACKEND=jax python benchmarks/gpu.py                  # full figures, prints a table
    KERAS_BACKEND=jax python benchmarks/gpu.py --write          # ...and appends it to results.md
    python benchmarks/gpu.py --size 32 --batch 2 --steps 2 --models resnet20 \\
        --memory-recipe densenet_bc100_k12 --memory-params depth=10   # the quick CPU path

Measured:
- training images/s of `resnet50` and `densenet121` at 224×224 with bf16 mixed precision
  (Keras `mixed_bfloat16`, XLA-compiled train step), next to torchvision's same models with
  `torch.autocast(bfloat16)` (channels-last, same batch and optimizer). The torchvision rows
  are left out, with a note, where PyTorch/torchvision are not installed.
- peak GPU memory of one training step of the memory-efficient vs the plain `densenet264`,
  each in a fresh process (`jax` device `memory_stats()['peak_bytes_in_use']`). On a CPU
  there is no allocator peak to read: the row is marked n/a.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

RESULTS = Path(__file__).with_name("results.md")


def keras_images_per_second(recipe: str, *, batch: int, size: int, steps: int, warmup: int,
                            precision: str, params: dict | None = None) -> float:
    import keras
    import numpy as np

    import cnnbuilder

    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    model = cnnbuilder.build(recipe, input_shape=(size, size, 3), classes=1000, **(params or {}))
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 1000, batch)
    for _ in range(warmup):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)  # returns host numbers: each step is finished when it returns
    seconds = time.perf_counter() - start
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    return batch * steps / seconds


def torch_images_per_second(model_name: str, *, batch: int, size: int, steps: int,
                            warmup: int) -> float | None:
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    if not hasattr(torchvision.models, model_name):
        return None  # a cnnbuilder-only recipe (the quick path's resnet20, say)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(num_classes=1000).to(device)
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def peak_step_memory(recipe: str, *, batch: int, size: int, params: dict) -> int | None:
    """Peak device memory of a training step, in a fresh process; None without a GPU."""
    request = json.dumps({"recipe": recipe, "batch": batch, "size": size, "params": params})
    done = subprocess.run([sys.executable, __file__, "--measure-memory", request],
                          capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"measuring the memory of {recipe} {params} failed:\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def _measure_memory(request: dict) -> dict:
    import jax
    import keras
    import numpy as np

    import cnnbuilder

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    size, batch = request["size"], request["batch"]
    model = cnnbuilder.build(request["recipe"], input_shape=(size, size, 3), classes=1000,
                             **request["params"])
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", jit_compile=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 1000, batch)
    for _ in range(2):
        model.train_on_batch(x, y)
    stats = jax.local_devices()[0].memory_stats()
    return {"peak_bytes": stats.get("peak_bytes_in_use") if stats else None}


def parse_params(items: list[str]) -> dict:
    import yaml

    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--memory-params expects key=value, got {item!r}")
        params[key] = yaml.safe_load(value)
    return params


def versions() -> str:
    import jax
    import keras

    parts = [f"Python {platform.python_version()}", f"Keras {keras.__version__}",
             f"JAX {jax.__version__}"]
    try:
        import torch
        import torchvision

        parts += [f"PyTorch {torch.__version__}", f"torchvision {torchvision.__version__}"]
    except ImportError:
        parts.append("no PyTorch")
    return ", ".join(parts)


def device_name() -> str:
    import jax

    device = jax.local_devices()[0]
    return f"{device.platform}: {getattr(device, 'device_kind', device)}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "densenet121"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--memory-recipe", default="densenet264")
    parser.add_argument("--memory-batch", type=int, default=None, help="default: --batch")
    parser.add_argument("--memory-params", nargs="*", default=[], metavar="K=V")
    parser.add_argument("--write", action="store_true", help="append the table to results.md")
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_memory:
        print(json.dumps(_measure_memory(json.loads(args.measure_memory))))
        return 0

    import keras

    if keras.backend.backend() != "jax":
        raise SystemExit(f"run with KERAS_BACKEND=jax (got {keras.backend.backend()!r})")
    lines = [f"| model ({args.size}×{args.size}, batch {args.batch}, {args.precision}) "
             f"| cnnbuilder (Keras/JAX) images/s | torchvision (AMP bf16) images/s | ratio |",
             "| --- | ---: | ---: | ---: |"]
    for recipe in args.models:
        ours = keras_images_per_second(recipe, batch=args.batch, size=args.size,
                                       steps=args.steps, warmup=args.warmup,
                                       precision=args.precision)
        theirs = torch_images_per_second(recipe, batch=args.batch, size=args.size,
                                         steps=args.steps, warmup=args.warmup)
        lines.append(f"| `{recipe}` | {ours:,.1f} | "
                     + (f"{theirs:,.1f} | {ours / theirs:.3f} |" if theirs else
                        "n/a (no PyTorch/torchvision model) | |"))
    memory_batch = args.memory_batch or args.batch
    params = parse_params(args.memory_params)
    peaks = {efficient: peak_step_memory(args.memory_recipe, batch=memory_batch,
                                         size=args.size, params={**params,
                                                                 "memory_efficient": efficient})
             for efficient in (True, False)}
    lines += ["", f"| peak GPU memory of a training step, `{args.memory_recipe}` "
                  f"(batch {memory_batch}) | memory-efficient | plain | ratio |",
              "| --- | ---: | ---: | ---: |"]
    if peaks[True] and peaks[False]:
        lines.append(f"| MiB | {peaks[True] / 2**20:,.0f} | {peaks[False] / 2**20:,.0f} "
                     f"| {peaks[True] / peaks[False]:.3f} |")
    else:
        lines.append("| MiB | n/a (no GPU allocator statistics on this device) | n/a | |")
    table = "\n".join(lines)
    header = f"Device {device_name()}; {versions()}."
    print(header + "\n\n" + table)
    if args.write:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(existing.rstrip("\n") + f"\n\n## `benchmarks/gpu.py` — {stamp}\n\n"
                           f"{header}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
