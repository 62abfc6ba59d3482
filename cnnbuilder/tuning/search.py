"""`tune()`: a whole hyperparameter search over a recipe's `tune:` section.

The search runs KerasTuner (`oracles`, `tuner`) over a `HyperRecipe` whose trials train
through the training engine, in an output directory laid out as `results` describes.
Trials are *completed*, *skipped* (never trained: the recipe rejects the combination, or
the model is over `max_params`) or *failed* (an exception such as out-of-memory, a
diverged loss, or a worker that stopped answering); the search goes on after each.

Rerunning the same call continues an interrupted search (KerasTuner reloads its oracle;
finished trials are not run again). A finished search (tuning.json) is only replaced with
``overwrite=True``. Under KerasTuner's distributed environment the same call is a chief or
a worker (`chief`, docs/distributed_tuning.md).
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from pathlib import Path

import keras
import numpy as np

from cnnbuilder.data import Dataset, load_dataset
from cnnbuilder.data.folders import check_output_outside
from cnnbuilder.errors import RunError, TuningError
from cnnbuilder.recipe import checks
from cnnbuilder.recipe.search_space import FORMS, recipe_space
from cnnbuilder import runs
from cnnbuilder.tuning import chief, results
from cnnbuilder.tuning.hypermodel import HyperRecipe
from cnnbuilder.tuning.oracles import OBJECTIVES, TUNERS, make_oracle
from cnnbuilder.tuning.tf_graphs import no_retracing_warnings
from cnnbuilder.tuning.tuner import RecipeTuner
from cnnbuilder.zoo import load_recipe


def tune(recipe, *, dataset="digits", output, tuner="random", max_trials=10, epochs=5,
         objective=None, max_params=None, batch_size=None, seed=0,
         input_shape=None, classes=None, data_dir=None, retrain_epochs=None,
         overwrite=False, quiet=False, trial_timeout=None, skip_bad_images=False,
         tensorboard=True, **params) -> dict:
    """Search the recipe's `tune:` space with KerasTuner; returns the tuning.json content.

    Args:
        recipe: a name, .yaml path, dict or `Recipe` with a `tune:` section.
        dataset: what `cnnbuilder.train` accepts (or a loaded `Dataset`).
        output: the search directory (see `cnnbuilder.tuning.results`).
        tuner: "random", "bayesian" or "hyperband".
        max_trials: trained trials at most (completed or failed); a skipped trial (over
            `max_params`, or values the recipe rejects) is not one of them, and at most
            10 x `max_trials` are skipped before the search stops.
        epochs: of each trial (hyperband: at most); a trial is scored by its best epoch's
            `objective` ("val_accuracy", "val_loss", "accuracy", "loss", and for
            segmentation "val_mean_iou" or "mean_iou"); None: validation accuracy, or
            validation mean IoU for a segmentation recipe.
        max_params: larger models are skipped untrained.
        batch_size: fixes the batch size (else the recipe's, or the tuned one).
        seed, input_shape, classes, data_dir: as `cnnbuilder.train`.
        retrain_epochs: train the best configuration again for that many epochs into
            DIR/best_retrained.
        overwrite: replace a finished search instead of refusing.
        quiet: print nothing.
        trial_timeout: seconds before the chief gives up on a silent worker's trial.
        skip_bad_images: as `cnnbuilder.train`.
        tensorboard: log every trial to ``DIR/logs/`` with its hyperparameters (TensorBoard's
            HParams dashboard).
        **params: recipe params held fixed (``--set``).

    Returns:
        The tuning.json content; on a distributed worker, the records of the trials it ran.
    """
    started = time.perf_counter()
    loaded = load_recipe(recipe)
    segmentation = loaded.task == "segmentation"
    if objective is None:
        objective = "val_mean_iou" if segmentation else "val_accuracy"
    elif objective in OBJECTIVES and ("mean_iou" in objective) != segmentation:
        raise TuningError(f"objective {objective!r} is not logged by a {loaded.task} network's "
                          f"trials; {loaded.name} logs "
                          + ("val_mean_iou, mean_iou, val_loss and loss." if segmentation
                             else "val_accuracy, accuracy, val_loss and loss."))
    _check_arguments(tuner, max_trials, epochs, objective, max_params, batch_size, retrain_epochs)
    seed = checks.seed(seed)
    input_shape = checks.input_shape(input_shape)
    classes = checks.classes(classes)
    check_output_outside(dataset, output)
    timeout = chief.trial_timeout(trial_timeout)
    source = recipe
    if not recipe_space(source):
        raise TuningError(
            f"{loaded.name} has no tune: section, so there is nothing to search. Add one "
            f"declaring the params to tune, e.g. growth_rate: {{choice: [12, 24]}} (forms: {FORMS}), "
            "or tune a recipe that has one (the CIFAR DenseNets and ResNets do)."
        )
    data = dataset if isinstance(dataset, Dataset) else load_dataset(
        dataset, data_dir=data_dir, skip_bad_images=skip_bad_images)
    hyper = HyperRecipe(source, input_shape, classes, data=data, params=params,
                        training={"batch_size": batch_size}, epochs=epochs,
                        max_params=max_params, seed=seed)
    if not hyper.space:
        raise TuningError(f"every value of the tune: section of {loaded.name} is fixed by the "
                          "given params/batch size, so there is nothing to search.")
    directory = Path(output)
    role = chief.role()
    runs.check_is_directory(directory)
    # Workers share the chief's directory; the chief (or a local search) holds it alone.
    holder = (runs.exclusive(directory / runs.LOCK, what="search") if role != "worker"
              else contextlib.nullcontext())
    with holder:
        settings = results.search_settings(hyper, data, tuner=tuner, objective=objective,
                                           epochs=epochs, max_params=max_params, seed=seed)
        results.prepare_search_directory(directory, settings, overwrite=overwrite, role=role)

        oracle = make_oracle(tuner, objective=objective, max_trials=max_trials, epochs=epochs,
                             seed=seed)
        oracle.watch(directory / results.SEARCH_LOG if role != "worker" else None, timeout)
        verbose = 0 if quiet else (1 if _isatty() else 2)
        silence = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
        with silence, no_retracing_warnings():
            search = RecipeTuner(oracle=oracle, hypermodel=hyper, directory=str(directory),
                                 project_name=results.SEARCH_DIR, overwrite=False, seed=seed,
                                 trial_timeout=timeout, fit_verbose=verbose, quiet=quiet,
                                 tensorboard=tensorboard)
            search.search(data, epochs=epochs, verbose=0 if quiet else 1)
        if role == "worker":
            return {"recipe": loaded.name, "objective": objective, "tuner": tuner, "role": "worker",
                    "tuner_id": search.tuner_id,
                    "trials": sorted(search.records, key=lambda r: r["trial_id"]), "best": None}

        trials = results.trial_records(search, hyper)
        best = results.best_trial(trials, objective)
        result = {
            "recipe": loaded.name, "objective": objective, "direction": OBJECTIVES[objective],
            "tuner": tuner, "dataset": data.name, "skipped_images": len(data.skipped),
            "epochs": epochs, "max_trials": max_trials,
            "max_params": max_params, "seed": seed, "space": hyper.space.to_dict(),
            "fixed": {"params": hyper.fixed_params, "training": hyper.fixed_training},
            "trials": trials, "best": best,
        }
        if best is not None:
            with silence, no_retracing_warnings():
                result["best_model"] = results.save_best(search, hyper, data, best, directory,
                                                         objective)
                if retrain_epochs:
                    result["retrained"] = results.retrain(hyper, data, best, directory,
                                                          retrain_epochs, overwrite=overwrite,
                                                          verbose=verbose)
        result["seconds"] = round(time.perf_counter() - started, 2)
        from cnnbuilder.plots.tuning import plot_tuning

        plot_tuning(result, directory / results.TUNING_PNG)
        runs.atomic_write_json(directory / results.TUNING_JSON, result)  # the commit point
        keras.backend.clear_session()
        if best is None:
            example = next((t for t in trials if t.get("reason")), None)
            raise RunError(
                f"none of the {len(trials)} trials completed ({results.status_counts(trials)}), so "
                "there is no best model. "
                + (f"Trial {example['number']} was {example['status']}: {example['reason']} "
                   if example else "")
                + f"Every trial is listed in {directory / results.TUNING_JSON}."
            )
        return result


def _check_arguments(tuner, max_trials, epochs, objective, max_params, batch_size,
                     retrain_epochs) -> None:
    """TuningError for an unknown tuner or objective, or a count that is not positive."""
    from cnnbuilder.recipe.vocabulary import did_you_mean

    if tuner not in TUNERS:
        raise TuningError(f"unknown tuner {tuner!r}; expected one of {', '.join(TUNERS)}."
                          + did_you_mean(str(tuner), TUNERS))
    if objective not in OBJECTIVES:
        raise TuningError(f"unknown objective {objective!r}; expected one of the metrics a trial "
                          f"logs: {', '.join(OBJECTIVES)}." + did_you_mean(str(objective), OBJECTIVES))
    for name, value, required in (("max_trials", max_trials, True), ("epochs", epochs, True),
                                  ("max_params", max_params, False),
                                  ("batch_size", batch_size, False),
                                  ("retrain_epochs", retrain_epochs, False)):
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise TuningError(f"{name} must be a positive integer, got {value!r}.")


def _isatty() -> bool:
    return bool(getattr(sys.stdout, "isatty", lambda: False)())
