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

    import keras

__all__ = [
    "exclusive_file",
    "save_model_atomically",
    "staged_files",
    "staged_folder",
    "write_atomically",
]

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
    an error: a failed export leaves nothing, not half a set of files. If
    moving them into place fails, the targets already replaced get their
    old contents back. (A kill between two of those moves, a window of
    microseconds, can still leave a set half old, half new.)

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
    with staged_folder(folder) as work:
        yield {key: work / pathlib.Path(t).name for key, t in targets.items()}


@contextlib.contextmanager
def staged_folder(folder: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yields an empty folder whose files move into ``folder`` on success.

    For writers that name their own files (several exports in a row, say):
    whatever the block writes at the top level of the yielded folder
    replaces the same names in ``folder`` only if the block finishes
    without an error, all together (as :func:`staged_files` does).

    Args:
        folder: where the files go (created).

    Yields:
        A ``pathlib.Path``, a new empty folder beside ``folder``'s files.

    Example:

    >>> import tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with staged_folder(folder) as work:
    ...     _ = (work / "a.txt").write_text("a")
    ...     _ = (work / "b.txt").write_text("b")
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt', 'b.txt']
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: nothing staged should start out owner-only
    # (0o700); this folder gets the mode any new folder of the user gets.
    staging = _exclusive_folder(folder, ".export-")
    try:
        work = staging / "staged"
        work.mkdir()
        yield work
        entries = sorted(work.iterdir())
        _move_into_place(
            {entry.name: entry for entry in entries},
            {entry.name: folder / entry.name for entry in entries},
            staging,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staged, targets, staging):
    """Moves every staged path onto its target, or none.

    A file replaces its target in one ``os.replace``, keeping a hard link
    to the old one for the way back; a folder (which ``os.replace`` cannot
    put over a folder holding files) first moves its old self aside. On a
    failure the targets already moved get their old contents back.
    """
    placed = []  # (target, the old contents kept in staging, or None)
    try:
        for key, target in targets.items():
            target = pathlib.Path(target)
            old = staging / f".old-{key}"
            if target.is_dir() and not target.is_symlink():
                os.replace(target, old)
                placed.append((target, old))
                os.replace(staged[key], target)
                continue
            if not target.exists():
                old = None
            else:
                try:
                    os.link(target, old)
                except OSError:  # a file system without hard links
                    shutil.copy2(target, old)
            os.replace(staged[key], target)
            placed.append((target, old))
    except BaseException:
        for target, old in reversed(placed):
            if target.is_dir() and not target.is_symlink():
                if old is not None and old.is_dir():
                    shutil.rmtree(target)
            elif old is None:
                target.unlink(missing_ok=True)
            if old is not None and old.exists():
                os.replace(old, target)
        raise


def save_model_atomically(
    model: keras.Model, path: str | os.PathLike
) -> pathlib.Path:
    """``model.save(path)``, whole or not at all.

    Keras writes a ``.keras`` file in pieces; a failure or a kill midway
    would leave a truncated archive that later fails to load. The model is
    saved beside ``path`` first and then replaces it, so ``path`` is the
    old file or the new one, never part of one.

    Args:
        model: the Keras model to save.
        path: a ``.keras`` file name; its folder is created.

    Returns:
        The ``pathlib.Path`` written.

    Raises:
        ValueError: for a name that does not end in ``.keras``.

    Example:

    >>> import tempfile
    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.keras"
    >>> save_model_atomically(model, path).name
    'model.keras'
    """
    if not str(path).endswith(".keras"):
        raise ValueError(
            f"Cannot save a model to {str(path)!r}: use a .keras file name."
        )
    with staged_files({"model": path}) as staged:
        model.save(staged["model"])
    return pathlib.Path(path)
