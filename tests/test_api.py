"""The public Python API of DESIGN.md §4: every name resolves, `from cnnbuilder import *`
works, and `load_model` reads .keras files, run directories and search directories."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest

import cnnbuilder
from cnnbuilder.errors import RunError
from helpers import TINY_RECIPE, write

PUBLIC = ("list_recipes", "load_recipe", "build", "stage_outputs", "transfer_weights",
          "load_model", "train", "HyperRecipe", "tune", "export", "predict", "load_dataset",
          "CnnBuilderError", "RecipeError", "DataError", "RunError", "WeightsError")


def test_every_public_name_resolves():
    for name in PUBLIC:
        assert name in cnnbuilder.__all__, name
        assert getattr(cnnbuilder, name) is not None, name


def test_star_import_works_in_a_fresh_interpreter():
    code = "from cnnbuilder import *\nprint(load_model.__module__, build.__module__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["cnnbuilder.model.loading", "cnnbuilder.model.builder"]


@pytest.fixture
def saved(tmp_path):
    keras.utils.set_random_seed(0)
    model = cnnbuilder.build(write(tmp_path, "tiny.yaml", TINY_RECIPE), classes=3)
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    return model, run


def test_load_model_reads_a_file_a_run_and_a_search_directory(saved, tmp_path):
    model, run = saved
    search = tmp_path / "search"
    (search / "best").mkdir(parents=True)
    (search / "best" / "model.keras").write_bytes((run / "model.keras").read_bytes())
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    for path in (run / "model.keras", run, search):
        loaded = cnnbuilder.load_model(path)
        np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, rtol=1e-6, atol=1e-6)


def test_load_model_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        cnnbuilder.load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="holds no model.keras"):
        cnnbuilder.load_model(tmp_path / "empty")
    (tmp_path / "weights.h5").write_bytes(b"not a model")
    with pytest.raises(RunError, match="not a .keras file"):
        cnnbuilder.load_model(tmp_path / "weights.h5")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(RunError, match="cannot load the Keras model"):
        cnnbuilder.load_model(tmp_path / "broken.keras")


@pytest.mark.slow
def test_a_finished_run_loads_where_cnnbuilder_is_not_installed(tmp_path):
    """DESIGN.md §6: model.keras of a run trained with cnnbuilder's own optimizer (l2
    weight decay), schedule and smoothed loss loads with plain Keras in safe mode."""
    out = tmp_path / "run"
    cnnbuilder.train(write(tmp_path, "tiny.yaml", TINY_RECIPE), "digits", output=out, epochs=1,
                     batch_size=128, verbose=0, tensorboard=False,
                     training={"weight_decay_mode": "l2", "label_smoothing": 0.1, "schedule": "step"})
    blocker = tmp_path / "blocked" / "cnnbuilder"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('cnnbuilder is not installed here')\n")
    code = ("import keras\n"
            f"m = keras.saving.load_model({str(out / 'model.keras')!r}, safe_mode=True)\n"
            "print(m.output_shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(blocker.parent)},
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(None, 10)" in done.stdout
