"""Training step time on the JAX vs the TensorFlow backend, and 2 JAX processes vs 1 (issue 15).

A Keras process runs one backend, so every side of a comparison is a worker subprocess
(`KERAS_BACKEND=tensorflow` or `jax`) that builds and compiles its model the way
cnnbuilder trains (`cnnbuilder.training.prepare(recipe, data)`, `job.build()`,
`job.compile(model)`: the recipe's optimizer, schedule, weight decay, loss and metrics),
warms up (tracing and compilation excluded), then waits. The parent asks the sides in
turn (A B C A B C ...) for one timed round each and reports, per side, the median over
the rounds of seconds per step, and the ratios of the medians. Only one side computes at
a time: the others wait on their stdin, so the sides do not compete for the cores, and a
drift of the machine (it is shared) hits every side alike.

A round is one `model.fit(..., epochs=1, steps_per_epoch=steps)` call, timed from the
epoch's start to its end by a callback: `fit` is what training runs (its per-step work:
the iterator, the callbacks, JAX's state handling), and the end of an epoch waits for the
last step (the epoch's logs are read back to the host). The data is a few batches of
the training split cut by `cnnbuilder.data.make_pipeline` (the run's normalization and,
with several processes, its shard of every batch), cached and repeated, so that the
input pipeline costs nothing measurable and the figure is the training step itself.

Sides:

- ``tensorflow``: the default training, `jit=False` (a `tf.function` graph, no XLA).
- ``jax``: the default training, `jit=False`. Keras' JAX trainer would take it literally
  (the step not `jax.jit`-compiled, run op by op: 1.8x slower for resnet20, recorded in
  results.md); since then cnnbuilder compiles the JAX step whatever `jit` says, so this
  side times the same step as ``jax --jit``.
- ``jax --jit``: `jit=True` (`cnnbuilder train --jit`): the XLA-compiled step, the way
  JAX is meant to run.
- ``jax --jit, 2 processes``: the same, with `keras.distribution.DataParallel` over 2 JAX
  processes on 127.0.0.1 (`cnnbuilder.training.multihost`), the same global batch (each
  process feeds half of it), against 1 JAX process. On a machine with fewer cores than
  the two processes can use, they compete for the cores: the ratio is the overhead of
  the cross-process all-reduce plus that contention, not a speed-up.

    python benchmarks/backends.py                 # ~10 minutes on 2 cores
    python benchmarks/backends.py --quick         # ~1-minute smoke run
    python benchmarks/backends.py --json report.json

Prints markdown tables; `benchmarks/results.md` records what was measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

SHAPE, CLASSES = (32, 32, 3), 10
# Batches of the training split a worker cycles through (cached, so read once).
CACHED_BATCHES = 4
# Marks the worker's answers on its stdout, which libraries may write to as well.
ANSWER = "@@backends "


@dataclass(frozen=True)
class Plan:
    """What one comparison measures: recipe (with params), global batch, input shape,
    warm-up steps, timed steps per round and rounds."""

    recipe: str
    batch: int = 64
    warmup: int = 5
    steps: int = 10
    rounds: int = 3
    input_shape: tuple = SHAPE
    params: dict = field(default_factory=dict)


# --- the worker: one side, in its own process ------------------------------------------

def synthetic_data(input_shape, examples: int, seed: int = 0):
    """A `cnnbuilder.data.Dataset` of random uint8 images of `input_shape` and `CLASSES`
    integer labels (the step time does not depend on the pixels)."""
    import numpy as np

    import cnnbuilder

    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (examples, *input_shape), dtype=np.uint8)
    y = rng.integers(0, CLASSES, examples)
    return cnnbuilder.load_dataset((x, y), seed=seed)


def prepare_worker(plan: Plan, jit: bool):
    """(model, dataset): `plan.recipe` prepared, built and compiled as cnnbuilder trains
    it, with the global batch `plan.batch`, and a repeating tf.data dataset of this
    process's rows of `CACHED_BATCHES` batches of the training split."""
    import keras

    from cnnbuilder.data import make_pipeline
    from cnnbuilder.training import distribution, prepare

    keras.utils.set_random_seed(0)
    # The training split must hold CACHED_BATCHES full batches (load_dataset keeps 70 %).
    data = synthetic_data(plan.input_shape, -(-plan.batch * CACHED_BATCHES * 10 // 7) + 8)
    job = prepare(plan.recipe, data, params=plan.params or None,
                  input_shape=tuple(plan.input_shape), training={"batch_size": plan.batch},
                  jit=jit)
    model = job.build()
    job.compile(model)
    batches = make_pipeline(data.train, input_shape=job.settings.input_shape,
                            batch_size=plan.batch, training=False,
                            shard=distribution.data_shard(), **job.settings.normalization_args())
    return model, batches.take(CACHED_BATCHES).cache().repeat()


def epoch_timer():
    """A Keras callback whose `seconds` lists the duration of every epoch it saw, from
    its start to its end (after the epoch's last step has finished)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def run_worker(spec: dict) -> None:
    """The worker's life: join the other processes (when `spec` has a cluster), build,
    compile and warm up, answer ``ready``, then time one round of `spec` steps for every
    ``time`` line read from stdin, until ``quit`` or the end of stdin."""
    cluster = spec.get("cluster")
    if cluster:
        from cnnbuilder.training import multihost

        multihost.initialize(multihost.cluster_from(*cluster))
    import keras

    from cnnbuilder.training import distribution

    plan = Plan(**{**spec["plan"], "input_shape": tuple(spec["plan"]["input_shape"])})
    model, batches = prepare_worker(plan, spec["jit"])
    started = time.perf_counter()
    model.fit(batches, epochs=1, steps_per_epoch=plan.warmup, verbose=0)  # trace, compile
    _answer({"ready": True, "backend": keras.backend.backend(),
             "devices": distribution.device_count(), "processes": distribution.process_count(),
             "warmup_seconds": time.perf_counter() - started,
             "jit_compile": bool(model.jit_compile)})
    timer = epoch_timer()
    for line in sys.stdin:
        if line.strip() != "time":
            break
        model.fit(batches, epochs=1, steps_per_epoch=plan.steps, verbose=0, callbacks=[timer])
        _answer({"seconds_per_step": timer.seconds[-1] / plan.steps})


def _answer(message: dict) -> None:
    """One answer to the parent, on a line of its own."""
    print(ANSWER + json.dumps(message), flush=True)


# --- the parent: start the sides, alternate them ---------------------------------------

class Side:
    """One side of a comparison: 1 or more worker processes (those of one multi-process
    run) that are started, timed and stopped together."""

    def __init__(self, label: str, backend: str, plan: Plan, jit: bool, processes: int = 1):
        self.label, self.backend, self.plan, self.jit = label, backend, plan, jit
        self.count = processes
        self.workers: list[subprocess.Popen] = []
        self.logs: list = []
        self.ready: list[dict] = []
        self.seconds: list[float] = []

    def start(self) -> None:
        """Start the worker processes, each with its own stderr log."""
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(KERAS_BACKEND=self.backend, TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
        port = _free_port() if self.count > 1 else None
        plan = {**self.plan.__dict__, "input_shape": list(self.plan.input_shape)}
        for index in range(self.count):
            spec = {"plan": plan, "jit": self.jit,
                    "cluster": [f"127.0.0.1:{port}", self.count, index] if port else None}
            log = tempfile.TemporaryFile(mode="w+")
            self.logs.append(log)
            self.workers.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", json.dumps(spec)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=log, text=True, env=env))

    def wait_ready(self) -> None:
        """Wait until every worker has built, compiled and warmed up its model."""
        self.ready = [self._read(index) for index in range(self.count)]

    def time_round(self) -> float:
        """Seconds per step of one round: all workers at once, the slowest one's figure
        (the processes of a run step together)."""
        for worker in self.workers:
            worker.stdin.write("time\n")
            worker.stdin.flush()
        seconds = max(self._read(index)["seconds_per_step"] for index in range(self.count))
        self.seconds.append(seconds)
        return seconds

    def stop(self) -> None:
        """Tell the workers to quit and wait for them (killed when they hang)."""
        for worker in self.workers:
            if worker.poll() is None:
                try:
                    worker.stdin.write("quit\n")
                    worker.stdin.close()
                except OSError:
                    pass
        for worker in self.workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for log in self.logs:
            log.close()

    @property
    def median(self) -> float:
        """Median seconds per step over the rounds."""
        return statistics.median(self.seconds)

    def _read(self, index: int) -> dict:
        worker = self.workers[index]
        for line in worker.stdout:
            if line.startswith(ANSWER):
                return json.loads(line[len(ANSWER):])
        worker.wait()
        log = self.logs[index]
        log.seek(0)
        raise RuntimeError(f"worker {index} of {self.label} ({self.backend}) stopped with exit "
                           f"status {worker.returncode}:\n{log.read()[-3000:]}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def alternate(sides: list[Side], rounds: int, verbose: bool = True) -> list[Side]:
    """Start `sides` (all at once: their start-up, compilation and warm-up are not timed),
    wait until all are ready, then time `rounds` rounds, the sides in turn."""
    try:
        for side in sides:
            side.start()
        for side in sides:
            side.wait_ready()
            _log(verbose, f"  {side.label}: ready (warm-up {side.ready[0]['warmup_seconds']:.1f} s)")
        for index in range(rounds):
            for side in sides:
                seconds = side.time_round()
                _log(verbose, f"  round {index + 1}/{rounds}, {side.label}: {seconds:.4f} s/step")
    finally:
        for side in sides:
            side.stop()
    return sides


def _log(verbose: bool, text: str) -> None:
    if verbose:
        print(text, file=sys.stderr, flush=True)


def measure(plan: Plan, eager_jax: bool = False, two_processes: bool = False,
            verbose: bool = True) -> dict:
    """Seconds per step of `plan` on TensorFlow and on JAX with `--jit`, with `eager_jax`
    also on JAX as cnnbuilder trains by default (no jit), with `two_processes` also on JAX
    `--jit` over 2 processes on 127.0.0.1 with the same global batch (its 1-process
    counterpart is the JAX `--jit` side); the ratios of each to TensorFlow, and of 2
    processes to 1. All sides alternate in one set of rounds."""
    sides = {"tensorflow": Side("tensorflow", "tensorflow", plan, jit=False),
             "jax_jit": Side("jax --jit", "jax", plan, jit=True)}
    if eager_jax:
        sides["jax"] = Side("jax", "jax", plan, jit=False)
    if two_processes:
        sides["two_processes"] = Side("jax --jit, 2 processes", "jax", plan, jit=True,
                                      processes=2)
    _log(verbose, f"{plan.recipe}, global batch {plan.batch}: {', '.join(s.label for s in sides.values())}")
    alternate(list(sides.values()), plan.rounds, verbose)
    if two_processes:
        devices = [ready["devices"] for ready in sides["two_processes"].ready]
        if devices != [2, 2]:
            raise RuntimeError(f"the 2-process run saw {devices} devices, not 2 each")
    report = {"model": plan.recipe, "params": plan.params, "batch": plan.batch,
              "rounds": plan.rounds, "steps": plan.steps, "warmup": plan.warmup}
    for key, side in sides.items():
        report[key] = side.median
        report[f"{key}_rounds"] = side.seconds
    for key in ("jax_jit", "jax"):
        if key in report:
            report[f"{key}_over_tensorflow"] = report[key] / report["tensorflow"]
    if two_processes:
        report["two_over_one"] = report["two_processes"] / report["jax_jit"]
    return report


def machine() -> str:
    """This machine and the versions measured."""
    from importlib.metadata import version

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, TensorFlow {version('tensorflow')}, JAX "
            f"{version('jax')}, Keras {version('keras')}")


def tables(report: dict) -> str:
    """The report as markdown tables."""
    lines = ["| model (global batch) | TensorFlow s/step | JAX `--jit` s/step | ratio | "
             "JAX (default, no jit) s/step | ratio |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in report["backends"]:
        eager = (f"{row['jax']:.4f} | {row['jax_over_tensorflow']:.3f}" if "jax" in row
                 else "— | —")
        lines.append(f"| `{row['model']}` ({row['batch']}) | {row['tensorflow']:.4f} | "
                     f"{row['jax_jit']:.4f} | {row['jax_jit_over_tensorflow']:.3f} | {eager} |")
    lines += ["", "| model (global batch), JAX `--jit` | 1 process s/step | 2 processes s/step "
              "| ratio |", "| --- | ---: | ---: | ---: |"]
    for row in report["backends"]:
        if "two_processes" in row:
            lines.append(f"| `{row['model']}` ({row['batch']}) | {row['jax_jit']:.4f} | "
                         f"{row['two_processes']:.4f} | {row['two_over_one']:.3f} |")
    return "\n".join(lines)


def plans(quick: bool) -> list[tuple[Plan, dict]]:
    """The measurements of a full or a `--quick` run, sized for 2 CPU cores: (plan,
    `measure` options)."""
    if quick:
        return [(Plan("resnet20", warmup=2, steps=3, rounds=2), {"two_processes": True})]
    return [(Plan("resnet20", warmup=5, steps=10, rounds=3),
             {"eager_jax": True, "two_processes": True}),
            # About 2 s (TensorFlow) and 9 s (JAX) a step here: fewer, still alternating.
            (Plan("densenet_bc100_k12", warmup=2, steps=4, rounds=3), {})]


def run(quick: bool = False, verbose: bool = True) -> dict:
    """The whole benchmark: a report with the machine and one row per measured model."""
    started = time.perf_counter()
    report = {"machine": machine(), "quick": quick,
              "backends": [measure(plan, verbose=verbose, **options)
                           for plan, options in plans(quick)]}
    report["seconds"] = time.perf_counter() - started
    return report


def main(argv=None) -> int:
    """Command line: run the benchmark, print its tables, optionally write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~1-minute smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return 0
    report = run(args.quick)
    print(f"Machine: {report['machine']}; {report['seconds']:.0f} s.\n")
    print(tables(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
