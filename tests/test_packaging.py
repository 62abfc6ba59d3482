"""The recipes travel with the package: after a non-editable install, from any directory,
every recipe of the checkout is found and loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cnnbuilder

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import json, cnnbuilder
recipes = cnnbuilder.list_recipes()
for name in recipes:
    cnnbuilder.load_recipe(name)
print(json.dumps({"file": cnnbuilder.__file__, "recipes": recipes}))
"""


@pytest.mark.slow
def test_recipes_are_found_after_a_non_editable_install(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    # hatchling is a [dev] dependency, so the wheel builds without reaching an index.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(wheels), str(ROOT)], check=True, cwd=elsewhere)
    [wheel] = wheels.glob("cnnbuilder-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
                    "--target", str(site), str(wheel)], check=True, cwd=elsewhere)
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                          cwd=elsewhere, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                          check=True)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(site)
    # The same names, in list_recipes' natural order (resnet18 before resnet101).
    assert found["recipes"] == cnnbuilder.list_recipes()
    assert sorted(found["recipes"]) == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
