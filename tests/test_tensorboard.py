"""TensorBoard logs: `train` writes DIR/logs/ and a resumed run continues them; `tune`
writes one run per trial with its hyperparameters for the HParams dashboard."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import cnnbuilder
from cnnbuilder import runs
from cnnbuilder.training import commit
from helpers import TINY_RECIPE, write

pytestmark = pytest.mark.slow


def events(directory: Path) -> list[tuple[str, str, int, object]]:
    """(run, tag, step, value) of every summary under `directory`, in file order."""
    found = []
    for path in sorted(directory.rglob("events.out.tfevents.*")):
        run = str(path.parent.relative_to(directory))
        for event in tf.data.TFRecordDataset(str(path)):
            parsed = tf.compat.v1.Event.FromString(event.numpy())
            for value in parsed.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                content = (value.metadata.plugin_data.content if plugin == "hparams"
                           else tf.make_ndarray(value.tensor))
                found.append((run, value.tag, parsed.step, content))
    return found


def steps(found, run: str, tag: str) -> list[int]:
    return sorted(step for r, t, step, _ in found if r == run and t == tag)


@pytest.fixture(scope="module")
def small_digits():
    data = cnnbuilder.load_dataset("digits")
    (x, y), (vx, vy) = data.train, data.validation
    return dataclasses.replace(data, train=(x[:256], y[:256]), validation=(vx[:64], vy[:64]))


def test_train_logs_continue_across_a_resume(tmp_path, small_digits, monkeypatch):
    recipe = write(tmp_path, "tiny.yaml", TINY_RECIPE)
    out = tmp_path / "run"
    settings = dict(output=out, epochs=3, batch_size=64, verbose=0)
    begin = commit.EpochCommit.on_epoch_begin

    def interrupted_at_the_third_epoch(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt
        begin(self, epoch, logs)

    monkeypatch.setattr(commit.EpochCommit, "on_epoch_begin", interrupted_at_the_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        cnnbuilder.train(recipe, small_digits, **settings)
    monkeypatch.setattr(commit.EpochCommit, "on_epoch_begin", begin)
    cnnbuilder.train(recipe, small_digits, **settings)  # resumes at epoch 3

    found = events(out / "logs")
    for run in ("train", "validation"):
        assert steps(found, run, "epoch_loss") == [0, 1, 2], run
        assert steps(found, run, "epoch_accuracy") == [0, 1, 2], run
    rates = [float(v) for r, t, s, v in sorted(found, key=lambda e: e[2])
             if t == "epoch_learning_rate"]
    assert len(rates) == 3 and rates == sorted(rates, reverse=True) and rates[2] < rates[0]
    # The logged losses are the history's: the same epochs, not a restarted count.
    history = runs.read_history(out / "history.csv")
    logged = {s: float(v) for r, t, s, v in found if r == "train" and t == "epoch_loss"}
    np.testing.assert_allclose([logged[i] for i in range(3)],
                               [float(row["loss"]) for row in history], rtol=1e-6)
    images = [(s, v) for r, t, s, v in found if t == "input_images"]
    assert [s for s, _ in images] == [0, 2]  # the start and the resumed start
    # An image summary holds width, height, then the encoded images.
    assert images[0][1][:2].tolist() == [b"16", b"16"] and len(images[0][1]) > 2


def test_no_tensorboard_writes_no_logs_and_the_same_training(tmp_path, small_digits):
    recipe = write(tmp_path, "tiny.yaml", TINY_RECIPE)
    rows = {}
    for tensorboard in (True, False):
        out = tmp_path / f"run-{tensorboard}"
        cnnbuilder.train(recipe, small_digits, output=out, epochs=1, batch_size=64, verbose=0,
                         tensorboard=tensorboard)
        assert (out / "logs").exists() == tensorboard
        rows[tensorboard] = runs.read_history(out / "history.csv")
    # Showing images reads a fresh copy of the pipeline: the training batches are unchanged.
    np.testing.assert_allclose(float(rows[True][0]["loss"]), float(rows[False][0]["loss"]), rtol=1e-4)


def test_each_trial_is_a_tensorboard_run_with_its_hyperparameters(tmp_path, small_digits):
    recipe = write(tmp_path, "mini.yaml", """\
        name: mini
        description: one convolution and a classifier
        metadata: {input_shape: [8, 8, 1], classes: 10}
        params: {width: 4}
        stem:
          - conv: {filters: "${width}", kernel: 3}
          - activation: relu
        head:
          - global_pool: avg
          - fc: {units: "${classes}", activation: "${classifier_activation}"}
        tune:
          width: {choice: [2, 6]}
        """)
    out = tmp_path / "search"
    result = cnnbuilder.tune(recipe, dataset=small_digits, output=out, max_trials=2, epochs=1,
                             batch_size=64, quiet=True)
    trials = {str(t["trial_id"]): t for t in result["trials"]}
    runs = sorted(p.name for p in (out / "logs").iterdir())
    assert runs == sorted(trials)
    for trial_id, trial in trials.items():
        found = events(out / "logs" / trial_id / "execution0")
        assert steps(found, "train", "epoch_loss") == [0]
        assert steps(found, "validation", "epoch_accuracy") == [0]
        hparams = [content for _, t, _, content in found if t == "_hparams_/session_start_info"]
        from tensorboard.plugins.hparams import plugin_data_pb2

        (start,) = [plugin_data_pb2.HParamsPluginData.FromString(c).session_start_info
                    for c in hparams]
        assert start.hparams["width"].number_value == trial["hyperparameters"]["width"]
