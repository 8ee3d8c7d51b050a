"""All-or-nothing writes: every exporter stages its files, then moves them.

Staged files and folders are created as ``open`` and ``os.mkdir`` create
them: mode 0o666 or 0o777 less the process umask, never the owner-only
mode of ``tempfile``, so that what is moved into place reads like any file
the user writes.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import typing
import uuid

if typing.TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["exclusive_file", "staged_files", "write_atomically"]

# Attempts at a fresh random name before giving up.
_ATTEMPTS = 100


def _fresh_name(folder, prefix):
    return pathlib.Path(folder) / f"{prefix}{uuid.uuid4().hex[:12]}"


def exclusive_file(
    folder: str | os.PathLike, prefix: str
) -> tuple[int, pathlib.Path]:
    """Creates a new empty file in ``folder``; returns ``(fd, path)``.

    ``tempfile.mkstemp``'s job, but the file gets the mode ``open`` gives
    a new file (0o666 less the umask), not 0o600.

    Args:
        folder: an existing folder.
        prefix: the start of the file name (a random tail follows).

    Returns:
        The file descriptor, open for writing, and the ``pathlib.Path``.

    Example:

    >>> import tempfile
    >>> fd, path = exclusive_file(tempfile.mkdtemp(), ".part-")
    >>> os.close(fd); path.name.startswith(".part-")
    True
    """
    for _ in range(_ATTEMPTS):
        path = _fresh_name(folder, prefix)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(f"No free temporary file name in {folder}.")


def write_atomically(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Writes ``text`` to ``path`` whole or not at all.

    The text goes to a new file beside ``path`` (with the mode ``open``
    gives, not ``tempfile``'s 0o600), which then replaces ``path``: a
    failure leaves ``path`` as it was. A missing folder is created.

    Returns:
        The ``pathlib.Path`` written.

    Example:

    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "report.html"
    >>> write_atomically(path, "<p>done</p>").read_text()
    '<p>done</p>'
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = exclusive_file(path.parent, f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _exclusive_folder(folder, prefix):
    """A new folder in ``folder``, mode 0o777 less the umask."""
    for _ in range(_ATTEMPTS):
        path = _fresh_name(folder, prefix)
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"No free temporary folder name in {folder}.")


@contextlib.contextmanager
def staged_files(
    targets: dict[str, str | os.PathLike],
) -> Iterator[dict[str, pathlib.Path]]:
    """Yields staged paths for ``targets``; moves them into place on success.

    The files are written in a temporary folder beside the first target and
    replace the targets (a folder too) only when the block finishes without
    an error: a failed export leaves nothing, not half a set of files.

    Args:
        targets: ``{key: target path}``, all in one folder (created).

    Yields:
        ``{key: staged path}`` to write to.

    Example:

    >>> import tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with staged_files({"a": folder / "a.txt"}) as staged:
    ...     _ = staged["a"].write_text("done")
    >>> (folder / "a.txt").read_text(), len(list(folder.iterdir()))
    ('done', 1)
    """
    folder = pathlib.Path(next(iter(targets.values()))).parent
    folder.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: nothing staged should start out owner-only
    # (0o700); this folder gets the mode any new folder of the user gets.
    staging = _exclusive_folder(folder, ".export-")
    try:
        staged = {
            key: staging / pathlib.Path(t).name for key, t in targets.items()
        }
        yield staged
        for key, target in targets.items():
            if pathlib.Path(target).is_dir():
                shutil.rmtree(target)
            os.replace(staged[key], target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
