"""The commands that look at the zoo: `cnnbuilder list` and `cnnbuilder show` (the
per-stage table, the diagram, the resolved training settings)."""

from __future__ import annotations

import math

from cnnbuilder.cli_args import parse_assignments, parse_shape
from cnnbuilder.errors import CnnBuilderError, UsageError


def cmd_list(args) -> int:
    """`cnnbuilder list [PATTERN]`: one line per recipe (name, family, params, input, reference)."""
    from rich.console import Console
    from rich.table import Table

    from cnnbuilder.recipe.units import format_count, short_reference
    from cnnbuilder.zoo import list_recipes, load_recipe

    names = list_recipes(args.pattern)
    if not names:
        raise UsageError(f"no recipe matches {args.pattern!r}; `cnnbuilder list` shows them all.")
    rows = []
    for name in names:
        recipe = load_recipe(name)
        params = recipe.metadata.get("params")
        shape = "×".join(str(d) for d in recipe.default_input_shape)
        rows.append((name, recipe.family, format_count(params) if params else "?", shape,
                     short_reference(recipe.reference)))
    # One line per recipe: the short columns keep their width, a long reference is cut
    # with an ellipsis, never wrapped.
    console_width = 120
    columns = ("recipe", "family", "params", "input", "reference")
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]
    room = console_width - sum(widths[:-1]) - 2 * (len(columns) - 1) - 1
    table = Table(show_edge=False, box=None, pad_edge=False)
    for column, width in zip(columns, widths):
        table.add_column(column, no_wrap=True, min_width=min(width, room) if column == "reference" else width,
                         justify="right" if column == "params" else "left")
    for row in rows:
        reference = row[-1] if len(row[-1]) <= room else row[-1][: room - 1] + "…"
        table.add_row(*row[:-1], reference)
    Console(width=console_width).print(table)
    return 0


def cmd_show(args) -> int:
    """`cnnbuilder show RECIPE`: the per-stage table (and `--plot`, or `--training`)."""
    from cnnbuilder.zoo import load_recipe

    recipe = load_recipe(args.recipe)
    if args.training is not None:  # pure Python: no Keras import without --dataset
        return show_training(recipe, args)
    if args.json:
        raise UsageError("show --json prints the training settings: write show RECIPE --training --json.")
    from rich.console import Console
    from rich.table import Table

    from cnnbuilder.model.builder import build
    from cnnbuilder.model.summary import format_count, summarize
    overrides = parse_assignments(args.set)
    shape = parse_shape(args.input_shape)
    plan = recipe.plan(input_shape=shape, classes=args.classes, **overrides)
    if args.plot:
        from cnnbuilder.plots.architecture import check_image_path

        check_image_path(args.plot)  # before the (slow) build
    from cnnbuilder.model import cost as costs

    # A skeleton: the layers and their shapes, no weight allocated, whatever the size.
    try:
        with costs.skeleton_scope():
            model = build(recipe, input_shape=shape, classes=args.classes, **overrides)
        stages = summarize(model, plan)
        cost = costs.model_cost(model, plan)
        trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    finally:
        costs.discard_skeleton()
    # Multiply-adds need a fixed input size (`--input-shape none,none,3` leaves them unknown).
    sized = all(d is not None for d in plan.input_shape[:2])

    def macs(value):
        return format_count(value) if sized else "?"

    table = Table(title=f"{model.name} — {recipe.reference or recipe.description}", title_justify="left")
    table.add_column("stage")
    table.add_column("blocks")
    table.add_column("output", justify="right")
    table.add_column("params", justify="right")
    table.add_column("mult-adds", justify="right")
    for stage in stages:
        table.add_row(stage.name, stage.blocks_text, "×".join("?" if d is None else str(d) for d in stage.output_shape),
                      f"{stage.params:,}", macs(stage.macs))
    total_params = sum(s.params for s in stages)
    total_macs = sum(s.macs for s in stages)
    table.add_section()
    table.add_row("total", f"{len(model.layers)} layers", "", f"{total_params:,}", macs(total_macs))
    console = Console(width=120)
    console.print(table)
    if recipe.task != "classification":  # e.g. segmentation: per-pixel classes at the input's size
        console.print(f"task {recipe.task}: output {tuple(model.output_shape[1:])}, a class "
                      "probability per pixel" if recipe.task == "segmentation" else f"task {recipe.task}")
    console.print(f"input {plan.input_shape}, params {total_params:,} (trainable {trainable:,}), "
                  f"multiply-adds {macs(total_macs)} per image")
    batch = recipe.training.get("batch_size") or 32
    console.print(f"activations {cost.activations * 4 / 2**20:,.1f} MiB per image (float32); "
                  f"weights {cost.params * 4 / 2**20:,.1f} MiB; training memory about "
                  f"{cost.training_memory(batch) / 2**30:,.2f} GiB at batch {batch}" if sized else
                  "activations ? per image (the input size is unknown)")
    try:  # what build, train and tune would say of it
        costs.check_bound(cost, plan, recipe, costs.given_arguments(recipe, plan))
    except CnnBuilderError as exc:
        console.print(f"over the bound: build, train and tune refuse this model: {exc}", markup=False)
    if args.plot:
        from cnnbuilder.plots.architecture import plot_architecture

        path = plot_architecture(plan, stages, args.plot, title=model.name)
        console.print(f"architecture diagram written to {path}")
    return 0


def show_training(recipe, args) -> int:
    """`show RECIPE --training [NAME=VALUE ...] [--dataset D] [--json]`: the run's training
    settings, where each comes from, and where the run departs from the paper."""
    import json

    from cnnbuilder.recipe.training_plan import describe

    steps = None
    overrides = parse_assignments(args.training, "--training")
    if getattr(args, "training_preset", None):
        from cnnbuilder.recipe.presets import fit_problem

        problem = fit_problem(args.training_preset, recipe.family, recipe.name)
        if problem:
            raise UsageError(f"--training-preset {args.training_preset}: {problem}")
        overrides["preset"] = args.training_preset
    if args.dataset:
        from cnnbuilder.data import load_dataset
        from cnnbuilder.recipe.training import training_config
        from cnnbuilder.training.settings import steps_per_epoch

        config = training_config(recipe.training, where="--training", **overrides)
        steps = steps_per_epoch(load_dataset(args.dataset), config.batch_size)
    report = describe(recipe.training, name=recipe.name, where="--training",
                      overrides=overrides,
                      dataset=args.dataset or "", steps_per_epoch=steps,
                      normalization=recipe.scratch_normalization)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    schedule = report["schedule"]
    print(f"{recipe.name}: training as {report['source'] or 'no paper (generic defaults)'}")
    rows = [(key, report[key]) for key in ("optimizer", "learning_rate", "momentum", "nesterov",
                                           "weight_decay", "weight_decay_mode", "batch_size")]
    rows.append(("length", f"{report['length']} {report['unit']}"))
    text = schedule["type"]
    if schedule["boundaries"]:
        text += f", x{schedule['factor']} at {schedule['boundaries']} {report['unit']}"
    if schedule.get("patience"):
        score = "val_mean_iou" if recipe.task == "segmentation" else "val_accuracy"
        text += (f", x{schedule['factor']} after {schedule['patience']} epochs without a better "
                 f"{score}, at most {schedule['reductions']} times")
    if schedule["warmup"]:
        warm = schedule["warmup"]
        text += (f"; warm-up {warm['length']} {report['unit']}"
                 + (f" at {warm['learning_rate']}" if warm["learning_rate"] else " (linear from 0)")
                 + (f", ending once the training error < {warm['until_error']:.0%}" if warm["until_error"] else ""))
    from cnnbuilder.recipe.training import augment_label

    rows += [("schedule", text), ("augment", ", ".join(augment_label(a) for a in report["augment"]) or "none"),
             ("label_smoothing", report["label_smoothing"]), ("dropout", report["dropout"]),
             ("loss", report["loss"]),
             ("ema", f"decay {report['ema']['decay']}" + (", warm-up" if report["ema"]["warmup"] else "")
              if report["ema"] else "none"),
             ("drop_path", f"{report['drop_path']} ({report['drop_path_rule']})" if report["drop_path"] else 0),
             ("preset", report["preset"] or "none"),
             ("preprocessing", report["preprocessing"])]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        source = report["sources"].get(key, "")
        print(f"  {key:<{width}}  {value}" + (f"   [{source}]" if source else ""))
    print("departures from the paper:" if report["departures"] else "departures from the paper: none")
    for line in report["departures"]:
        print(f"  - {line}")
    return 0
