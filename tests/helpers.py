"""Small recipes and utilities shared by the tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

TINY_RECIPE = textwrap.dedent(
    """\
    name: tiny
    description: a small residual network for tests
    metadata: {input_shape: [16, 16, 3], classes: 4}
    params:
      width: 8
      units: [1, 1]
    defaults:
      conv: {use_bias: false}
    stem:
      - conv: {filters: "${width}", kernel: 3}
      - bn
      - activation: relu
    stages:
      - name: s1
        blocks:
          - identity: {filters: "${width}", repeat: "${units[0]}"}
      - name: s2
        blocks:
          - convolutional: {filters: "${width * 2}"}
          - identity: {filters: "${width * 2}", repeat: "${units[1] - 1}"}
    head:
      - global_pool: avg
      - fc: {units: "${classes}", activation: "${classifier_activation}"}
    """
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def randomize(model, seed: int = 1) -> None:
    """Random weights and BatchNorm statistics (He-scaled kernels, BN statistics and
    offsets around their defaults), so that equal outputs mean every weight landed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape, name = tuple(weight.shape), weight.path.split("/")[-1]
        if name in ("moving_variance", "gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("moving_mean", "beta", "bias"):
            value = rng.normal(0.0, 0.1, shape)
        else:
            fan_in = np.prod(shape[:-1]) if len(shape) > 1 else 1
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        weight.assign(value.astype("float32"))
