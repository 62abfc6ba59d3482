"""Distributed tuning: a chief and two workers on 127.0.0.1, as separate `cnnbuilder tune`
processes under KerasTuner's environment variables, sharing one output directory."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_tune import MINI

CLI = [sys.executable, "-m", "cnnbuilder.cli"]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A chief and workers running the same command; their output goes to files."""

    def __init__(self, tmp_path: Path, *args):
        self.tmp_path = tmp_path
        recipe = tmp_path / "mini.yaml"
        recipe.write_text(MINI)
        self.output = tmp_path / "search"
        self.args = [*CLI, "tune", str(recipe), "--dataset", "digits", "--output", str(self.output),
                     "--batch-size", "64", "--quiet", *map(str, args)]
        self.port = free_port()
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, tuner_id: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update(TF_CPP_MIN_LOG_LEVEL="3", KERASTUNER_TUNER_ID=tuner_id,
                   KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(self.port))
        log = open(self.tmp_path / f"{tuner_id}.log", "w")
        self.processes[tuner_id] = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self.processes[tuner_id]

    def log(self, tuner_id: str) -> str:
        return (self.tmp_path / f"{tuner_id}.log").read_text()

    def search_log(self) -> str:
        path = self.output / "search.log"
        return path.read_text() if path.exists() else ""

    def starts(self) -> list[tuple[int, str]]:
        """(trial number, tuner_id) of every trial start the chief logged."""
        return [(int(n), w) for n, w in re.findall(r"trial (\d+) start on (\S+)", self.search_log())]

    def wait(self, tuner_id: str, timeout: float = 300) -> int:
        try:
            return self.processes[tuner_id].wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{tuner_id} did not finish in {timeout} s:\n{self.log(tuner_id)[-3000:]}\n"
                        f"search.log:\n{self.search_log()}")

    def stop(self):
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(*args):
        made.append(Cluster(tmp_path, *args))
        return made[-1]

    yield make
    for c in made:
        c.stop()


def test_chief_and_two_workers_run_every_trial_exactly_once(cluster):
    c = cluster("--max-trials", 4, "--epochs", 1)
    # Workers first: they wait for the chief (gRPC wait_for_ready), so both are there when
    # the oracle starts handing out trials.
    c.start("tuner0")
    c.start("tuner1")
    c.start("chief")
    assert c.wait("chief") == 0, c.log("chief")
    assert c.wait("tuner0") == 0, c.log("tuner0")
    assert c.wait("tuner1") == 0, c.log("tuner1")

    result = json.loads((c.output / "tuning.json").read_text())
    trials = result["trials"]
    assert len(trials) == 4 and all(t["status"] == "completed" for t in trials)
    started = c.starts()
    numbers = [number for number, _ in started]
    assert sorted(numbers) == sorted(t["number"] for t in trials) and len(set(numbers)) == len(numbers) == 4
    ran = {t["number"]: t["tuner_id"] for t in trials}
    assert ran == dict(started) and set(ran.values()) <= {"tuner0", "tuner1"}  # the chief only serves
    counts = [int(re.search(r"worker tuner\d ran (\d+) trials", c.log(w)).group(1)) for w in ("tuner0", "tuner1")]
    assert sum(counts) == 4
    assert "4 trials (4 completed)" in c.log("chief")
    assert (c.output / "tuning.png").exists() and (c.output / "best" / "model.keras").exists()


def test_workers_train_their_trials_on_jax(cluster):
    """`tune --backend jax` under KerasTuner's chief and workers (its gRPC beside JAX)."""
    c = cluster("--max-trials", 2, "--epochs", 1, "--backend", "jax")
    c.start("tuner0")
    c.start("chief")
    assert c.wait("chief") == 0, c.log("chief")
    assert c.wait("tuner0") == 0, c.log("tuner0")
    result = json.loads((c.output / "tuning.json").read_text())
    assert [t["status"] for t in result["trials"]] == ["completed", "completed"]
    assert {t["tuner_id"] for t in result["trials"]} == {"tuner0"}
    assert json.loads((c.output / "best" / "run.json").read_text())["backend"] == "jax"


def test_a_worker_killed_mid_trial_does_not_stall_the_search(cluster):
    c = cluster("--max-trials", 4, "--epochs", 2, "--trial-timeout", 8)
    c.start("tuner0")
    victim = c.start("tuner1")
    chief = c.start("chief")
    deadline = time.time() + 240
    while time.time() < deadline and not any(w == "tuner1" for _, w in c.starts()):
        if chief.poll() is not None or victim.poll() is not None:
            pytest.fail("tuner1 never started a trial:\n" + c.search_log())
        time.sleep(0.05)
    lost = next(number for number, w in c.starts() if w == "tuner1")
    victim.send_signal(signal.SIGKILL)
    victim.wait()

    assert c.wait("chief") == 0, c.log("chief")
    assert c.wait("tuner0") == 0, c.log("tuner0")
    result = json.loads((c.output / "tuning.json").read_text())
    trials = {t["number"]: t for t in result["trials"]}
    assert len(trials) == 4
    log = c.search_log()
    assert f"trial {lost} lost: worker tuner1 sent no heartbeat for 8 s" in log
    record = trials[lost]
    if record["status"] == "completed":  # handed to tuner0
        assert record["tuner_id"] == "tuner0" and "lost: worker tuner1" in record["note"]
    else:
        assert record["status"] == "failed" and "lost: worker tuner1" in record["reason"]
    others = [t for i, t in trials.items() if i != lost]
    assert all(t["status"] == "completed" and t["tuner_id"] == "tuner0" for t in others)
