"""Train a recipe exactly as its paper did and print the test error beside the published one.

    python benchmarks/reproduce.py resnet20 --data-dir ~/tensorflow_datasets
    python benchmarks/reproduce.py densenet40_k12 --data-dir DIR --epochs 30   # a shorter run

The dataset is the recipe's paper's (`metadata.reported.dataset`, e.g. `tfds:cifar10`)
unless `--dataset` names another. Nothing of the recipe's `training:` section is changed
but, with `--epochs`, the length (the schedule keeps its shape); every departure from the
paper is printed first (`cnnbuilder show RECIPE --training` prints the same). A full run
needs a GPU: resnet20's 64k iterations take hours on CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cnnbuilder  # noqa: E402
from cnnbuilder.recipe.training_plan import describe  # noqa: E402


def papers_dataset(recipe) -> str:
    """`tfds:NAME` of the dataset the recipe's paper reports on."""
    reported = recipe.metadata.get("reported") or {}
    name = reported.get("dataset") or recipe.training.get("dataset")
    if not name:
        raise SystemExit(f"{recipe.name} names no dataset in metadata.reported; pass --dataset.")
    return f"tfds:{name}"


def reproduce(recipe_name: str, *, dataset: str | None = None, data_dir=None, epochs=None,
              output=None, seed: int = 0, verbose=2) -> dict:
    """Train `recipe_name` as its paper on `dataset` and return the measured and the
    published test error (in %)."""
    recipe = cnnbuilder.load_recipe(recipe_name)
    dataset = dataset or papers_dataset(recipe)
    training = {"epochs": epochs} if epochs else {}
    report = describe(recipe.training, name=recipe.name, overrides=training,
                      dataset=dataset.split(":", 1)[-1] if dataset.startswith("tfds:") else dataset,
                      normalization=recipe.scratch_normalization)
    print(f"{recipe.name} on {dataset}, trained as {report['source']}: "
          f"{report['length']} {report['unit']}, batch {report['batch_size']}")
    for line in report["departures"]:
        print(f"  departs: {line}")
    with tempfile.TemporaryDirectory() as scratch:
        result = cnnbuilder.train(recipe.name, dataset, output=output or Path(scratch) / "run",
                                  data_dir=data_dir, training=training, seed=seed,
                                  verbose=verbose, overwrite=True)
    reported = recipe.metadata.get("reported") or {}
    measured = 100 * (1 - result.metrics["test_accuracy"])
    published = reported.get("error")
    line = f"{recipe.name}: test error {measured:.2f}% after {result.metrics['epochs_run']} epochs"
    if published is not None:
        line += f"; published {published:.2f}% ({reported.get('source', 'the paper')})"
    else:
        line += f"; no published top-1 error ({reported.get('notes') or reported.get('source', '')})"
    print(line)
    return {"recipe": recipe.name, "dataset": dataset, "test_error": round(measured, 4),
            "reported_error": published, "reported_source": reported.get("source"),
            "epochs_run": result.metrics["epochs_run"], "seconds": result.metrics["seconds"],
            "departures": report["departures"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--data-dir", help="tensorflow-datasets data directory")
    parser.add_argument("--dataset", help="default: the paper's (tfds:NAME of metadata.reported)")
    parser.add_argument("--epochs", type=int, help="a shorter (or longer) run; the schedule keeps its shape")
    parser.add_argument("--output", help="keep the run directory here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args(argv)
    figures = reproduce(args.recipe, dataset=args.dataset, data_dir=args.data_dir,
                        epochs=args.epochs, output=args.output, seed=args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
