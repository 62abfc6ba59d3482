"""Transfer on real data (issue 14): does a pretrained backbone help with 10 images per class?

resnet20 is pretrained on the digits 0-4 (every image of them in the embedded `digits`
dataset but a held-out fifth), then trained on the digits 5-9 with 10 images per class
three ways, all for the same number of epochs:

- **scratch**: from random weights, at the scratch learning rate;
- **frozen**: the pretraining run's backbone frozen (`freeze="backbone"`, BatchNorm in
  inference mode) under a new head, at the scratch learning rate;
- **fine-tuned**: the two phases of Keras' transfer-learning guide and
  docs/fine_tuning.md: phase 1 as *frozen* for `--head-epochs`, then phase 2 from
  phase 1's run directory with nothing frozen at a 10x lower learning rate for the rest.

"A new head": the pretraining run directory is copied with its classifier re-initialized
(its run.json kept, so the target runs reuse the pretraining's input statistics). All are
scored on the rest of the 5-9 images (5 per class set aside for the best-epoch choice).
Three seeds; the 50 images differ per seed.

    python benchmarks/transfer.py                 # prints the table, writes JSON
    python benchmarks/transfer.py --seeds 0 --epochs 6 --head-epochs 2 --pretrain-epochs 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import cnnbuilder  # noqa: E402
from cnnbuilder.data.splits import Dataset  # noqa: E402

RECIPE = "resnet20"
FEW = 10  # training images per class of the target task
HELD = 5  # validation images per class (best-epoch choice)


def digits_arrays():
    """All 1,797 digits (32x32x1 uint8) and labels, the splits of `digits` joined."""
    data = cnnbuilder.load_dataset("digits")
    x = np.concatenate([data.train[0], data.validation[0], data.test[0]])
    y = np.concatenate([data.train[1], data.validation[1], data.test[1]])
    return x, y


def _dataset(x, y, train, validation, test) -> Dataset:
    # Named "digits" so the runs take digits' augmentation (translate, no flips).
    return Dataset("digits", [str(i) for i in range(5)], tuple(x.shape[1:]),
                   (x[train], y[train]), (x[validation], y[validation]), (x[test], y[test]))


def source_task(x, y) -> Dataset:
    """Digits 0-4: train on 70 %, pick the best epoch on 10 %, score on 20 %."""
    index = np.flatnonzero(y < 5)
    rng = np.random.default_rng(1234)
    rng.shuffle(index)
    n = len(index)
    return _dataset(x, y, index[: int(0.7 * n)], index[int(0.7 * n): int(0.8 * n)],
                    index[int(0.8 * n):])


def target_task(x, y, seed: int) -> Dataset:
    """Digits 5-9 as classes 0-4: FEW training and HELD validation images per class, the
    rest is the test set."""
    y = np.where(y >= 5, y - 5, -1)
    rng = np.random.default_rng(seed)
    train, validation, test = [], [], []
    for label in range(5):
        index = rng.permutation(np.flatnonzero(y == label))
        train += list(index[:FEW])
        validation += list(index[FEW: FEW + HELD])
        test += list(index[FEW + HELD:])
    return _dataset(x, y, np.array(train), np.array(validation), np.array(test))


def with_new_head(run_dir: Path, out: Path, seed: int) -> Path:
    """A copy of the run directory `run_dir` whose classifier is freshly initialized."""
    import keras

    shutil.copytree(run_dir, out)
    model = keras.saving.load_model(out / "model.keras", compile=False)
    keras.utils.set_random_seed(seed)
    fresh = cnnbuilder.build(RECIPE, classes=model.output_shape[-1],
                             input_shape=model.input_shape[1:])
    for layer in model.layers:
        if layer.name.startswith("head") and layer.weights:
            layer.set_weights(fresh.get_layer(layer.name).get_weights())
    model.save(out / "model.keras")
    return out


def mean(rows, key) -> float:
    return statistics.mean(r[key] for r in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every target arm")
    parser.add_argument("--head-epochs", type=int, default=10,
                        help="of --epochs, those of the fine-tuned arm's phase 1 (head only)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    x, y = digits_arrays()
    training = {"optimizer": "sgd", "learning_rate": 0.05, "schedule": "cosine",
                "weight_decay": 1e-4}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for seed in args.seeds:
            started = time.perf_counter()
            pretrained = cnnbuilder.train(
                RECIPE, source_task(x, y), output=work / f"pretrain{seed}", seed=seed, verbose=0,
                tensorboard=False, training={**training, "epochs": args.pretrain_epochs,
                                             "batch_size": 64})
            few = target_task(x, y, seed)
            head = str(with_new_head(work / f"pretrain{seed}", work / f"head{seed}", seed))

            def arm(name, epochs, **kwargs):
                settings = {**training, "epochs": epochs, "batch_size": 10,
                            **kwargs.pop("training", {})}
                return cnnbuilder.train(RECIPE, few, output=work / f"{name}{seed}", seed=seed,
                                        verbose=0, tensorboard=False, training=settings,
                                        **kwargs).metrics["test_accuracy"]

            scratch = arm("scratch", args.epochs)
            frozen = arm("frozen", args.epochs, weights=head, freeze="backbone")
            arm("phase1_", args.head_epochs, weights=head, freeze="backbone")
            tuned = arm("phase2_", args.epochs - args.head_epochs,
                        weights=str(work / f"phase1_{seed}"),
                        training={"learning_rate": training["learning_rate"] / 10})
            rows.append({"seed": seed,
                         "pretrain_accuracy": pretrained.metrics["test_accuracy"],
                         "scratch": scratch, "frozen": frozen, "fine_tuned": tuned,
                         "test_images": len(few.test[1]),
                         "seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
    print("\n| seed | pretrained (0-4) | scratch (5-9) | frozen backbone (5-9) "
          "| fine-tuned, 2 phases (5-9) | gain over scratch (points) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {100 * r['pretrain_accuracy']:.1f} % | {100 * r['scratch']:.1f} % "
              f"| {100 * r['frozen']:.1f} % | {100 * r['fine_tuned']:.1f} % "
              f"| {100 * (r['fine_tuned'] - r['scratch']):+.1f} |")
    gain = 100 * (mean(rows, "fine_tuned") - mean(rows, "scratch"))
    print(f"| mean | | {100 * mean(rows, 'scratch'):.1f} % | {100 * mean(rows, 'frozen'):.1f} % "
          f"| {100 * mean(rows, 'fine_tuned'):.1f} % | {gain:+.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "gain_points": gain}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
