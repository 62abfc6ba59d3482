"""PyTorch state dicts into recipe builds: one small function per family names the tensors.

A family function walks the model's layers (with the stage each was built in) and says
which PyTorch module each layer is — `conv2_block1_1_conv` is torchvision's
`layer1.0.conv1` — the way keras-hub's `convert_resnet.py` walks a backbone. Everything
else is common to all families and lives in `load_state_dict`: the layout of each tensor
(PyTorch OIHW kernels to Keras HWIO, Linear's (out, in) to Dense's (in, out)), the NCHW
order of a `Flatten` before a fully connected layer (VGG's and AlexNet's first one), the
BatchNorm statistics, the first convolution adapted to other input channels (timm's
`adapt_input_conv`), and the checks: a missing tensor, an extra one, or one of another
shape is named, and nothing is written until every tensor fits.
"""

from __future__ import annotations

import logging
import math
import re

import keras
import numpy as np

from cnnbuilder.errors import WeightsError
from cnnbuilder.model.features import layer_stage
from cnnbuilder.model.pretrained.state_dicts import IGNORED_SUFFIXES

logger = logging.getLogger("cnnbuilder")
_RESIDUAL_UNIT = re.compile(r"_block(?P<unit>\d+)_(?P<part>\d)_(?P<kind>conv|bn)$")
_DENSE_LAYER = re.compile(r"_block(?P<layer>\d+)_(?P<part>[012])_(?P<kind>conv|bn)$")
_INCEPTION = re.compile(r"^(?P<module>.+?)_(?P<part>1x1|3x3_reduce|3x3|5x5_reduce|5x5|pool_proj)"
                        r"_(?P<kind>conv|bn)$")
# torchvision's Inception module: branch1 is a 1×1; branch2 and branch3 are reduce → conv
# Sequentials; branch4 is MaxPool (index 0) → 1×1 (index 1).
_INCEPTION_BRANCHES = {"1x1": "branch1", "3x3_reduce": "branch2.0", "3x3": "branch2.1",
                       "5x5_reduce": "branch3.0", "5x5": "branch3.1", "pool_proj": "branch4.1"}


def weighted_layers(model: keras.Model) -> list[tuple]:
    """`(layer, stage)` for every layer with weights, in build order; a layer standing for a
    chain of standard layers (the memory-efficient DenseNet layer) counts as that chain."""
    found = []
    for layer in model.layers:
        for part in getattr(layer, "canonical_sublayers", None) or [layer]:
            if part.weights:
                found.append((part, layer_stage(layer)))
    return found


def _stages(layers) -> list[str]:
    """The stage names in build order (without the stem and the head)."""
    return list(dict.fromkeys(s for _, s in layers if s not in ("stem", "head", None)))


def _unknown(layer, family: str) -> WeightsError:
    return WeightsError(f"layer {layer.name} ({type(layer).__name__}) has no counterpart in "
                        f"the PyTorch {family} networks; this recipe is not one whose weights "
                        "the PyTorch world publishes.")


def resnet_names(layers, state) -> dict:
    """torchvision's / timm's ResNet, ResNeXt and Wide ResNet: `conv1`, `bn1`,
    `layer<s>.<u>.conv<i>`/`bn<i>`, the projection `layer<s>.<u>.downsample.0/1`, `fc`."""
    stages, names = _stages(layers), {}
    for layer, stage in layers:
        conv = isinstance(layer, keras.layers.Conv2D)
        if stage == "stem":
            names[layer.name] = "conv1" if conv else "bn1"
        elif stage == "head":
            names[layer.name] = "fc"
        elif (match := _RESIDUAL_UNIT.search(layer.name)):
            unit = f"layer{stages.index(stage) + 1}.{int(match['unit']) - 1}"
            part = match["part"]
            names[layer.name] = (f"{unit}.downsample.{0 if conv else 1}" if part == "0"
                                 else f"{unit}.{match['kind']}{part}")
        else:
            raise _unknown(layer, "ResNet")
    return names


def densenet_names(layers, state) -> dict:
    """torchvision's / timm's DenseNet: `features.conv0`, `norm0`,
    `denseblock<b>.denselayer<i>.norm1/conv1/norm2/conv2`, `transition<b>.norm/conv`,
    `norm5`, `classifier`."""
    stages, names = _stages(layers), {}
    with_transition = {s for layer, s in layers if isinstance(layer, keras.layers.Conv2D)
                       and s in stages and not _DENSE_LAYER.search(layer.name)}
    dense_parts = {("0", "bn"): "norm1", ("1", "conv"): "conv1", ("1", "bn"): "norm2",
                   ("2", "conv"): "conv2"}
    for layer, stage in layers:
        conv = isinstance(layer, keras.layers.Conv2D)
        if stage == "stem":
            names[layer.name] = "features.conv0" if conv else "features.norm0"
        elif stage == "head":
            names[layer.name] = "classifier"
        elif (match := _DENSE_LAYER.search(layer.name)):
            block = stages.index(stage) + 1
            part = dense_parts[(match["part"], match["kind"])]
            names[layer.name] = f"features.denseblock{block}.denselayer{match['layer']}.{part}"
        elif stage in with_transition:
            block = stages.index(stage) + 1
            names[layer.name] = f"features.transition{block}.{'conv' if conv else 'norm'}"
        else:  # the BatchNorm after the last dense block
            names[layer.name] = "features.norm5"
    return names


def googlenet_names(layers, state) -> dict:
    """torchvision's GoogLeNet: `conv1..3.conv/bn`, `inception3a.branch<k>[.i].conv/bn`,
    `fc`; its auxiliary classifiers (`aux1`, `aux2`, training only) are not loaded."""
    names, stem = {}, {"Conv2D": 0, "BatchNormalization": 0}
    for layer, stage in layers:
        kind = type(layer).__name__
        if stage == "stem":
            stem[kind] = stem.get(kind, 0) + 1
            names[layer.name] = f"conv{stem[kind]}.{'conv' if kind == 'Conv2D' else 'bn'}"
        elif stage == "head":
            names[layer.name] = "fc"
        elif (match := _INCEPTION.match(layer.name)):
            branch = _INCEPTION_BRANCHES[match["part"]]
            names[layer.name] = f"{match['module']}.{branch}.{match['kind']}"
        else:
            raise _unknown(layer, "GoogLeNet")
    return names


def sequential_names(layers, state) -> dict:
    """torchvision's VGG and AlexNet: the backbone's convolutions (and BatchNorms) are the
    `features.<n>` modules with weights, in order; the fully connected layers the
    `classifier.<n>` ones."""
    def modules(prefix):
        found = {}
        for key in state:
            match = re.match(rf"{prefix}\.(\d+)\.weight$", key)
            if match:
                found[int(match[1])] = f"{prefix}.{match[1]}"
        return [found[i] for i in sorted(found)]

    modules_of = {"features": iter(modules("features")), "classifier": iter(modules("classifier"))}
    names = {}
    for layer, stage in layers:
        part = "classifier" if stage == "head" else "features"
        # More layers than modules: a name that is not in the file, reported as missing.
        names[layer.name] = next(modules_of[part], None) or f"{part}.<none left>"
    return names


FAMILIES = {"resnet": resnet_names, "resnext": resnet_names, "densenet": densenet_names,
            "inception": googlenet_names, "vgg": sequential_names, "alexnet": sequential_names}
# Tensors of the PyTorch networks that no recipe layer stands for (training-only parts).
IGNORED_PREFIXES = {"inception": ("aux1.", "aux2.")}
# torchvision's DenseNet files predate its module names: `norm.1` for `norm1` (torchvision
# renames them the same way in `densenet._load_state_dict`).
_OLD_DENSENET = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def normalize_keys(state: dict) -> dict:
    """`state` with torchvision's legacy DenseNet names (`norm.1.weight`) renamed."""
    renamed = {}
    for key, value in state.items():
        match = _OLD_DENSENET.match(key)
        renamed[match[1] + match[2] if match else key] = value
    return renamed


def load_state_dict(model: keras.Model, state: dict, family: str, *, source: str) -> list[str]:
    """Set every weight of `model` from the PyTorch state dict `state`.

    Args:
        model: a recipe build of the network the weights were trained for (top included).
        state: `{tensor name: NumPy array}` in PyTorch's layouts.
        family: the recipe's `metadata.family` (a key of `FAMILIES`).
        source: where the weights come from, for messages.

    Returns:
        The names of the layers loaded.

    Raises:
        WeightsError: a layer without a PyTorch counterpart, a missing tensor, a tensor of
            another shape (both shapes named) or a tensor the model has no place for (the
            first one named). Nothing is written then.
    """
    if family not in FAMILIES:
        raise WeightsError(f"{model.name} is of the {family or 'unnamed'} family; PyTorch weights "
                           f"load into the families {', '.join(sorted(FAMILIES))}.")
    state = normalize_keys(state)
    layers = weighted_layers(model)
    names = FAMILIES[family](layers, state)
    values, used = [], set()
    first_conv = next((l for l, _ in layers if isinstance(l, keras.layers.Conv2D)), None)
    for layer, _ in layers:
        prefix = names[layer.name]
        arrays = []
        for weight, key in zip(layer.weights, _tensor_names(layer, prefix)):
            if key not in state:
                raise WeightsError(f"the weights {source} do not fit {model.name}: the tensor "
                                   f"{key} (for layer {layer.name}) is missing; they are weights "
                                   "of another architecture.")
            value = _keras_layout(layer, state[key])
            if layer is first_conv and value.ndim == 4 and value.shape[2] != weight.shape[2]:
                value = adapt_input_conv(value, int(weight.shape[2]), key=key, source=source)
            if tuple(value.shape) != tuple(weight.shape):
                raise WeightsError(
                    f"the weights {source} do not fit {model.name}: tensor {key} has shape "
                    f"{tuple(state[key].shape)} (in Keras' layout {tuple(value.shape)}), but "
                    f"layer {layer.name} needs {tuple(weight.shape)}; they are weights of "
                    "another architecture (or of other recipe params)."
                )
            arrays.append(value)
            used.add(key)
        values.append((layer, arrays))
    ignored = IGNORED_PREFIXES.get(family, ())
    extra = [k for k in state if k not in used and not k.endswith(IGNORED_SUFFIXES)
             and not k.startswith(ignored)]
    if extra:
        raise WeightsError(f"the weights {source} do not fit {model.name}: they hold the tensor "
                           f"{extra[0]} {tuple(state[extra[0]].shape)} that {model.name} has no "
                           f"place for ({len(extra)} such tensors); they are weights of "
                           "another architecture.")
    for layer, arrays in values:
        layer.set_weights(arrays)
    return [layer.name for layer, _ in values]


def _tensor_names(layer, prefix: str) -> list[str]:
    """The PyTorch tensor names of `layer`'s weights, in Keras' weight order."""
    if isinstance(layer, keras.layers.BatchNormalization):
        names = []
        if layer.scale:
            names.append("weight")
        if layer.center:
            names.append("bias")
        return [f"{prefix}.{n}" for n in names + ["running_mean", "running_var"]]
    return [f"{prefix}.weight", f"{prefix}.bias"][:len(layer.weights)]


def _keras_layout(layer, value: np.ndarray) -> np.ndarray:
    """A PyTorch tensor of `layer` in Keras' layout."""
    if isinstance(layer, keras.layers.Conv2D) and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if isinstance(layer, keras.layers.Dense) and value.ndim == 2:
        shape = _flattened_map(layer)
        if shape is not None and value.shape[1] == int(np.prod(shape)):
            height, width, channels = shape  # PyTorch flattened C, H, W; Keras H, W, C
            value = value.reshape(value.shape[0], channels, height, width)
            return value.transpose(2, 3, 1, 0).reshape(-1, value.shape[0])
        return value.T
    return value


def _flattened_map(layer) -> tuple | None:
    """(H, W, C) of the feature map a `Flatten` turned into `layer`'s input (through
    Dropouts), None when the input is not a flattened map."""
    node = layer._inbound_nodes[0] if layer._inbound_nodes else None
    while node is not None:
        source = node.input_tensors[0]._keras_history.operation
        if isinstance(source, keras.layers.Flatten):
            shape = source._inbound_nodes[0].input_tensors[0].shape
            return tuple(int(d) for d in shape[1:]) if len(shape) == 4 else None
        if not isinstance(source, keras.layers.Dropout):
            return None
        node = source._inbound_nodes[0]
    return None


def adapt_input_conv(kernel: np.ndarray, channels: int, *, key: str, source: str) -> np.ndarray:
    """A first-convolution kernel (Keras HWIO) for 3-channel input adapted to `channels`,
    as timm's `adapt_input_conv`: summed over RGB for one channel, else RGB repeated and
    scaled by 3 / channels, so a grey or multi-band image of the same brightness gives the
    same response. The adaptation is logged.

    Raises:
        WeightsError: a kernel not made for 3 channels.
    """
    if kernel.shape[2] != 3:
        raise WeightsError(f"tensor {key} of {source} takes {kernel.shape[2]} input channels; "
                           f"only 3-channel weights are adapted to {channels} channels.")
    if channels == 1:
        adapted = kernel.sum(axis=2, keepdims=True)
    else:
        repeat = math.ceil(channels / 3)
        adapted = np.tile(kernel, (1, 1, repeat, 1))[:, :, :channels, :] * (3.0 / channels)
    logger.info("%s: the first convolution (%s) was trained on 3 channels; adapted to %d "
                "(%s, as timm's adapt_input_conv).", source, key, channels,
                "summed over RGB" if channels == 1 else f"RGB repeated, scaled by 3/{channels}")
    return adapted.astype(np.float32)


__all__ = ["FAMILIES", "adapt_input_conv", "load_state_dict", "normalize_keys", "weighted_layers"]
