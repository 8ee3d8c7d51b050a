"""Every writer leaves its target as it was when it fails or is killed.

Failures are injected where the bytes are written and where the files move
into place; a kill is a real SIGKILL of a process caught mid-export. Each
test starts from a previous run's files and checks they are unchanged, byte
for byte, with no temporary files left beside them.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from aimet_keras.export import layer_outputs
from aimet_keras.export import staging
from aimet_keras.export import tflite as tflite_lib
from aimet_keras.qat import ExportBestEpoch
from aimet_keras.sim import QuantizationSimModel

_RNG = np.random.default_rng(0)


def _snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder``."""
    folder = pathlib.Path(folder)
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _model():
    inputs = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def _images(n=16):
    return _RNG.random((n, 8, 8, 1)).astype("float32")


@pytest.fixture(scope="module")
def sim():
    sim = QuantizationSimModel(_model())
    sim.compute_encodings(_images())
    return sim


class _Breaks:
    """Makes ``os.replace`` in the staging module fail on its n-th call."""

    def __init__(self, monkeypatch, call):
        self.calls, self.call = 0, call
        real = os.replace

        def replace(source, target):
            self.calls += 1
            if self.calls == self.call:
                raise OSError("injected: disk full")
            real(source, target)

        monkeypatch.setattr(staging.os, "replace", replace)


def test_write_atomically_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text("old")
    _Breaks(monkeypatch, 1)
    with pytest.raises(OSError, match="injected"):
        staging.write_atomically(target, "new")
    assert _snapshot(tmp_path) == {"report.json": b"old"}


@pytest.mark.parametrize("failing_move", [1, 2, 3, 4])
def test_a_failed_move_puts_every_replaced_target_back(
    tmp_path, monkeypatch, failing_move
):
    """Two files and a folder; the n-th move fails, the rest roll back."""
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "inner.pb").write_text("old inner")
    before = _snapshot(tmp_path)
    _Breaks(monkeypatch, failing_move)
    with pytest.raises(OSError, match="injected"):
        with staging.staged_files(
            {
                "a": tmp_path / "a.txt",
                "saved": tmp_path / "saved",
                "b": tmp_path / "b.txt",
            }
        ) as staged:
            staged["a"].write_text("new a")
            staged["saved"].mkdir()
            (staged["saved"] / "inner.pb").write_text("new inner")
            staged["b"].write_text("new b")
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "saved"]


def test_sim_export_over_a_previous_export_fails_whole(
    sim, tmp_path, monkeypatch
):
    sim.export(tmp_path, "model")
    before = _snapshot(tmp_path)
    from aimet_keras.sim import export as export_lib

    def broken(*args):
        raise RuntimeError("injected: SavedModel writer broke")

    # The encodings and .keras files are staged, then the SavedModel fails.
    with monkeypatch.context() as patch:
        patch.setattr(export_lib, "_write_saved_model", broken)
        with pytest.raises(RuntimeError, match="injected"):
            sim.export(tmp_path, "model")
    assert _snapshot(tmp_path) == before
    # Written in full, the last of four moves failing (the SavedModel
    # folder takes two): the others are undone.
    _Breaks(monkeypatch, 4)
    with pytest.raises(OSError, match="injected"):
        sim.export(tmp_path, "model")
    assert _snapshot(tmp_path) == before


def test_a_failed_tflite_export_keeps_the_previous_file(
    sim, tmp_path, monkeypatch
):
    target = tmp_path / "model.tflite"
    tflite_lib.export_tflite(sim, target)
    before = _snapshot(tmp_path)
    _Breaks(monkeypatch, 1)
    with pytest.raises(OSError, match="injected"):
        tflite_lib.export_tflite(sim, target)
    assert _snapshot(tmp_path) == before


def test_a_model_save_that_fails_midway_keeps_the_old_model(
    tmp_path, monkeypatch
):
    target = tmp_path / "model.keras"
    staging.save_model_atomically(_model(), target)
    before = _snapshot(tmp_path)
    real_save = keras.Model.save

    def save_then_fail(self, path, *args, **kwargs):
        real_save(self, path, *args, **kwargs)
        pathlib.Path(path).write_bytes(b"truncated")
        raise OSError("injected: killed while saving")

    monkeypatch.setattr(keras.Model, "save", save_then_fail)
    with pytest.raises(OSError, match="injected"):
        staging.save_model_atomically(_model(), target)
    assert _snapshot(tmp_path) == before
    with pytest.raises(ValueError, match=r"model\.h5.*\.keras file name"):
        staging.save_model_atomically(_model(), tmp_path / "model.h5")


def test_layer_outputs_are_saved_all_or_none(tmp_path, monkeypatch):
    old = {"conv": np.zeros(3), "fc": np.ones(2)}
    layer_outputs.save_layer_outputs(old, tmp_path)
    before = _snapshot(tmp_path)
    real_save = np.save
    calls = []

    def fail_second(path, values):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("injected: disk full")
        real_save(path, values)

    monkeypatch.setattr(layer_outputs.np, "save", fail_second)
    with pytest.raises(OSError, match="injected"):
        layer_outputs.save_layer_outputs(
            {"conv": np.full(3, 7.0), "fc": np.full(2, 7.0)}, tmp_path
        )
    assert _snapshot(tmp_path) == before


def _train(sim, callback, epochs=2):
    sim.model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    labels = np.zeros(16, "int32")
    sim.model.fit(
        _images(),
        labels,
        validation_data=(_images(8), np.zeros(8, "int32")),
        epochs=epochs,
        verbose=0,
        callbacks=[callback],
    )


def test_export_best_epoch_writes_every_format_or_none(tmp_path, monkeypatch):
    sim = QuantizationSimModel(_model())
    sim.compute_encodings(_images())
    first = ExportBestEpoch(
        sim, tmp_path, "best", monitor="val_loss", formats=("aimet", "tflite")
    )
    _train(sim, first)
    assert first.paths["tflite"].path == tmp_path / "best.tflite"
    assert pathlib.Path(first.paths["aimet"]["encodings"]).parent == tmp_path
    before = _snapshot(tmp_path)
    assert {"best.tflite", "best.encodings"} <= set(before)

    def broken(*args, **kwargs):
        raise RuntimeError("injected: converter broke")

    # The AIMET files are written, then the TFLite export fails: neither
    # replaces the previous run's.
    monkeypatch.setattr(tflite_lib, "export_tflite", broken)
    again = ExportBestEpoch(
        sim, tmp_path, "best", monitor="val_loss", formats=("aimet", "tflite")
    )
    with pytest.raises(RuntimeError, match="injected"):
        _train(sim, again, epochs=1)
    assert _snapshot(tmp_path) == before


_KILLED_EXPORT = textwrap.dedent(
    """
    import sys, time
    import numpy as np, keras
    from aimet_keras.sim import QuantizationSimModel
    from aimet_keras.sim import export as export_lib

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    sim = QuantizationSimModel(
        keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    )
    sim.compute_encodings(np.random.rand(8, 8, 8, 1).astype("float32"))
    real = export_lib._write_saved_model

    def slow(*args):
        real(*args)  # half the files staged ...
        print("staged", flush=True)
        time.sleep(600)  # ... and the process is killed here

    export_lib._write_saved_model = slow
    sim.export(sys.argv[1], "model")
    """
)


def test_a_kill_midway_leaves_the_previous_export(sim, tmp_path):
    sim.export(tmp_path, "model")
    before = _snapshot(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLED_EXPORT, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "staged"
        # Files are in the staging folder now; kill before they move.
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    after = _snapshot(tmp_path)
    # What a kill leaves is the staging folder, never a changed target.
    staged = {k for k in after if k.startswith(".export-")}
    assert staged, "the export was not caught midway"
    assert {k: v for k, v in after.items() if k not in staged} == before


def test_cli_summary_json_is_written_atomically(tmp_path, monkeypatch):
    from aimet_keras import cli

    target = tmp_path / "summary.json"
    target.write_text(json.dumps({"old": True}))

    class Flag:
        value = str(target)

    _Breaks(monkeypatch, 1)
    with pytest.raises(OSError, match="injected"):
        cli._write_summary({"json": Flag()}, {"new": True})
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
