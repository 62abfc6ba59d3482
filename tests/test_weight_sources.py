"""The PyTorch-world weight sources as data (cnnbuilder/model/pretrained/sources.yaml): every
source names a recipe that exists, carries its published metadata and preprocessing, and
bad names are answered with what exists. No network is built (the default tier: importing
`cnnbuilder.model` imports Keras, so these cannot be in the fast tier)."""

from __future__ import annotations

import pytest

from cnnbuilder.errors import WeightsError
from cnnbuilder.model.pretrained.sources import (is_pytorch_weights, recipes_with_sources,
                                                 resolve_source, sources_for)
from cnnbuilder.recipe.recipe import METADATA_CHOICES
from cnnbuilder.zoo import list_recipes, load_recipe

# The ImageNet recipes whose networks the PyTorch world publishes weights for (issue 21).
EXPECTED = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
            "wide_resnet50_2", "densenet121", "densenet161", "densenet169", "densenet201",
            "vgg16", "vgg19", "googlenet", "alexnet"}


def test_every_imagenet_recipe_with_published_weights_has_sources():
    assert set(recipes_with_sources()) == EXPECTED
    assert "timm:resnet50.a1_in1k" in [s.name for s in sources_for("resnet50")]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sources_carry_their_metadata_and_build_a_recipe_of_the_zoo(name):
    sources = sources_for(name)
    assert sources
    for source in sources:
        meta = source.meta
        assert source.build in list_recipes()
        built = load_recipe(source.build)
        assert built.default_classes == 1000 and built.default_input_shape == (224, 224, 3)
        if source.build != name:  # a variant of the recipe, saying whose network it is
            assert built.family == load_recipe(name).family
            assert "torchvision" in built.description
        for key in ("licence", "input_size", "resize", "crop", "interpolation", "mean", "std",
                    "recipe_link", "normalization"):
            assert meta.get(key) is not None, (source.name, key)
        assert meta["normalization"] in METADATA_CHOICES["preprocessing"]
        assert meta.get("top1") is not None or "not published" in meta["metrics_source"]
        assert source.url.startswith("https://")
        assert source.file_name.endswith((".pth", ".safetensors"))
        for param in source.params:
            assert param in built.params
    for hub in ("torchvision", "timm"):
        defaults = [s for s in sources if s.hub == hub and s.meta.get("default")]
        assert len(defaults) == (1 if hub == "torchvision" else 0)


def test_a_source_by_hub_enum_or_tag():
    assert resolve_source("resnet50", "torchvision").name == "torchvision:IMAGENET1K_V2"
    assert resolve_source("resnet50", "torchvision:IMAGENET1K_V1").meta["top1"] == 76.13
    source = resolve_source("resnet50_tv", "timm:resnet50.a1_in1k")
    assert (source.recipe, source.build) == ("resnet50", "resnet50_tv")
    assert resolve_source("densenet121", "torchvision").params == {"bn_epsilon": 1e-5}


@pytest.mark.parametrize("recipe, weights, expected", [
    ("resnet50", "torchvision:IMAGENET1K_V3", "Did you mean 'torchvision:IMAGENET1K_V2'"),
    ("resnet50", "timn:resnet50.a1_in1k", "Did you mean 'timm:resnet50.a1_in1k'"),
    ("resnet34", "timm", "has no timm weights; it has: torchvision:IMAGENET1K_V1"),
    ("resnet18", "timm:resnet50.a1_in1k", "are weights of resnet50, not of 'resnet18'"),
    ("resnet20", "torchvision", "has no PyTorch-world weights. Recipes that have them: resnet18"),
])
def test_bad_sources_say_what_exists(recipe, weights, expected):
    assert is_pytorch_weights(weights)
    with pytest.raises(WeightsError, match=expected.replace("(", r"\(")):
        resolve_source(recipe, weights)


def test_the_caches_are_the_libraries_own(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    torchvision = resolve_source("resnet18", "torchvision")
    assert torchvision.cache_path() == tmp_path / "torch/hub/checkpoints/resnet18-f37072fd.pth"
    timm = resolve_source("resnet18", "timm:resnet18.a1_in1k")
    assert not timm.is_cached()
    repo = tmp_path / "hf/hub/models--timm--resnet18.a1_in1k"
    (repo / "snapshots/abc123").mkdir(parents=True)
    (repo / "snapshots/abc123/model.safetensors").write_bytes(b"x")
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("abc123")
    assert timm.cache_path() == repo / "snapshots/abc123/model.safetensors"
    assert timm.url == "https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/model.safetensors"


def test_offline_refusal_names_file_url_and_place(tmp_path, monkeypatch):
    from cnnbuilder.model.pretrained.fetch import locate

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("CNNBUILDER_OFFLINE", "1")
    with pytest.raises(WeightsError) as error:
        locate(resolve_source("alexnet", "torchvision"))
    message = str(error.value)
    for part in ("alexnet-owt-7be5be79.pth", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                 str(tmp_path / "hub" / "checkpoints"), "downloads are off"):
        assert part in message


def test_the_weights_command_lists_sources_with_accuracy_and_cache(tmp_path, monkeypatch, capsys):
    import json

    from cnnbuilder.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert main(["weights", "resnet50", "--json"]) == 0
    rows = {row["weights"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == ["imagenet", "torchvision:IMAGENET1K_V2", "torchvision:IMAGENET1K_V1",
                          "timm:resnet50.a1_in1k"]
    assert rows["torchvision:IMAGENET1K_V2"]["top1"] == 80.858
    assert rows["torchvision:IMAGENET1K_V2"]["resize"] == 232
    assert rows["torchvision:IMAGENET1K_V1"]["cached"] and not rows["torchvision:IMAGENET1K_V2"]["cached"]
    assert rows["timm:resnet50.a1_in1k"]["builds"] == "resnet50_tv"
    assert main(["weights"]) == 0
    listing = capsys.readouterr().out
    assert "googlenet_tv" in listing and "alexnet" in listing and "resnet20" not in listing
    assert main(["weights", "no_such_recipe"]) == 2
    assert "unknown recipe" in capsys.readouterr().err


def test_an_unnamed_1000_class_export_predicts_imagenet_class_names(tmp_path):
    from cnnbuilder.model.pretrained import imagenet_class_names
    from cnnbuilder.serving.prediction import _class_names

    names = imagenet_class_names()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[1], names[999]) == ("tench", "goldfish", "toilet tissue")
    (tmp_path / "metadata.json").write_text("{}")
    assert _class_names(tmp_path, "labels.txt", 1000) == names
    assert _class_names(tmp_path, "labels.txt", 10) == [str(i) for i in range(10)]


def test_the_preprocessing_the_weights_expect():
    from cnnbuilder.model.pretrained.sources import weights_preprocessing

    assert weights_preprocessing("resnet50", "torchvision") == {"normalization": "torch",
                                                                "crop_from": 232, "crop": 224}
    assert weights_preprocessing("googlenet", "torchvision")["normalization"] == "tf"
    assert weights_preprocessing("resnet18", "my/resnet18.pth") == {"normalization": "torch",
                                                                   "crop_from": 256, "crop": 224}
    assert weights_preprocessing("resnet20", "my/resnet20.pth") is None


def test_the_model_card_shows_the_pretrained_source():
    from cnnbuilder.serving.model_card import _pretrained_weights

    assert _pretrained_weights({"recipe": "resnet50_tv"}) == ""
    card = _pretrained_weights({"recipe": "resnet50_tv", "weights": "torchvision"})
    assert "torchvision:IMAGENET1K_V2" in card and "top-1 80.858%" in card
    assert "resize 232, centre crop 224, bilinear" in card and "BSD-3-Clause" in card
    card = _pretrained_weights({"recipe": "resnet18", "weights": "timm:resnet18.a1_in1k"})
    assert "not published" in card and "apache-2.0" in card
    assert "keras.applications" in _pretrained_weights({"recipe": "resnet50", "weights": "imagenet"})
