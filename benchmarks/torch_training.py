"""Training step of cnnbuilder's networks against torchvision's same networks, on this CPU.

One process, alternating: a round times `--steps` SGD steps (momentum 0.9, batch 16,
128×128, 1000 classes) of the Keras model (TensorFlow, `model.train_on_batch` on a compiled
model, graph mode) and then of torchvision's model (PyTorch eager), after warm-up steps for
each; the ratio cnnbuilder / torchvision of each round, and the median over the rounds, is
printed. Both frameworks are held to the same number of threads (`--threads`).

Usage: python benchmarks/torch_training.py [--rounds 5] [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NETWORKS = {"resnet50": ("resnet50_tv", "resnet50"), "densenet121": ("densenet121", "densenet121")}


def keras_step(recipe: str, batch, labels):
    """A function running one compiled Keras training step of `recipe`."""
    import keras

    import cnnbuilder

    model = cnnbuilder.build(recipe, input_shape=batch.shape[1:], classifier_activation=None)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return lambda: model.train_on_batch(batch, labels)


def torch_step(constructor: str, batch, labels):
    """A function running one eager PyTorch training step of torchvision's network."""
    import torch
    import torchvision

    model = getattr(torchvision.models, constructor)(weights=None)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy())
    y = torch.from_numpy(labels.astype("int64"))
    loss_function = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(x), y)
        loss.backward()
        optimizer.step()
    return step


def seconds_per_step(step, steps: int) -> float:
    """Mean wall seconds of `steps` calls of `step`."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main(argv) -> int:
    """Time both sides for each network and print the ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    args = parser.parse_args(argv)
    from torch_reference import block_triton

    block_triton()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(16, 128, 128, 3)).astype("float32")
    labels = rng.integers(0, 1000, 16)
    print("| network | cnnbuilder s/step | torchvision s/step | ratio (median of rounds) | rounds |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name in args.networks:
        recipe, constructor = NETWORKS[name]
        ours, theirs = keras_step(recipe, batch, labels), torch_step(constructor, batch, labels)
        for _ in range(2):  # warm-up: tracing, allocation
            ours(), theirs()
        times = [(seconds_per_step(ours, args.steps), seconds_per_step(theirs, args.steps))
                 for _ in range(args.rounds)]
        ratios = [a / b for a, b in times]
        print(f"| {name} | {statistics.median(a for a, _ in times):.3f} | "
              f"{statistics.median(b for _, b in times):.3f} | {statistics.median(ratios):.2f} | "
              f"{', '.join(f'{r:.2f}' for r in ratios)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
