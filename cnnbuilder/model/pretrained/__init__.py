"""Pretrained weights of the PyTorch world (torchvision, timm, state-dict files) for recipe
builds, proven equal to the PyTorch networks by their outputs (tests/test_pytorch_weights.py).

- `sources`: the registry (`sources.yaml`) and the caches, pure Python;
- `state_dicts`: reading `.safetensors` (no PyTorch) and `.pth` (`weights_only=True`);
- `fetch`: a source's file from its cache, or downloaded by its own library;
- `convert`: one small function per family naming each layer's PyTorch tensors;
- `load`: `build(..., weights=<source>)`.

`imagenet_classes.txt` holds the 1000 ImageNet class names in the classifiers' order.
"""

from __future__ import annotations

from pathlib import Path


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the order of the classifiers' outputs."""
    text = Path(__file__).with_name("imagenet_classes.txt").read_text(encoding="utf-8")
    return text.splitlines()


__all__ = ["imagenet_class_names"]
