"""Max |difference| between cnnbuilder's and PyTorch's logits for every recipe × weight source.

For each source of `cnnbuilder/model/pretrained/sources.yaml`, torchvision's (or timm's) own
network is built with random weights (BatchNorm statistics calibrated on random 224×224
images, logits of unit spread there: tests/torch_reference.py), its float32 state dict is put where torch.hub / the
Hugging Face hub caches the published file (in a temporary directory), and
`cnnbuilder.build(recipe, weights=source)` is compared with it:

- float32 at 224×224 (batch 2), the logits;
- float32 at 160×160 (batch 2): the logits, or for a flatten head (VGG, AlexNet) the
  backbone's feature map against torchvision's `features`;
- float64 at 224×224 (batch 1): both networks in double precision on the same float32
  weights, which isolates the conversion from float32 rounding;
- PyTorch's own float32 against its float64 pass on that image: the rounding a deep random
  network amplifies, for scale.

Prints a Markdown table for benchmarks/results.md. No network access: no weights are
downloaded. Usage: python benchmarks/pytorch_weights.py [RECIPE ...]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CNNBUILDER_OFFLINE"] = "1"


def _import_pytorch() -> None:
    """torch, torchvision and timm, with triton kept out (see torch_reference.block_triton)."""
    from torch_reference import block_triton

    block_triton()
    import timm  # noqa: F401
    import torchvision  # noqa: F401


def reference_network(source):
    """torchvision's or timm's network for `source`, random weights, calibrated."""
    import timm
    import torchvision

    from torch_reference import randomize

    if source.hub == "timm":
        model = timm.create_model(source.name.split(":", 1)[1].split(".")[0], pretrained=False)
    elif source.recipe == "googlenet":
        model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
    else:
        model = getattr(torchvision.models, source.recipe)(weights=None)
    # BatchNorm statistics and the logits' spread calibrated at the compared size, 224.
    return randomize(model, size=224)


def compare(source, cache: Path) -> dict:
    """The three max differences (and the logits' scale) for one source."""
    import keras
    import numpy as np

    import cnnbuilder
    from torch_reference import (images, keras_outputs, save_hf_snapshot, save_torchvision,
                                 torch_outputs)

    reference = reference_network(source)
    if source.hub == "timm":
        save_hf_snapshot(reference, cache / "hf", source.meta["hf_hub_id"])
    else:
        save_torchvision(reference, cache / "torch", source.file_name)
    row = {}
    x = images(224)
    model = cnnbuilder.build(source.recipe, weights=source.name, classifier_activation=None)
    theirs = torch_outputs(reference, x)
    row["f32_224"] = float(np.abs(keras_outputs(model, x) - theirs).max())
    row["scale"] = float(np.abs(theirs).max())
    del model
    x = images(160)
    flatten = any(s.block == "flatten" for s in cnnbuilder.load_recipe(source.build).default_plan.steps)
    if flatten:
        model = cnnbuilder.build(source.recipe, weights=source.name, include_top=False,
                                 input_shape=(160, 160, 3))
        theirs = torch_outputs(reference.features, x).transpose(0, 2, 3, 1)
    else:
        model = cnnbuilder.build(source.recipe, weights=source.name, classifier_activation=None,
                                 input_shape=(160, 160, 3))
        theirs = torch_outputs(reference, x)
    row["f32_160"] = float(np.abs(keras_outputs(model, x) - theirs).max())
    row["other"] = "features" if flatten else "logits"
    del model
    x32 = images(224, batch=1)
    torch32 = torch_outputs(reference, x32)
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the global policy is not re-read from floatx
    try:
        reference.double()
        model = cnnbuilder.build(source.recipe, weights=source.name, classifier_activation=None)
        x = x32.astype("float64")
        torch64 = torch_outputs(reference, x)
        row["f64_224"] = float(np.abs(keras_outputs(model, x) - torch64).max())
        # PyTorch's own float32 rounding, for scale: its float32 and float64 passes.
        row["torch_f32_f64"] = float(np.abs(torch32 - torch64).max())
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    return row


def main(argv: list[str]) -> int:
    """Compare every source (of the recipes in `argv`, or all) and print the table."""
    import platform

    _import_pytorch()
    import torch

    from cnnbuilder.model.pretrained.sources import recipes_with_sources, sources_for

    recipes = argv or recipes_with_sources()
    print(f"<!-- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} -->")
    print("| recipe | source | builds | float32 224 (logits) | float32 160 | float64 224 | "
          "PyTorch's own float32 vs float64 | max |logit| |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as directory:
        cache = Path(directory)
        os.environ["TORCH_HOME"] = str(cache / "torch")
        os.environ["HF_HOME"] = str(cache / "hf")
        for recipe in recipes:
            for source in sources_for(recipe):
                row = compare(source, cache)
                print(f"| {recipe} | {source.name} | {source.build} | {row['f32_224']:.1e} | "
                      f"{row['f32_160']:.1e} ({row['other']}) | {row['f64_224']:.1e} | "
                      f"{row['torch_f32_f64']:.1e} | {row['scale']:.2f} |", flush=True)
                for path in cache.rglob("*"):
                    if path.is_file():
                        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
