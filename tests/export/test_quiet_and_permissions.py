"""Exports say nothing a user cannot act on, and write ordinary files."""

import contextlib
import logging
import os
import pathlib
import stat
import warnings

import keras
import numpy as np
import pytest

from aimet_keras import _quiet
from aimet_keras import export_onnx
from aimet_keras import export_tflite
from aimet_keras.export import encodings as encodings_lib
from aimet_keras.export import staging as staging_lib
from aimet_keras.sim import QuantizationSimModel

# A umask unlike the usual 0o022, so that a mode right by chance fails.
_UMASK = 0o027


@pytest.fixture(scope="module")
def small_sim():
    inputs = keras.Input((8, 8, 3), name="x")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(4, name="fc")(x)
    sim = QuantizationSimModel(
        keras.Model(inputs, outputs), config_file="tflite_int8"
    )
    images = np.random.default_rng(0).random((64, 8, 8, 3))
    sim.compute_encodings(images.astype("float32"))
    return sim


@pytest.fixture
def umask():
    previous = os.umask(_UMASK)
    try:
        yield _UMASK
    finally:
        os.umask(previous)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _ordinary_modes(folder):
    """The modes ``open(path, "w")`` and ``os.mkdir`` give new entries."""
    file, directory = folder / "reference.txt", folder / "reference"
    with open(file, "w"):
        pass
    os.mkdir(directory)
    modes = _mode(file), _mode(directory)
    file.unlink()
    directory.rmdir()
    return modes


def _assert_ordinary(folder, reference):
    file_mode, folder_mode = _ordinary_modes(reference)
    entries = sorted(pathlib.Path(folder).rglob("*"))
    assert entries
    for entry in entries:
        assert not entry.name.startswith(".export-"), entry
        expected = folder_mode if entry.is_dir() else file_mode
        assert _mode(entry) == expected, (
            f"{entry}: {oct(_mode(entry))}, not {oct(expected)}"
        )


def test_every_exported_file_has_the_mode_open_gives(
    small_sim, umask, tmp_path
):
    out = tmp_path / "out"
    small_sim.export(out, "small")
    export_tflite(small_sim, out / "small_int8.tflite")
    export_onnx(small_sim, out / "small_qdq.onnx")
    names = {p.name for p in out.iterdir()}
    assert {
        "small",
        "small.keras",
        "small.encodings",
        "small_int8.tflite",
        "small_qdq.onnx",
        "small_qdq.fp32.onnx",
        "small_qdq.fp32.encodings",
    } <= names
    assert (out / "small" / "saved_model.pb").is_file()
    _assert_ordinary(out, tmp_path)


def test_encodings_written_alone_have_the_mode_open_gives(umask, tmp_path):
    path = encodings_lib.write_encodings(
        tmp_path / "alone.encodings", encodings_lib.encodings_to_dict({}, {})
    )
    assert [p.name for p in tmp_path.iterdir()] == ["alone.encodings"]
    _assert_ordinary(tmp_path, tmp_path)
    assert _mode(path) == 0o666 & ~_UMASK


def test_staged_folders_have_the_mode_mkdir_gives(umask, tmp_path):
    out = tmp_path / "out"
    with staging_lib.staged_files({"folder": out / "folder"}) as staged:
        (staging,) = [p for p in out.iterdir()]
        assert _mode(staging) == 0o777 & ~_UMASK
        staged["folder"].mkdir()
        (staged["folder"] / "file.txt").write_text("x")
    _assert_ordinary(out, tmp_path)


def _quiet_state():
    from tensorflow.python.util import deprecation

    return (
        {n: logging.getLogger(n).level for n in _quiet.MUTED_LOGGERS},
        list(logging.getLogger("tensorflow").filters),
        deprecation._PRINT_DEPRECATION_WARNINGS,
        list(warnings.filters),
        os.environ.get("TF_CPP_MIN_LOG_LEVEL"),
    )


@pytest.mark.parametrize("fails", [False, True], ids=["ok", "error"])
def test_quiet_conversion_puts_everything_back(fails, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    logging.getLogger("tf2onnx").setLevel(logging.DEBUG)
    try:
        before = _quiet_state()
        expected = pytest.raises(RuntimeError)
        with expected if fails else contextlib.nullcontext():
            with _quiet.quiet_conversion():
                for name in _quiet.MUTED_LOGGERS:
                    assert logging.getLogger(name).level == logging.ERROR
                # What importing tf2onnx.convert does.
                os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
                if fails:
                    raise RuntimeError("conversion failed")
        assert _quiet_state() == before
    finally:
        logging.getLogger("tf2onnx").setLevel(logging.NOTSET)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_deprecation_notices_are_muted_and_still_warn_later():
    from tensorflow.python.util import deprecation

    @deprecation.deprecated(None, "Use something else.")
    def old_api():
        return 1

    records = _Records()
    tf_logger = logging.getLogger("tensorflow")
    tf_logger.addHandler(records)
    try:
        with _quiet.quiet_conversion():
            old_api()
        assert records.messages == []
        # Not used up inside the block: the user's own call still warns.
        old_api()
        assert len(records.messages) == 1
        assert "is deprecated" in records.messages[0]
    finally:
        tf_logger.removeHandler(records)


def _export_output(monkeypatch, export):
    """TF, absl and tf2onnx log records and Python warnings of ``export``."""
    from tensorflow.python.util import deprecation

    # Deprecation notices print once a process: earlier tests may have
    # used them up.
    monkeypatch.setattr(deprecation, "_PRINTED_WARNING", {})
    records = _Records()
    watched = [logging.getLogger(n) for n in ("absl", "tensorflow", "tf2onnx")]
    for logger in watched:
        logger.addHandler(records)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            export()
    finally:
        for logger in watched:
            logger.removeHandler(records)
    return records.messages, [str(w.message) for w in caught]


def _noise(messages, warned):
    return [
        m
        for m in messages + warned
        if any(
            word in m
            for word in (
                "deprecated",
                "trackable_obj",
                "retracing",
                "Statistics for quantized",
            )
        )
    ]


def test_tflite_export_logs_no_converter_notices(
    small_sim, tmp_path, monkeypatch
):
    output = _export_output(
        monkeypatch, lambda: export_tflite(small_sim, tmp_path / "s.tflite")
    )
    assert _noise(*output) == []


def test_onnx_export_logs_no_converter_notices(
    small_sim, tmp_path, monkeypatch
):
    output = _export_output(
        monkeypatch, lambda: export_onnx(small_sim, tmp_path / "s.onnx")
    )
    assert _noise(*output) == []
