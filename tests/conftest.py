import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).parent))
# The development helpers (tools/) live beside the package, outside it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
