"""Arrays of samples held in memory up to a size, on disk past it.

AdaRound keeps every calibration sample's input and target for the layer it
optimises. For ResNet50 at 224x224 and 1,024 samples, one layer's inputs
alone take 3.3 GB; kept in memory, a few such arrays exhaust a laptop. A
:class:`SampleCache` fills rows batch by batch and, once its array would
pass ``limit_bytes``, holds it in a memory-mapped ``.npy`` file instead
(in ``folder``, or the system's temporary folder), deleted when the cache is
closed. Reading random rows back, as AdaRound's steps do, costs a disk read
then, not memory.
"""

from __future__ import annotations

import math
import os
import pathlib
import tempfile

import numpy as np

__all__ = ["DEFAULT_LIMIT_BYTES", "SampleCache"]

# In memory up to 1 GiB an array: most models' calibration sets fit.
DEFAULT_LIMIT_BYTES = 1 << 30


class SampleCache:
    """``count`` rows of one shape and dtype, in memory or on disk.

    Args:
        count: the number of rows (samples).
        row_shape: the shape of one row.
        dtype: the rows' dtype.
        limit_bytes: the largest array held in memory; a larger one goes
            to a file. None holds any size in memory.
        folder: where a file goes. Defaults to the temporary folder.

    Example:

    >>> cache = SampleCache(4, (2,), "float32", limit_bytes=16)
    >>> cache.on_disk  # 32 bytes, over the 16-byte limit
    True
    >>> cache.write(0, np.ones((4, 2), "float32"))
    >>> cache.rows(np.array([3, 1])).tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    >>> cache.close()
    """

    def __init__(
        self,
        count: int,
        row_shape: tuple,
        dtype: object,
        limit_bytes: int | None = DEFAULT_LIMIT_BYTES,
        folder: str | os.PathLike | None = None,
    ) -> None:
        shape = (int(count), *(int(d) for d in row_shape))
        dtype = np.dtype(dtype)
        self.nbytes = math.prod(shape) * dtype.itemsize
        self._path = None
        if limit_bytes is None or self.nbytes <= limit_bytes:
            self.array = np.empty(shape, dtype)
            return
        fd, path = tempfile.mkstemp(
            suffix=".npy", prefix="aimet_keras_cache_", dir=folder
        )
        os.close(fd)
        self._path = pathlib.Path(path)
        self.array = np.lib.format.open_memmap(
            self._path, mode="w+", dtype=dtype, shape=shape
        )

    @property
    def on_disk(self) -> bool:
        """Whether the rows live in a file rather than in memory."""
        return self._path is not None

    def __len__(self) -> int:
        return len(self.array)

    def write(self, start: int, rows: np.ndarray) -> None:
        """Stores ``rows`` from row ``start`` on."""
        self.array[start : start + len(rows)] = rows

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The rows at ``index``, as an in-memory array."""
        return np.asarray(self.array[index])

    def batches(self, batch_size: int):
        """Yields ``(start, rows)`` over every row, in order, in memory."""
        for start in range(0, len(self.array), batch_size):
            yield start, np.asarray(self.array[start : start + batch_size])

    def close(self) -> None:
        """Frees the rows; deletes the file of an on-disk cache."""
        self.array = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None

    def __enter__(self) -> SampleCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def collect(
    batches,
    limit_bytes: int | None = DEFAULT_LIMIT_BYTES,
    folder: str | os.PathLike | None = None,
) -> np.ndarray:
    """Concatenates ``batches`` (arrays), on disk past ``limit_bytes``.

    Batches come one at a time (from a ``tf.data.Dataset``, say) and their
    number is not known ahead: they are kept as they come until their total
    passes the limit, then appended to a file, which is returned memory
    mapped (read-only; the file is deleted once unused, as an unlinked
    file's data lives while it is mapped).

    Returns:
        One array (an ``np.memmap`` when on disk); None for no batches.

    Example:

    >>> collect([np.zeros((2, 3)), np.ones((1, 3))]).shape
    (3, 3)
    """
    kept, total, file, path, first = [], 0, None, None, None
    try:
        for batch in batches:
            batch = np.ascontiguousarray(batch)
            if first is None:
                first = batch
            elif (
                batch.shape[1:] != first.shape[1:] or batch.dtype != first.dtype
            ):
                raise ValueError(
                    f"A batch of shape {batch.shape}, dtype {batch.dtype} "
                    f"follows samples of shape {first.shape[1:]}, dtype "
                    f"{first.dtype}: every batch must hold samples of one "
                    "shape and dtype."
                )
            total += batch.nbytes
            if file is None and limit_bytes is not None and total > limit_bytes:
                fd, path = tempfile.mkstemp(
                    suffix=".bin", prefix="aimet_keras_cache_", dir=folder
                )
                file = os.fdopen(fd, "wb")
                for earlier in kept:
                    file.write(earlier.tobytes())
                kept = []
            if file is not None:
                file.write(batch.tobytes())
            else:
                kept.append(batch)
        if first is None:
            return None
        if file is None:
            return np.concatenate(kept)
        file.close()
        row_bytes = math.prod(first.shape[1:]) * first.dtype.itemsize
        return np.memmap(
            path,
            dtype=first.dtype,
            mode="r",
            shape=(total // row_bytes, *first.shape[1:]),
        )
    finally:
        if file is not None:
            file.close()
        if path is not None:
            os.unlink(path)  # the mapping keeps the data while it is used
