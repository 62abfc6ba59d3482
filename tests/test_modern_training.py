"""Issue 24's training on its semantics: the weights' moving average follows its formula,
stochastic depth drops whole examples at its rate and is the identity in inference,
mixup/CutMix give soft targets drawn from (seed, epoch, position), the soft-target loss
and accuracy, RandAugment and random erasing; a resumed EMA + mixup + drop_path run
equals the uninterrupted one."""

from __future__ import annotations

from dataclasses import replace

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnbuilder
from cnnbuilder.data import make_pipeline
from cnnbuilder.data.mixing import mix_batch
from cnnbuilder.data.randaugment import randaugment, random_erasing
from cnnbuilder.errors import RecipeError
from cnnbuilder.model.layers import DropPath
from cnnbuilder.recipe.training import TrainingConfig, training_config
from cnnbuilder.training.callbacks import EpochSeeds
from cnnbuilder.training.losses import SoftTargetAccuracy, SoftTargetLoss
from cnnbuilder.training.optimizers import make_optimizer
from helpers import TINY_RECIPE, write


def _tiny_dense():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs))


@pytest.mark.parametrize("warmup", [False, True])
def test_the_weight_average_after_n_steps_is_the_formula(warmup):
    decay, steps = 0.9, 6
    config = replace(TrainingConfig(), optimizer="sgd", learning_rate=0.1, weight_decay=0,
                     schedule="constant", ema={"decay": decay, "warmup": warmup})
    model = _tiny_dense()
    model.compile(optimizer=make_optimizer(config, steps), loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    expected = None
    for step in range(steps):
        model.train_on_batch(x, y)
        weights = [np.asarray(w) for w in model.trainable_weights]
        rate = min(decay, (1 + step) / (10 + step)) if warmup else decay
        expected = weights if expected is None else [
            rate * a + (1 - rate) * w for a, w in zip(expected, weights)]
    averages = [np.asarray(a) for a in model.optimizer._model_variables_moving_average]
    for average, want, trained in zip(averages, expected, model.trainable_weights):
        np.testing.assert_allclose(average, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(average, np.asarray(trained))  # an average, not the weights


def test_validation_and_the_best_model_use_the_averaged_weights():
    """Validation scores the averages (Keras' SwapEMAWeights among the run's callbacks) and
    the best epoch's model is saved with them, the trained weights restored after."""
    from cnnbuilder.recipe.training_plan import layout
    from cnnbuilder.training.callbacks import schedule_callbacks
    from cnnbuilder.training.commit import averaged_weights

    config = replace(TrainingConfig(), schedule="constant", ema={"decay": 0.5, "warmup": False})
    assert any(isinstance(c, keras.callbacks.SwapEMAWeights)
               for c in schedule_callbacks(config, layout(config, 4)))
    assert not any(isinstance(c, keras.callbacks.SwapEMAWeights)
                   for c in schedule_callbacks(TrainingConfig(), layout(TrainingConfig(), 4)))
    model = _tiny_dense()
    model.compile(optimizer=make_optimizer(config, 4), loss="mse")
    x = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    for _ in range(3):
        model.train_on_batch(x, np.zeros((8, 2), "float32"))
    trained = [np.asarray(w) for w in model.trainable_weights]
    averages = [np.asarray(a) for a in model.optimizer._model_variables_moving_average]
    with averaged_weights(model):
        for weight, average in zip(model.trainable_weights, averages):
            np.testing.assert_array_equal(np.asarray(weight), average)
    for weight, value in zip(model.trainable_weights, trained):
        np.testing.assert_array_equal(np.asarray(weight), value)


def test_drop_path_drops_whole_examples_at_its_rate_and_is_identity_in_inference():
    layer = DropPath(0.3, seed=1)
    x = np.ones((20_000, 2, 2, 3), "float32")
    assert np.array_equal(np.asarray(layer(x, training=False)), x)
    out = np.asarray(layer(x, training=True))
    per_example = out.reshape(len(x), -1)
    assert np.all(per_example.min(1) == per_example.max(1))  # all of an example, or none
    dropped = np.mean(per_example[:, 0] == 0)
    assert abs(dropped - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(x))
    np.testing.assert_allclose(per_example[per_example[:, 0] > 0, 0], 1 / 0.7, rtol=1e-6)


def _settings_model(recipe, drop_path, rule="linear"):
    """The network a run of `recipe` with `drop_path` builds (`RunSettings` -> `Job.build`)."""
    from cnnbuilder.data import load_dataset
    from cnnbuilder.training.engine import prepare

    data = load_dataset((np.zeros((8, 32, 32, 3), "uint8"), np.arange(8) % 4))
    job = prepare(recipe, data, training={"drop_path": drop_path, "drop_path_rule": rule})
    return job.build()


def test_drop_path_rates_fall_linearly_over_the_units_and_inference_is_unchanged(tmp_path):
    recipe = write(tmp_path, "tiny.yaml", TINY_RECIPE.replace("units: [1, 1]", "units: [2, 2]"))
    model = _settings_model(recipe, 0.2)
    layers = [layer for layer in model.layers if isinstance(layer, DropPath)]
    assert [round(layer.rate, 6) for layer in layers] == [0.05, 0.1, 0.15, 0.2]  # 0.2·l/4
    assert [layer.rate for layer in _settings_model(recipe, 0.2, "uniform").layers
            if isinstance(layer, DropPath)] == [0.2] * 4
    plain = _settings_model(recipe, 0.0)
    assert not any(isinstance(layer, DropPath) for layer in plain.layers)
    for layer in plain.layers:  # by name: the extra layers change the graph's order
        layer.set_weights(model.get_layer(layer.name).get_weights())
    x = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x, training=False)),
                               np.asarray(plain(x, training=False)), rtol=1e-6, atol=1e-6)
    # Serializable: the .keras file loads in safe mode with the same rates and outputs.
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6, atol=1e-6)
    # EpochSeeds reaches the drop-path generators, so a resumed epoch redraws the same drops.
    seeds = EpochSeeds(3)
    seeds.set_model(model)
    seeds.on_epoch_begin(2)
    first = np.asarray(model(x, training=True))
    seeds.on_epoch_begin(2)
    np.testing.assert_array_equal(np.asarray(model(x, training=True)), first)


def test_drop_path_also_drops_the_new_features_of_dense_layers():
    model = _settings_model("densenet40_k12", 0.1)
    names = [layer.name for layer in model.layers if isinstance(layer, DropPath)]
    assert len(names) == 36 and all(name.endswith("_drop_path") for name in names)  # 3 × 12 layers


@pytest.mark.parametrize("recipe", ["vgg16", "plain20"])
def test_drop_path_on_a_network_without_branches_is_refused(recipe):
    with pytest.raises(RecipeError, match="no residual units or dense layers"):
        _settings_model(recipe, 0.1)


def _batches(augment, epochs, seed=4):
    x = np.random.default_rng(0).integers(0, 255, (40, 8, 8, 3)).astype("uint8")
    y = np.arange(40) % 5
    pipeline = make_pipeline((x, y), input_shape=(8, 8, 3), batch_size=16, training=True,
                             augment=augment, seed=seed, epochs=epochs)
    return [(np.asarray(a), np.asarray(b)) for a, b in pipeline]


def test_mixing_gives_soft_targets_drawn_from_seed_epoch_and_position():
    augment = ["flip", {"mixup": {"alpha": 0.4, "classes": 5}},
               {"cutmix": {"alpha": 1.0, "switch": 0.5, "classes": 5}}]
    both = _batches(augment, (0, 2))
    assert all(labels.shape == (len(images), 5) for images, labels in both)
    np.testing.assert_allclose([labels.sum(1) for _, labels in both][0], 1.0, rtol=1e-6)
    mixed = np.concatenate([labels for _, labels in both])
    assert np.mean(mixed.max(1) < 1 - 1e-6) > 0.3  # most rows are mixes, not one-hots
    # A run resumed at epoch 1 draws what the uninterrupted run drew there.
    resumed = _batches(augment, (1, 2))
    for (a, b), (c, d) in zip(resumed, both[len(both) - len(resumed):]):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_cutmix_pastes_a_box_and_mixes_the_targets_by_its_area():
    images = tf.reshape(tf.range(4 * 10 * 10 * 1, dtype=tf.float32), (4, 10, 10, 1))
    labels = tf.constant([0, 1, 2, 3])
    for seed in range(5):
        mixed, targets = mix_batch(images, labels, tf.constant([seed, 7], tf.int64), classes=4,
                                   cutmix={"alpha": 1.0})
        mixed, targets = np.asarray(mixed), np.asarray(targets)
        pasted = mixed != np.asarray(images)
        area = pasted[0].mean()
        np.testing.assert_array_equal(mixed[pasted], np.asarray(images)[::-1][pasted])
        np.testing.assert_allclose(targets[0, 0], 1 - area, atol=1e-6)
        np.testing.assert_allclose(targets[0, 3], area, atol=1e-6)


def test_mixup_is_a_convex_combination_with_the_batch_reversed():
    images = tf.random.uniform((6, 4, 4, 3), seed=1)
    mixed, targets = mix_batch(images, tf.range(6), tf.constant([3, 3], tf.int64), classes=6,
                               mixup={"alpha": 0.5})
    lam = float(targets[0, 0])
    np.testing.assert_allclose(np.asarray(mixed), lam * np.asarray(images)
                               + (1 - lam) * np.asarray(images)[::-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(targets[0, 5]), 1 - lam, rtol=1e-6)


def test_soft_target_loss_and_accuracy_take_labels_and_soft_targets():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], "float32")
    labels = np.array([0, 1])
    one_hot = np.eye(3, dtype="float32")[labels]
    sparse = float(keras.losses.SparseCategoricalCrossentropy()(labels, probs))
    assert float(SoftTargetLoss("ce")(labels, probs)) == pytest.approx(sparse, rel=1e-6)
    assert float(SoftTargetLoss("ce")(one_hot, probs)) == pytest.approx(sparse, rel=1e-6)
    bce = -np.sum(one_hot * np.log(probs) + (1 - one_hot) * np.log(1 - probs), 1).mean()
    assert float(SoftTargetLoss("bce")(labels, probs)) == pytest.approx(bce, rel=1e-4)
    soft = np.array([[0.6, 0.4, 0.0], [0.0, 0.45, 0.55]], "float32")  # dominant: 0 and 2
    for targets, expected in ((labels, 0.5), (soft, 1.0)):
        metric = SoftTargetAccuracy()
        metric.update_state(targets, probs)
        assert float(metric.result()) == pytest.approx(expected)


def test_randaugment_and_random_erasing_are_stateless_and_stay_in_range():
    images = tf.random.uniform((16, 12, 12, 3), seed=2)
    seed = tf.constant([1, 2], tf.int64)
    out = np.asarray(randaugment(images, seed, n=2, m=9, std=0.5))
    np.testing.assert_array_equal(out, np.asarray(randaugment(images, seed, n=2, m=9, std=0.5)))
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert not np.array_equal(out, np.asarray(images))
    np.testing.assert_array_equal(np.asarray(randaugment(images, seed, p=0.0)), np.asarray(images))
    erased = np.asarray(random_erasing(images, seed, p=1.0))
    changed = (erased != np.asarray(images)).any(-1).reshape(16, -1).mean(1)
    assert np.all((changed > 0) & (changed < 0.4))  # a box of 2 % to 1/3 of each image


def test_settings_reach_the_run(tmp_path):
    """A preset through train(): LAMB, the soft-target BCE, EMA validation callbacks, and a
    preset that does not fit the recipe refused before anything is written."""
    from cnnbuilder.data import load_dataset
    from cnnbuilder.training.engine import prepare
    from cnnbuilder.training.optimizers import loss_kind

    data = load_dataset((np.zeros((8, 32, 32, 3), "uint8"), np.arange(8) % 4))
    job = prepare("resnet20", data, training={"preset": "rsb_a3", "ema": {"decay": 0.99}})
    model = job.build()
    job.compile(model)
    assert type(model.optimizer).__name__ == "Lamb" and model.optimizer.use_ema
    assert loss_kind(job.config) == "bce" and isinstance(model.loss, SoftTargetLoss)
    with pytest.raises(RecipeError, match="residual families"):
        prepare("vgg16", data, training={"preset": "rsb_a1"})
    assert training_config({}, ema=0.5).ema == {"decay": 0.5, "warmup": False}
    assert cnnbuilder  # the package API is what the slow test below trains through


@pytest.mark.parametrize(("argv", "expected"), [
    (["train", "resnet20", "--training-preset", "rsb_a9"], "--training-preset: unknown training preset 'rsb_a9'"),
    (["train", "vgg16", "--training-preset", "rsb_a1"], "--training-preset rsb_a1: the preset rsb_a1 is a training procedure for the residual"),
    (["show", "vgg16", "--training", "--training-preset", "rsb_a2"], "--training-preset rsb_a2"),
    (["show", "resnet20", "--training", "ema={decay: 1.5}"], "--training: ema.decay = 1.5"),
])
def test_the_command_line_refuses_bad_modern_settings_with_exit_2(tmp_path, argv, expected):
    import subprocess
    import sys

    if argv[0] == "train":
        argv = argv + ["--dataset", "digits", "--output", str(tmp_path / "run")]
    done = subprocess.run([sys.executable, "-m", "cnnbuilder.cli", *argv], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.slow
def test_a_resumed_ema_mixup_drop_path_run_equals_the_uninterrupted_one(tmp_path):
    """The EMA averages (optimizer variables), the mixed batches and the drop-path draws all
    replay: a run killed after epoch 2 and resumed ends where the uninterrupted one does."""
    import signal

    from test_runs import _comparable, _interrupt_after

    recipe = write(tmp_path, "tiny.yaml", TINY_RECIPE)
    training = ["ema={decay: 0.9, warmup: true}", "drop_path=0.3", "loss=bce",
                "augment=[translate, randaugment, {mixup: {alpha: 0.4}}, cutmix]"]
    args = dict(epochs=4, batch_size=64, seed=5, learning_rate=0.05)
    overrides = {"ema": {"decay": 0.9, "warmup": True}, "drop_path": 0.3, "loss": "bce",
                 "augment": ["translate", "randaugment", {"mixup": {"alpha": 0.4}}, "cutmix"]}
    whole = cnnbuilder.train(recipe, "digits", output=tmp_path / "whole", verbose=0,
                             tensorboard=False, training=overrides, **args)
    import os
    import subprocess
    import sys

    out = tmp_path / "cut"
    command = [sys.executable, "-m", "cnnbuilder.cli", "train", str(recipe), "--dataset", "digits",
               "--output", str(out), "--epochs", "4", "--batch-size", "64", "--seed", "5",
               "--learning-rate", "0.05", "--quiet", "--no-tensorboard"]
    for item in training:
        command += ["--training", item]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    _interrupt_after(process, out, 2, signal.SIGKILL)
    resumed = cnnbuilder.train(recipe, "digits", output=out, verbose=0, tensorboard=False,
                               training=overrides, **args)
    for mine, theirs in zip(_comparable(resumed.history), _comparable(whole.history)):
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (mine["epoch"], key)
    for mine, theirs in zip(resumed.model.weights, whole.model.weights):
        np.testing.assert_allclose(np.asarray(mine), np.asarray(theirs), rtol=1e-4, atol=1e-5)
    # The finished file: Identity in place of each DropPath, Keras' SGD with the run's EMA,
    # loadable in safe mode where cnnbuilder is never imported.
    code = ("import sys, keras\n"
            f"m = keras.saving.load_model({str(out / 'model.keras')!r}, safe_mode=True)\n"
            "assert not [k for k in sys.modules if k.startswith('cnnbuilder')]\n"
            "kinds = {type(l).__name__ for l in m.layers if l.name.endswith('_drop_path')}\n"
            "print(sorted(kinds), type(m.optimizer).__name__, m.optimizer.use_ema, m.optimizer.ema_momentum)\n")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-4:] == ["['Identity']", "SGD", "True", "0.9"]


JAX_EMA = """
import json, sys
from dataclasses import replace
import numpy as np, keras
sys.path.insert(0, sys.argv[1])
assert keras.backend.backend() == "jax"
import cnnbuilder
from cnnbuilder.recipe.training import TrainingConfig
from cnnbuilder.training.optimizers import make_optimizer
from helpers import TINY_RECIPE, write
from pathlib import Path
config = replace(TrainingConfig(), schedule="constant", weight_decay=0, ema={"decay": 0.8, "warmup": False})
inputs = keras.Input((3,))
model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
model.compile(optimizer=make_optimizer(config, 5), loss="mse", jit_compile=True)
x = np.random.default_rng(0).normal(size=(8, 3)).astype("float32")
expected = None
for _ in range(5):
    model.train_on_batch(x, np.ones((8, 2), "float32"))
    w = [np.asarray(v) for v in model.trainable_weights]
    expected = w if expected is None else [0.8 * a + 0.2 * b for a, b in zip(expected, w)]
worst = max(float(np.max(np.abs(np.asarray(a) - e)))
            for a, e in zip(model.optimizer._model_variables_moving_average, expected))
recipe = write(Path(sys.argv[2]), "tiny.yaml", TINY_RECIPE)
result = cnnbuilder.train(recipe, "digits", output=Path(sys.argv[2]) / "run", epochs=2, batch_size=64,
                          verbose=0, tensorboard=False,
                          training={"ema": {"decay": 0.9}, "drop_path": 0.2, "loss": "bce",
                                    "augment": ["translate", "randaugment", "mixup", "cutmix"]})
print(json.dumps({"worst": worst, "accuracy": result.metrics["test_accuracy"]}))
"""


@pytest.mark.slow
def test_ema_mixup_and_drop_path_train_on_jax(tmp_path):
    """Keras' EMA follows its formula in JAX's compiled step too, and a run with EMA,
    stochastic depth and mixing trains to the end on JAX."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", JAX_EMA, str(Path(__file__).parent), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["worst"] <= 1e-5
    assert 0 <= report["accuracy"] <= 1 and (tmp_path / "run" / "model.keras").is_file()

