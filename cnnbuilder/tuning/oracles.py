"""KerasTuner oracles that keep a search going: skipped, failed and lost-worker trials.

Each oracle is KerasTuner's own (random, Bayesian, Hyperband) with `WatchedOracle` mixed
in before it, through the public `Oracle` methods (`create_trial`, `update_trial`,
`end_trial`, `get_trial`, `populate_space`):

- `max_trials` counts the trials that train: a skipped trial (over `max_params`, or values
  the recipe rejects; its message carries `SKIPPED`) is not one of them, and is recorded
  as skipped (search.log, the display); at most `MAX_SKIPPED_PER_TRIAL` × `max_trials` are
  skipped before the search stops; a skipped trial is never the best one;
- a failed trial is part of the search (``max_consecutive_failed_trials`` is off);
- every trial start and end is logged to ``search.log`` (the oracle's view);
- workers send heartbeats (`get_trial`); `expire_lost_trials` ends the trial of a worker
  silent for `timeout` seconds: it is handed to another worker once, then failed.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import keras_tuner as kt
from keras_tuner.engine.trial import Trial, TrialStatus
from keras_tuner.src.engine.oracle import Display

from cnnbuilder.tuning import keras_tuner_hooks as hooks

TUNERS = ("random", "bayesian", "hyperband")
# Metrics `model.fit` logs (cnnbuilder compiles with an accuracy metric), and their direction.
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min",
              "val_mean_iou": "max", "mean_iou": "max"}  # the last two: segmentation
# A trial lost with its worker is handed to another worker this many times.
LOST_TRIAL_RETRIES = 1
# What the tuner puts first in the reason of a trial it skips (KerasTuner has no status for
# it: the trial ends FAILED with this in its message).
SKIPPED = "[skipped] "
# A search stops after skipping this many trials per trained trial of its budget.
MAX_SKIPPED_PER_TRIAL = 10


def is_skipped(trial) -> bool:
    """Whether a KerasTuner trial was skipped (never trained) rather than failed."""
    return trial.status == TrialStatus.FAILED and SKIPPED in (trial.message or "")


def skipped_reason(trial) -> str:
    """The reason a skipped trial gives, without KerasTuner's traceback."""
    text = (trial.message or "").rsplit(SKIPPED, 1)[-1]
    return " ".join(text.split())


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


class WatchedOracle:
    """Oracle additions: the search log, worker heartbeats, and the end of trials whose
    worker went silent. Mixed in before a KerasTuner oracle class; `watch` sets it up."""

    def watch(self, log_path: Path | None, timeout: float) -> None:
        """Log to `log_path` (None: no log) and give up on workers silent for `timeout` s."""
        _no_notebook_clearing()
        display = SearchDisplay(self, verbose=self._display.verbose)
        display.set_state(self._display.get_state())
        self._display = display
        self._log_path = log_path
        self._timeout = timeout
        self._seen: dict[str, float] = {}  # trial_id -> last sign of life of its worker
        self._tuner_seen: dict[str, float] = {}
        self._lost: dict[str, str] = {}  # trial_id -> why it was taken from its worker

    def log(self, text: str) -> None:
        """Append a time-stamped line to the search log."""
        if getattr(self, "_log_path", None) is None:
            return
        with open(self._log_path, "a", encoding="utf-8") as stream:
            stream.write(f"{_now()} {text}\n")

    def _describe(self, trial_id) -> str:
        # The number KerasTuner's display and tuning.json give the trial, not its id.
        return f"trial {hooks.trial_number(trial_id)}"

    def skipped_trials(self) -> list:
        """The trials skipped so far."""
        return [t for t in self.trials.values() if is_skipped(t)]

    def _budget_left(self) -> bool:
        """Whether another trial may start: fewer trained (or running) trials than the
        budget, and fewer skipped ones than their own bound."""
        budget = getattr(self, "trial_budget", None)
        if budget is None:
            return True
        skipped = len(self.skipped_trials())
        if skipped >= MAX_SKIPPED_PER_TRIAL * budget:
            if not getattr(self, "_skip_bound_logged", False):
                self._skip_bound_logged = True
                self.log(f"search stopped: {skipped} trials skipped, the most for a budget of "
                         f"{budget} trained trials ({MAX_SKIPPED_PER_TRIAL} x --max-trials)")
            return False
        return len(self.trials) - skipped < budget

    @kt.synchronized
    def create_trial(self, tuner_id):
        now = time.monotonic()
        self._tuner_seen[tuner_id] = now
        budget = getattr(self, "trial_budget", None)
        if budget is not None:
            # KerasTuner stops at len(trials) >= max_trials: skipped trials are not counted.
            # The bound stays one number otherwise, as trial ids are padded to its width.
            self.max_trials = (budget * (1 + MAX_SKIPPED_PER_TRIAL) if self._budget_left()
                               else len(self.trials))
        trial = super().create_trial(tuner_id)
        others_running = any(t != tuner_id for t in self.ongoing_trials)
        if trial.status == TrialStatus.STOPPED and others_running:
            # Keep the worker until the others finish: a trial lost with its worker is
            # retried by whoever is still there.
            self.tuner_ids.add(tuner_id)
            return Trial(self.get_space(), status=TrialStatus.IDLE)
        if trial.status == TrialStatus.RUNNING:
            self._seen[trial.trial_id] = now
            self.log(f"{self._describe(trial.trial_id)} start on {tuner_id}")
        return trial

    @kt.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        self._seen[trial_id] = time.monotonic()
        return super().update_trial(trial_id, metrics, step=step)

    def get_trial(self, trial_id):
        # Workers call this as their heartbeat.
        self._seen[trial_id] = time.monotonic()
        return super().get_trial(trial_id)

    @kt.synchronized
    def end_trial(self, trial):
        owners = [t for t, ongoing in self.ongoing_trials.items()
                  if ongoing.trial_id == trial.trial_id]
        described = self._describe(trial.trial_id)
        if not owners:
            queue = hooks.retry_queue(self)
            if trial.trial_id in queue and trial.status == TrialStatus.COMPLETED:
                # Its worker was only cut off (or the chief restarted), and nobody has run
                # it again yet: keep the result rather than train it twice.
                queue.remove(trial.trial_id)
                super().end_trial(trial)
                self.log(f"{described} late report accepted: end "
                         f"{self.trials[trial.trial_id].status}")
                return
            self.log(f"{described} late report ignored (status {trial.status}): "
                     "it was given up on after its worker went silent")
            return
        for owner in owners:
            self._tuner_seen[owner] = time.monotonic()
        super().end_trial(trial)
        ended = self.trials[trial.trial_id]
        if is_skipped(ended):
            self.log(f"{described} end SKIPPED: {skipped_reason(ended)}")
        else:
            self.log(f"{described} end {ended.status}")

    def get_best_trials(self, num_trials=1):
        """The best completed trials; never a skipped or failed one (KerasTuner pads its
        list with them, and its display would show one as "Best Value So Far")."""
        return [t for t in super().get_best_trials(num_trials) if t.status == TrialStatus.COMPLETED]

    @kt.synchronized
    def expire_lost_trials(self) -> list[str]:
        """End the trials whose worker sent nothing for `timeout` seconds: each is retried
        once on another worker, then recorded as failed. Forgets silent idle workers."""
        now = time.monotonic()
        expired = []
        for tuner_id, trial in list(self.ongoing_trials.items()):
            last = self._seen.setdefault(trial.trial_id, now)
            if now - last <= self._timeout:
                continue
            reason = (f"lost: worker {tuner_id} sent no heartbeat for {self._timeout:g} s while "
                      "running it (the process or machine died or lost the connection, or it "
                      "finished no epoch in that time: hung, or an epoch takes longer than "
                      "--trial-timeout)")
            self._lost[trial.trial_id] = reason
            self.log(f"{self._describe(trial.trial_id)} {reason}")
            trial.status = TrialStatus.INVALID
            trial.message = reason
            self.end_trial(trial)
            self.tuner_ids.discard(tuner_id)
            expired.append(trial.trial_id)
        busy = set(self.ongoing_trials)
        for tuner_id in list(self.tuner_ids):
            last = self._tuner_seen.setdefault(tuner_id, now)
            if tuner_id not in busy and now - last > self._timeout:
                self.tuner_ids.discard(tuner_id)
                self.log(f"worker {tuner_id} forgotten: silent for {self._timeout:g} s")
        return expired

    def lost_reason(self, trial_id) -> str | None:
        """Why the trial was taken from its worker (None if it never was)."""
        return getattr(self, "_lost", {}).get(trial_id)


def _no_notebook_clearing() -> None:
    """Outside a running IPython, stop KerasTuner clearing "notebook" output: it takes any
    process with IPython installed for a notebook (``get_ipython()`` is None there) and
    writes ESC[2K sequences into logs and redirected output."""
    from keras_tuner.src import utils

    try:
        import IPython

        running = IPython.get_ipython() is not None
    except ImportError:
        running = False
    if not running:
        utils.IS_NOTEBOOK = False


class SearchDisplay(Display):
    """KerasTuner's progress display, with a skipped trial told as skipped (not
    "Complete") and the best so far taken from completed trials only."""

    def on_trial_end(self, trial):
        """One line for a skipped trial; KerasTuner's lines for the others."""
        if self.verbose < 1 or not is_skipped(trial):
            return super().on_trial_end(trial)
        print(f"Trial {self.trial_number.get(trial.trial_id, '?')} skipped: {skipped_reason(trial)}")
        best = self.oracle.get_best_trials()
        print(f"Best {self.oracle.objective.name} So Far: {best[0].score if best else None}")


class RandomOracle(WatchedOracle, kt.oracles.RandomSearchOracle):
    """Random search."""


class BayesianOracle(WatchedOracle, kt.oracles.BayesianOptimizationOracle):
    """Bayesian optimization that never proposes values already tried."""

    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        # The Gaussian process may propose values already tried; try new ones instead.
        if response.get("status") == "RUNNING" and hooks.tried_before(self, response["values"]):
            values = hooks.random_values(self)
            if values is None:
                return {"status": "STOPPED", "values": None}
            response = {"status": "RUNNING", "values": values}
        return response


class HyperbandOracle(WatchedOracle, kt.oracles.HyperbandOracle):
    """Hyperband, stopped at `max_trials` too."""


def make_oracle(tuner: str, *, objective: str, max_trials: int, epochs: int, seed: int):
    """The oracle of `tuner` ("random", "bayesian" or "hyperband"); `epochs` is the
    longest a Hyperband trial trains. Call `watch` on it before the search."""
    common = dict(objective=kt.Objective(objective, OBJECTIVES[objective]),
                  # KerasTuner reads seed 0 as "random": shift every seed into 1..2**31-2.
                  seed=(seed % (2**31 - 2)) + 1,
                  max_retries_per_trial=LOST_TRIAL_RETRIES,
                  # Skipped and failed trials are part of a search; max_trials bounds it.
                  max_consecutive_failed_trials=None)
    if tuner == "random":
        oracle = RandomOracle(max_trials=max_trials, **common)
    elif tuner == "bayesian":
        oracle = BayesianOracle(max_trials=max_trials, **common)
    else:
        oracle = HyperbandOracle(max_epochs=epochs, factor=3, hyperband_iterations=1, **common)
        oracle.max_trials = max_trials
    oracle.trial_budget = max_trials  # trained trials; skipped ones are counted apart
    return oracle
