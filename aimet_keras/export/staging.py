"""All-or-nothing writes: every exporter stages its files, then moves them."""

import contextlib
import os
import pathlib
import shutil
import tempfile

__all__ = ["staged_files"]


@contextlib.contextmanager
def staged_files(targets):
    """Yields staged paths for ``targets``; moves them into place on success.

    The files are written in a temporary folder beside the first target and
    replace the targets (a folder too) only when the block finishes without
    an error: a failed export leaves nothing, not half a set of files.

    Args:
        targets: ``{key: target path}``, all in one folder (created).

    Yields:
        ``{key: staged path}`` to write to.

    Example:

    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with staged_files({"a": folder / "a.txt"}) as staged:
    ...     _ = staged["a"].write_text("done")
    >>> (folder / "a.txt").read_text(), len(list(folder.iterdir()))
    ('done', 1)
    """
    folder = pathlib.Path(next(iter(targets.values()))).parent
    folder.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(dir=folder, prefix=".export-"))
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
