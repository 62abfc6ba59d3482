"""The model card of an export: ``README.md`` beside ``metadata.json``.

Written in the form Hugging Face and keras-hub model cards take: a YAML front matter
(``library_name``, ``tags``, ``datasets``, ``metrics``: what the Hub indexes) then
Markdown sections: model description (network and paper, parameters and multiply-adds),
training data and classes, training procedure, evaluation results (and the quantized
file's accuracy), preprocessing, how to use it, intended uses and limitations. Every
figure comes from ``metadata.json`` or the run's files, never from a guess; what is not
known is said to be unknown. A segmentation export (metadata.json's ``task``) is
described as one: per-pixel outputs, mean IoU, pixel accuracy and the IoU of each class
(metrics.json's ``test_mean_iou``, ``test_pixel_accuracy``, ``test_iou_per_class``).
"""

from __future__ import annotations

import json

from cnnbuilder.recipe.training import augment_label

__all__ = ["MODEL_CARD", "model_card"]

MODEL_CARD = "README.md"
_RUNTIMES = {
    "savedmodel": "TensorFlow Serving or `tf.saved_model.load` (signature `serving_default` "
                  "takes raw uint8 images, `serve` preprocessed float32 input)",
    "litert": "the LiteRT interpreter (`ai_edge_litert.interpreter.Interpreter`) on "
              "phones and edge devices",
    "onnx": "ONNX Runtime, TensorRT, OpenVINO or any ONNX runtime",
}


def model_card(metadata: dict, *, recipe=None, model=None) -> str:
    """The README.md text of the export that `metadata` (metadata.json) describes.

    Args:
        metadata: the export's metadata.json document.
        recipe: the run's `Recipe`, when it can be loaded (its description and paper).
        model: the exported Keras model (its parameter and multiply-add counts).
    """
    name = metadata.get("recipe") or metadata.get("model_name") or "model"
    fmt = metadata["format"]
    dataset = metadata.get("dataset")
    sections = [
        _front_matter(metadata, fmt, dataset),
        f"# {name} ({_format_name(metadata)})",
        _description(metadata, recipe, model),
        _pretrained_weights(metadata),
        _data(metadata, dataset),
        _training(metadata),
        _evaluation(metadata),
        _preprocessing(metadata),
        _usage(metadata, fmt),
        _limits(metadata, dataset),
    ]
    return "\n\n".join(section.strip() for section in sections if section) + "\n"


def _format_name(metadata: dict) -> str:
    quantization = ((metadata.get("litert") or {}).get("quantization") or {}).get("mode")
    fmt = {"savedmodel": "TF SavedModel", "litert": "LiteRT", "onnx": "ONNX"}[metadata["format"]]
    return f"{fmt}, {quantization} quantized" if quantization else fmt


def _segmentation(metadata: dict) -> bool:
    """Whether the export is a segmentation model (per-pixel classes)."""
    return metadata.get("task") == "segmentation"


def _front_matter(metadata: dict, fmt: str, dataset) -> str:
    pipeline = "image-segmentation" if _segmentation(metadata) else "image-classification"
    tags = [pipeline, "keras", "cnnbuilder", fmt]
    if metadata.get("recipe"):
        tags.append(str(metadata["recipe"]))
    lines = ["---", "library_name: keras", f"pipeline_tag: {pipeline}",
             "license: other", "tags:", *[f"- {tag}" for tag in tags]]
    if dataset:
        lines += ["datasets:", f"- {dataset}"]
    metrics = ["mean_iou", "pixel_accuracy"] if _segmentation(metadata) else ["accuracy"]
    lines += ["metrics:", *[f"- {metric}" for metric in metrics], "---"]
    return "\n".join(lines)


def _description(metadata: dict, recipe, model) -> str:
    lines = ["## Model description", ""]
    if recipe is not None:
        lines.append(recipe.description or "")
        if recipe.reference:
            lines += ["", f"Paper: {recipe.reference}"]
    else:
        lines.append(f"A Keras model `{metadata.get('model_name')}` exported by cnnbuilder.")
    lines.append("")
    if model is not None:
        from cnnbuilder.model.summary import layer_macs

        macs = sum(layer_macs(layer) for layer in model.layers)
        lines.append(f"- Parameters: {model.count_params():,}")
        lines.append(f"- Multiply-adds per image: {macs:,} (convolution and dense layers)")
    shape = "×".join(str(d) for d in metadata["input"]["shape"][1:])
    output = (f"{metadata['num_classes']} class probabilities per pixel (segmentation)"
              if _segmentation(metadata) else f"{metadata['num_classes']} class probabilities")
    lines.append(f"- Input: {shape} float32, output: {output}")
    if metadata.get("params"):
        lines.append(f"- Recipe params: `{json.dumps(metadata['params'], sort_keys=True)}`")
    lines.append(f"- Weights sha256: `{metadata['weights_sha256']}`")
    return "\n".join(lines)


def _data(metadata: dict, dataset) -> str:
    names = metadata["class_names"]
    shown = ", ".join(f"`{n}`" for n in names[:20]) + (" ..." if len(names) > 20 else "")
    return "\n".join([
        "## Training data", "",
        f"Dataset: {dataset or 'unknown (the model came without a training run)'}.",
        f"Classes ({len(names)}, in output order): {shown}.",
    ])


def _training(metadata: dict) -> str:
    """What this run did (its dataset, sizes, augmentation, epochs, optimizer and schedule
    as resolved), then the paper's training as the reference, with the departures."""
    run = metadata.get("training") or {}
    metrics = metadata.get("metrics") or {}
    if not run and not metrics:
        return "## Training procedure\n\nUnknown: the model came without a training run."
    lines = ["## Training procedure", ""]
    if metadata.get("unfinished"):
        lines += [f"**Unfinished run**: exported with --allow-unfinished after "
                  f"{metadata['unfinished']['epochs_done']} finished epoch(s); the model is "
                  "the best epoch so far, not evaluated on the test split.", ""]
    lines += ["This model's run:", ""]
    resolved = run.get("resolved") or {}
    sizes = run.get("sizes") or {}
    if run.get("dataset"):
        counts = ", ".join(f"{sizes[k]:,} {k}" for k in ("train", "validation", "test")
                           if sizes.get(k) is not None)
        lines.append(f"- dataset: {run['dataset']}" + (f" ({counts} images)" if counts else ""))
    if run.get("augment") is not None:
        lines.append(f"- augmentation: {', '.join(map(augment_label, run['augment'])) or 'none'}")
    if resolved:
        momentum = (f", momentum {resolved['momentum']:g}"
                    + (" (Nesterov)" if resolved.get("nesterov") else "")
                    if resolved.get("optimizer") in ("sgd", "rmsprop") else "")
        lines.append(f"- optimizer: {resolved['optimizer']}, learning rate "
                     f"{resolved['learning_rate']:g}{momentum}, weight decay "
                     f"{resolved['weight_decay']:g} ({resolved['weight_decay_mode']}), batch "
                     f"{resolved['batch_size']}")
        lines.append(f"- schedule: {_schedule_text(resolved)}; planned length "
                     f"{resolved['length']} {resolved['unit']}")
        if resolved.get("label_smoothing"):
            lines.append(f"- label smoothing: {resolved['label_smoothing']:g}")
        if resolved.get("dropout") is not None:
            lines.append(f"- dropout: {resolved['dropout']:g}")
    if run.get("seed") is not None:
        lines.append(f"- seed: {run['seed']}")
    for key in ("epochs_run", "best_epoch", "seconds"):
        if metrics.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: {metrics[key]}")
    reference = run.get("reference") or {}
    if reference.get("source"):
        lines += ["", f"Reference, not this run: the paper's training ({reference['source']})"
                  + (f" on {reference['dataset']}" if reference.get("dataset") else "")
                  + (f" ({reference['dataset_size']:,} training images)"
                     if reference.get("dataset_size") else "")
                  + (f", augmentation {', '.join(map(augment_label, reference['augment']))}"
                     if reference.get("augment") else "") + "."]
    departures = resolved.get("departures") or []
    if departures:
        lines += ["", "Where this run departs from it:", ""]
        lines += [f"- {departure}" for departure in departures]
    return "\n".join(lines)


def _schedule_text(resolved: dict) -> str:
    """The resolved schedule in words: type, boundaries and factor, warm-up."""
    schedule = resolved.get("schedule") or {}
    text = str(schedule.get("type"))
    if schedule.get("boundaries"):
        text += (f", ×{schedule.get('factor'):g} at {resolved['unit']} "
                 + ", ".join(str(b) for b in schedule["boundaries"]))
    warmup = schedule.get("warmup")
    if warmup:
        text += f", warm-up {warmup.get('length')} {resolved['unit']}"
    return text


def _evaluation(metadata: dict) -> str:
    metrics = metadata.get("metrics") or {}
    lines = ["## Evaluation results", ""]
    if metrics.get("test_accuracy") is not None and metrics.get("test_mean_iou") is None:
        lines.append(f"- Keras model, test split: accuracy {float(metrics['test_accuracy']):.4f}"
                     + (f", loss {float(metrics['test_loss']):.4f}" if metrics.get("test_loss") is not None else ""))
    lines += _segmentation_results(metrics)
    accuracy = ((metadata.get("litert") or {}).get("quantization") or {}).get("accuracy")
    if accuracy:
        lines.append(f"- This {_format_name(metadata)} file, {accuracy['examples']} test images: "
                     f"accuracy {accuracy['exported']:.4f} (Keras {accuracy['keras']:.4f}, "
                     f"drop {accuracy['drop_points']:.2f} points, allowed "
                     f"{accuracy['max_drop_points']:g})")
    check = (metadata.get("onnx") or {}).get("check")
    if check:
        lines.append(f"- ONNX Runtime vs Keras: max abs difference {check['max_abs_diff']:.2e} "
                     f"on {check['images']} images ({check['of']})")
    litert = metadata.get("litert") or {}
    if litert and not litert.get("quantization"):
        lines.append(f"- LiteRT vs Keras: max abs difference {litert['max_abs_diff']:.2e}")
    if len(lines) == 2:
        lines.append("No test metrics recorded.")
    return "\n".join(lines)


def _segmentation_results(metrics: dict) -> list[str]:
    """The test split's mean IoU and pixel accuracy, then a table of each class's IoU."""
    lines = []
    if metrics.get("test_mean_iou") is not None:
        lines.append(f"- Keras model, test split: mean IoU {float(metrics['test_mean_iou']):.4f}"
                     + (f", pixel accuracy {float(metrics['test_pixel_accuracy']):.4f}"
                        if metrics.get("test_pixel_accuracy") is not None else "")
                     + (f", loss {float(metrics['test_loss']):.4f}"
                        if metrics.get("test_loss") is not None else ""))
    per_class = metrics.get("test_iou_per_class")
    if isinstance(per_class, dict) and per_class:
        lines += ["", "IoU per class (test split; — where a class was neither labelled nor "
                  "predicted):", "", "| class | IoU |", "| --- | --- |"]
        lines += [f"| {name} | " + ("—" if value is None else f"{float(value):.4f}") + " |"
                  for name, value in per_class.items()]
    return lines


def _pretrained_weights(metadata: dict) -> str:
    """The weights the run started from (metadata.json's ``weights``, the run's `weights=`)
    and, for a PyTorch-world source, what it publishes: accuracy and its source, training
    recipe, licence, evaluation transform. Empty when the record names none."""
    weights = metadata.get("weights")
    if not weights:
        return ""
    from cnnbuilder.model.pretrained.sources import HUBS, resolve_source

    lines = ["## Pretrained weights", ""]
    if str(weights).split(":", 1)[0] not in HUBS:
        kind = "keras.applications' ImageNet weights" if weights == "imagenet" else f"`{weights}`"
        return "\n".join(lines + [f"Fine-tuned from {kind}."])
    source = resolve_source(metadata.get("recipe") or metadata.get("model_name"), weights)
    meta = source.meta
    accuracy = ", ".join(f"{label} {meta[key]}%" for key, label in (("top1", "top-1"),
                                                                    ("top5", "top-5")) if meta.get(key))
    lines += [f"Fine-tuned from `{source.name}` ({source.url}).",
              f"- Published ImageNet-1k accuracy: {accuracy or 'not published'} "
              f"({meta.get('metrics_source')})",
              f"- Training recipe: {meta.get('recipe_link')}",
              f"- Licence: {meta.get('licence')}",
              f"- Evaluation transform: resize {meta.get('resize')}, centre crop "
              f"{meta.get('crop')}, {meta.get('interpolation')}; mean {meta.get('mean')}, "
              f"std {meta.get('std')} (`{meta.get('normalization')}` normalization)"]
    return "\n".join(lines)


def _preprocessing(metadata: dict) -> str:
    record = metadata["preprocessing"]
    low, high = metadata["input"]["range"]
    height, width, channels = record["input_shape"]
    where = ("inside the `serving_default` signature" if metadata["format"] == "savedmodel"
             else "before the file is run (`cnnbuilder predict` does it from metadata.json)")
    return "\n".join([
        "## Preprocessing", "",
        f"Applied {where}, as in training (`cnnbuilder.data.preprocess`): uint8 images "
        f"scaled to [0, 1]; alpha dropped, grey tiled to RGB or RGB to grey (ITU-R 601) "
        f"to {channels} channel(s); resized {record['resize']} to {height}×{width} "
        f"(antialiased when shrinking); `{record['normalization']}` normalization to "
        f"[{low:g}, {high:g}].",
        "", f"Record: `{json.dumps(record, sort_keys=True)}`",
    ])


def _usage(metadata: dict, fmt: str) -> str:
    command = ("cnnbuilder predict THIS_EXPORT image.png --output masks/  # masks/image.png, "
               "masks/image.json (class areas)" if _segmentation(metadata)
               else "cnnbuilder predict THIS_EXPORT image.png --top-k 3 --json")
    return "\n".join([
        "## How to use", "",
        "```bash",
        command,
        "```", "",
        f"Runs on {_RUNTIMES[fmt]}.",
    ])


def _limits(metadata: dict, dataset) -> str:
    if _segmentation(metadata):
        return "\n".join([
            "## Intended uses and limitations", "",
            f"Labels each pixel with one of the {metadata['num_classes']} classes above"
            + (f", for images like those of {dataset}." if dataset else "."),
            "It has seen nothing else: objects of other kinds are given one of these classes "
            "all the same, and it never answers \"none of these\". The class map is computed "
            "at the model's input size and resized back to the image's (bilinear "
            "probabilities, then argmax), so thin structures in large images may be lost. "
            "Its IoU holds only on data distributed like its test split.",
        ])
    return "\n".join([
        "## Intended uses and limitations", "",
        f"Classifies images into the {metadata['num_classes']} classes above"
        + (f", for images like those of {dataset}." if dataset else "."),
        "It has seen nothing else: images of other kinds, sizes or framing get "
        "confident-looking but meaningless probabilities, and it never answers "
        "\"none of these\". Its accuracy holds only on data distributed like its test "
        "split; measure it on your own data before relying on it.",
    ])
