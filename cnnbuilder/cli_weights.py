"""`cnnbuilder weights [RECIPE]`: every pretrained-weight source of the zoo, with its published
accuracy, evaluation transform, licence, and whether its file is cached here.

The sources are data (`cnnbuilder/model/pretrained/sources.yaml`, and the keras.applications
files named by a recipe's metadata); this module only prints them.
"""

from __future__ import annotations

import json

from cnnbuilder.errors import UsageError


def add_weights_parser(commands) -> None:
    """Register the `weights` command on the CLI's subparsers."""
    p = commands.add_parser("weights", help="list the pretrained weights of the recipes "
                                            "(torchvision, timm, keras.applications)")
    p.add_argument("recipe", nargs="?", help="one recipe (all recipes with weights when left out)")
    p.add_argument("--json", action="store_true", help="print the sources as JSON")
    p.set_defaults(run=cmd_weights)


def weight_rows(recipe_name: str) -> list[dict]:
    """One dict per weight source of `recipe_name`: the keras.applications ``imagenet`` file
    (if the recipe mirrors one), then the PyTorch-world sources (default first)."""
    from cnnbuilder.model.pretrained.sources import sources_for
    from cnnbuilder.model.weights import keras_cache_file
    from cnnbuilder.zoo import load_recipe

    recipe = load_recipe(recipe_name)
    rows = []
    application = recipe.metadata.get("keras_application")
    if application:
        path = keras_cache_file(recipe, True)
        rows.append({"recipe": recipe.name, "weights": "imagenet", "builds": recipe.name,
                     "top1": None, "top5": None,
                     "metrics_source": "keras.io/api/applications (keras.applications."
                                       f"{application})",
                     "preprocessing": recipe.metadata.get("preprocessing"),
                     "transform": f"resize to {recipe.default_input_shape[0]}",
                     "licence": "keras.applications (see keras.io/api/applications)",
                     "file": str(path), "cached": path.is_file()})
    for source in sources_for(recipe.name):
        meta = source.meta
        rows.append({
            "recipe": source.recipe, "weights": source.name, "builds": source.build,
            "params": source.params, "default": bool(meta.get("default")),
            "top1": meta.get("top1"), "top5": meta.get("top5"),
            "metrics_source": meta.get("metrics_source"), "recipe_link": meta.get("recipe_link"),
            "licence": meta.get("licence"), "input_size": meta.get("input_size"),
            "resize": meta.get("resize"), "crop": meta.get("crop"),
            "interpolation": meta.get("interpolation"), "mean": meta.get("mean"),
            "std": meta.get("std"), "preprocessing": meta.get("normalization"),
            "transform": (f"resize {meta.get('resize')} → crop {meta.get('crop')}, "
                          f"{meta.get('interpolation')}"),
            "url": source.url, "file": str(source.cache_path()), "cached": source.is_cached(),
        })
    return rows


def cmd_weights(args) -> int:
    """`cnnbuilder weights [RECIPE]`: a table of the sources (or JSON with `--json`)."""
    from cnnbuilder.model.pretrained.sources import recipes_with_sources
    from cnnbuilder.zoo import list_recipes, load_recipe

    if args.recipe:
        names = [load_recipe(args.recipe).name]
    else:
        names = [n for n in list_recipes()
                 if n in recipes_with_sources() or load_recipe(n).metadata.get("keras_application")]
    rows = [row for name in names for row in weight_rows(name)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        raise UsageError(f"recipe {names[0]!r} has no pretrained weights; `cnnbuilder weights` "
                         "lists the recipes that have them.")
    _print_table(rows)
    if args.recipe:
        for row in rows:
            where = ("cached" if row["cached"] else "not cached: downloaded on first use, or put it"
                     if row.get("url") else "not cached: put it")
            print(f"{row['weights']}: {where} at {row['file']}"
                  + (f" (from {row['url']})" if row.get("url") else ""))
            if row.get("recipe_link"):
                print(f"    trained by {row['recipe_link']}; accuracy: {row['metrics_source']}")
    return 0


def _print_table(rows: list[dict]) -> None:
    """The rows as one aligned table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_edge=False, box=None, pad_edge=False)
    for column in ("recipe", "weights", "builds", "top-1", "top-5", "input", "preprocessing",
                   "licence", "cached"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        name = row["weights"] + (" (default)" if row.get("default") else "")
        table.add_row(row["recipe"], name, row["builds"], _percent(row["top1"]),
                      _percent(row["top5"]), row["transform"], str(row["preprocessing"]),
                      (row["licence"] or "")[:30], "yes" if row["cached"] else "no")
    Console(width=200).print(table)


def _percent(value) -> str:
    """An accuracy in %, or a dash when none is published."""
    return "–" if value is None else f"{value:.2f}"


__all__ = ["add_weights_parser", "cmd_weights", "weight_rows"]
