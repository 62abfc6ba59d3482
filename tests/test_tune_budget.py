"""Issue 23, the tuning budget in the user's terms: `max_trials` counts trained trials;
skipped ones (over `max_params`) are recorded as skipped, bounded apart (10 x the budget)
and never shown as the best; the best model's name says its hyperparameters."""

from __future__ import annotations

import dataclasses
import json
import re

import keras
import pytest

import cnnbuilder
from cnnbuilder.errors import CnnBuilderError
from cnnbuilder.tuning.oracles import MAX_SKIPPED_PER_TRIAL

RECIPE = """\
name: tiny
metadata: {input_shape: [8, 8, 1], classes: 10}
params:
  width: 2
stem:
  - conv: {filters: "${width}", kernel: 3}
head:
  - global_pool: avg
  - fc: {units: "${classes}"}
tune:
  width: SPACE
"""


@pytest.fixture(scope="module")
def small_digits():
    data = cnnbuilder.load_dataset("digits")
    (x, y), (vx, vy) = data.train, data.validation
    return dataclasses.replace(data, train=(x[:64], y[:64]), validation=(vx[:32], vy[:32]))


def recipe(tmp_path, space: str):
    path = tmp_path / "tiny.yaml"
    path.write_text(RECIPE.replace("SPACE", space))
    return path


@pytest.mark.slow
def test_max_trials_counts_trained_trials_and_skips_are_recorded_as_skipped(tmp_path, small_digits, capsys):
    # widths 2 and 3 train (under 200 parameters), the others are over --max-params
    path = recipe(tmp_path, "{choice: [40, 2, 50, 60, 3, 70, 80, 90]}")
    out = tmp_path / "search"
    result = cnnbuilder.tune(path, dataset=small_digits, output=out, max_trials=2, epochs=1,
                             batch_size=32, max_params=200, seed=1)
    printed = capsys.readouterr().out
    assert "\x1b" not in printed  # KerasTuner's "notebook" clearing, outside a notebook
    trials = result["trials"]
    trained = [t for t in trials if t["status"] != "skipped"]
    skipped = [t for t in trials if t["status"] == "skipped"]
    assert sorted(t["hyperparameters"]["width"] for t in trained) == [2, 3]
    assert skipped and all(t["hyperparameters"]["width"] >= 40 for t in skipped)
    saved = json.loads((out / "tuning.json").read_text())
    assert {t["status"] for t in saved["trials"]} == {"completed", "skipped"}
    log = (out / "search.log").read_text()
    assert len(re.findall(r"end SKIPPED: [\d,]+ parameters, over the budget of 200", log)) == len(skipped)
    assert "end FAILED" not in log
    for trial in skipped:
        assert f"Trial {trial['number']} skipped: " in printed
    # KerasTuner's "Best ... So Far" never names a skipped trial's score (None)
    scores = re.findall(r"Best val_accuracy So Far: (\S+)", printed)
    assert scores and all(s == "None" or float(s) >= 0 for s in scores)
    assert result["best"]["status"] == "completed"
    best = keras.models.load_model(out / "best" / "model.keras", compile=False)
    assert best.name == f"tiny_width{result['best']['hyperparameters']['width']}"


def test_a_search_that_only_skips_stops_at_ten_times_its_budget(tmp_path, small_digits):
    path = recipe(tmp_path, "{int: [40, 200]}")
    out = tmp_path / "search"
    with pytest.raises(CnnBuilderError):
        cnnbuilder.tune(path, dataset=small_digits, output=out, max_trials=1, epochs=1,
                        batch_size=32, max_params=100, seed=5, quiet=True)
    log = (out / "search.log").read_text()
    assert log.count("end SKIPPED") == MAX_SKIPPED_PER_TRIAL
    assert f"search stopped: {MAX_SKIPPED_PER_TRIAL} trials skipped" in log
