"""Where a training step's time goes: TensorFlow's profiler over a few compiled steps of a
recipe, its trace summed by op type (host CPU time of every TensorFlow op executed).

    python benchmarks/profile_step.py densenet121 --batch 16 --size 128 --steps 3
    python benchmarks/profile_step.py resnet50_tv

The trace is TensorFlow's own (`tf.profiler.experimental`, an XSpace protobuf); this script
reads its op events and prints the share of each op type (Conv2DBackpropFilter, ConcatV2,
FusedBatchNormGradV3, ...) and of each kind of work (convolutions, batch norm, concatenation,
element-wise), so a comparison with PyTorch (benchmarks/torch_training.py) can say which part
of the step differs.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

# Op types grouped into the kinds of work a CNN step does.
KINDS = {
    "convolution": ("Conv2D", "Conv2DBackpropFilter", "Conv2DBackpropInput", "_FusedConv2D",
                    "DepthwiseConv2dNative", "_MklNativeConv2D", "_MklNativeConv2DBackpropFilter",
                    "_MklNativeConv2DBackpropInput", "_MklNativeFusedConv2D", "_MklConv2D"),
    "batch norm": ("FusedBatchNormV3", "FusedBatchNormGradV3", "_MklNativeFusedBatchNormV3",
                   "_MklNativeFusedBatchNormGradV3", "_FusedBatchNormEx"),
    "concatenation": ("ConcatV2", "_MklNativeConcatV2", "Slice", "Split", "SplitV"),
    "pooling": ("MaxPool", "MaxPoolGrad", "AvgPool", "AvgPoolGrad", "_MklNativeMaxPool",
                "_MklNativeMaxPoolGrad", "_MklNativeAvgPool", "_MklNativeAvgPoolGrad"),
    "activation": ("Relu", "ReluGrad", "_MklNativeRelu", "_MklNativeReluGrad"),
    # Keras 3's BatchNormalization on TensorFlow: moments and normalization as separate ops.
    "element-wise (unfused batch norm)": ("Mean", "Sub", "SquaredDifference", "Mul", "AddV2",
                                          "Rsqrt", "Sum", "AddN", "Neg", "RsqrtGrad", "Square",
                                          "BroadcastTo", "Reshape", "Tile", "RealDiv", "Add"),
    "matmul": ("MatMul", "_MklMatMul", "_MklNativeMatMul", "BiasAddGrad", "BiasAdd"),
    "optimizer": ("ResourceApplyKerasMomentum", "ResourceApplyMomentum", "AssignAddVariableOp",
                  "AssignSubVariableOp", "AssignVariableOp", "ReadVariableOp"),
}


def kind_of(op_type: str) -> str:
    """The kind of work of a TensorFlow op type (`KINDS`), else "other"."""
    for kind, types in KINDS.items():
        if op_type in types:
            return kind
    return "other"


def profile(recipe: str, *, batch: int, size: int, steps: int) -> dict[str, float]:
    """Seconds per step of each op type over `steps` profiled training steps."""
    import keras
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    import cnnbuilder

    model = cnnbuilder.build(recipe, input_shape=(size, size, 3), classifier_activation=None)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 3), dtype=np.float32)
    labels = rng.integers(0, 1000, batch)
    for _ in range(2):  # trace and warm up outside the profile
        model.train_on_batch(images, labels)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            model.train_on_batch(images, labels)
        tf.profiler.experimental.stop()
        traces = list(Path(logdir).rglob("*.xplane.pb"))
        space = xplane_pb2.XSpace()
        space.ParseFromString(traces[0].read_bytes())
    totals: dict[str, float] = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                # TensorFlow's executor names an op event "name:Type".
                # Executor and function events ("ExecutorState::Process", the step's
                # "__inference_..." function) contain the op events: not counted again.
                op_type = name.rsplit(":", 1)[-1].strip()
                if ":" in name and "::" not in name and not op_type.startswith("__") \
                        and not name.startswith(("Iterator", "tf_")):
                    totals[op_type] += event.duration_ps / 1e12 / steps
    return dict(totals)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    totals = profile(args.recipe, batch=args.batch, size=args.size, steps=args.steps)
    whole = sum(totals.values())
    kinds = collections.Counter()
    for op_type, seconds in totals.items():
        kinds[kind_of(op_type)] += seconds
    print(f"{args.recipe}, batch {args.batch}, {args.size}×{args.size}: {whole:.3f} s of op time "
          "per step (summed over the threads)")
    print("| kind of work | s/step | share |\n| --- | ---: | ---: |")
    for kind, seconds in kinds.most_common():
        print(f"| {kind} | {seconds:.3f} | {seconds / whole:.1%} |")
    print("\n| op type | s/step | share |\n| --- | ---: | ---: |")
    for op_type, seconds in collections.Counter(totals).most_common(12):
        print(f"| {op_type} | {seconds:.3f} | {seconds / whole:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
