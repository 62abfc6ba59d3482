"""Model files `predict` did not necessarily write: checked against their metadata.json
before anything of them runs.

A SavedModel is a program, like a pickle: calling its ``serving_default`` runs whatever
graph it holds, which can read and write files. Only `.keras` loading is sandboxed
(`safe_mode`). So `predict` runs a SavedModel only when its files are the ones
`cnnbuilder export` wrote — the digest of its ``saved_model.pb``, ``variables/`` and
``assets/`` (`saved_model_digest`) matches ``saved_model_sha256`` in the metadata.json
beside it — or when the caller trusts its author (``--trust``, ``trust=True``). Reading
the protobuf and hashing the files executes nothing.

Whatever the source, the model's declared input and outputs are compared with what
metadata.json records (input size and channels, number of classes, a ``probabilities``
output) before the first image goes in: a mismatch is one paragraph, not a runtime error.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cnnbuilder.errors import RunError
from cnnbuilder.runs import read_json

METADATA = "metadata.json"
# The metadata.json key that records the digest of the SavedModel's own files.
DIGEST_KEY = "saved_model_sha256"
_PROGRAM = ("A SavedModel is a program, like a pickle: predicting with it runs its graph, "
            "which can read and write files. Pass --trust (trust=True in Python) only if you "
            "trust its author (`cnnbuilder help limits`).")


def saved_model_digest(directory: Path) -> str:
    """sha256 over the files of a SavedModel (saved_model.pb/.pbtxt, variables/, assets/):
    for each, in sorted order, its relative path, its size and its bytes."""
    directory = Path(directory)
    files = [p for name in ("saved_model.pb", "saved_model.pbtxt") if (p := directory / name).is_file()]
    for sub in ("variables", "assets"):
        if (directory / sub).is_dir():
            files += [p for p in (directory / sub).rglob("*") if p.is_file()]
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(directory).as_posix()):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(directory).as_posix()}:{len(data)};".encode())
        digest.update(data)
    return digest.hexdigest()


def check_saved_model(directory: Path, *, trust: bool) -> None:
    """Refuse a SavedModel not written by `cnnbuilder export` (unless `trust`), or whose
    ``serving_default`` does not take uint8 images and give the metadata's classes as
    ``probabilities``; read from the protobuf, nothing executed."""
    directory = Path(directory)
    meta = read_json(directory / METADATA, what="export metadata") or {}
    recorded = meta.get(DIGEST_KEY)
    if not trust and (recorded is None or recorded != saved_model_digest(directory)):
        why = ("its metadata.json records no digest of its files" if recorded is None else
               "its files differ from the digest its metadata.json records")
        raise RunError(f"The SavedModel {directory} was not written by `cnnbuilder export` as "
                       f"it is now ({why}). {_PROGRAM}")
    inputs, outputs = _signature(directory)
    classes = meta.get("num_classes")
    problems = []
    if len(inputs) != 1 or next(iter(inputs.values()))[0] != "uint8":
        problems.append(f"serving_default should take one batch of uint8 images, it takes {_show(inputs)}")
    if "probabilities" not in outputs:
        problems.append(f"serving_default has no 'probabilities' output (its outputs: {_show(outputs)})")
    elif classes is not None and outputs["probabilities"][1][-1:] not in ([classes], [-1]):
        problems.append(f"its 'probabilities' have shape {outputs['probabilities'][1]}, not "
                        f"{classes} classes as metadata.json says")
    if problems:
        raise RunError(f"The SavedModel {directory} does not fit cnnbuilder predict: "
                       f"{'; '.join(problems)}. Expected a SavedModel written by `cnnbuilder export`.")


def _signature(directory: Path) -> tuple[dict, dict]:
    """({input: (dtype, shape)}, {output: (dtype, shape)}) of ``serving_default``, parsed
    from saved_model.pb (shapes with -1 for unknown sizes)."""
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    try:
        pb = directory / "saved_model.pb"
        if pb.is_file():
            proto.ParseFromString(pb.read_bytes())
        else:
            from google.protobuf import text_format

            text_format.Parse((directory / "saved_model.pbtxt").read_text(), proto)
    except Exception as error:  # noqa: BLE001 -- a corrupt protobuf has many failures
        raise RunError(f"Cannot read the SavedModel {directory}: {type(error).__name__}: "
                       f"{' '.join(str(error).split())[:300]}.") from None
    for graph in proto.meta_graphs:
        signature = graph.signature_def.get("serving_default")
        if signature is not None:
            def describe(tensors):
                """{name: (dtype name, shape)} of a signature's tensor infos."""
                return {name: (tf.dtypes.as_dtype(info.dtype).name,
                               [-1 if info.tensor_shape.unknown_rank else d.size for d in info.tensor_shape.dim])
                        for name, info in tensors.items()}
            return describe(signature.inputs), describe(signature.outputs)
    raise RunError(f"The SavedModel {directory} has no 'serving_default' signature; expected a "
                   "SavedModel written by `cnnbuilder export`.")


def check_file_model(path: Path, meta: dict, input_shape, output_shape) -> None:
    """Refuse a .tflite/.onnx file whose input (height, width, channels) or number of
    outputs differs from what the metadata.json beside it records."""
    expected = list((meta.get("preprocessing") or {}).get("input_shape") or [])
    actual = [_dim(d) for d in list(input_shape)[1:]]
    problems = []
    if len(actual) != 3 or (expected and any(a is not None and a != e for a, e in zip(actual, expected))):
        problems.append(f"it takes inputs of shape {[_dim(d) for d in input_shape]}, but metadata.json "
                        f"records images of {expected} (height, width, channels)")
    classes = meta.get("num_classes")
    last = [_dim(d) for d in list(output_shape)[-1:]] if output_shape is not None else []
    if classes is not None and last and last[0] is not None and last[0] != classes:
        problems.append(f"it outputs {last[0]} values per image, but metadata.json records "
                        f"{classes} classes")
    if problems:
        raise RunError(f"{path} does not match the {METADATA} beside it: {'; '.join(problems)}. "
                       "Put each export in a directory of its own, with the metadata.json "
                       "`cnnbuilder export` wrote for it.")


def _dim(value) -> int | None:
    """A dimension as an int (numpy ints included); None where unknown (-1, a name)."""
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def _show(tensors: dict) -> str:
    """'images (uint8 [-1, -1, -1, -1]), ...' for messages."""
    return ", ".join(f"{name} ({dtype} {shape})" for name, (dtype, shape) in tensors.items()) or "nothing"
