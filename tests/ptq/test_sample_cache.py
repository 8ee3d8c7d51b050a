"""SampleCache and collect: rows in memory up to a limit, on disk past it,
read back the same either way."""

import numpy as np
import pytest

from aimet_keras.ptq import sample_cache

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    "limit, on_disk", [(None, False), (480, False), (479, True)]
)
def test_rows_read_back_as_written(tmp_path, limit, on_disk):
    values = RNG.normal(size=(10, 3, 4)).astype("float32")  # 480 bytes
    with sample_cache.SampleCache(
        10, (3, 4), "float32", limit, tmp_path
    ) as cache:
        assert cache.on_disk == on_disk
        assert len(list(tmp_path.iterdir())) == int(on_disk)
        cache.write(0, values[:7])
        cache.write(7, values[7:])
        index = np.array([9, 0, 4])
        got = cache.rows(index)
        assert type(got) is np.ndarray
        np.testing.assert_array_equal(got, values[index])
        batches = list(cache.batches(4))
        assert [start for start, _ in batches] == [0, 4, 8]
        np.testing.assert_array_equal(
            np.concatenate([rows for _, rows in batches]), values
        )
    assert list(tmp_path.iterdir()) == []  # closed: the file is gone


@pytest.mark.parametrize("limit", [None, 10_000, 100])
def test_collect_concatenates_in_memory_or_on_disk(tmp_path, limit):
    batches = [RNG.normal(size=(n, 5)) for n in (3, 4, 2)]  # 360 bytes
    got = sample_cache.collect(iter(batches), limit, tmp_path)
    assert isinstance(got, np.memmap) == (limit == 100)
    np.testing.assert_array_equal(got, np.concatenate(batches))
    # The file is unlinked at once; the mapping keeps its data.
    assert list(tmp_path.iterdir()) == []


def test_collect_refuses_batches_of_other_shapes_and_takes_none(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(2, 4\).*\(5,\)"):
        sample_cache.collect([np.zeros((3, 5)), np.zeros((2, 4))], 8, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert sample_cache.collect([], None) is None
