"""Reference PyTorch networks with random weights, and their outputs beside cnnbuilder's.

Shared by tests/test_pytorch_weights.py and benchmarks/pytorch_weights.py. No weights are
downloaded: every network is torchvision's or timm's own code with random weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def block_triton() -> None:
    """Keep torchvision from importing triton (through torch.library), whose bundled LLVM
    crashes the process (SIGSEGV) when TensorFlow was imported first; PyTorch on the CPU
    does without it. Call before importing torchvision or timm."""
    sys.modules.setdefault("triton", None)

# The 1e-4 of the equivalence claim is absolute on the logits. float32 rounding grows with
# the logits' scale, so the classifier is rescaled to give logits of unit standard deviation
# (a softmax over 1000 classes with that spread is what trained networks give at moderate
# confidence); the comparison then measures the conversion, not the scale of random weights.
LOGIT_STD = 1.0


def randomize(model, seed: int = 0, size: int = 64):
    """Random BatchNorm affine parameters and statistics calibrated on a random batch (so
    every layer's activations keep a realistic scale), then eval mode; returns `model`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0.0, 0.1, generator=generator)
            module.momentum = None  # a cumulative average: the statistics of this batch
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size, generator=generator))
    model.eval()
    _rescale_classifier(model, size, generator)
    return model


def _rescale_classifier(model, size: int, generator) -> None:
    """Scale the last Linear layer so the logits have `LOGIT_STD` standard deviation."""
    import torch

    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size, generator=generator))
        factor = LOGIT_STD / float(logits.std())
        last.weight.mul_(factor)
        last.bias.mul_(factor)


def torch_outputs(model, images: np.ndarray) -> np.ndarray:
    """`model`'s outputs (eval mode) for NHWC float32 `images`."""
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()


def keras_outputs(model, images: np.ndarray) -> np.ndarray:
    """A Keras model's outputs (inference mode) for NHWC float32 `images`."""
    return np.asarray(model(images, training=False))


def images(size: int, batch: int = 2, channels: int = 3, seed: int = 1,
           dtype: str = "float32") -> np.ndarray:
    """A batch of random normalized images, NHWC."""
    return np.random.default_rng(seed).normal(size=(batch, size, size, channels)).astype(dtype)


def save_torchvision(model, torch_home: Path, file_name: str) -> Path:
    """`model`'s state dict where torch.hub keeps torchvision's file (`$TORCH_HOME`)."""
    import torch

    path = torch_home / "hub" / "checkpoints" / file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def save_hf_snapshot(model, hf_home: Path, repo_id: str, revision: str = "0" * 40) -> Path:
    """`model`'s state dict as the Hugging Face hub caches a timm model: model.safetensors
    in `hub/models--org--name/snapshots/<revision>/`, with `refs/main` naming it."""
    from safetensors.torch import save_file

    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    path = repo / "snapshots" / revision / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path
