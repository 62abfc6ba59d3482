"""The fast tier: `pytest -m fast` runs the TF-free tests (recipe language, search space, docs,
property tests) in seconds, and none of them imports TensorFlow, Keras or JAX.

The tier is run in a fresh interpreter, with a small plugin that records, at the end of the
session, the heavy packages loaded (and after which test they first were) and every test
that passed; a fast test (or anything it imports, or a test module collected by the tier)
that pulls in TensorFlow makes this test fail and names the package and the test.
`tests/conftest.py` keeps `-m fast` from collecting (importing) the modules that mark no
test fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

TESTS = Path(__file__).resolve().parent
HEAVY = ("tensorflow", "keras", "jax")
# Modules whose tests are all (or nearly all) in the tier: each must contribute passing tests.
FAST_MODULES = ("test_recipe_language.py", "test_tuning_space.py", "test_docs.py", "test_property.py")

PROBE = textwrap.dedent('''
    """pytest plugin: write what was imported, when it first was, and what passed."""
    import json
    import os
    import sys

    HEAVY = {heavy!r}
    PASSED = []
    FIRST = []  # where a heavy module was first seen loaded


    def heavy():
        return sorted({{name.split(".")[0] for name in sys.modules if name.split(".")[0] in HEAVY}})


    def pytest_collection_finish(session):
        if heavy() and not FIRST:
            FIRST.append("while collecting the test modules")


    def pytest_runtest_logreport(report):
        if report.when == "call" and report.passed:
            PASSED.append(report.nodeid)
        if report.when == "teardown" and heavy() and not FIRST:
            FIRST.append(report.nodeid)


    def pytest_sessionfinish(session, exitstatus):
        with open(os.environ["FAST_TIER_REPORT"], "w") as stream:
            json.dump({{"heavy": heavy(), "first": FIRST, "passed": PASSED,
                       "exitstatus": int(exitstatus)}}, stream)
''').format(heavy=HEAVY)


def run_fast_tier(tmp_path: Path) -> tuple[dict, str]:
    (tmp_path / "fast_tier_probe.py").write_text(PROBE)
    report = tmp_path / "report.json"
    env = {**os.environ, "FAST_TIER_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "fast", "-q", "-p", "no:cacheprovider",
         "-p", "fast_tier_probe", str(TESTS), "--ignore", str(Path(__file__).resolve())],
        cwd=TESTS.parent, env=env, capture_output=True, text=True,
    )
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert report.exists(), f"the fast tier did not finish:\n{output}"
    return json.loads(report.read_text()), output


def test_the_fast_tier_passes_without_importing_tensorflow_keras_or_jax(tmp_path):
    report, output = run_fast_tier(tmp_path)
    assert report["exitstatus"] == 0, output
    assert report["heavy"] == [], f"the fast tier imported {report['heavy']}, first {report['first']}"
    files = {nodeid.split("::")[0].rsplit("/", 1)[-1] for nodeid in report["passed"]}
    assert set(FAST_MODULES) <= files, f"no passing fast test in {set(FAST_MODULES) - files}"
    assert len(report["passed"]) >= 100
