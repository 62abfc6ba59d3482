"""Issue 23, packaging: compatible ranges in pyproject.toml and the tested set in
constraints.txt (what make and CI install), the optional parts as extras named when
missing, the LICENSE, the guides printed by `cnnbuilder help`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from cnnbuilder import extras
from cnnbuilder.cli_help import TOPICS, docs_dir, topic_text
from cnnbuilder.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version.strip()
    return pins


@pytest.mark.fast
def test_runtime_dependencies_are_ranges_that_hold_the_tested_versions():
    pins = constraints()
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in ("onnx", "litert", "jax"):
        requirements += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    for requirement in requirements:
        assert not any(s.operator == "==" for s in requirement.specifier), requirement
        tested = pins[re.sub(r"[-_.]+", "-", requirement.name.lower())]
        assert requirement.specifier.contains(tested, prereleases=True), (requirement, tested)


@pytest.mark.fast
def test_jax_onnx_and_litert_are_extras_and_dev_pulls_them_all():
    core = {Requirement(r).name for r in PROJECT["dependencies"]}
    assert not core & {"jax", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert"}
    optional = PROJECT["optional-dependencies"]
    assert optional["all"] == ["cnnbuilder[onnx,litert,jax]"]
    assert "cnnbuilder[all]" in optional["dev"]


@pytest.mark.fast
def test_make_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[dev]'" in makefile
    assert "constraints.txt" in makefile.split("$(STAMP):")[1].splitlines()[0]


@pytest.mark.fast
def test_a_missing_extra_is_named(monkeypatch):
    monkeypatch.setattr(extras.importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    monkeypatch.setattr(extras, "available", lambda module: False)
    with pytest.raises(UsageError, match=r"pip install 'cnnbuilder\[onnx\]'"):
        extras.require("tf2onnx")
    with pytest.raises(UsageError, match=r"cnnbuilder\[jax\]"):
        extras.require("jax")


@pytest.mark.fast
def test_license_is_the_apache_2_text():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert PROJECT["license"] == {"text": "Apache-2.0"}


@pytest.mark.fast
def test_every_guide_a_message_names_is_a_help_topic():
    for name, file in TOPICS.items():
        assert (docs_dir() / file).is_file()
        assert topic_text(name).startswith("#")
    assert topic_text("fine_tuning.md") == topic_text("fine-tuning")
    with pytest.raises(UsageError, match="topics: fine-tuning"):
        topic_text("nothing")
    shipped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert shipped["force-include"]["docs"] == "cnnbuilder/_docs"
