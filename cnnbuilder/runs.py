"""The run directory: its files, and the one policy of train, tune and export over them.

Everything about a run or search directory lives here, low in the house (it imports only
`errors`), so `model/`, `training/`, `tuning/` and `serving/` share one copy:

- **Names** of the files (`STATE`, `RUN`, `METRICS`, `MODEL`...), and **finding** the model
  of a run or search directory (`model_file`) and its record (`run_record`,
  `recorded_preprocessing`: the one reader of the preprocessing a run recorded).

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

- **State**: `state.json` and `run.json` read and checked (`check_resumable`,
  `resumable_state`); every path they hold must stay inside the directory.

A training run commits each finished epoch in one step: the new checkpoint and history
are staged first, then `state.json` is replaced atomically (see `training.commit`).
Files are written with the permissions the umask gives any new file (not `mkstemp`'s
0600), so a serving process running as another user can read them.
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
SEGMENTATION_PNG = "segmentation.png"  # a segmentation run's images, true and predicted masks
MODEL = "model.keras"
RESUME_DIR = "resume"
LOGS_DIR = "logs"
BEST_DIR = "best"  # of a search directory: the best trial as a run directory
RUN_FILES = (STATE, RUN, METRICS, HISTORY_CSV, HISTORY_PNG, MODEL)
LOCK = ".cnnbuilder.lock"  # inside a run or search directory; beside an export version


# ----------------------------------------------------------------------------- files


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary sibling renamed over it, readable as the
    umask allows (as `open` would create it)."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def atomic_save(save, path: Path, suffix: str) -> None:
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
    """`model.save` to a temporary file beside `path`, then rename over it. (A run over
    several processes saves under `training.distribution.local_only`.)"""
    atomic_save(model.save, path, ".keras")


def atomic_save_weights(model, path: Path) -> None:
    """`model.save_weights` to a temporary file beside `path`, then rename over it."""
    atomic_save(model.save_weights, path, ".weights.h5")


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
    """The rows of a history.csv (empty when there is none), as numbers: ``epoch`` an int,
    the other columns floats (None where a row has no value)."""
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = [dict(row) for row in csv.DictReader(stream)]
    except FileNotFoundError:
        return []
    return [{key: _number(key, value) for key, value in row.items()} for row in rows]


def _number(column: str, text):
    """A history.csv cell as the number it was written from (text that is not one stays)."""
    if text in (None, ""):
        return None
    try:
        return int(text) if column == "epoch" else float(text)
    except ValueError:
        return text


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
                      check: Callable[[Path], None] | None = None,
                      progress: Callable[[Path], bool] | None = None) -> bool:
    """Apply the policy before anything is written; returns True when resuming.

    `settings` are what must match for a rerun to continue; they are stored (with `extra`
    beside them) in the `record` file. With `overwrite`, `clear` removes the previous
    result first; otherwise a finished result (`marker`) is refused, an unfinished one is
    continued only with the same settings, and `check` (if given) then raises when the
    unfinished result is damaged. An unfinished result without `progress` (no epoch
    finished: a run that failed at its start) is replaced by a corrected rerun.
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
        if previous is not None and progress is not None and not progress(directory) \
                and changed_settings(previous, settings):
            clear(directory)  # nothing finished there: nothing to lose
            previous = None
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


# --------------------------------------------------------------------- training state

# What a user can do about a damaged run directory: never a silent restart that loses epochs.
RECOVER = ("restore it from a backup, or pass --overwrite to start the run over (its "
           "finished epochs are lost).")


def fresh_state() -> dict:
    """The state of a run that has not finished an epoch yet."""
    return {"epochs_done": 0, "best": None, "best_epoch": None, "checkpoint": None, "seconds": 0.0}


def epochs_done(directory: Path) -> int:
    """How many epochs the run in `directory` has committed (0 when its state is unreadable:
    `check_resumable` reports that)."""
    try:
        state = read_json(Path(directory) / STATE) or {}
    except RunError:
        return 0
    done = state.get("epochs_done")
    return done if isinstance(done, int) and not isinstance(done, bool) else 0


def inside(directory: Path, name) -> Path | None:
    """`directory / name` when `name` is a path that stays inside `directory` (no absolute
    path, no ``..``, no link out of it); None otherwise."""
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        return None
    directory = Path(directory)
    path = directory / name
    try:
        path.resolve().relative_to(directory.resolve())
    except ValueError:
        return None
    return path


def checkpoint_path(directory: Path, state: dict) -> Path:
    """The resume checkpoint `state` names, confined to ``directory/resume/``."""
    path = inside(Path(directory) / RESUME_DIR, state.get("checkpoint"))
    if path is None:
        raise RunError(f"the training state {Path(directory) / STATE} names the checkpoint "
                       f"{state.get('checkpoint')!r}, which is not a file of "
                       f"{Path(directory) / RESUME_DIR}; " + RECOVER)
    return path


def _state_problem(state: dict, directory: Path) -> str | None:
    """What is wrong with a state.json (hand-edited, or written by something else)."""
    done = state.get("epochs_done")
    if isinstance(done, bool) or not isinstance(done, int) or done < 0:
        return f"epochs_done is {done!r}, not a count of epochs"
    for key, kinds in (("best", (int, float)), ("best_epoch", (int,)), ("seconds", (int, float))):
        value = state.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            return f"{key} is {value!r}"
    if done:
        checkpoint = state.get("checkpoint")
        path = inside(directory / RESUME_DIR, checkpoint)
        if path is None or path.parent != directory / RESUME_DIR:
            return (f"its checkpoint {checkpoint!r} is not a file name inside {RESUME_DIR}/ "
                    "(a path out of the run directory is never followed)")
        if not path.is_file():
            return f"the checkpoint of epoch {done} ({RESUME_DIR}/{checkpoint}) is missing"
        rows = len(read_history(directory / HISTORY_CSV))
        if rows < done:
            return f"{HISTORY_CSV} holds {rows} of the {done} finished epochs"
    return None


def check_resumable(directory: Path) -> None:
    """RunError, saying how to recover, when an unfinished run directory is damaged: an
    unreadable or inconsistent state.json (a checkpoint outside the directory included),
    progress without state.json, state without run.json. Called before anything is
    written, so nothing more is lost."""
    directory = Path(directory)
    if not directory.is_dir() or (directory / METRICS).exists():
        return  # nothing to resume, or a finished run (refused or replaced elsewhere)
    state = read_json(directory / STATE, what="training state", hint=RECOVER)
    record = read_json(directory / RUN, what="run record", hint=RECOVER)
    if state is None:
        rows = len(read_history(directory / HISTORY_CSV))
        checkpoints = sorted((directory / RESUME_DIR).glob("*.keras"))
        if rows or checkpoints:
            raise RunError(
                f"{directory} holds {rows} finished epoch(s) in {HISTORY_CSV} and "
                f"{len(checkpoints)} checkpoint(s) in {RESUME_DIR}/ but no {STATE}, so it "
                "cannot tell where the run stopped; " + RECOVER)
        return
    problem = _state_problem(state, directory)
    if problem:
        raise RunError(f"the training state {directory / STATE} is damaged ({problem}); " + RECOVER)
    if record is None and state.get("epochs_done"):
        raise RunError(f"{directory} holds a {STATE} but no {RUN}, so the settings of the "
                       "unfinished run are unknown; " + RECOVER)


def resumable_state(directory: Path) -> dict:
    """The committed state of `directory` (fresh when it has none), with a best-model
    promotion that a kill may have cut short completed."""
    state = read_json(Path(directory) / STATE, what="training state")
    if not state or not state.get("epochs_done"):
        return fresh_state()
    finish_promotion(directory, state)
    return state


def finish_promotion(directory: Path, state: dict) -> None:
    """Move the staged best model of `state` to model.keras, if it is still staged."""
    staged = Path(directory) / RESUME_DIR / f"best-{state.get('best_epoch')}.keras"
    if staged.exists():
        staged.replace(Path(directory) / MODEL)


# ------------------------------------------------------------------ finding a run's model


def model_file(path, *, error=RunError) -> Path:
    """The .keras file that `path` names: the file itself, a run directory's model.keras,
    or a search directory's best model (best/model.keras); `error` (an exception class)
    otherwise, saying what was expected."""
    if not isinstance(path, (str, os.PathLike)):
        raise error(f"expected a path to a .keras file, a run directory or a search "
                    f"directory, got {type(path).__name__}.")
    path = Path(path)
    if path.is_file():
        if path.suffix != ".keras":
            raise error(f"{path} is not a .keras file; expected a Keras 3 .keras file, a run "
                        "directory (cnnbuilder train) or a search directory (cnnbuilder tune).")
        return path
    if path.is_dir():
        for candidate in (path / MODEL, path / BEST_DIR / MODEL):
            if candidate.is_file():
                return candidate
        raise error(f"{path} holds no {MODEL} (a finished `cnnbuilder train` run) and no "
                    f"{BEST_DIR}/{MODEL} (a finished `cnnbuilder tune` search).")
    raise error(f"{path} does not exist; expected a .keras file, a run directory or a "
                "search directory.")


def run_directory(model: Path) -> Path | None:
    """The run directory whose files describe the .keras file `model`: its folder when the
    file is a run's model.keras (a train run, or a search's best/), else None (a .keras file
    saved elsewhere belongs to no run)."""
    model = Path(model)
    return model.parent if model.name == MODEL and (model.parent / RUN).is_file() else None


def run_record(model: Path) -> dict | None:
    """The run.json of the run `model` (a .keras file from `model_file`) belongs to."""
    directory = run_directory(model)
    return None if directory is None else read_json(directory / RUN, what="run record")


def recorded_preprocessing(model: Path) -> dict | None:
    """The preprocessing record (``run.json``'s ``"preprocessing"``, the raw dictionary
    `cnnbuilder.data.preprocessing_config` wrote) of the run `model` belongs to; None
    when it belongs to no run or its run recorded none."""
    return preprocessing_in(run_record(model), run_directory(model))


def preprocessing_in(record: dict | None, directory: Path | None) -> dict | None:
    """The preprocessing record in a run.json already read (`record`, from `directory`);
    None when there is none."""
    preprocessing = (record or {}).get("preprocessing")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise RunError(f"{directory / RUN}: its preprocessing record is {preprocessing!r}, "
                       "not a JSON object.")
    return preprocessing
