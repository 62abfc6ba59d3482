"""Finding the image files of a folder dataset: class folders, symbolic links, hidden files.

A dataset folder holds one sub-folder per class; every file below a class folder whose
name ends in an image extension is a candidate image. The walk:

- skips hidden entries (names starting with ``.``: ``.DS_Store``, macOS ``._x.jpg``
  resource forks, ``.git``) and files with other extensions (``notes.txt``);
- follows symbolic links to folders (a dataset assembled from links to elsewhere reads
  the linked images), but never the same real folder twice: a link back to a folder
  already read (a loop such as ``cat/again -> ../cat``, or a link into another class) is
  reported as a bad entry, so the walk always ends;
- reports image-named links that cannot be followed (broken, or a loop of links).

Whether a candidate really is a usable image is `cnnbuilder.data.image_checks`' concern.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import NamedTuple

from cnnbuilder.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "BadImage", "class_folders", "walk_class"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


class BadImage(NamedTuple):
    """A file that cannot be used, and why (a phrase to print after its path)."""

    path: str
    reason: str


def class_folders(root: Path) -> list[Path]:
    """The class folders of `root`: its non-hidden sub-folders (links followed), sorted.

    Raises:
        DataError: a class folder leads back to the dataset folder (or above it), or two
            class folders are the same real folder.
    """
    folders = sorted(d for d in root.iterdir() if not d.name.startswith(".") and d.is_dir())
    real_root = os.path.realpath(root)
    owner: dict[str, Path] = {}
    for folder in folders:
        real = os.path.realpath(folder)
        if _contains(real, real_root):
            raise DataError(
                f"Class folder {folder} is a symbolic link to {real}, which contains the "
                "dataset folder itself (a loop). Remove the link."
            )
        if real in owner:
            raise DataError(
                f"Class folders {owner[real]} and {folder} are the same folder ({real}) "
                "through a symbolic link, so their images would carry two labels. Remove "
                "one of them."
            )
        owner[real] = folder
    return folders


def walk_class(class_dir: Path, root: Path, seen: set[str]) -> tuple[list[Path], list[BadImage]]:
    """(candidate image files, bad entries) below one class folder.

    Args:
        class_dir: the class folder.
        root: the dataset folder (a link to it or above it is a loop).
        seen: real paths of the folders read so far, class folders included; updated.

    Returns:
        The image-named regular files, sorted (the order of the fixed split), and the
        entries that cannot be read: loops, broken links, unreadable folders.
    """
    real_root = os.path.realpath(root)
    files: list[Path] = []
    bad: list[BadImage] = []
    pending = [class_dir]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as error:
            bad.append(BadImage(str(folder), f"folder cannot be listed: {error.strerror}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            if _is_dir(entry):
                real = os.path.realpath(path)
                if real in seen or _contains(real, real_root):
                    bad.append(BadImage(
                        str(path), f"symbolic link loop: leads back to {real}, a folder read "
                        "already (or one containing the dataset)"))
                    continue
                seen.add(real)
                pending.append(path)
            elif path.suffix.lower() in IMAGE_EXTENSIONS:
                problem = _not_a_file(path)
                if problem:
                    bad.append(BadImage(str(path), problem))
                else:
                    files.append(path)
    return sorted(files), sorted(bad)


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether an entry is a folder, following links; False for links that lead nowhere."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _not_a_file(path: Path) -> str | None:
    """Why an image-named entry is not a readable regular file, or None when it is one."""
    try:
        mode = path.stat().st_mode  # follows links
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop: the link leads back to itself"
        if path.is_symlink():
            return f"broken symbolic link to {os.readlink(path)}"
        return f"cannot be read: {error.strerror}"
    return None if stat.S_ISREG(mode) else "not a regular file"


def _contains(folder: str, inner: str) -> bool:
    """Whether real path `folder` is `inner` or one of its ancestors."""
    return inner == folder or inner.startswith(folder.rstrip(os.sep) + os.sep)
