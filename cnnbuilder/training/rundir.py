"""Run directories: atomic writes and the resumable state of a training run.

A training run commits each finished epoch in one step: the new checkpoint and history
are staged first, then `state.json` is replaced atomically. Whatever moment the process
dies at, a rerun finds the last committed epoch, its checkpoint and a history holding
each finished epoch exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from cnnbuilder.errors import RunError

STATE = "state.json"
RUN = "run.json"
METRICS = "metrics.json"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
MODEL = "model.keras"
RESUME_DIR = "resume"


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_plain) + "\n")


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def atomic_save_model(model, path: Path) -> None:
    """`model.save` to a temporary file beside `path`, then rename over it."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} cannot be read ({exc}); remove it or pass --overwrite.") from None


def history_csv(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_history(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            return [dict(row) for row in csv.DictReader(stream)]
    except FileNotFoundError:
        return []


def clear_run(directory: Path) -> None:
    """Remove what a run writes (and nothing else a user may keep there)."""
    for name in (STATE, RUN, METRICS, HISTORY_CSV, HISTORY_PNG, MODEL):
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / RESUME_DIR, ignore_errors=True)
