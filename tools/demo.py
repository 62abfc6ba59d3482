"""Helpers for `make demo`: sample images to feed `cnnbuilder predict`.

    python -m tools.demo samples DIR [COUNT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_samples(directory, count: int = 5) -> list[Path]:
    """PNG files of the first `count` test digits, named by their true label."""
    from cnnbuilder.data import load_dataset

    data = load_dataset("digits")
    images, labels = data.test
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(min(count, len(images))):
        path = directory / f"test{index:03d}_label{data.class_names[int(labels[index])]}.png"
        Image.fromarray(np.asarray(images[index])[..., 0]).save(path)
        paths.append(path)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "samples":
        print(__doc__.strip(), file=sys.stderr)
        return 2
    count = int(argv[2]) if len(argv) > 2 else 5
    for path in write_samples(argv[1], count):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
