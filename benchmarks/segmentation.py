"""Segmentation figures: parameter counts against the papers, mean IoU on the embedded
digits segmentation set over seeds, and the input pipeline against the model.

    python benchmarks/segmentation.py params
    python benchmarks/segmentation.py miou --epochs 10 --seeds 0 1 2
    python benchmarks/segmentation.py pipeline
    python benchmarks/segmentation.py all --write     # and append the tables to results.md

`digits-seg` is a teaching set (each pixel background or its digit's class, from the
real handwritten digits at 32×32), not CamVid: its mean IoU says that the networks learn,
not how they compare with the papers' 58.9 / 66.9 % (benchmarks/reproduce.py runs the
paper's CamVid training where the data is at hand).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import cnnbuilder  # noqa: E402

RESULTS = Path(__file__).with_name("results.md")
# (recipe, build keywords, the paper's count, where the paper gives it)
PAPER_COUNTS = [
    ("fcdensenet56", {"classes": 11}, 1.5e6, "Jégou et al. 2017, Table 3 (1.5M)"),
    ("fcdensenet67", {"classes": 11}, 3.5e6, "Jégou et al. 2017, Table 3 (3.5M)"),
    ("fcdensenet103", {"classes": 11}, 9.4e6, "Jégou et al. 2017, Tables 2 and 3 (9.4M)"),
    ("unet", {"classes": 2}, None, "Ronneberger et al. 2015 give no count"),
]


def params() -> list[str]:
    """The parameter count of each recipe beside its paper's."""
    lines = ["| recipe | cnnbuilder | paper | source |", "| --- | ---: | ---: | --- |"]
    for name, kwargs, paper, source in PAPER_COUNTS:
        count = cnnbuilder.build(name, **kwargs).count_params()
        lines.append(f"| `{name}` ({kwargs['classes']} classes) | {count:,} | "
                     f"{'%.1fM' % (paper / 1e6) if paper else '—'} | {source} |")
    return lines


NETWORKS = {  # label -> (recipe, build params, training overrides) of the mean-IoU runs
    "fcdensenet56": ("FC-DenseNet56", "fcdensenet56", {}, {"batch_size": 32}),
    "unet_resnet18": ("U-Net over ResNet-18", "unet_backbone", {"backbone": "resnet18"},
                      {"batch_size": 32}),
}


def miou(epochs: int, seeds, networks=tuple(NETWORKS)) -> list[str]:
    """Test mean IoU on digits-seg after `epochs`, for each seed, and their mean."""
    lines = ["| network | input | epochs | test mean IoU per seed | mean ± sd | pixel accuracy (mean) | s/epoch |",
             "| --- | --- | ---: | --- | --- | ---: | ---: |"]
    for label, recipe, build_params, training in (NETWORKS[n] for n in networks):
        shape = (32, 32, 3) if build_params.get("backbone") else (32, 32, 1)
        scores, accuracy, seconds = [], [], []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as scratch:
                result = cnnbuilder.train(recipe, "digits-seg", output=Path(scratch) / "run",
                                          input_shape=shape, params=build_params, seed=seed,
                                          training={**training, "epochs": epochs}, verbose=0,
                                          tensorboard=False)
            scores.append(result.metrics["test_mean_iou"])
            accuracy.append(result.metrics["test_pixel_accuracy"])
            seconds.append(result.metrics["seconds"] / result.metrics["epochs_run"])
            print(f"{label} seed {seed}: test mean IoU {scores[-1]:.4f}", flush=True)
        changed = ", ".join(f"{k} {v}" for k, v in training.items())
        lines.append(f"| {label} ({changed}) | {'×'.join(map(str, shape))} | {epochs} | "
                     f"{', '.join(f'{s:.4f}' for s in scores)} | {statistics.mean(scores):.4f} ± "
                     f"{statistics.stdev(scores) if len(scores) > 1 else 0:.4f} | "
                     f"{statistics.mean(accuracy):.4f} | {statistics.median(seconds):.1f} |")
    return lines


def pipeline(repeats: int = 5) -> list[str]:
    """Images per second of the digits-seg training pipeline (translation applied to image
    and mask together) against fcdensenet56's training step, alternated, medians."""
    import keras

    from cnnbuilder.data import load_dataset, make_pipeline
    from cnnbuilder.training.optimizers import segmentation_loss_and_metrics
    from cnnbuilder.recipe.training import training_config

    data = load_dataset("digits-seg")
    shape, batch = (32, 32, 1), 32
    batches = make_pipeline(data.train, input_shape=shape, batch_size=batch, training=True,
                            augment=["translate"], epochs=(0, 1))
    images = len(data.train[0])
    model = cnnbuilder.build("fcdensenet56", input_shape=shape, classes=11)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  **segmentation_loss_and_metrics(training_config({}), 11))
    x, y, w = next(iter(batches))
    steps = -(-images // batch)

    def read_epoch():
        for _ in batches:
            pass

    def train_epoch():
        for _ in range(steps):
            model.train_on_batch(x, y, sample_weight=w)

    read_epoch(), train_epoch()  # warm-up: tracing and the first pass
    times = {read_epoch: [], train_epoch: []}
    for _ in range(repeats):
        for side in (read_epoch, train_epoch):
            start = time.perf_counter()
            side()
            times[side].append(time.perf_counter() - start)
    pipe, train = (images / statistics.median(times[f]) for f in (read_epoch, train_epoch))
    return ["| measured | images/s | ratio (target ≥ 10) |", "| --- | ---: | ---: |",
            f"| digits-seg pipeline (batch {batch}, translate on image and mask) | {pipe:,.0f} | "
            f"{pipe / train:.1f} |",
            f"| fcdensenet56 training step (32×32×1, batch {batch}) | {train:,.0f} | |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("section", choices=("params", "miou", "pipeline", "all"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--networks", nargs="+", choices=tuple(NETWORKS), default=tuple(NETWORKS))
    parser.add_argument("--write", action="store_true", help="append the tables to results.md")
    args = parser.parse_args(argv)
    sections = []
    if args.section in ("params", "all"):
        sections.append(("Parameter counts against the papers", params()))
    if args.section in ("pipeline", "all"):
        sections.append(("Input pipeline against the model (digits-seg)", pipeline()))
    if args.section in ("miou", "all"):
        sections.append((f"Mean IoU on digits-seg, {len(args.seeds)} seeds", miou(args.epochs, args.seeds, args.networks)))
    text = [f"## Segmentation ({datetime.date.today()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs; `python benchmarks/segmentation.py {' '.join(argv or sys.argv[1:])}`)", ""]
    for title, lines in sections:
        text += [f"### {title}", "", *lines, ""]
    print("\n".join(text))
    if args.write:
        with RESULTS.open("a", encoding="utf-8") as results:
            results.write("\n" + "\n".join(text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
