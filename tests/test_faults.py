"""Run directories survive faults (issue 17): one process per directory, a failing write
while committing an epoch loses nothing, a damaged directory is refused with a way out."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cnnbuilder
from cnnbuilder.errors import RunError
from cnnbuilder import runs
from cnnbuilder.training import commit, prepare
from helpers import TINY_RECIPE, write

CLI = [sys.executable, "-m", "cnnbuilder.cli"]


@pytest.fixture
def tiny(tmp_path):
    return write(tmp_path, "tiny.yaml", TINY_RECIPE)


def snapshot(directory: Path) -> dict:
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != runs.LOCK}


# ----------------------------------------------------------------------------- the lock


def test_a_second_process_on_a_directory_refuses_at_once_naming_the_holder(tiny, tmp_path):
    out = tmp_path / "run"
    with runs.exclusive(out / runs.LOCK, what="training run"):
        started = time.monotonic()
        with pytest.raises(RunError, match=rf"in use by another cnnbuilder training run \(pid {os.getpid()} on "):
            cnnbuilder.train(tiny, "digits", output=out, epochs=1, verbose=0)
        assert time.monotonic() - started < 60  # refused, not queued behind the holder
    assert snapshot(out) == {}  # the refused run wrote nothing


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    lock = tmp_path / "run" / runs.LOCK
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom cnnbuilder import runs\n"
         f"with runs.exclusive({str(lock)!r}, what='training run'):\n"
         "    print('held', flush=True)\n    time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match=f"pid {holder.pid} on "):
            with runs.exclusive(lock, what="training run"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with runs.exclusive(lock, what="training run"):  # the dead holder's lock is gone
        assert f"pid {os.getpid()} on " in lock.read_text()


# ------------------------------------------------------------------- damaged directories


def unfinished(tiny, out: Path, epochs_done: int = 1) -> None:
    """An unfinished run's files, as train writes them after `epochs_done` epochs."""
    settings = prepare(tiny, cnnbuilder.load_dataset("digits"), training={"epochs": 3}).settings
    (out / runs.RESUME_DIR).mkdir(parents=True)
    runs.atomic_write_json(out / runs.RUN, {**settings.identity(), **settings.record()})
    (out / runs.RESUME_DIR / f"epoch-{epochs_done}.keras").write_bytes(b"checkpoint")
    rows = [{"epoch": e, "loss": 1.0, "val_accuracy": 0.5} for e in range(1, epochs_done + 1)]
    runs.atomic_write_text(out / runs.HISTORY_CSV, runs.history_csv(rows))
    runs.atomic_write_json(out / runs.STATE, {
        **runs.fresh_state(), "epochs_done": epochs_done, "checkpoint": f"epoch-{epochs_done}.keras",
        "best": 0.5, "best_epoch": epochs_done})


DAMAGE = {
    "truncated state": (lambda out: (out / runs.STATE).write_text('{"epochs_do'), "cannot be read"),
    "state not an object": (lambda out: (out / runs.STATE).write_text("[1, 2]"), "not a JSON object"),
    "hand-edited epochs_done": (
        lambda out: (out / runs.STATE).write_text(json.dumps({**json.loads((out / runs.STATE).read_text()), "epochs_done": "2"})),
        "epochs_done is '2'"),
    "missing checkpoint": (lambda out: (out / runs.RESUME_DIR / "epoch-1.keras").unlink(), "checkpoint of epoch 1"),
    "history shorter than the state": (
        lambda out: (out / runs.HISTORY_CSV).write_text("epoch,loss\n"), "holds 0 of the 1 finished epochs"),
    "progress without state": (lambda out: (out / runs.STATE).unlink(), "but no state.json"),
    "state without run record": (lambda out: (out / runs.RUN).unlink(), "no run.json"),
    "truncated run record": (lambda out: (out / runs.RUN).write_text("{"), "cannot be read"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_damaged_unfinished_run_is_refused_with_a_way_out_and_left_as_it_was(tiny, tmp_path, damage):
    out = tmp_path / "run"
    unfinished(tiny, out)
    harm, message = DAMAGE[damage]
    harm(out)
    before = snapshot(out)
    with pytest.raises(RunError, match=message) as caught:
        cnnbuilder.train(tiny, "digits", output=out, epochs=3, verbose=0)
    assert "--overwrite" in str(caught.value)
    assert snapshot(out) == before  # never a silent restart that loses epochs


# ----------------------------------------------------------------------------- full disk


@pytest.mark.slow
def test_a_full_disk_while_committing_an_epoch_keeps_the_previous_one_resumable(tiny, tmp_path, monkeypatch):
    out = tmp_path / "run"
    save = runs.atomic_save_model
    calls = {"epoch": 0}

    def full_disk_at_epoch_2(model, path):
        if Path(path).name.startswith("epoch-"):
            calls["epoch"] += 1
            if calls["epoch"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        save(model, path)

    monkeypatch.setattr(runs, "atomic_save_model", full_disk_at_epoch_2)
    with pytest.raises(OSError, match="No space left"):
        cnnbuilder.train(tiny, "digits", output=out, epochs=3, batch_size=64, verbose=0)
    state = json.loads((out / runs.STATE).read_text())
    assert state["epochs_done"] == 1 and (out / runs.RESUME_DIR / state["checkpoint"]).is_file()
    assert not list(out.rglob("*.tmp*"))  # no half-written file left behind
    monkeypatch.setattr(runs, "atomic_save_model", save)
    result = cnnbuilder.train(tiny, "digits", output=out, epochs=3, batch_size=64, verbose=0)
    assert [int(r["epoch"]) for r in result.history] == [1, 2, 3]
    assert result.metrics["epochs_run"] == 3


def test_a_second_search_on_a_directory_refuses_naming_the_holder(tmp_path):
    out = tmp_path / "search"
    with runs.exclusive(out / runs.LOCK, what="search"):
        with pytest.raises(RunError, match=rf"in use by another cnnbuilder search \(pid {os.getpid()} on "):
            cnnbuilder.tune("densenet_bc100_k12", dataset="digits", output=out, max_trials=1,
                            epochs=1, input_shape=(16, 16, 3), depth=16, quiet=True)
    assert snapshot(out) == {}


def test_a_second_export_of_a_version_refuses_naming_the_first(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    version = tmp_path / "models" / "digits" / "1"
    with runs.exclusive(version.parent / f".1{runs.LOCK}", what="export"):
        with pytest.raises(RunError, match=rf"in use by another cnnbuilder export \(pid {os.getpid()} on "):
            cnnbuilder.export(model, version)
    assert not version.exists()


@pytest.mark.slow
def test_an_export_killed_at_any_moment_leaves_no_half_version_and_reruns(tmp_path):
    """kill -9 of `cnnbuilder export` at several moments: the version directory is either
    absent or complete (its metadata.json is written last), and the rerun succeeds."""
    import keras

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs)))
    source = tmp_path / "model.keras"
    model.save(source)
    base = tmp_path / "models"
    for attempt, delay in enumerate((1.0, 2.5, 4.0, 6.0)):
        version = base / str(attempt + 1)
        process = subprocess.Popen([*CLI, "export", str(source), "--output", str(version)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.kill()
        process.wait()
        if version.exists():  # published before the kill: complete
            assert (version / "metadata.json").is_file() and (version / "saved_model.pb").is_file()
        visible = [p.name for p in base.iterdir() if not p.name.startswith(".")] if base.exists() else []
        assert all((base / name / "metadata.json").is_file() for name in visible)
        done = subprocess.run([*CLI, "export", str(source), "--output", str(version), "--force"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (version / "metadata.json").is_file()
