"""The GoogLeNet inception module (Szegedy et al. 2015, Table 1)."""

from __future__ import annotations

from cnnbuilder.recipe.vocabulary.shapes import spatial
from cnnbuilder.recipe.vocabulary.spec import BlockSpec, Field, register

_POSITIVE = dict(minimum=1)


def _inception_shape(shape, f):
    h, w, c = spatial(shape, lambda n, i: n)
    return h, w, f["b1"] + f["b3"] + f["b5"] + f["pool_proj"]


register(BlockSpec(
    "inception", "inception",
    "GoogLeNet inception module: 1×1, 1×1→3×3, 1×1→5×5 and 3×3 max-pool→1×1 branches, concatenated.",
    (
        Field("b1", "int", doc="#1×1", **_POSITIVE),
        Field("b3_reduce", "int", doc="#3×3 reduce", **_POSITIVE),
        Field("b3", "int", doc="#3×3", **_POSITIVE),
        Field("b5_reduce", "int", doc="#5×5 reduce", **_POSITIVE),
        Field("b5", "int", doc="#5×5", **_POSITIVE),
        Field("pool_proj", "int", doc="pool proj", **_POSITIVE),
        Field("b5_kernel", "int", 5, "kernel of the '5×5' branch (torchvision uses 3)", minimum=1),
        Field("batch_norm", "bool", False, "BatchNorm after every convolution (torchvision's GoogLeNet)"),
    ),
    _inception_shape, composite=True,
))
