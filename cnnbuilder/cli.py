"""The `cnnbuilder` command line: argument parsing and messages; every command calls the
Python API.

Every failure ends in one paragraph on stderr, never a traceback: exit status 2 for bad
input (a `CnnBuilderError`, or a file the system refuses), 1 for an internal failure, with
a hint to rerun with ``--debug``, which shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from cnnbuilder.cli_backend import add_backend_arguments, join_processes, select_backend, supervise
from cnnbuilder.cli_args import classes as classes_type
from cnnbuilder.cli_args import (Parser, non_negative_float, parse_assignments, parse_augment,
                                 parse_shape, positive_float, positive_int, seed, training_preset)
from cnnbuilder.cli_help import cmd_help
from cnnbuilder.cli_show import cmd_list, cmd_show
from cnnbuilder.cli_weights import add_weights_parser
from cnnbuilder.errors import CnnBuilderError, UsageError
from cnnbuilder.recipe import checks
from cnnbuilder.recipe.params import arguments_from, overrides_from
from cnnbuilder.recipe.training import OPTIMIZERS, SCHEDULES

# Exit statuses (DESIGN.md §5).
BAD_INPUT, INTERNAL_FAILURE, INTERRUPTED = 2, 1, 130
# Build arguments as the command line names them in messages.
_ARGUMENT_FLAGS = {"input_shape": "--input-shape", "classes": "--classes"}


# ----------------------------------------------------------------------------- commands


def cmd_train(args) -> int:
    """`cnnbuilder train`: `cnnbuilder.train` with the flags, then a two-line summary (from
    process 0 only, in a multi-process run)."""
    from cnnbuilder.data.folders import check_output_outside

    check_output_outside(args.dataset, args.output, "--output")  # before anything is written
    check_preset_fits(args.recipe, args.training_preset)
    join_processes(args)
    from cnnbuilder.model.cost import batch_size_for_bound
    from cnnbuilder.training import distribution, train

    # The memory bound assumes the run's batch (the recipe's when --batch-size is not given).
    batch = args.batch_size or _recipe_batch_size(args.recipe)
    with batch_size_for_bound(batch):
        result = _train(args, train)
    metrics = result.metrics
    if not distribution.is_writer():
        print(f"process {distribution.process_index()}: trained with process 0, which wrote "
              f"{result.output}/.")
        return 0
    if metrics.get("skipped_images"):
        print(f"{metrics['skipped_images']} images of the dataset could not be used and were "
              f"left out (listed in {result.output}/run.json).")
    segmentation = "test_mean_iou" in metrics
    score = (f"test mean IoU {metrics['test_mean_iou']:.4f}, pixel accuracy "
             f"{metrics['test_pixel_accuracy']:.4f}" if segmentation
             else f"test accuracy {metrics['test_accuracy']:.4f}")
    print(f"{score}, test loss {metrics['test_loss']:.4f} "
          f"after {metrics['epochs_run']} epochs ({metrics['seconds']:.0f} s); "
          f"best epoch {metrics['best_epoch']}.")
    print(f"results in {result.output}/: metrics.json, history.csv, history.png, "
          + ("segmentation.png, " if segmentation else "") + "model.keras")
    return 0


def check_preset_fits(recipe, preset: str | None) -> None:
    """A UsageError naming --training-preset when the preset does not fit the recipe's
    family (a recipe that fails to load: train names that problem)."""
    if not preset:
        return
    from cnnbuilder.recipe.presets import fit_problem
    from cnnbuilder.zoo import load_recipe

    try:
        loaded = load_recipe(recipe)
    except CnnBuilderError:
        return
    problem = fit_problem(preset, loaded.family, loaded.name)
    if problem:
        raise UsageError(f"--training-preset {preset}: {problem}")


def _recipe_batch_size(recipe) -> int | None:
    """The batch size of a recipe's training: section (None for a recipe that fails to
    load: train names the problem)."""
    try:
        from cnnbuilder.zoo import load_recipe

        return load_recipe(recipe).training.get("batch_size")
    except CnnBuilderError:
        return None


def _train(args, train):
    """`cnnbuilder.train` with the flags of `cnnbuilder train` (`--training` values checked
    here, so their message names the flag)."""
    from cnnbuilder.recipe.training import check_settings

    training = parse_assignments(args.training, "--training")
    check_settings(dict(training), lambda key, message: UsageError(f"--training: {message}"),
                   combined=False)
    if args.training_preset:
        training["preset"] = args.training_preset
    return train(
        args.recipe, args.dataset, output=args.output, training=training,
        epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate,
        params=parse_assignments(args.set), input_shape=parse_shape(args.input_shape),
        augment=parse_augment(args.augment), optimizer=args.optimizer, schedule=args.schedule,
        weight_decay=args.weight_decay, mixed_precision=args.mixed_precision, jit=args.jit,
        seed=args.seed, verbose=0 if args.quiet else (1 if sys.stdout.isatty() else 2),
        overwrite=args.overwrite, data_dir=args.data_dir, tensorboard=args.tensorboard,
        skip_bad_images=args.skip_bad_images, weights=args.weights, freeze=args.freeze,
    )


def cmd_tune(args) -> int:
    """`cnnbuilder tune`: `cnnbuilder.tune` with the flags, then the search's summary."""
    from cnnbuilder.data.folders import check_output_outside
    from cnnbuilder.tuning import tune

    check_output_outside(args.dataset, args.output, "--output")
    result = tune(
        args.recipe, dataset=args.dataset, output=args.output, tuner=args.tuner,
        max_trials=args.max_trials, epochs=args.epochs, objective=args.objective,
        max_params=args.max_params, batch_size=args.batch_size, seed=args.seed,
        input_shape=parse_shape(args.input_shape), data_dir=args.data_dir,
        retrain_epochs=args.retrain_epochs, overwrite=args.overwrite, quiet=args.quiet,
        skip_bad_images=args.skip_bad_images, tensorboard=args.tensorboard,
        trial_timeout=args.trial_timeout, **parse_assignments(args.set),
    )
    if result.get("role") == "worker":
        print(f"worker {result['tuner_id']} ran {len(result['trials'])} trials; the chief writes "
              f"{args.output}/tuning.json when the search ends.")
        return 0
    counts = {}
    for trial in result["trials"]:
        counts[trial["status"]] = counts.get(trial["status"], 0) + 1
    best = result["best"]
    print(f"{len(result['trials'])} trials ({', '.join(f'{n} {s}' for s, n in counts.items())}) "
          f"in {result['seconds']:.0f} s.")
    print(f"best: trial {best['number']}, {result['objective']} {best['score']:.4f}, "
          f"{best['params']:,} params, {best['hyperparameters']}")
    if result.get("retrained"):
        retrained = result["retrained"]
        score = ("test mean IoU", "test_mean_iou") if "test_mean_iou" in retrained else \
            ("test accuracy", "test_accuracy")
        print(f"retrained for {retrained['epochs']} epochs: {score[0]} "
              f"{retrained[score[1]]:.4f} ({args.output}/{retrained['output']}/)")
    print(f"results in {args.output}/: tuning.json, tuning.png, best/model.keras")
    return 0


def cmd_export(args) -> int:
    """`cnnbuilder export`: `cnnbuilder.export`, then a summary of what was written."""
    from cnnbuilder.data.labels import check_class_names
    from cnnbuilder.serving.exporting import export, format_export_summary

    names = check_class_names(args.class_names.split(","), "--class-names") if args.class_names else None
    path = export(args.source, args.output, format=args.format, quantize=args.quantize,
                  max_accuracy_drop=args.max_accuracy_drop, force=args.force,
                  class_names=names, data_dir=args.data_dir,
                  allow_unfinished=args.allow_unfinished)
    print(format_export_summary(path))
    return 0


def cmd_predict(args) -> int:
    """`cnnbuilder predict`: every readable image predicted; exit 2 when some were not."""
    import json

    from cnnbuilder.serving.prediction import format_predictions, predict

    results = predict(args.model, args.images, top_k=args.top_k, errors="report", trust=args.trust,
                      output=args.output)
    print(json.dumps(results, indent=2) if args.json else format_predictions(results))
    failed = [r for r in results if "error" in r]
    for result in failed:  # also on stderr, one line each: the good images were predicted
        print(f"cnnbuilder predict: error: {result['error']}", file=sys.stderr)
    return BAD_INPUT if failed else 0


def add_dataset_arguments(p) -> None:
    """The dataset, output and common training flags of `train`."""
    p.add_argument("--dataset", default="digits",
                   help="digits (embedded, default), digits-seg (embedded, segmentation), "
                        "tfds:NAME or folder:PATH")
    p.add_argument("--data-dir", help="tensorflow-datasets data directory")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out the images of a folder dataset that cannot be read, instead of refusing it")
    p.add_argument("--output", required=True, metavar="DIR", help="run directory")
    p.add_argument("--epochs", type=positive_int, help="epochs (default: the recipe's training section)")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: the recipe's)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a recipe param")
    p.add_argument("--input-shape", help="HEIGHT,WIDTH,CHANNELS (default: the recipe's)")
    p.add_argument("--seed", type=seed, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in DIR")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (each accepts `--debug`)."""
    debug = Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of a failure")
    parser = Parser(
        prog="cnnbuilder", parents=[debug],
        description="Build, study, train, tune and export classic CNNs from YAML recipes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parser = commands.add_parser
    commands.add_parser = lambda *a, **k: add_parser(*a, parents=[debug], **k)

    p = commands.add_parser("help", help="print a guide: fine-tuning, limits, distributed-training, ...")
    p.add_argument("topic", nargs="?", help="the guide to print (none: list them)")
    p.set_defaults(run=cmd_help)

    p = commands.add_parser("list", help="list the shipped recipes")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.set_defaults(run=cmd_list)

    p = commands.add_parser("show", help="per-stage table of a recipe's network")
    p.add_argument("recipe", help="recipe name or path to a .yaml file")
    p.add_argument("--input-shape", help="HEIGHT,WIDTH,CHANNELS (default: the recipe's)")
    p.add_argument("--classes", type=classes_type, help="number of classes (default: the recipe's)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a recipe param")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the network as a block diagram")
    p.add_argument("--training", nargs="*", metavar="NAME=VALUE",
                   help="print the training settings instead (with these overrides), their "
                        "sources and every departure from the paper")
    p.add_argument("--dataset", help="with --training: lay the run out for this dataset "
                                     "(digits, tfds:NAME, folder:PATH)")
    p.add_argument("--json", action="store_true", help="with --training: as JSON")
    p.add_argument("--training-preset", type=training_preset, metavar="NAME",
                   help="with --training: apply this preset (rsb_a1, rsb_a2, rsb_a3)")
    p.set_defaults(run=cmd_show)

    p = commands.add_parser("train", help="train a recipe on a dataset (resumable)")
    p.add_argument("recipe", help="recipe name or path to a .yaml file")
    add_dataset_arguments(p)
    p.add_argument("--training", action="append", metavar="NAME=VALUE",
                   help="override a setting of the recipe's training: section (e.g. learning_rate=0.01)")
    p.add_argument("--learning-rate", type=positive_float, help="initial learning rate")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--training-preset", type=training_preset, metavar="NAME",
                   help="a modern training procedure on top of the recipe's paper training: "
                        "rsb_a1, rsb_a2, rsb_a3 (ResNet strikes back; `cnnbuilder help training`)")
    p.add_argument("--schedule", choices=SCHEDULES)
    p.add_argument("--weight-decay", type=non_negative_float)
    p.add_argument("--augment", help="comma-separated crop,flip,translate,randaugment,mixup,cutmix,"
                                     "random_erasing (their default options; --training "
                                     "augment=[...] sets options) or none")
    p.add_argument("--mixed-precision", action="store_true", help="mixed precision (float16 on GPU, bfloat16 on CPU)")
    p.add_argument("--jit", action="store_true", help="compile the training step with XLA (TensorFlow; on JAX it always is)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write TensorBoard logs to DIR/logs/")
    p.add_argument("--weights", metavar="imagenet|PATH",
                   help="start from ImageNet weights (the keras.applications file in the Keras "
                        "cache), a .weights.h5/.h5/.keras file or a run directory; a new head "
                        "where the classes differ (cnnbuilder help fine-tuning)")
    p.add_argument("--freeze", metavar="backbone|STAGE,...",
                   help="keep these stages frozen (weights unchanged, BatchNorm in inference "
                        "mode): backbone (all but the head) or stage names, e.g. stem,conv2")
    add_backend_arguments(p)
    p.set_defaults(run=cmd_train)

    p = commands.add_parser("tune", help="search the recipe's tune: space with KerasTuner (resumable, distributed)")
    p.add_argument("recipe", help="recipe name or path to a .yaml file (with a tune: section)")
    p.add_argument("--dataset", default="digits",
                   help="digits (embedded, default), digits-seg (embedded, segmentation), "
                        "tfds:NAME or folder:PATH")
    p.add_argument("--data-dir", help="tensorflow-datasets data directory")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out the images of a folder dataset that cannot be read, instead of refusing it")
    p.add_argument("--output", required=True, metavar="DIR", help="search directory")
    p.add_argument("--tuner", default="random", choices=("random", "bayesian", "hyperband"),
                   help="search algorithm (default random)")
    p.add_argument("--max-trials", type=positive_int, default=10, help="trials at most (default 10)")
    p.add_argument("--epochs", type=positive_int, default=5,
                   help="epochs per trial; hyperband: at most (default 5)")
    p.add_argument("--objective",
                   help="val_accuracy (default; val_mean_iou for segmentation), val_loss, "
                        "accuracy, loss, val_mean_iou or mean_iou")
    p.add_argument("--max-params", type=positive_int, metavar="N",
                   help="skip (never train) trials whose model has more parameters")
    p.add_argument("--batch-size", type=positive_int, help="batch size (default: the recipe's, or tuned)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="hold a recipe param fixed")
    p.add_argument("--input-shape", help="HEIGHT,WIDTH,CHANNELS (default: the recipe's)")
    p.add_argument("--seed", type=seed, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--retrain-epochs", type=positive_int, metavar="N",
                   help="then train the best configuration for N epochs into DIR/best_retrained")
    p.add_argument("--trial-timeout", type=positive_float, metavar="SECONDS",
                   help="distributed: hand on a trial whose worker is silent, or finishes no epoch, this long "
                        "(default $CNNBUILDER_TRIAL_TIMEOUT or 600)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--overwrite", action="store_true", help="replace a finished search in DIR")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not log the trials to DIR/logs/ (TensorBoard's HParams dashboard)")
    add_backend_arguments(p, processes=False)  # a search spreads with KerasTuner's workers
    p.set_defaults(run=cmd_tune)

    p = commands.add_parser("export", help="export a run or .keras model as a SavedModel, LiteRT or ONNX file")
    p.add_argument("source", metavar="RUN_DIR|MODEL.keras")
    p.add_argument("--output", required=True, metavar="saved_models/NAME/VERSION|FILE.tflite|FILE.onnx",
                   help="a version directory, or a .tflite / .onnx file in a directory of its own")
    # No argparse choices: export() names a bad format or quantization in one paragraph.
    p.add_argument("--format", metavar="savedmodel|litert|onnx",
                   help="default: from the --output suffix, else savedmodel")
    p.add_argument("--quantize", metavar="dynamic|float16|int8",
                   help="LiteRT post-training quantization (int8 calibrates on the run's training images)")
    p.add_argument("--max-accuracy-drop", type=non_negative_float, default=2.0, metavar="POINTS",
                   help="fail a quantized export losing more test accuracy than this (default 2 points)")
    p.add_argument("--force", action="store_true", help="replace an existing export")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="export the best epoch so far of a run that has not finished (the card says so)")
    p.add_argument("--class-names", help="comma-separated labels (default: the run's)")
    p.add_argument("--data-dir", help="tensorflow-datasets data directory (to reload a tfds: run's data)")
    p.set_defaults(run=cmd_export)

    p = commands.add_parser("predict", help="classify image files with an exported SavedModel, .tflite or .onnx file")
    p.add_argument("model", metavar="SAVED_MODEL_DIR|MODEL.tflite|MODEL.onnx")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--output", metavar="MASK_DIR",
                   help="segmentation models: write MASK_DIR/STEM.png (class map, palette PNG) "
                        "and MASK_DIR/STEM.json (class areas) per image")
    p.add_argument("--trust", action="store_true",
                   help="run a SavedModel that cnnbuilder export did not write: a SavedModel is "
                        "a program (like a pickle) and its graph may read or write files")
    p.set_defaults(run=cmd_predict)

    add_weights_parser(commands)
    return parser


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with file descriptor 2 closed: its C++ start-up lines (CUDA
    probes) bypass Python and would clutter every command's output."""
    if "tensorflow" in sys.modules:
        return
    import os

    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe logs on first use
    except ImportError:
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# What the operating system refuses (a missing file, no permission, a full disk) is the
# user's to fix, like a CnnBuilderError.
_BAD_INPUT = (CnnBuilderError, FileNotFoundError, PermissionError, IsADirectoryError,
              NotADirectoryError, FileExistsError)


def _one_paragraph(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where}"
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit status (0, 1 internal failure, 2 bad input, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    status = _run_command(args, argv)
    if status and _in_multiprocess_run():
        # JAX's exit handler waits for the other processes, which may be gone or waiting
        # for this one: leave now, with the message out.
        sys.stdout.flush()
        sys.stderr.flush()
        import os

        os._exit(status)
    return status


def _in_multiprocess_run() -> bool:
    """Whether this process joined other processes (`jax.distributed`)."""
    jax = sys.modules.get("jax")
    return jax is not None and jax.distributed.is_initialized()


def _quiet_third_party_warnings() -> None:
    """Warnings of the libraries below that say nothing the user can act on."""
    import warnings

    # JAX, when Keras asks for int64 without jax_enable_x64: it uses int32, as intended.
    warnings.filterwarnings("ignore", message=r"Explicitly requested dtype .*int64", category=UserWarning)


def _run_command(args, argv: list[str]) -> int:
    """`args.run(args)`, every failure turned into one paragraph and an exit status (a
    multi-process `train` runs under a supervisor: `cli_backend.supervise`)."""
    debug = getattr(args, "debug", False)
    _quiet_third_party_warnings()
    try:
        # Export writes TensorFlow artifacts (SavedModel, LiteRT, ONNX through tf2onnx) and
        # predict reads them: both run on TensorFlow whatever $KERAS_BACKEND says.
        backend = getattr(args, "backend", None) or (
            "tensorflow" if args.command in ("export", "predict") else None)
        if backend is None and args.command not in ("list", "help"):
            # Keras would fail on a bogus one with a bare error; jax needs its extra.
            backend = checks.environment_backend()
        select_backend(backend)
        supervised = supervise(args, argv) if args.command == "train" else None
        if supervised is not None:
            return supervised
        if args.command not in ("list", "help"):
            _import_tensorflow_quietly()
        # Recipe messages name a param given on the command line as `--set NAME=VALUE`.
        with overrides_from("--set"), arguments_from(_ARGUMENT_FLAGS):
            return args.run(args)
    except KeyboardInterrupt:
        print(f"cnnbuilder {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every failure becomes one paragraph
        if debug:
            raise
        if isinstance(exc, _BAD_INPUT):
            print(f"cnnbuilder {args.command}: error: {_one_paragraph(exc)}", file=sys.stderr)
            return BAD_INPUT
        print(f"cnnbuilder {args.command}: internal error: {type(exc).__name__}: "
              f"{_one_paragraph(exc)[:2000]} This is a failure of cnnbuilder or a library it "
              "uses, not of your input; rerun the command with --debug to see the traceback, "
              "and report it.", file=sys.stderr)
        return INTERNAL_FAILURE


if __name__ == "__main__":
    sys.exit(main())
