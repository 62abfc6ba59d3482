import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).parent))
# The development helpers (tools/) live beside the package, outside it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_ignore_collect(collection_path, config):
    """Under `-m fast`, collect only the test modules that mark tests fast.

    Collecting a module imports it, and most test modules import Keras at the top: the fast
    tier would pay seconds of TensorFlow start-up (and lose its "no TensorFlow" guarantee)
    for tests it then deselects. A module takes part when its source says `pytest.mark.fast`.
    """
    expression = config.getoption("markexpr", "") or ""
    if "fast" not in expression or "not fast" in expression:
        return None
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if "pytest.mark.fast" not in collection_path.read_text(encoding="utf-8"):
            return True
    return None  # never False: that would override --ignore and the other hooks


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torch.hub and Hugging Face caches in `tmp_path`, downloads off."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("CNNBUILDER_OFFLINE", "1")
    return tmp_path
