"""Training on the JAX backend over several devices and several processes
(`keras.distribution`, `cnnbuilder.training.multihost`): two processes on 127.0.0.1 train
one model in step (gloo collectives on the CPU), process 0 alone writes the run
directory, a killed run resumes, a lost process stops the others with a message."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_tune_distributed import free_port

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "cnnbuilder.cli"]
# Two convolutions with BatchNorm (whose batch statistics must span the global batch) and
# SGD with momentum, at a rate low enough that float rounding (the devices sum in another
# order) is not amplified into visibly different losses within three epochs.
SMALL = textwrap.dedent("""\
    name: small
    description: two convolutions with batch norm and a classifier, for multi-process tests
    metadata: {input_shape: [16, 16, 3], classes: 10}
    stem:
      - conv: {filters: 8, kernel: 3}
      - bn
      - activation: relu
      - conv: {filters: 16, kernel: 3, stride: 2}
      - bn
      - activation: relu
    head:
      - global_pool: avg
      - fc: {units: "${classes}", activation: "${classifier_activation}"}
    training:
      optimizer: sgd
      learning_rate: 0.01
      momentum: 0.9
      batch_size: 64
      epochs: 3
    """)
# One process of a run through the Python API, on digits cut to sizes every split of a
# 64-example global batch divides evenly over 2 processes, so a 1-process run sees the
# very same batches (with the default crop augmentation of digits).
SCRIPT = textwrap.dedent("""\
    import json, sys
    from cnnbuilder.training import multihost
    recipe, output, port, count, index = sys.argv[1:6]
    if int(count) > 1:
        multihost.initialize(multihost.cluster_from(f"127.0.0.1:{port}", count, index))
    import dataclasses
    import cnnbuilder
    from cnnbuilder.training import distribution
    data = cnnbuilder.load_dataset("digits")
    (x, y), (vx, vy), (tx, ty) = data.train, data.validation, data.test
    data = dataclasses.replace(data, train=(x[:704], y[:704]), validation=(vx[:96], vy[:96]),
                               test=(tx[:160], ty[:160]))
    result = cnnbuilder.train(recipe, data, output=output, verbose=0, tensorboard=False)
    print(json.dumps({"process": distribution.process_index(), "devices": distribution.device_count(),
                      "history": result.history, "metrics": result.metrics}))
    """)


def environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(SMALL)
    return path


def losses(history: list[dict]) -> list[float]:
    """Training and validation loss of every epoch, in order."""
    return [float(row[key]) for row in history for key in ("loss", "val_loss")]


def test_two_processes_train_like_one(tmp_path, recipe):
    """Same per-epoch losses as one process with the same global batch and seed; one run
    directory, written by process 0 alone."""
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    port = free_port()
    pair = [subprocess.Popen([sys.executable, str(script), str(recipe), str(tmp_path / "pair"),
                              str(port), "2", str(index)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=environment())
            for index in (0, 1)]
    outputs = [process.communicate(timeout=600) for process in pair]
    for process, (out, err) in zip(pair, outputs):
        assert process.returncode == 0, err[-3000:]
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    single = subprocess.run([sys.executable, str(script), str(recipe), str(tmp_path / "single"),
                             "0", "1", "0"], capture_output=True, text=True, env=environment(),
                            timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    alone = json.loads(single.stdout.strip().splitlines()[-1])

    # One process over two devices (XLA's host platform split in two) feeds both devices
    # from one pipeline: the same again.
    two_devices = subprocess.run(
        [sys.executable, str(script), str(recipe), str(tmp_path / "devices"), "0", "1", "0"],
        capture_output=True, text=True, timeout=600,
        env=environment(XLA_FLAGS="--xla_force_host_platform_device_count=2"))
    assert two_devices.returncode == 0, two_devices.stderr[-3000:]
    reports.append(json.loads(two_devices.stdout.strip().splitlines()[-1]))

    assert [r["devices"] for r in reports] == [2, 2, 2] and alone["devices"] == 1
    assert len(alone["history"]) == 3
    for report in reports:
        assert losses(report["history"]) == pytest.approx(losses(alone["history"]), rel=1e-5)
        assert report["metrics"]["test_accuracy"] == pytest.approx(
            alone["metrics"]["test_accuracy"], abs=1e-6)
    # Process 0 wrote the run; process 1 read it (history, best model) and wrote nothing more.
    pair_dir = tmp_path / "pair"
    assert sorted(p.name for p in pair_dir.iterdir() if not p.name.startswith(".")) == sorted(
        p.name for p in (tmp_path / "single").iterdir() if not p.name.startswith("."))
    written = json.loads((pair_dir / "metrics.json").read_text())
    assert written["test_accuracy"] == pytest.approx(alone["metrics"]["test_accuracy"], abs=1e-6)
    assert json.loads((pair_dir / "run.json").read_text())["backend"] == "jax"
    # The run exports like any other, even with KERAS_BACKEND=jax left set (export runs on
    # TensorFlow).
    exported = subprocess.run([*CLI, "export", str(pair_dir), "--output", str(tmp_path / "export" / "1")],
                              capture_output=True, text=True, env=environment(), timeout=600)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (tmp_path / "export" / "1" / "saved_model.pb").exists()


class Run:
    """Two `cnnbuilder train --backend jax` processes of one run on 127.0.0.1."""

    def __init__(self, tmp_path: Path, recipe: Path, *args):
        self.tmp_path, self.output = tmp_path, tmp_path / "run"
        self.args = [*CLI, "train", str(recipe), "--backend", "jax", "--dataset", "digits",
                     "--output", str(self.output), "--quiet", "--no-tensorboard", *map(str, args)]
        self.processes: list[subprocess.Popen] = []

    def start(self, keras_variables: bool = False) -> None:
        """Both processes, told who they are by the flags or by Keras' variables."""
        port, self.processes = free_port(), []
        for index in (0, 1):
            log = open(self.tmp_path / f"process{index}.log", "w")
            flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(index)]
            variables = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
                         "KERAS_DISTRIBUTION_NUM_PROCESSES": "2",
                         "KERAS_DISTRIBUTION_PROCESS_ID": str(index)}
            self.processes.append(subprocess.Popen(
                self.args + ([] if keras_variables else flags), stdout=log,
                stderr=subprocess.STDOUT, env=environment(
                    CNNBUILDER_HEARTBEAT_TIMEOUT="10", **(variables if keras_variables else {}))))

    def log(self, index: int) -> str:
        return (self.tmp_path / f"process{index}.log").read_text()

    def epochs_done(self) -> int:
        path = self.output / "state.json"
        try:
            return json.loads(path.read_text())["epochs_done"] if path.exists() else 0
        except (ValueError, KeyError):
            return 0  # being replaced

    def wait_for_epochs(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.epochs_done() < count:
            assert all(p.poll() is None for p in self.processes), self.log(0)[-3000:]
            assert time.monotonic() < deadline, "no epoch finished in time"
            time.sleep(0.5)

    def history_epochs(self) -> list[int]:
        with open(self.output / "history.csv") as handle:
            return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_killed_run_resumes_every_epoch_once(tmp_path, recipe):
    run = Run(tmp_path, recipe, "--epochs", 8)
    run.start()
    run.wait_for_epochs(2)
    for process in run.processes:
        process.send_signal(signal.SIGKILL)
    for process in run.processes:
        process.wait(timeout=60)
    killed_at = run.epochs_done()
    assert 2 <= killed_at < 8 and not (run.output / "metrics.json").exists()

    run.start(keras_variables=True)  # as a SLURM or Kubernetes launcher would say it
    for process in run.processes:
        assert process.wait(timeout=600) == 0, run.log(0)[-3000:] + run.log(1)[-3000:]
    assert run.history_epochs() == list(range(1, 9))
    metrics = json.loads((run.output / "metrics.json").read_text())
    assert metrics["epochs_run"] == 8
    assert "process 1: trained with process 0" in run.log(1)


@pytest.mark.parametrize("lost", [1, 0], ids=["worker_lost", "coordinator_lost"])
def test_lost_process_stops_the_other_with_a_message(tmp_path, recipe, lost):
    run = Run(tmp_path, recipe, "--epochs", 500)
    run.start()
    run.wait_for_epochs(1)
    run.processes[lost].send_signal(signal.SIGKILL)
    survivor = 1 - lost
    # JAX notices within its heartbeat timeout (10 s here, 60 s by default): never a hang.
    status = run.processes[survivor].wait(timeout=180)
    assert status != 0
    message = run.log(survivor)
    assert re.search(fr"process {lost} of the 2 processes of this run( \(the coordinator, "
                     fr"127\.0\.0\.1:\d+\))? was lost", message), message[-3000:]
    assert "rerun the same command on every process to resume" in message
    assert run.epochs_done() >= 1 and not (run.output / "metrics.json").exists()


def test_jax_backend_learns_like_tensorflow(tmp_path):
    """LeNet-5 as its paper trained it, for 10 epochs on digits, one process on each
    backend: the same class of accuracy."""
    accuracy = {}
    for backend in ("tensorflow", "jax"):
        output = tmp_path / backend
        done = subprocess.run([*CLI, "train", "lenet5", "--backend", backend, "--dataset",
                               "digits", "--epochs", "10", "--output", str(output), "--quiet",
                               "--no-tensorboard"],
                              capture_output=True, text=True, env=environment(), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        accuracy[backend] = json.loads((output / "metrics.json").read_text())["test_accuracy"]
        assert json.loads((output / "run.json").read_text())["backend"] == backend
    assert accuracy["tensorflow"] > 0.85 and accuracy["jax"] > 0.85, accuracy
    assert abs(accuracy["jax"] - accuracy["tensorflow"]) < 0.05, accuracy


WARMUP = textwrap.dedent("""\
    import numpy as np, keras
    from cnnbuilder.training.callbacks import WarmupUntilError
    from cnnbuilder.training.optimizers import TorchSGD
    from cnnbuilder.training.schedules import PaperSchedule
    # d(loss)/d(w) = 1 for every step: the weight falls by exactly the rate of each step.
    schedule = PaperSchedule(0.1, 1000, decay="constant", warmup_steps=900, warmup_learning_rate=0.01)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False,
                                                                     kernel_initializer="zeros")])
    model.compile(optimizer=TorchSGD(schedule), loss=lambda y, p: keras.ops.mean(p),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    x, y = np.ones((200, 1), "float32"), np.zeros((200,), "int64")
    model.fit(x, y, batch_size=10, epochs=1, verbose=0, callbacks=[WarmupUntilError(0.9)])
    print(int(schedule.warmup_end.numpy()), float(model.get_weights()[0][0, 0]))
    """)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_a_warmup_ended_by_the_training_error_changes_the_rate_on_every_backend(tmp_path, backend):
    """He et al.'s warm-up (0.01 until the training error is below 80%, then 0.1) acts on
    JAX too, whose compiled step holds the warm-up's end as a constant."""
    script = tmp_path / "warmup.py"
    script.write_text(WARMUP)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={**environment(), "KERAS_BACKEND": backend}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    end, weight = done.stdout.split()[-2:]
    # 20 steps: the first 10 fill the error window at 0.01, the other 10 run at 0.1.
    assert int(end) == 10
    assert float(weight) == pytest.approx(-(10 * 0.01 + 10 * 0.1), rel=1e-5)


def test_tune_trains_its_trials_on_jax(tmp_path):
    from test_tune import MINI

    recipe = tmp_path / "mini.yaml"
    recipe.write_text(MINI)
    done = subprocess.run([*CLI, "tune", str(recipe), "--backend", "jax", "--dataset", "digits",
                           "--output", str(tmp_path / "search"), "--max-trials", "2", "--epochs", "1",
                           "--batch-size", "64", "--quiet"],
                          capture_output=True, text=True, env=environment(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "search" / "tuning.json").read_text())
    assert [t["status"] for t in results["trials"]] == ["completed", "completed"]
    best = json.loads((tmp_path / "search" / "best" / "run.json").read_text())
    assert best["backend"] == "jax"


def test_mixed_precision_and_memory_efficient_densenet_train_on_jax(tmp_path):
    output = tmp_path / "run"
    done = subprocess.run([*CLI, "train", "densenet_bc100_k12", "--backend", "jax", "--mixed-precision",
                           "--set", "memory_efficient=true", "--set", "depth=10", "--dataset", "digits",
                           "--input-shape", "16,16,3", "--epochs", "1", "--output", str(output), "--quiet",
                           "--no-tensorboard"],
                          capture_output=True, text=True, env=environment(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((output / "run.json").read_text())
    assert record["backend"] == "jax" and record["mixed_precision"] is True
    assert json.loads((output / "metrics.json").read_text())["epochs_run"] == 1
    config = json.loads(__import__("zipfile").ZipFile(output / "model.keras").read("config.json"))
    policies = {layer["config"].get("dtype", {}).get("config", {}).get("name")
                for layer in config["config"]["layers"] if isinstance(layer["config"].get("dtype"), dict)}
    assert "mixed_bfloat16" in policies
