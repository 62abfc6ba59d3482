"""What cnnbuilder.tuning.keras_tuner_hooks relies on in KerasTuner's private code.

Each test fails when a KerasTuner release changes one behaviour the adapter relies on
(checked against KerasTuner 1.4.8): update the adapter, its docstring and these tests
together. No model is built: the trials are plain functions of their hyperparameters.
"""

from __future__ import annotations

import inspect
import json

import keras_tuner as kt
import pytest
from keras_tuner.engine.trial import TrialStatus

from cnnbuilder.tuning import keras_tuner_hooks as hooks


class Space(kt.HyperModel):
    """A hypermodel that declares one choice and must never be built by KerasTuner."""

    def declare_hyperparameters(self, hp):
        return {"x": hp.Choice("x", [1, 2, 3])}

    def build(self, hp):
        raise AssertionError("KerasTuner built the hypermodel to declare its space")


class FunctionTuner(hooks.TunerHooks):
    """Scores a trial as x; x == 2 fails (FailedTrialError), x == 3 crashes (ValueError)."""

    invalid = []

    def run_trial(self, trial, *args, **kwargs):
        x = trial.hyperparameters.get("x")
        if x == 2:
            raise kt.errors.FailedTrialError("two is refused")
        if x == 3:
            raise ValueError("three crashes")
        return {"score": float(x)}

    def on_invalid_trial(self, trial):
        self.invalid.append(trial.trial_id)


def oracle(max_trials=3, retries=0):
    return kt.oracles.GridSearchOracle(objective=kt.Objective("score", "max"),
                                       max_trials=max_trials, seed=1,
                                       max_retries_per_trial=retries,
                                       max_consecutive_failed_trials=None)


def test_the_overridden_hooks_exist_with_the_signatures_relied_on():
    base = kt.engine.base_tuner.BaseTuner
    for name, parameters in [("_get_tuner_fname", ["self"]), ("_populate_initial_space", ["self"]),
                             ("_try_run_and_update_trial", ["self", "trial", "fit_args", "fit_kwargs"]),
                             ("_run_and_update_trial", ["self", "trial", "fit_args", "fit_kwargs"])]:
        assert list(inspect.signature(getattr(base, name)).parameters) == parameters, name
    # The hooks are overridden on the class KerasTuner's own code calls them on.
    assert hooks.TunerHooks._get_tuner_fname is not base._get_tuner_fname
    assert hooks.TunerHooks._populate_initial_space is not base._populate_initial_space


def test_space_is_declared_without_a_build_and_state_goes_to_one_file(tmp_path, capsys):
    tuner = FunctionTuner(oracle=oracle(), hypermodel=Space(), directory=str(tmp_path),
                          project_name="p")
    assert [hp.name for hp in tuner.oracle.get_space().space] == ["x"]
    tuner.search(verbose=0)
    assert (tmp_path / "p" / hooks.OWNER_STATE).exists()
    assert not (tmp_path / "p" / "tuner0.json").exists()
    # A second tuner over the same project reloads it from that file: no trial runs again.
    again = FunctionTuner(oracle=oracle(), hypermodel=Space(), directory=str(tmp_path),
                          project_name="p")
    assert f"Reloading Tuner from {tmp_path / 'p' / hooks.OWNER_STATE}" in capsys.readouterr().out
    assert len(again.oracle.trials) == 3


def test_failed_trials_are_failed_in_one_line_and_crashes_retried(tmp_path, capsys):
    FunctionTuner.invalid = []
    tuner = FunctionTuner(oracle=oracle(retries=1), hypermodel=Space(), directory=str(tmp_path),
                          project_name="p")
    tuner.search(verbose=0)
    trials = {t.hyperparameters.get("x"): t for t in tuner.oracle.trials.values()}
    assert trials[1].status == TrialStatus.COMPLETED and trials[1].score == 1.0
    assert trials[2].status == TrialStatus.FAILED and trials[2].message == "two is refused"
    # A crash is INVALID: KerasTuner retries it (once here), then records it as failed.
    assert trials[3].status == TrialStatus.FAILED and "ValueError: three crashes" in trials[3].message
    assert FunctionTuner.invalid == [trials[3].trial_id] * 2
    assert "Traceback" not in capsys.readouterr().out  # KerasTuner would print one per failure


def test_retry_queue_holds_the_trials_handed_out_again(tmp_path):
    o = _owned(oracle(retries=1), tmp_path)
    trial = o.create_trial("tuner0")
    trial.status = TrialStatus.INVALID
    o.end_trial(trial)
    assert hooks.retry_queue(o) == [trial.trial_id]
    again = o.create_trial("tuner1")
    assert again.trial_id == trial.trial_id and hooks.retry_queue(o) == []


def test_tried_values_are_known_and_fresh_random_values_avoid_them(tmp_path):
    o = _owned(kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=5,
                                             seed=3), tmp_path)
    tried = []
    for _ in range(3):
        values = hooks.random_values(o)
        assert values is not None and not hooks.tried_before(o, values)
        trial = o.create_trial(f"tuner{len(tried)}")
        tried.append(trial.hyperparameters.values)
        assert hooks.tried_before(o, trial.hyperparameters.values)
    assert sorted(v["x"] for v in tried) == [1, 2, 3]
    assert hooks.random_values(o) is None  # the space is exhausted


def test_trial_numbers_are_the_ones_keras_tuner_displays(tmp_path, capsys):
    o = _owned(kt.oracles.RandomSearchOracle(objective=kt.Objective("score", "max"), max_trials=12,
                                             seed=3), tmp_path)
    o.verbose = 1
    ids = [o.create_trial(f"tuner{i}").trial_id for i in range(3)]
    printed = capsys.readouterr().out
    assert ids == ["00", "01", "02"]
    assert [f"Running Trial #{hooks.trial_number(i)}" in printed for i in ids] == [True] * 3
    assert [hooks.trial_number(i) for i in ids] == [1, 2, 3]


def test_hyperband_sets_the_documented_epoch_keys(tmp_path):
    o = _owned(kt.oracles.HyperbandOracle(objective=kt.Objective("score", "max"), max_epochs=3,
                                          factor=3, seed=1), tmp_path)
    values = o.create_trial("tuner0").hyperparameters.values
    assert {"tuner/epochs", "tuner/initial_epoch"} <= set(values)


@pytest.mark.parametrize("environment, expected", [
    ({}, "local"),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1", "KERASTUNER_TUNER_ID": "chief"}, "chief"),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "1", "KERASTUNER_TUNER_ID": "tuner0"}, "worker"),
    ({"KERASTUNER_ORACLE_IP": "127.0.0.1"}, RuntimeError),
])
def test_role_reads_keras_tuner_environment(monkeypatch, environment, expected):
    for name in ("KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if expected is RuntimeError:
        with pytest.raises(RuntimeError, match="KERASTUNER_ORACLE_PORT"):
            hooks.role()
    else:
        assert hooks.role() == expected


def test_oracle_service_serves_the_oracle_and_says_when_the_chief_may_stop(tmp_path):
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos

    o = _owned(oracle(max_trials=1), tmp_path)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = hooks.oracle_service(o, server)
    request = protos.get_service().CreateTrialRequest
    first = servicer.CreateTrial(request(tuner_id="tuner0"), None).trial
    assert first.status == protos.get_proto().TrialStatus.RUNNING and not servicer.stop_triggered
    assert not hooks.chief_may_stop(o)  # a trial is running
    trial = o.trials[first.trial_id]
    trial.status = TrialStatus.COMPLETED
    o.update_trial(trial.trial_id, {"score": 1.0})
    o.end_trial(trial)
    servicer.CreateTrial(request(tuner_id="tuner0"), None)  # max_trials reached: STOPPED
    assert servicer.stop_triggered and hooks.chief_may_stop(o)
    server.stop(grace=0)


def _owned(o, tmp_path):
    """`o` with a project directory and the space declared, as a tuner gives it."""
    FunctionTuner(oracle=o, hypermodel=Space(), directory=str(tmp_path), project_name="p")
    return o


def test_owner_state_file_is_json(tmp_path):
    tuner = FunctionTuner(oracle=oracle(max_trials=1), hypermodel=Space(), directory=str(tmp_path),
                          project_name="p")
    tuner.save()
    assert isinstance(json.loads((tmp_path / "p" / hooks.OWNER_STATE).read_text()), dict)


def test_trial_tensorboard_points_at_the_trial_and_adds_its_hparams(tmp_path):
    tuner = FunctionTuner(oracle=oracle(), hypermodel=Space(), directory=str(tmp_path),
                          project_name="p")
    trial = tuner.oracle.create_trial("tuner0")
    board, hparams = hooks.trial_tensorboard(tuner, trial, tmp_path / "logs")
    assert type(board).__name__ == "TensorBoard"
    assert board.log_dir == str(tmp_path / "logs" / trial.trial_id / "execution0")
    # TensorBoard's HParams callback (test_tensorboard.py reads the values it writes).
    from tensorboard.plugins.hparams import api as hparams_api

    assert isinstance(hparams, hparams_api.KerasCallback)
