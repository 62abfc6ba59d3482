"""Ratio benchmarks: cnnbuilder against the references, measured in one process.

Each comparison alternates the two sides (A B A B ...) after a warm-up, and reports the
median of each side and the ratio of the medians, so drifts of the machine hit both
alike. Results are printed as one table and written to benchmarks/results.md.

    make bench                       # everything
    python benchmarks/run.py build   # only some sections: build, step, pipeline, memory
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import cnnbuilder  # noqa: E402

RESULTS = Path(__file__).with_name("results.md")


def alternate(first, second, repeats: int, warmup: int = 1):
    """Median seconds of `first` and `second`, run alternately."""
    for _ in range(warmup):
        first(), second()
    a, b = [], []
    for _ in range(repeats):
        for fn, times in ((first, a), (second, b)):
            gc.collect()
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def bench_build(repeats=5):
    rows = []
    for recipe, application in (("densenet201", "DenseNet201"), ("resnet152", "ResNet152")):
        constructor = getattr(keras.applications, application)

        def ours():
            keras.backend.clear_session()
            cnnbuilder.build(recipe)

        def reference():
            keras.backend.clear_session()
            constructor(weights=None)

        mine, theirs = alternate(ours, reference, repeats)
        rows.append((f"build `{recipe}` vs keras.applications.{application}", mine, theirs, 1.10))
    return rows


def _train_step_function(model, batch):
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 1, (batch, *model.input_shape[1:])).astype("float32")
    y = np.random.default_rng(1).integers(0, model.output_shape[-1], batch)
    model.train_on_batch(x, y)  # trace and compile

    def step():
        model.train_on_batch(x, y)

    return step


def bench_step(repeats=7, batch=8, size=128):
    rows = []
    for recipe, application in (("resnet50", "ResNet50"), ("densenet121", "DenseNet121")):
        keras.backend.clear_session()
        shape = (size, size, 3)
        ours = _train_step_function(cnnbuilder.build(recipe, input_shape=shape), batch)
        reference = _train_step_function(
            getattr(keras.applications, application)(weights=None, input_shape=shape), batch)
        mine, theirs = alternate(ours, reference, repeats)
        rows.append((f"train step `{recipe}` vs keras.applications.{application} "
                     f"(batch {batch}, {size}×{size})", mine, theirs, 1.03))
    return rows


def bench_pipeline(repeats=5):
    from cnnbuilder.data import load_dataset, make_pipeline

    data = load_dataset("digits")
    shape, batch = (32, 32, 3), 128
    pipeline = make_pipeline(data.train, input_shape=shape, batch_size=batch, training=True,
                             augment=["translate"])
    images = len(data.train[0])

    def read_epoch():
        for _ in pipeline:
            pass

    model = cnnbuilder.build("resnet20", classes=10)
    step = _train_step_function(model, batch)
    steps = -(-images // batch)

    def model_epoch():
        for _ in range(steps):
            step()

    pipe, train = alternate(read_epoch, model_epoch, repeats)
    return [("input pipeline vs `resnet20` training on digits (images/s: "
             f"pipeline {images / pipe:,.0f}, model {images / train:,.0f})", pipe, train, 0.10)]


def bench_memory():
    try:
        from cnnbuilder.memory import compare_peak_memory
    except ImportError:
        return []
    return compare_peak_memory()


SECTIONS = {"build": bench_build, "step": bench_step, "pipeline": bench_pipeline,
            "memory": bench_memory}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}, backend {keras.backend.backend()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows = []
    for section in args.sections:
        print(f"running {section} ...", file=sys.stderr, flush=True)
        rows += SECTIONS[section]()
    lines = ["| measurement | cnnbuilder (s) | reference (s) | ratio | target |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for label, mine, theirs, target in rows:
        ratio = mine / theirs
        verdict = "✓" if ratio <= target else "✗"
        lines.append(f"| {label} | {mine:.4f} | {theirs:.4f} | {ratio:.3f} | ≤ {target:g} {verdict} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        section = (f"\n## `make bench` — {stamp}\n\nMachine: {machine()}.\n"
                   f"Sections: {', '.join(args.sections)}. Alternating runs, medians.\n\n{table}\n")
        existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
        RESULTS.write_text(existing.rstrip("\n") + "\n" + section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
