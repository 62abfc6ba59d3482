"""What a search leaves in its directory, under the run-directory policy of `cnnbuilder.runs`.

    DIR/tuning.json        every trial (trial_id, number, hyperparameters, status, score,
                           params, seconds, reason) and the best one; written last (the
                           commit point: a directory holding it is a finished search)
    DIR/tuning.png         score against each tuned value and the parameter count
    DIR/best/              the best trial as a run directory `cnnbuilder export` accepts:
                           model.keras (its best epoch), run.json, metrics.json
    DIR/best_retrained/    with retrain_epochs=N: the best configuration trained again by
                           `cnnbuilder.train` (a full, resumable training run)
    DIR/search.log         one line per trial start and end (the oracle's view)
    DIR/search/            KerasTuner's project, with settings.json (what a rerun must
                           match to resume) and each trial's checkpoint and record

A trial's `number` is 1-based, the number KerasTuner's display prints
("Running Trial #3"); its `trial_id` is KerasTuner's id (``search/trial_<id>/``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
from keras_tuner.engine.trial import TrialStatus

from cnnbuilder import training as engine
from cnnbuilder.data import Dataset
from cnnbuilder.errors import RunError
from cnnbuilder import runs
from cnnbuilder.training.optimizers import portable_compile
from cnnbuilder.tuning import keras_tuner_hooks as hooks
from cnnbuilder.tuning.hypermodel import HyperRecipe
from cnnbuilder.tuning.oracles import OBJECTIVES
from cnnbuilder.tuning.tuner import RecipeTuner, load_weights

TUNING_JSON = "tuning.json"
TUNING_PNG = "tuning.png"
BEST_DIR = "best"
RETRAINED_DIR = "best_retrained"
SEARCH_DIR = "search"  # KerasTuner's project directory
SEARCH_LOG = "search.log"
SETTINGS = "settings.json"  # inside SEARCH_DIR: what a rerun must match to resume


# ----------------------------------------------------------------------------- directory


def search_settings(hyper: HyperRecipe, data: Dataset, *, tuner: str, objective: str,
                    epochs: int, max_params, seed: int) -> dict:
    """What must match for a rerun to continue a search rather than start over."""
    return {
        "recipe": hyper.recipe.name, "space": hyper.space.to_dict(),
        "params": hyper.fixed_params, "training": hyper.fixed_training,
        "input_shape": list(hyper.input_shape), "classes": hyper.classes, "dataset": data.name,
        "tuner": tuner, "objective": objective, "epochs": epochs, "max_params": max_params,
        "seed": seed,
    }


def prepare_search_directory(directory: Path, settings: dict, *, overwrite: bool,
                             role: str) -> None:
    """Apply the run-directory policy to a search before anything is written: refuse to
    clobber a finished search, clear it with `overwrite`, resume only with the same
    settings. A worker only checks that it joins the chief's search."""
    directory = Path(directory)
    project = directory / SEARCH_DIR
    record = project / SETTINGS
    runs.check_is_directory(directory)
    if role == "worker":  # only the chief clears or describes the directory
        if (directory / TUNING_JSON).exists() and not overwrite:
            raise RunError(f"{directory} already holds a finished search ({TUNING_JSON}); "
                           "this worker has nothing to do. Start the chief with --overwrite "
                           "(and the workers after it) to search again.")
        previous = runs.read_json(record, what="settings of the search")
        changed = runs.changed_settings(previous, settings) if previous is not None else []
        if changed:
            raise RunError(f"this worker's settings ({', '.join(changed)}) differ from the "
                           f"search in {directory}; start every worker with the chief's command.")
        project.mkdir(parents=True, exist_ok=True)
        return
    if not overwrite:
        runs.refuse_finished(directory, TUNING_JSON, what="search")
        if not record.exists() and project.is_dir() and any(project.iterdir()):
            raise RunError(f"{project} holds files cnnbuilder did not write (no {SETTINGS}); "
                           "choose another --output, or pass --overwrite to start over.")
    runs.prepare_directory(directory, settings=settings, record=record, marker=TUNING_JSON,
                             overwrite=overwrite, clear=clear_search, what="search")


def clear_search(directory: Path) -> None:
    """Remove what a search writes (and nothing else a user may keep in the directory)."""
    directory = Path(directory)
    for name in (TUNING_JSON, TUNING_PNG, SEARCH_LOG):
        (directory / name).unlink(missing_ok=True)
    for name in (SEARCH_DIR, BEST_DIR, RETRAINED_DIR, runs.LOGS_DIR):
        shutil.rmtree(directory / name, ignore_errors=True)


# ----------------------------------------------------------------------------- trials


def trial_records(tuner: RecipeTuner, hyper: HyperRecipe) -> list[dict]:
    """One record per trial, from the oracle (status, score) and the trial's own record."""
    oracle = tuner.oracle
    out = []
    for trial_id in sorted(oracle.trials):
        trial = oracle.trials[trial_id]
        saved = runs.read_json(tuner.record_path(trial_id), what="trial record") or {}
        record = {
            "trial_id": trial_id, "number": hooks.trial_number(trial_id),
            "hyperparameters": hyper.hyperparameters(trial.hyperparameters),
            "status": None, "score": None,
            "params": saved.get("params"), "seconds": saved.get("seconds"),
        }
        if record["params"] is None and trial.metrics.exists("params"):
            record["params"] = int(trial.metrics.get_last_value("params"))
        lost = oracle.lost_reason(trial_id)
        if trial.status == TrialStatus.COMPLETED:
            record["status"] = "completed"
            record["score"] = float(trial.score) if trial.score is not None else saved.get("score")
            if lost:
                record["note"] = f"run again after it was {lost}"
        elif trial.status == TrialStatus.FAILED and saved.get("status") in ("skipped", "failed"):
            record["status"], record["reason"] = saved["status"], saved.get("reason")
        else:  # lost with its worker (twice), or never finished
            record["status"] = "failed"
            record["reason"] = lost or "the trial did not finish"
        for extra in ("epochs", "tuner_id", "memory_mb"):
            if saved.get(extra) is not None:
                record[extra] = saved[extra]
        out.append(record)
    return out


def best_trial(trials: list[dict], objective: str) -> dict | None:
    """The completed trial with the best score (the first of equals); None if none."""
    done = [t for t in trials if t["status"] == "completed" and t["score"] is not None]
    if not done:
        return None
    sign = 1 if OBJECTIVES[objective] == "max" else -1
    return dict(max(done, key=lambda t: (sign * t["score"], -done.index(t))))


def status_counts(trials: list[dict]) -> str:
    """E.g. "3 completed, 1 skipped"."""
    counts = {}
    for t in trials:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no trial ran"


def _tuned_values(best: dict) -> tuple[dict, dict]:
    """(params, training settings) the best trial tuned."""
    values = dict(best["hyperparameters"])
    training = values.pop("training", {})
    return values, dict(training)


# ----------------------------------------------------------------------------- best


def save_best(tuner: RecipeTuner, hyper: HyperRecipe, data: Dataset, best: dict,
              directory: Path, objective: str) -> str:
    """Write DIR/best/ (model.keras of the best trial's best epoch, run.json,
    metrics.json) through the engine; returns the model's path relative to DIR."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(tuner.seed)
    job = hyper.job(*_tuned_values(best), data=data)
    model = job.build()
    model.name = hyper.model_name(best["hyperparameters"])  # resnet20_depth38_width32
    load_weights(model, tuner.checkpoint_path(best["trial_id"]))
    # Compiled as a finished run's model.keras (the trials' optimizer family and settings,
    # in Keras' own classes): best/model.keras loads where cnnbuilder is not installed.
    portable_compile(model, job.config)
    scores = job.evaluate(model)
    target = Path(directory) / BEST_DIR
    with runs.staged_directory(target, replace=True, refuse=_never) as staging:
        runs.atomic_save_model(model, staging / runs.MODEL)
        runs.atomic_write_json(staging / runs.RUN, {
            **job.settings.identity(), **job.settings.record(), "sizes": dict(data.sizes),
            "resolved_training": job.settings.resolved_training(job.steps_per_epoch),
            "tuning": {"trial_id": best["trial_id"], "number": best["number"],
                       "hyperparameters": best["hyperparameters"], "objective": objective,
                       "score": best["score"]}})
        runs.atomic_write_json(staging / runs.METRICS, {
            **scores, "epochs_run": best.get("epochs") or hyper.epochs,
            "params": int(model.count_params()), "seconds": best.get("seconds"),
            "dataset": data.name, "class_names": list(data.class_names),
            "recipe": hyper.recipe.name, objective: best["score"]})
    return f"{BEST_DIR}/{runs.MODEL}"


def _never(path: Path) -> None:  # pragma: no cover - best/ is always replaced
    raise RunError(f"{path} is occupied.")


def retrain(hyper: HyperRecipe, data: Dataset, best: dict, directory: Path, epochs: int, *,
            overwrite: bool, verbose) -> dict:
    """Train the best configuration again for `epochs` epochs into DIR/best_retrained
    with `cnnbuilder.train` (resumed when a previous attempt was cut short)."""
    output = Path(directory) / RETRAINED_DIR
    metrics = None if overwrite else runs.read_json(output / runs.METRICS)
    if metrics is None:  # else: a rerun after a kill between the retraining and tuning.json
        params, tuned = _tuned_values(best)
        settings = hyper.training_settings(tuned)
        settings["epochs"] = epochs
        metrics = engine.train(hyper.recipe, data, output=output, training=settings,
                               params={**hyper.fixed_params, **params},
                               input_shape=hyper.input_shape, seed=hyper.seed,
                               verbose=verbose, overwrite=overwrite).metrics
    return {"output": RETRAINED_DIR, "epochs": epochs, "test_accuracy": metrics["test_accuracy"],
            "test_loss": metrics["test_loss"], "params": metrics["params"]}
