"""The `cnnbuilder` command line. Every command exits non-zero with a one-paragraph
message (no traceback) when its input is bad."""

from __future__ import annotations

import argparse
import sys

import yaml

from cnnbuilder.errors import CnnBuilderError


class UsageError(CnnBuilderError):
    """A command-line argument is malformed."""


def parse_assignments(items: list[str] | None) -> dict:
    """`--set growth_rate=12 --set blocks=[6,12,32,32]` -> {"growth_rate": 12, ...}."""
    values = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects NAME=VALUE (for example --set growth_rate=12), got {item!r}.")
        try:
            values[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UsageError(f"--set {key}: cannot read the value {text!r} (write numbers, true/false or [1, 2, 3]).") from None
    return values


def parse_shape(text: str | None) -> tuple | None:
    if text is None:
        return None
    try:
        shape = tuple(None if p.strip().lower() in ("none", "") else int(p) for p in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or any(d is not None and d < 1 for d in shape):
        raise UsageError(f"--input-shape expects HEIGHT,WIDTH,CHANNELS such as 32,32,3; got {text!r}.")
    return shape


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ----------------------------------------------------------------------------- commands


def cmd_list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnnbuilder.units import format_count
    from cnnbuilder.zoo import list_recipes, load_recipe

    names = list_recipes(args.pattern)
    if not names:
        raise UsageError(f"no recipe matches {args.pattern!r}; `cnnbuilder list` shows them all.")
    table = Table(show_edge=False, box=None, pad_edge=False)
    for column in ("recipe", "family", "params", "input", "reference"):
        table.add_column(column, no_wrap=column != "reference", justify="right" if column == "params" else "left")
    for name in names:
        recipe = load_recipe(name)
        params = recipe.metadata.get("params")
        shape = "×".join(str(d) for d in recipe.default_input_shape)
        reference = recipe.reference.split(".")[0] if recipe.reference else ""
        table.add_row(name, recipe.family, format_count(params) if params else "?", shape, reference)
    Console(width=max(120, 0)).print(table)
    return 0


def cmd_show(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnnbuilder.builder import build
    from cnnbuilder.summary import format_count, summarize
    from cnnbuilder.zoo import load_recipe

    recipe = load_recipe(args.recipe)
    overrides = parse_assignments(args.set)
    shape = parse_shape(args.input_shape)
    plan = recipe.plan(input_shape=shape, classes=args.classes, **overrides)
    model = build(recipe, input_shape=shape, classes=args.classes, **overrides)
    stages = summarize(model, plan)
    table = Table(title=f"{model.name} — {recipe.reference or recipe.description}", title_justify="left")
    table.add_column("stage")
    table.add_column("blocks")
    table.add_column("output", justify="right")
    table.add_column("params", justify="right")
    table.add_column("mult-adds", justify="right")
    for stage in stages:
        table.add_row(stage.name, stage.blocks_text, "×".join(map(str, stage.output_shape)),
                      f"{stage.params:,}", format_count(stage.macs))
    total_params = sum(s.params for s in stages)
    total_macs = sum(s.macs for s in stages)
    table.add_section()
    table.add_row("total", f"{len(model.layers)} layers", "", f"{total_params:,}", format_count(total_macs))
    console = Console(width=120)
    console.print(table)
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    console.print(f"input {plan.input_shape}, params {total_params:,} (trainable {trainable:,}), "
                  f"multiply-adds {format_count(total_macs)} per image")
    if args.plot:
        from cnnbuilder.plots import plot_architecture

        path = plot_architecture(plan, stages, args.plot, title=model.name)
        console.print(f"architecture diagram written to {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnbuilder",
        description="Build, study, train, tune and export classic CNNs from YAML recipes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("list", help="list the shipped recipes")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    p.set_defaults(run=cmd_list)

    p = commands.add_parser("show", help="per-stage table of a recipe's network")
    p.add_argument("recipe", help="recipe name or path to a .yaml file")
    p.add_argument("--input-shape", help="HEIGHT,WIDTH,CHANNELS (default: the recipe's)")
    p.add_argument("--classes", type=positive_int, help="number of classes (default: the recipe's)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a recipe param")
    p.add_argument("--plot", metavar="FILE.png", help="also draw the network as a block diagram")
    p.set_defaults(run=cmd_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CnnBuilderError as exc:
        print(f"cnnbuilder {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnbuilder {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
