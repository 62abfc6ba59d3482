"""The benchmark tools measure what they claim: the memory probe sees what
`memory_efficient` saves, and the GPU script runs its CPU path without TensorFlow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tools.memory_probe import peak_training_memory

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_peak_training_memory_sees_the_memory_efficient_saving():
    """What a step adds per example: the difference between two batch sizes cancels what
    does not depend on the batch (traced graphs, optimizer slots, the allocator's caches),
    leaving the activations kept for the backward pass, which the memory-efficient
    DenseNet recomputes instead (theory for 12 layers per block: about half)."""
    def per_example(memory_efficient: bool) -> float:
        # DenseNet-BC-76 (k=12): 12 layers per block, at 32×32.
        small, large = (peak_training_memory("densenet_bc100_k12", depth=76, batch_size=batch,
                                             steps=1, memory_efficient=memory_efficient)
                        for batch in (16, 64))
        assert small["params"] == large["params"]
        return (large["peak_bytes"] - small["peak_bytes"]) / (64 - 16)

    plain, efficient = per_example(False), per_example(True)
    assert plain > 0
    assert 0 < efficient < 0.8 * plain


@pytest.mark.slow
def test_gpu_script_runs_its_cpu_path_without_tensorflow(tmp_path):
    blocker = tmp_path / "tensorflow"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is blocked here')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), KERAS_BACKEND="jax")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--size", "32", "--batch", "2",
         "--steps", "2", "--warmup", "1", "--models", "resnet20",
         "--memory-recipe", "densenet_bc100_k12", "--memory-params", "depth=10"],
        capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "JAX" in done.stdout and "Device cpu" in done.stdout
    row = re.search(r"\| `resnet20` \| ([\d,.]+) \|", done.stdout)
    assert row and float(row.group(1).replace(",", "")) > 0
    assert "peak GPU memory of a training step, `densenet_bc100_k12`" in done.stdout


@pytest.mark.slow
def test_backends_benchmark_reports_every_side():
    """`benchmarks/backends.py` at a tiny size: every side (TensorFlow, JAX with and
    without jit, JAX over 2 processes on loopback) starts, compiles as cnnbuilder trains,
    and reports a positive time per step; the 2-process run sees 2 devices."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import backends
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    plan = backends.Plan("resnet20", batch=8, warmup=1, steps=1, rounds=1,
                         input_shape=(16, 16, 3), params={"depth": 8})
    row = backends.measure(plan, eager_jax=True, two_processes=True, verbose=False)
    for key in ("tensorflow", "jax_jit", "jax", "two_processes", "jax_jit_over_tensorflow",
                "jax_over_tensorflow", "two_over_one"):
        assert row[key] > 0, key
    assert row["model"] == "resnet20" and row["batch"] == 8
    assert [len(row[f"{key}_rounds"]) for key in ("tensorflow", "jax_jit", "jax",
                                                  "two_processes")] == [1, 1, 1, 1]
    assert row["two_over_one"] == pytest.approx(row["two_processes"] / row["jax_jit"])
    table = backends.tables({"backends": [row]})
    assert table.count("| `resnet20` (8) |") == 2  # the backend row and the process row
