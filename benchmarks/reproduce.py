"""Train a recipe exactly as its paper did and print the test error beside the published one.

    python benchmarks/reproduce.py resnet20 --data-dir ~/tensorflow_datasets
    python benchmarks/reproduce.py densenet40_k12 --data-dir DIR --epochs 30   # a shorter run
    python benchmarks/reproduce.py fcdensenet103 --data-dir CAMVID           # mean IoU vs 66.9

A segmentation recipe whose paper used CamVid (`metadata.reported.dataset: camvid`) reads
`--data-dir` in the SegNet tutorial's CamVid layout (`train/`, `trainannot/`, `val/`,
`valannot/`, `test/`, `testannot/`: 367/101/233 images of 360×480, label maps 0–10 for
the 11 classes Jégou et al. evaluate, 11 void), links it as a cnnbuilder segmentation
folder (`images/` + `masks/` per split, the void label as 255) and prints the test mean
IoU beside the paper's.

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


# The 11 CamVid classes of Jégou et al. (and SegNet), in the label order of the SegNet
# tutorial's annotations; 11 there is void.
CAMVID_CLASSES = ("sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence",
                  "car", "pedestrian", "bicyclist")
CAMVID_VOID = 11
CAMVID_SPLITS = {"train": "train", "val": "val", "test": "test"}


def camvid_folder(camvid: Path, target: Path) -> str:
    """`folder:` spec of a cnnbuilder segmentation folder made at `target` from the SegNet
    tutorial's CamVid layout at `camvid`: images linked, masks rewritten with the void label
    as 255, `classes.txt` the 11 classes."""
    import numpy as np
    from PIL import Image

    camvid, target = Path(camvid), Path(target)
    for split, name in CAMVID_SPLITS.items():
        images, annotations = camvid / split, camvid / f"{split}annot"
        if not images.is_dir() or not annotations.is_dir():
            raise SystemExit(f"{camvid} is not in the CamVid layout: {images} and {annotations} "
                             "must be folders (the SegNet tutorial's CamVid).")
        (target / "images" / name).mkdir(parents=True, exist_ok=True)
        (target / "masks" / name).mkdir(parents=True, exist_ok=True)
        for image in sorted(images.glob("*.png")):
            (target / "images" / name / image.name).symlink_to(image.resolve())
            labels = np.array(Image.open(annotations / image.name))
            labels[labels == CAMVID_VOID] = 255
            Image.fromarray(labels.astype(np.uint8)).save(target / "masks" / name / image.name)
    (target / "classes.txt").write_text("\n".join(CAMVID_CLASSES) + "\n")
    return f"folder:{target}"


def reproduce(recipe_name: str, *, dataset: str | None = None, data_dir=None, epochs=None,
              output=None, seed: int = 0, verbose=2, input_shape=None) -> dict:
    """Train `recipe_name` as its paper on `dataset` and return the measured and the
    published test error (in %; a segmentation recipe: the test mean IoU in %)."""
    recipe = cnnbuilder.load_recipe(recipe_name)
    if recipe.task == "segmentation":
        return _reproduce_segmentation(recipe, dataset=dataset, data_dir=data_dir, epochs=epochs,
                                       output=output, seed=seed, verbose=verbose,
                                       input_shape=input_shape)
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
                                  verbose=verbose, overwrite=True, input_shape=input_shape)
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


def _reproduce_segmentation(recipe, *, dataset, data_dir, epochs, output, seed, verbose,
                            input_shape) -> dict:
    """`reproduce` of a segmentation recipe: CamVid from `data_dir` (or `dataset`), the test
    mean IoU beside the paper's."""
    reported = recipe.metadata.get("reported") or {}
    training = {"epochs": epochs} if epochs else {}
    with tempfile.TemporaryDirectory() as scratch:
        if dataset is None:
            if reported.get("dataset") != "camvid" or not data_dir:
                raise SystemExit(f"{recipe.name}: pass --data-dir CAMVID (the CamVid layout) "
                                 "or --dataset folder:PATH.")
            dataset = camvid_folder(Path(data_dir), Path(scratch) / "camvid")
        report = describe(recipe.training, name=recipe.name, overrides=training, dataset=dataset,
                          normalization=recipe.scratch_normalization)
        print(f"{recipe.name} on {reported.get('dataset', dataset)}, trained as {report['source']}: "
              f"{report['length']} {report['unit']}, batch {report['batch_size']}")
        for line in report["departures"]:
            print(f"  departs: {line}")
        result = cnnbuilder.train(recipe.name, dataset, output=output or Path(scratch) / "run",
                                  training=training, seed=seed, verbose=verbose, overwrite=True,
                                  input_shape=input_shape)
    measured = 100 * result.metrics["test_mean_iou"]
    published = reported.get("mean_iou")
    line = f"{recipe.name}: test mean IoU {measured:.2f}% after {result.metrics['epochs_run']} epochs"
    if published is not None:
        line += f"; published {published:.1f}% ({reported.get('source', 'the paper')})"
    print(line)
    return {"recipe": recipe.name, "dataset": reported.get("dataset", dataset),
            "test_mean_iou": round(measured, 4), "reported_mean_iou": published,
            "reported_source": reported.get("source"), "epochs_run": result.metrics["epochs_run"],
            "seconds": result.metrics["seconds"], "departures": report["departures"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--data-dir", help="tensorflow-datasets data directory")
    parser.add_argument("--dataset", help="default: the paper's (tfds:NAME of metadata.reported)")
    parser.add_argument("--epochs", type=int, help="a shorter (or longer) run; the schedule keeps its shape")
    parser.add_argument("--output", help="keep the run directory here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-shape", help="HEIGHT,WIDTH,CHANNELS (default: the recipe's)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args(argv)
    figures = reproduce(args.recipe, dataset=args.dataset, data_dir=args.data_dir,
                        epochs=args.epochs, output=args.output, seed=args.seed,
                        input_shape=tuple(int(d) for d in args.input_shape.split(","))
                        if args.input_shape else None)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
