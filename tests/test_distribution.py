"""Issue 23, packaging: compatible ranges in pyproject.toml and the tested set in
constraints.txt (what make and CI install), the optional parts as extras named when
missing, the LICENSE, the guides printed by `cnnbuilder help`."""

from __future__ import annotations

import json
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


FRESH_CHECK = """
import importlib.util, json
print(json.dumps({m: importlib.util.find_spec(m) is not None
                  for m in ("jax", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert")}))
"""


@pytest.mark.slow
def test_the_wheel_without_extras_installs_trains_and_exports_in_a_fresh_venv(tmp_path):
    """`pip install cnnbuilder` (no extras, the tested versions) into a new venv: no JAX,
    ONNX or LiteRT; it builds, trains one epoch on digits and exports a SavedModel; a
    missing extra is named. pip's cache makes a second run cheap."""
    import subprocess
    import sys

    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(wheels), str(ROOT)], check=True, cwd=tmp_path)
    [wheel] = wheels.glob("cnnbuilder-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, cli = venv / "bin" / "python", venv / "bin" / "cnnbuilder"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"),
                    str(wheel)], check=True, cwd=tmp_path)
    found = subprocess.run([python, "-c", FRESH_CHECK], check=True, capture_output=True, text=True)
    assert json.loads(found.stdout.strip().splitlines()[-1]) == dict.fromkeys(
        ("jax", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert"), False)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([cli, "train", "lenet5", "--dataset", "digits", "--epochs", "1",
                           "--quiet", "--no-tensorboard", "--output", "run"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([cli, "export", "run", "--output", "sm/1"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sm" / "1" / "saved_model.pb").is_file()
    done = subprocess.run([cli, "export", "run", "--output", "onnx/model.onnx"], cwd=tmp_path,
                          env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "pip install 'cnnbuilder[onnx]'" in done.stderr
    assert "\x1b" not in done.stderr
    assert not (tmp_path / "onnx" / "model.onnx").exists()
    help_text = subprocess.run([cli, "help", "limits"], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=True).stdout
    assert help_text.startswith("# Limits")
