"""Export benchmark: size, test accuracy and single-image CPU latency of every format.

    python benchmarks/export.py RUN_DIR [--out DIR] [--repeats N]

exports the run as a SavedModel, float LiteRT, dynamic / float16 / int8 LiteRT and ONNX,
then, on the run's test split (preprocessed once, as the pipeline does), measures each
file's accuracy and the median latency of one image (batch 1, after warm-up, this
process's threads), with the Keras model's `model(x, training=False)` in a tf.function as the reference (and
its eager call, what a notebook does, for comparison).
Prints a Markdown table for benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() \
        else path.stat().st_size


def _latency(run, image, repeats: int) -> float:
    for _ in range(10):
        run(image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(image)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cnnbuilder-export-bench"))
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    import shutil

    import keras
    import tensorflow as tf

    from cnnbuilder.serving import export
    from cnnbuilder.serving.run_data import RunData
    from cnnbuilder.serving.runtimes import FileModel
    from cnnbuilder import runs

    shutil.rmtree(args.out, ignore_errors=True)
    run = runs.read_json(args.run / runs.RUN)
    model = keras.saving.load_model(args.run / runs.MODEL, compile=False)
    data = RunData(run["dataset"], run["preprocessing"])
    exports = {
        "SavedModel": export(args.run, args.out / "savedmodel" / "1"),
        "LiteRT float32": export(args.run, args.out / "litert" / "model.tflite"),
        "LiteRT dynamic": export(args.run, args.out / "dynamic" / "model.tflite", quantize="dynamic"),
        "LiteRT float16": export(args.run, args.out / "float16" / "model.tflite", quantize="float16"),
        "LiteRT int8": export(args.run, args.out / "int8" / "model.tflite", quantize="int8"),
        "ONNX": export(args.run, args.out / "onnx" / "model.onnx"),
    }
    image = data.check_batch(1)
    compiled = tf.function(lambda x: model(x, training=False))
    runners = {"Keras": lambda x: compiled(x).numpy(),
               "Keras, eager call": lambda x: model(x, training=False).numpy()}
    loaded = tf.saved_model.load(str(exports["SavedModel"]))
    runners["SavedModel"] = lambda x: loaded.serve(x).numpy()
    for name, path in exports.items():
        if name != "SavedModel":
            runners[name] = FileModel("onnx" if name == "ONNX" else "litert", path)._run
    keras_ms = _latency(runners["Keras"], image, args.repeats)
    print("| format | size | test accuracy | latency, 1 image | vs Keras |")
    print("|---|---:|---:|---:|---:|")
    for name, run_ in runners.items():
        accuracy, examples = data.accuracy(lambda batch: np.concatenate(
            [run_(batch[i:i + 1]) for i in range(len(batch))]) if name.startswith("LiteRT")
            else run_(batch))
        ms = keras_ms if name == "Keras" else _latency(run_, image, args.repeats)
        size = f"{_size(exports[name]) / 1024:.0f} KiB" if name in exports else "-"
        print(f"| {name} | {size} | {accuracy:.4f} ({examples}) | {ms:.3f} ms | {ms / keras_ms:.2f}x |")


if __name__ == "__main__":
    main()
