"""The only place cnnbuilder touches KerasTuner's private names.

Everything else in `cnnbuilder.tuning` uses KerasTuner's public API (`HyperModel.build/fit`,
`Tuner.run_trial/on_trial_begin/pre_create_trial/search`, `Oracle.populate_space/
create_trial/update_trial/end_trial/get_trial`, `Objective`, `errors.FailedTrialError`,
`engine.trial.TrialStatus`). What that API does not offer is here, each with why it is
needed. Checked against **KerasTuner 1.4.8** (`KERAS_TUNER_CHECKED`);
tests/test_keras_tuner_hooks.py fails when a later version changes what is relied on.

Tuner hooks (`TunerHooks`, a `keras_tuner.Tuner` mixin):

- ``BaseTuner._get_tuner_fname()``: the tuner's state file is named after its tuner id
  (``tuner0.json`` locally, ``chief.json`` on a chief), so a search begun on one machine
  would not reload its oracle under a chief, nor the other way round. One name for the
  process that owns the oracle (``tuner.json``) makes resuming work across both.
- ``BaseTuner._populate_initial_space()``: KerasTuner declares the search space by calling
  ``hypermodel.build(hp)`` (in ``_activate_all_conditions``), which would build (and
  compile) a whole network before the search starts. A recipe's space has no conditional
  scopes, so `HyperRecipe.declare_hyperparameters` declares it without building anything.
- ``BaseTuner._try_run_and_update_trial()`` (and the ``_run_and_update_trial`` it calls):
  KerasTuner 1.4.8 ships with ``keras_tuner.src.config.DEBUG = True`` and prints a full
  traceback for every failed trial; a search with skipped trials would bury its output
  in tracebacks. The replacement keeps KerasTuner's status rules (FailedTrialError ->
  FAILED, FatalError re-raised, anything else -> INVALID, retried) and stores one line in
  ``trial.message``; cnnbuilder keeps the traceback in the trial's own record.

Oracle internals (`retry_queue`, `tried_before`, `random_values`):

- ``Oracle._retry_queue``: the trials waiting to be run again. A worker that was only cut
  off may report a trial the chief already queued for retry; `end_trial` takes it off the
  queue so the trial is not trained twice.
- ``Oracle._duplicate()`` / ``Oracle._random_values()``: the Gaussian process of
  `BayesianOptimizationOracle` may propose values already tried (integer and choice
  dimensions); the oracle then tries fresh random values with the oracle's own sampler
  and seed state rather than run a trial twice.

Distributed mode (`role`, `oracle_service`, `chief_may_stop`):

- ``keras_tuner.src.distribute.utils``: the reading of ``KERASTUNER_ORACLE_IP`` /
  ``_PORT`` / ``_TUNER_ID`` that decides chief, worker or local; using KerasTuner's own
  reading keeps cnnbuilder's role equal to the one KerasTuner acts on.
- ``keras_tuner.src.distribute.oracle_chief.OracleServicer`` / ``exit_chief`` and
  ``keras_tuner.src.protos``: KerasTuner's ``start_server`` loop waits for the trials of a
  dead worker for ever; cnnbuilder's chief serves the same gRPC service with its own loop,
  which ends the trials of silent workers (`cnnbuilder.tuning.chief.serve`).

TensorBoard (`trial_tensorboard`):

- ``Tuner._configure_tensorboard_dir()``: what KerasTuner's own ``run_trial`` does with a
  ``TensorBoard`` callback: point it at ``LOGDIR/<trial_id>/execution0`` and add
  TensorBoard's HParams ``KerasCallback`` with the trial's values converted to HParams
  domains (``tuner_utils.convert_hyperparams_to_hparams``). `RecipeTuner` replaces
  ``run_trial``, so it calls the same method to get the same HParams dashboard.

Trial numbers (`trial_number`):

- ``Oracle.create_trial`` names trial N (counted from 0) ``f"{N:0{len(str(max_trials))}d}"``
  while its display prints ``Running Trial #{len(oracle.trials)}``, i.e. N + 1. Every
  message and tuning.json use that 1-based number, so they agree with the display.
"""

from __future__ import annotations

import os
import traceback

import keras_tuner as kt
from keras_tuner.engine.trial import TrialStatus

KERAS_TUNER_CHECKED = "1.4.8"

# The name of the state file of the process that owns the oracle (local or chief).
OWNER_STATE = "tuner.json"


class TunerHooks(kt.Tuner):
    """`keras_tuner.Tuner` with the three private hooks cnnbuilder overrides (see the
    module docstring). The hypermodel must have `declare_hyperparameters(hp)`."""

    def _get_tuner_fname(self):
        name = f"worker_{self.tuner_id}.json" if role() == "worker" else OWNER_STATE
        return os.path.join(str(self.project_dir), name)

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def _try_run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
        try:
            self._run_and_update_trial(trial, *fit_args, **fit_kwargs)
            trial.status = TrialStatus.COMPLETED
        except kt.errors.FatalError:
            raise
        except kt.errors.FailedTrialError as exc:
            trial.status = TrialStatus.FAILED
            trial.message = str(exc)
        except Exception:  # noqa: BLE001 - reporting to the oracle failed: KerasTuner retries
            trial.status = TrialStatus.INVALID
            trial.message = traceback.format_exc()
            self.on_invalid_trial(trial)

    def on_invalid_trial(self, trial) -> None:
        """Called when a trial ended INVALID (it will be retried); prints its traceback."""
        print(trial.message)


# ----------------------------------------------------------------------------- oracle


def retry_queue(oracle) -> list:
    """The ids of the trials `oracle` will hand out again (KerasTuner's own list)."""
    return oracle._retry_queue


def tried_before(oracle, values: dict) -> bool:
    """Whether `oracle` already ran a trial with these hyperparameter values."""
    return oracle._duplicate(values)


def random_values(oracle) -> dict | None:
    """Fresh random values from `oracle`'s sampler; None when the space is exhausted."""
    return oracle._random_values()


def trial_tensorboard(tuner, trial, log_dir) -> list:
    """Callbacks logging `trial` to TensorBoard as KerasTuner's own ``run_trial`` does:
    Keras' ``TensorBoard`` writing to ``log_dir/<trial_id>/execution0`` and TensorBoard's
    HParams ``KerasCallback`` recording the trial's hyperparameters there."""
    import keras

    callbacks = [keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch")]
    tuner._configure_tensorboard_dir(callbacks, trial)
    return callbacks


def trial_number(trial_id) -> int:
    """The 1-based number KerasTuner's display gives the trial `trial_id` (its creation
    order counted from 1)."""
    return int(trial_id) + 1


# ----------------------------------------------------------------------------- distributed


def role() -> str:
    """'chief', 'worker' or 'local', as KerasTuner reads its environment variables.

    Raises:
        RuntimeError: KERASTUNER_ORACLE_IP is set without a port or a tuner id.
    """
    from keras_tuner.src.distribute import utils

    if not utils.has_chief_oracle():
        return "local"
    return "chief" if utils.is_chief_oracle() else "worker"


def oracle_service(oracle, server):
    """Add KerasTuner's gRPC oracle service over `oracle` to the gRPC `server`; returns
    the servicer (its ``stop_triggered`` turns True once a worker was told to stop)."""
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    servicer = oracle_chief.OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    return servicer


def chief_may_stop(oracle) -> bool:
    """Whether no trial is running and every worker was told to stop (KerasTuner's test)."""
    from keras_tuner.src.distribute import oracle_chief

    return oracle_chief.exit_chief(oracle)
