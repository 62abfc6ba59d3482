"""Ratio benchmarks: cnnbuilder against the references, measured in one process.

Each comparison alternates the two sides (A B A B ...) after a warm-up, and reports the
median of each side and the ratio of the medians, so drifts of the machine hit both
alike. Results are printed as one table and written to benchmarks/results.md.

    make bench                       # everything
    python benchmarks/run.py build   # only some sections: build, step, pipeline, train, memory
    python benchmarks/run.py paper_training   # on request only: 3 seeds × 2 trainings

Peak memory cannot be alternated inside one process (a peak only grows): each memory
figure comes from a fresh process (`tools.memory_probe`), the two sides alternating.
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
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import cnnbuilder  # noqa: E402

RESULTS = Path(__file__).with_name("results.md")


class Row(NamedTuple):
    """One line of the table: cnnbuilder's figure, the reference's, and the target for
    their ratio (an upper bound, or a lower bound when higher is better)."""
    label: str
    ours: float
    reference: float
    target: float
    unit: str = "s"
    higher_is_better: bool = False

    @property
    def ratio(self) -> float:
        return self.ours / self.reference

    @property
    def met(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    def cells(self) -> str:
        value = {"s": "{:.4f} s", "MiB": "{:,.0f} MiB", "images/s": "{:,.0f} images/s",
                 "depth": "{:.0f}", "accuracy": "{:.4f}"}[self.unit]
        bound = "≥" if self.higher_is_better else "≤"
        return (f"| {self.label} | {value.format(self.ours)} | {value.format(self.reference)} "
                f"| {self.ratio:.3f} | {bound} {self.target:g} {'✓' if self.met else '✗'} |")


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
        rows.append(Row(f"build `{recipe}` vs keras.applications.{application}", mine, theirs, 1.10))
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
        rows.append(Row(f"train step `{recipe}` vs keras.applications.{application} "
                        f"(batch {batch}, {size}×{size})", mine, theirs, 1.03))
    return rows


def bench_pipeline(repeats=5):
    from cnnbuilder.data import load_dataset, make_pipeline

    data = load_dataset("digits")
    shape, batch = (32, 32, 3), 128
    common = dict(input_shape=shape, batch_size=batch, training=True, augment=["translate"])
    # What `Job.fit` feeds: the batches of epochs drawn from (seed, epoch, position), so a
    # resumed run replays them, through one iterator for the whole run; against the former
    # pipeline, reshuffled from a seeded stream on each of as many passes.
    pipeline = make_pipeline(data.train, epochs=(0, 1), **common)
    images = len(data.train[0])
    epochs = 5

    def read_epoch():
        for _ in pipeline:
            pass

    def read_run():
        for _ in make_pipeline(data.train, epochs=(0, epochs), **common):
            pass

    def read_reshuffled_run():
        reshuffled = make_pipeline(data.train, **common)
        for _ in range(epochs):
            for _ in reshuffled:
                pass

    model = cnnbuilder.build("resnet20", classes=10)
    step = _train_step_function(model, batch)
    steps = -(-images // batch)

    def model_epoch():
        for _ in range(steps):
            step()

    pipe, train = alternate(read_epoch, model_epoch, repeats)
    exact, former = alternate(read_run, read_reshuffled_run, repeats)
    # The pipeline must outrun the model by far (target: ≥ 10× the images/s), so that
    # overlapping them with prefetch leaves the model the only cost.
    return [Row("input pipeline vs `resnet20` training on digits (batch 128, 32×32)",
                images / pipe, images / train, 10.0, unit="images/s", higher_is_better=True),
            Row("input pipeline, 5 epochs: (seed, epoch, position) draws vs a per-pass reshuffle",
                exact, former, 1.2, unit="s")]


def bench_train(epochs=20):
    """`cnnbuilder train resnet20 --dataset digits` (its recipe's training, He et al. §4.2:
    SGD momentum 0.9 with l2 weight decay, step schedule; digits' translation augmentation;
    per-epoch checkpoints) against plain `model.fit` of
    the same network on the same arrays (SGD + Nesterov, cosine schedule, no augmentation,
    no callbacks). One run each: 20 epochs take minutes."""
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        keras.backend.clear_session()
        ours = cnnbuilder.train("resnet20", "digits", output=directory, epochs=epochs,
                                verbose=0).metrics
    plain_accuracy, plain_seconds = _plain_fit(epochs, seed=0)
    return [Row(f"train `resnet20` on digits, {epochs} epochs: `cnnbuilder.train` (test "
                f"accuracy {ours['test_accuracy']:.4f}) vs plain `model.fit` (test accuracy "
                f"{plain_accuracy:.4f})", ours["seconds"], plain_seconds, 1.10)]


def _plain_fit(epochs: int, seed: int) -> tuple[float, float]:
    """(test accuracy, fit seconds) of resnet20 trained by plain `model.fit` on digits'
    arrays: SGD with Nesterov momentum 0.9, cosine from 0.1, no weight decay, no
    augmentation, no callbacks."""
    from cnnbuilder.data import load_dataset, preprocess

    data = load_dataset("digits")
    shape, batch = (32, 32, 3), 128
    x_train, y_train = preprocess(data.train[0], shape), data.train[1]
    x_val, y_val = preprocess(data.validation[0], shape), data.validation[1]
    x_test, y_test = preprocess(data.test[0], shape), data.test[1]
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = cnnbuilder.build("resnet20", classes=10)
    steps = epochs * -(-len(y_train) // batch)
    model.compile(optimizer=keras.optimizers.SGD(
        keras.optimizers.schedules.CosineDecay(0.1, steps), momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=batch, epochs=epochs,
              validation_data=(x_val, y_val), verbose=0)
    seconds = time.perf_counter() - start
    return float(model.evaluate(x_test, y_test, verbose=0)[1]), seconds


def bench_paper_training(epochs=20, seeds=(0, 1, 2)):
    """`cnnbuilder train resnet20 --dataset digits --epochs 20` (He et al. §4.2's training:
    SGD momentum 0.9, l2 weight decay 1e-4, lr 0.1 divided by 10 at 50% and 75%, digits'
    translation augmentation, the best validation epoch) against plain `model.fit`, each
    over `seeds`: mean ± standard deviation of the test accuracy."""
    import tempfile

    ours, plain = [], []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as directory:
            keras.backend.clear_session()
            ours.append(cnnbuilder.train("resnet20", "digits", output=directory, epochs=epochs,
                                         seed=seed, verbose=0).metrics["test_accuracy"])
        plain.append(_plain_fit(epochs, seed)[0])
        print(f"seed {seed}: cnnbuilder {ours[-1]:.4f}, plain {plain[-1]:.4f}", file=sys.stderr)

    def spread(values):
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"

    return [Row(f"test accuracy, `resnet20` on digits, {epochs} epochs, seeds {list(seeds)}: "
                f"`cnnbuilder train` (the paper's training) {spread(ours)} "
                f"({', '.join(f'{v:.4f}' for v in ours)}) vs plain `model.fit` {spread(plain)} "
                f"({', '.join(f'{v:.4f}' for v in plain)})",
                statistics.mean(ours), statistics.mean(plain), 1.0, "accuracy", True)]


MEMORY_RECIPE, MEMORY_BATCH, MEMORY_SHAPE = "densenet_bc100_k12", 64, (32, 32, 3)
MEMORY_BUDGET = 1.5 * 2**30  # bytes a training step may add; for the depth sweep
SWEEP_DEPTHS = range(40, 257, 24)  # DenseNet-BC depths 6n + 4


def bench_memory(repeats=2, step_repeats=3):
    """Memory-efficient vs plain DenseNet-BC-100 (k=12): peak training-step memory, each
    measured in a fresh process (alternating), and step time in this process."""
    from tools.memory_probe import peak_training_memory

    peaks = {False: [], True: []}
    for _ in range(repeats):
        for efficient in (True, False):
            peaks[efficient].append(peak_training_memory(
                MEMORY_RECIPE, batch_size=MEMORY_BATCH, input_shape=MEMORY_SHAPE,
                memory_efficient=efficient)["peak_bytes"])
    plain_peak, efficient_peak = (statistics.median(peaks[False]),
                                  statistics.median(peaks[True]))
    keras.backend.clear_session()
    steps = [_train_step_function(
        cnnbuilder.build(MEMORY_RECIPE, input_shape=MEMORY_SHAPE, classes=10,
                         memory_efficient=efficient), MEMORY_BATCH) for efficient in (True, False)]
    efficient_time, plain_time = alternate(*steps, step_repeats)
    where = f"`{MEMORY_RECIPE}`, batch {MEMORY_BATCH}, 32×32"
    rows = [
        Row(f"memory training adds to the built model (peak RSS of 2 steps minus RSS after "
            f"build and compile), memory-efficient vs plain {where}",
            efficient_peak / 2**20, plain_peak / 2**20, 0.6, unit="MiB"),
        Row(f"training step time, memory-efficient vs plain {where}", efficient_time,
            plain_time, 1.35),
    ]
    deepest = {efficient: _deepest_within_budget(efficient) for efficient in (True, False)}
    rows.append(Row(f"deepest DenseNet-BC (k=12, batch {MEMORY_BATCH}, 32×32) whose training "
                    f"adds ≤ {MEMORY_BUDGET / 2**30:g} GiB to the built model, memory-efficient vs plain",
                    deepest[True], deepest[False], 1.0, unit="depth", higher_is_better=True))
    return rows


def _deepest_within_budget(efficient: bool) -> int:
    from tools.memory_probe import peak_training_memory

    deepest = 0
    for depth in SWEEP_DEPTHS:
        peak = peak_training_memory(MEMORY_RECIPE, batch_size=MEMORY_BATCH, steps=1,
                                    input_shape=MEMORY_SHAPE, depth=depth,
                                    memory_efficient=efficient)["peak_bytes"]
        print(f"  depth {depth}, memory_efficient={efficient}: {peak / 2**20:,.0f} MiB",
              file=sys.stderr, flush=True)
        if peak > MEMORY_BUDGET:
            break
        deepest = depth
    return deepest


SECTIONS = {"build": bench_build, "step": bench_step, "pipeline": bench_pipeline,
            "train": bench_train, "memory": bench_memory, "paper_training": bench_paper_training}
# Run only when named (six 20-epoch trainings: about 15 CPU-minutes).
ON_REQUEST = {"paper_training"}


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}, backend {keras.backend.backend()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # No `choices`: argparse checks an empty `nargs="*"` list against them and fails.
    parser.add_argument("sections", nargs="*",
                        help=f"sections to run, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = args.sections or [name for name in SECTIONS if name not in ON_REQUEST]
    rows = []
    for section in args.sections:
        print(f"running {section} ...", file=sys.stderr, flush=True)
        rows += SECTIONS[section]()
    lines = ["| measurement | cnnbuilder | reference | ratio | target |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [row.cells() for row in rows]
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
