"""Memory-efficient vs plain DenseNet-BC on TensorFlow and JAX (issue 15).

For each backend: the memory a training step adds (peak RSS minus the RSS of the built,
compiled model, in a fresh process: `tools.memory_probe.peak_training_memory`), on JAX
also XLA's temp memory of the compiled step (`compiled_training_memory`), the step-time
ratio (both builds in one child process of that backend, alternating, medians), and
with `--sweep` the deepest DenseNet-BC (k=12, depth 6n + 4) whose step fits a budget.

    python benchmarks/memory.py                          # both backends, depth 100
    python benchmarks/memory.py --backends jax --sweep --budget-gib 1.5

Prints a markdown table; `benchmarks/results.md` records what was measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools.memory_probe import compiled_training_memory, peak_training_memory  # noqa: E402

RECIPE, BATCH, SHAPE = "densenet_bc100_k12", 64, (32, 32, 3)


def measure_memory(backend: str, depth: int) -> list[tuple[str, float, float]]:
    """(what, efficient MiB, plain MiB) rows of one backend at `depth`."""
    rows = []
    peaks = {flag: peak_training_memory(RECIPE, batch_size=BATCH, input_shape=SHAPE,
                                        depth=depth, backend=backend,
                                        memory_efficient=flag)["peak_bytes"]
             for flag in (True, False)}
    rows.append((f"peak RSS of 2 steps minus RSS after build and compile, {backend}",
                 peaks[True] / 2**20, peaks[False] / 2**20))
    if backend == "jax":
        temps = {flag: compiled_training_memory(RECIPE, batch_size=BATCH, input_shape=SHAPE,
                                                depth=depth, memory_efficient=flag)["temp_bytes"]
                 for flag in (True, False)}
        rows.append(("XLA temp memory of the compiled training step (memory_analysis), jax",
                     temps[True] / 2**20, temps[False] / 2**20))
    return rows


def measure_step_time(backend: str, depth: int, repeats: int) -> tuple[float, float]:
    """(efficient, plain) median step seconds, measured in one child process."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, __file__, "--time-child", str(depth), str(repeats)],
                          capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["efficient"], result["plain"]


def _time_child(depth: int, repeats: int) -> dict:
    """In the child: both builds' `train_on_batch`, alternating after a warm-up."""
    import keras
    import numpy as np

    import cnnbuilder

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (BATCH, *SHAPE)).astype("float32")
    y = rng.integers(0, 10, BATCH)
    steps = {}
    for flag in (True, False):
        model = cnnbuilder.build(RECIPE, input_shape=SHAPE, classes=10, depth=depth,
                                 memory_efficient=flag)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      loss="sparse_categorical_crossentropy")
        model.train_on_batch(x, y)  # trace and compile
        steps[flag] = model
    times = {True: [], False: []}
    for _ in range(repeats + 1):  # the first round is a warm-up
        for flag, model in steps.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[flag].append(time.perf_counter() - start)
    return {"efficient": statistics.median(times[True][1:]),
            "plain": statistics.median(times[False][1:])}


def deepest_within_budget(backend: str, efficient: bool, budget: float, depths) -> tuple:
    """(deepest depth within `budget` bytes, [(depth, MiB), ...]): RSS on TensorFlow (one
    step), XLA's temp memory on JAX; stops at the first depth over the budget."""
    deepest, seen = 0, []
    for depth in depths:
        if backend == "jax":
            used = compiled_training_memory(RECIPE, batch_size=BATCH, input_shape=SHAPE,
                                            depth=depth, memory_efficient=efficient)["temp_bytes"]
        else:
            used = peak_training_memory(RECIPE, batch_size=BATCH, input_shape=SHAPE, steps=1,
                                        depth=depth, backend=backend,
                                        memory_efficient=efficient)["peak_bytes"]
        seen.append((depth, round(used / 2**20)))
        print(f"  {backend} depth {depth} memory_efficient={efficient}: {used / 2**20:,.0f} MiB",
              file=sys.stderr, flush=True)
        if used > budget:
            break
        deepest = depth
    return deepest, seen


def main(argv=None) -> int:
    """Run the measurements named on the command line and print them as a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "jax"])
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--step-repeats", type=int, default=5)
    parser.add_argument("--no-time", action="store_true", help="skip the step-time ratio")
    parser.add_argument("--no-memory", action="store_true", help="skip the depth-100 memory")
    parser.add_argument("--sweep", action="store_true", help="the deepest model within budget")
    parser.add_argument("--budget-gib", type=float, default=1.5)
    parser.add_argument("--sweep-depths", type=int, nargs="+",
                        default=list(range(40, 401, 24)))
    parser.add_argument("--time-child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.time_child:
        print(json.dumps(_time_child(*args.time_child)))
        return 0
    lines = ["| measurement | memory-efficient | plain | ratio |", "| --- | ---: | ---: | ---: |"]
    where = f"`{RECIPE}` depth {args.depth}, batch {BATCH}, 32×32"
    for backend in args.backends:
        if not args.no_memory:
            for what, mine, plain in measure_memory(backend, args.depth):
                lines.append(f"| {what}, {where} | {mine:,.0f} MiB | {plain:,.0f} MiB "
                             f"| {mine / plain:.3f} |")
        if not args.no_time:
            mine, plain = measure_step_time(backend, args.depth, args.step_repeats)
            lines.append(f"| training step time ({args.step_repeats} alternating, median), "
                         f"{backend}, {where} | {mine:.3f} s | {plain:.3f} s | {mine / plain:.3f} |")
        if args.sweep:
            found = {flag: deepest_within_budget(backend, flag, args.budget_gib * 2**30,
                                                 args.sweep_depths) for flag in (True, False)}
            measure = "XLA temp memory" if backend == "jax" else "peak RSS of 1 step"
            lines.append(f"| deepest DenseNet-BC (k=12, batch {BATCH}, 32×32) within "
                         f"{args.budget_gib:g} GiB ({measure}), {backend} | {found[True][0]} "
                         f"| {found[False][0]} | {found[True][0] / max(found[False][0], 1):.2f} |")
            for flag in (True, False):
                print(f"{backend} memory_efficient={flag}: {found[flag][1]}", flush=True)
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
