"""The PyTorch-world weight sources of the zoo (`sources.yaml`), and where their files lie.

`weights="torchvision"` names a recipe's default torchvision weights, `"torchvision:ENUM"`
one of torchvision's weight enums (`IMAGENET1K_V2`), `"timm:MODEL.TAG"` a timm pretrained
tag (`resnet50.a1_in1k`). A source is data, as torchvision's `Weights` enum entries and
timm's `pretrained_cfg` are: its file, published accuracy, licence and evaluation
transform. Files are looked up where their own libraries keep them, so a cache filled by
torchvision or timm (here or on another machine) serves as is:

- torchvision: `$TORCH_HOME/hub/checkpoints/<file name of the URL>` (torch.hub's cache;
  TORCH_HOME defaults to `$XDG_CACHE_HOME/torch`, else `~/.cache/torch`);
- timm: the Hugging Face hub cache, `$HF_HUB_CACHE` or `$HF_HOME/hub` (default
  `~/.cache/huggingface/hub`), `models--timm--<model.tag>/snapshots/<revision>/model.safetensors`.

This module is pure Python (no TensorFlow, Keras or PyTorch): the CLI's `weights` listing
and the fast tests use it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from cnnbuilder.errors import WeightsError

_DATA = Path(__file__).with_name("sources.yaml")
HUBS = ("torchvision", "timm")
_RECIPE_KEYS = ("build", "params")


@dataclass(frozen=True)
class WeightSource:
    """One published set of weights for a zoo recipe.

    Attributes:
        name: ``torchvision:ENUM`` or ``timm:MODEL.TAG``.
        recipe: the zoo recipe it is listed under (``resnet50``).
        build: the recipe the weights need (``resnet50_tv``; the same as `recipe` where the
            PyTorch network is the recipe's).
        params: recipe params the weights need.
        meta: everything else, as in `sources.yaml` (url or hf_hub_id, top1, top5,
            metrics_source, recipe_link, licence, input_size, resize, crop, interpolation,
            mean, std, normalization, default).
    """

    name: str
    recipe: str
    build: str
    params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def hub(self) -> str:
        """``torchvision`` or ``timm``."""
        return self.name.split(":", 1)[0]

    @property
    def file_name(self) -> str:
        """The file's name in its cache."""
        return self.meta.get("file") or self.meta["url"].rsplit("/", 1)[-1]

    @property
    def url(self) -> str:
        """Where the file is downloaded from."""
        if self.hub == "timm":
            return f"https://huggingface.co/{self.meta['hf_hub_id']}/resolve/main/{self.file_name}"
        return self.meta["url"]

    def cache_path(self) -> Path:
        """Where the file lies once cached (for timm: in the snapshot found, else where
        `huggingface_hub` would put the `main` revision's file, shown as
        `snapshots/<revision>/`)."""
        if self.hub == "timm":
            return hf_cached_file(self.meta["hf_hub_id"], self.file_name) or (
                hf_repo_dir(self.meta["hf_hub_id"]) / "snapshots" / "<revision>" / self.file_name)
        return torch_hub_dir() / self.file_name

    def is_cached(self) -> bool:
        """Whether the file is in its cache."""
        return self.cache_path().is_file()


@lru_cache(maxsize=1)
def _registry() -> dict:
    """`sources.yaml`'s `recipes:` section."""
    return yaml.safe_load(_DATA.read_text(encoding="utf-8"))["recipes"]


def is_pytorch_weights(weights) -> bool:
    """Whether `weights` names a PyTorch-world source or state-dict file (by its form).

    A `word:rest` string that is no existing path counts too (`timn:resnet50.a1_in1k`), so
    that a misspelt hub is answered by `resolve_source`'s did-you-mean.
    """
    if not isinstance(weights, (str, os.PathLike)):
        return False
    text = os.fspath(weights)
    if text in HUBS or text.startswith(tuple(f"{hub}:" for hub in HUBS)):
        return True
    hub, colon, _ = text.partition(":")
    if colon and hub.isidentifier() and not Path(text).exists():
        return True
    return Path(text).suffix.lower() in (".pth", ".pt", ".safetensors")


def sources_for(recipe_name: str) -> list[WeightSource]:
    """The sources of the zoo recipe `recipe_name` (also when it is a recipe the weights
    need, such as ``resnet50_tv`` for resnet50's), default first, then as listed."""
    found = []
    for listed, entry in _registry().items():
        build = entry.get("build", listed)
        if recipe_name not in (listed, build):
            continue
        for name, meta in entry.items():
            if name not in _RECIPE_KEYS:
                found.append(WeightSource(name, listed, build, dict(entry.get("params") or {}),
                                          dict(meta)))
    return sorted(found, key=lambda s: not s.meta.get("default"))


def recipes_with_sources() -> list[str]:
    """The zoo recipes that have PyTorch-world weights, as listed."""
    return list(_registry())


def resolve_source(recipe_name: str, weights: str) -> WeightSource:
    """The source `weights` (``torchvision``, ``torchvision:ENUM`` or ``timm:MODEL.TAG``)
    names for the recipe `recipe_name`.

    Raises:
        WeightsError: an unknown hub, enum or tag (with the closest known), or a recipe
            that has no such source (listing the ones it has).
    """
    available = sources_for(recipe_name)
    listing = ", ".join(s.name for s in available) or "none"
    hub, _, tag = str(weights).partition(":")
    if hub not in HUBS:
        raise WeightsError(f"unknown weight source {weights!r}: PyTorch-world sources are "
                           "'torchvision', 'torchvision:ENUM' and 'timm:MODEL.TAG'."
                           + _did_you_mean(str(weights), [s.name for s in available] + list(HUBS)))
    if not available:
        with_sources = ", ".join(recipes_with_sources())
        raise WeightsError(f"recipe {recipe_name!r} has no PyTorch-world weights. Recipes "
                           f"that have them: {with_sources} (`cnnbuilder weights` lists them).")
    if not tag:
        candidates = [s for s in available if s.hub == hub]
        if not candidates:
            raise WeightsError(f"recipe {recipe_name!r} has no {hub} weights; it has: {listing}.")
        return next((s for s in candidates if s.meta.get("default")), candidates[0])
    for source in available:
        if source.name == f"{hub}:{tag}":
            return source
    every = [f"{hub}:{t}" for t in _all_tags(hub)]
    if f"{hub}:{tag}" in every:
        owners = [r for r, e in _registry().items() if f"{hub}:{tag}" in e]
        raise WeightsError(f"{weights!r} are weights of {', '.join(owners)}, not of "
                           f"{recipe_name!r}; {recipe_name} has: {listing}.")
    raise WeightsError(f"unknown {hub} weights {weights!r} for {recipe_name!r}; it has: "
                       f"{listing}." + _did_you_mean(f"{hub}:{tag}", [s.name for s in available] + every))


def weights_preprocessing(recipe_name: str, weights) -> dict | None:
    """What the PyTorch-world `weights` expect of an input image, as `preprocess` keywords:
    ``{"normalization": mode, "crop_from": shorter side, "crop": centre crop}`` (a
    state-dict file: the recipe's default source's); None when the recipe has no source to
    say it. torchvision's IMAGENET1K_V2 ResNet-50: torch, 232, 224.

    Raises:
        WeightsError: an unknown source (see `resolve_source`).
    """
    if isinstance(weights, (str, os.PathLike)) and Path(os.fspath(weights)).suffix.lower() in (
            ".pth", ".pt", ".safetensors"):
        known = sources_for(recipe_name)
        if not known:
            return None
        source = known[0]
    else:
        source = resolve_source(recipe_name, str(weights))
    return {"normalization": source.meta["normalization"], "crop_from": source.meta["resize"],
            "crop": source.meta["crop"]}


def _all_tags(hub: str) -> list[str]:
    """Every enum or tag of `hub` in the registry."""
    return [name.split(":", 1)[1] for entry in _registry().values() for name in entry
            if name.startswith(f"{hub}:")]


def _did_you_mean(value: str, options) -> str:
    close = difflib.get_close_matches(value, list(dict.fromkeys(options)), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


# ----------------------------------------------------------------------------- caches


def torch_hub_dir() -> Path:
    """torch.hub's checkpoint cache: `$TORCH_HOME/hub/checkpoints` (as `torch.hub.get_dir`)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return Path(home) / "hub" / "checkpoints"


def hf_hub_dir() -> Path:
    """The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub` (as huggingface_hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface")
    return Path(home) / "hub"


def hf_repo_dir(repo_id: str) -> Path:
    """A model repository's folder in the hub cache (`models--org--name`)."""
    return hf_hub_dir() / ("models--" + repo_id.replace("/", "--"))


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """The cached `filename` of `repo_id`: the `main` revision's (refs/main) if cached,
    else the newest snapshot holding it; None when no snapshot does."""
    repo = hf_repo_dir(repo_id)
    ref = repo / "refs" / "main"
    if ref.is_file():
        candidate = repo / "snapshots" / ref.read_text().strip() / filename
        if candidate.is_file():
            return candidate
    snapshots = sorted((repo / "snapshots").glob(f"*/{filename}"),
                       key=lambda p: p.stat().st_mtime, reverse=True)
    return snapshots[0] if snapshots else None


def offline() -> bool:
    """Whether downloads are off: `CNNBUILDER_OFFLINE` or `HF_HUB_OFFLINE` set to 1/true/yes."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("CNNBUILDER_OFFLINE", "HF_HUB_OFFLINE"))


__all__ = ["WeightSource", "hf_cached_file", "hf_hub_dir", "is_pytorch_weights", "offline",
           "recipes_with_sources", "resolve_source", "sources_for", "torch_hub_dir",
           "weights_preprocessing"]
