"""The one run-directory policy of train, tune and export.

- **Atomic writes**: every file is written to a temporary sibling and renamed over its
  target (`atomic_write_text`, `atomic_write_json`, `atomic_save_model`); a whole
  directory is staged beside its final place and renamed there (`staged_directory`), so
  a reader never sees half a file or half an export, whatever moment the process dies at.
- **Refuse to clobber**: a directory holding a finished result (its marker file:
  ``metrics.json`` of a run, ``tuning.json`` of a search) is only replaced when asked
  (``--overwrite``; ``--force`` for an export version).
- **Resume**: an unfinished directory is continued only with the settings it was started
  with; otherwise the message names the settings that differ (`prepare_directory`).
- **One process at a time**: a run, search or export holds an exclusive lock on its
  directory (`exclusive`); a second process refuses at once and names the holder. The
  lock is the operating system's (`flock`), so a killed holder releases it by dying and
  its successor takes over safely.

A training run commits each finished epoch in one step: the new checkpoint and history
are staged first, then `state.json` is replaced atomically (see `training.commit`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import io
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from cnnbuilder.errors import RunError

# The files of a training run directory (DESIGN.md §5). `tune` writes the same files into
# DIR/best/, and `export` reads them.
STATE = "state.json"
RUN = "run.json"
METRICS = "metrics.json"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
MODEL = "model.keras"
RESUME_DIR = "resume"
LOGS_DIR = "logs"
BEST_DIR = "best"  # of a search directory: the best trial as a run directory
RUN_FILES = (STATE, RUN, METRICS, HISTORY_CSV, HISTORY_PNG, MODEL)
LOCK = ".cnnbuilder.lock"  # inside a run or search directory; beside an export version


# ----------------------------------------------------------------------------- files


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary sibling renamed over it."""
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
    """`atomic_write_text` of `data` as indented JSON (NumPy scalars become numbers)."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=plain) + "\n")


def plain(value):
    """A JSON-serializable form of NumPy scalars, tuples and sets (the `default=` of
    `json.dumps`); anything else becomes its string."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def canonical(data) -> str:
    """`data` as canonical JSON: equal settings give equal text."""
    return json.dumps(data, sort_keys=True, default=plain)


def _atomic_save(save, path: Path, suffix: str) -> None:
    """`save(temporary)` to a hidden sibling of `path` ending in `suffix` (Keras picks the
    format from it), then rename it over `path`."""
    path = Path(path)
    stem = path.name.removesuffix(suffix)
    temporary = path.with_name(f".{stem}.tmp-{secrets.token_hex(4)}{suffix}")
    try:
        save(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def atomic_save_model(model, path: Path) -> None:
    """`model.save` to a temporary file beside `path`, then rename over it. (In a
    multi-process run only process 0 saves: `distribution.local_only`.)"""
    from cnnbuilder.training.distribution import local_only

    with local_only():
        _atomic_save(model.save, path, ".keras")


def atomic_save_weights(model, path: Path) -> None:
    """`model.save_weights` to a temporary file beside `path`, then rename over it."""
    _atomic_save(model.save_weights, path, ".weights.h5")


START_OVER = "remove it or pass --overwrite to start over."


def read_json(path: Path, *, what: str = "file", hint: str = START_OVER) -> dict | None:
    """The JSON object in `path`; None if the file is absent; a RunError naming the file
    (and ending with `hint`, what the user can do) when it cannot be read or holds
    something else than an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"the {what} {path} cannot be read ({exc}); {hint}") from None
    if not isinstance(data, dict):
        raise RunError(f"the {what} {path} holds {type(data).__name__}, not a JSON object; {hint}")
    return data


def history_csv(rows: list[dict]) -> str:
    """CSV text of per-epoch rows; the columns are the union of the rows' keys."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_history(path: Path) -> list[dict]:
    """The rows of a history.csv (empty when there is none)."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            return [dict(row) for row in csv.DictReader(stream)]
    except FileNotFoundError:
        return []


def clear_run(directory: Path) -> None:
    """Remove what a training run writes (and nothing else a user may keep there)."""
    directory = Path(directory)
    for name in RUN_FILES:
        (directory / name).unlink(missing_ok=True)
    for name in (RESUME_DIR, LOGS_DIR):
        shutil.rmtree(directory / name, ignore_errors=True)


# ----------------------------------------------------------------------------- policy


def check_is_directory(directory: Path, *, option: str = "--output") -> None:
    """RunError when `directory` exists as something else than a directory."""
    if directory.exists() and not directory.is_dir():
        raise RunError(f"{option} {directory} exists and is not a directory.")


def refuse_finished(directory: Path, marker: str, *, what: str = "run") -> None:
    """RunError when `directory` holds a finished result (its `marker` file)."""
    if (Path(directory) / marker).exists():
        raise RunError(
            f"{directory} already holds a finished {what} ({marker}). Choose another "
            "--output, or pass --overwrite to replace it."
        )


def changed_settings(previous: dict, current: dict) -> list[str]:
    """The keys of `current` whose value differs in `previous` (compared as JSON)."""
    return sorted(k for k in current if canonical(previous.get(k)) != canonical(current[k]))


def refuse_changed_settings(directory: Path, previous: dict | None, current: dict, *,
                            what: str = "run") -> None:
    """RunError when an unfinished `directory` was started with other settings."""
    if previous is None:
        return
    changed = changed_settings(previous, current)
    if changed:
        raise RunError(
            f"{directory} holds an unfinished {what} with other settings ({', '.join(changed)} "
            "differ), so it cannot be resumed with these. Rerun the original command to "
            "resume it, choose another --output, or pass --overwrite to start over."
        )


def prepare_directory(directory: Path, *, settings: dict, record: Path, marker: str,
                      overwrite: bool, clear: Callable[[Path], None], what: str = "run",
                      extra: dict | None = None,
                      check: Callable[[Path], None] | None = None) -> bool:
    """Apply the policy before anything is written; returns True when resuming.

    `settings` are what must match for a rerun to continue; they are stored (with `extra`
    beside them) in the `record` file. With `overwrite`, `clear` removes the previous
    result first; otherwise a finished result (`marker`) is refused, an unfinished one is
    continued only with the same settings, and `check` (if given) then raises when the
    unfinished result is damaged.
    """
    directory = Path(directory)
    check_is_directory(directory)
    previous = None
    if overwrite:
        if directory.exists():
            clear(directory)
    else:
        refuse_finished(directory, marker, what=what)
        previous = read_json(record, what=f"record of the unfinished {what}")
        refuse_changed_settings(directory, previous, settings, what=what)
        if check is not None:
            check(directory)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, {**settings, **(extra or {})})
    return previous is not None


@contextlib.contextmanager
def exclusive(lock_path: Path, *, what: str, transient: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` for the block; RunError at once, naming the
    holder (pid, host, command, since when), when another process holds it.

    `flock` locks belong to the open file: the operating system drops them when the holder
    exits or is killed, so a stale lock file left by a dead process is simply taken over.
    When the block fails, the folders created for the lock are removed again if nothing
    else was written there, so refused input leaves nothing behind. A `transient` lock
    file is removed when the block ends (an export leaves only its version beside it); the
    cost is a narrow race in which two late-comers could both take a lock just released.
    """
    lock_path = Path(lock_path)
    created = [d for d in (lock_path.parent, *lock_path.parent.parents) if not d.exists()]
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = " ".join(handle.read().split()) or "another process"
            raise RunError(
                f"{lock_path.parent} is in use by another cnnbuilder {what} ({holder}). Wait for "
                "it to finish or stop it, or choose another --output."
            ) from None
        handle.seek(0)
        handle.truncate()
        since = datetime.datetime.now().isoformat(timespec="seconds")
        command = " ".join(sys.argv) or "python"
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {since}: {command}\n")
        handle.flush()
        try:
            yield
        except BaseException:
            if created:  # this process made the folders: undo them if they hold only the lock
                lock_path.unlink(missing_ok=True)
                for folder in created:
                    with contextlib.suppress(OSError):
                        folder.rmdir()
            raise
        finally:
            if transient:
                lock_path.unlink(missing_ok=True)
    finally:
        handle.close()  # releases the lock


# ------------------------------------------------------------------ staged directories


def is_occupied(path: Path) -> bool:
    """Whether publishing to `path` would replace something (an empty dir is free)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(path.iterdir())


@contextlib.contextmanager
def staged_directory(final: Path, *, replace: bool,
                     refuse: Callable[[Path], None]) -> Iterator[Path]:
    """Yield a fresh hidden sibling of `final`; publish it as `final` when the block ends.

    Publishing renames the staged directory into place; with `replace`, what `final` held
    is swapped out (and put back if the rename fails); without it, `refuse(final)` is
    called when `final` is occupied (it raises). On any exception the staging directory is
    deleted and `final` is left as it was. The sibling is named ``.NAME.tmp-XXXXXXXX``:
    hidden and non-numeric, so TF Serving's version scan ignores it.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create the directory {final.parent}: {error}.") from error
    staging = _hidden_sibling(final, "tmp")
    try:
        yield staging
        _publish(staging, final, replace=replace, refuse=refuse)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _hidden_sibling(final: Path, kind: str) -> Path:
    """Create and return an empty `.NAME.<kind>-XXXXXXXX` directory beside `final`
    (os.mkdir, not mkdtemp, so it gets the umask's permissions like any directory)."""
    while True:
        candidate = final.parent / f".{final.name}.{kind}-{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


def _publish(staging: Path, final: Path, *, replace: bool, refuse) -> None:
    """Rename `staging` to `final`; with `replace`, swap out what `final` held."""
    if not is_occupied(final):
        if final.is_dir():
            final.rmdir()  # an empty placeholder directory: nothing to keep
        os.rename(staging, final)
        return
    if not replace:
        refuse(final)
    retired = final.parent / f".{final.name}.old-{secrets.token_hex(4)}"
    os.rename(final, retired)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(retired, final)  # put the previous version back
        raise
    if retired.is_dir() and not retired.is_symlink():
        shutil.rmtree(retired, ignore_errors=True)
    else:
        retired.unlink(missing_ok=True)
