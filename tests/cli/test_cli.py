"""The ``aimet-keras`` command: usage, exit codes, data loaders, a run."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from aimet_keras import cli
from aimet_keras.cli import data as data_lib


def test_help_lists_every_flag_without_loading_tensorflow():
    code = (
        "import io, contextlib, sys\n"
        "from aimet_keras import cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    code = cli.main(['aimet-keras', '--help'])\n"
        "listed = '--adaround' in out.getvalue()\n"
        "print(code, 'tensorflow' in sys.modules, listed)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True
    )
    assert result.stdout.split() == ["0", "False", "True"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["no-such-command"], "unknown command 'no-such-command'"),
        (["quantize", "--no-such-flag"], "no-such-flag"),
        (["quantize", "--data", "x.npz"], "needs --model"),
        (["quantize", "--model", "missing.keras", "--data", "x"], "missing"),
        (["quantize", "--model", "zoo:nope", "--data", "x"], "no such zoo"),
        (["analyze", "--model", "zoo:resnet"], "analyze needs --data"),
    ],
)
def test_bad_usage_exits_2_with_one_line(argv, message, capsys):
    assert cli.main(["aimet-keras", *argv]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs, name="tiny")
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model.save(path)
    return path


@pytest.mark.parametrize(
    "techniques",
    [
        [],
        ["--cle", "--bias-correction", "--adaround", "--range-search"]
        + ["--adaround-iterations", "5", "--weight-bits", "4"],
    ],
    ids=["plain", "techniques"],
)
def test_quantize_runs_end_to_end_and_writes_a_summary(
    model_file, tmp_path, techniques
):
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 8, 8, 1)).astype("float32")
    np.savez(tmp_path / "data.npz", x=images, y=np.arange(64) % 3)
    summary_path = tmp_path / "summary.json"
    argv = ["aimet-keras", "quantize", "--model", str(model_file)]
    argv += ["--data", str(tmp_path / "data.npz")]
    argv += ["--eval-data", str(tmp_path / "data.npz"), "--export", "tflite"]
    argv += ["--out", str(tmp_path / "out"), "--json", str(summary_path)]
    assert cli.main(argv + techniques + ["--quiet"]) == 0
    summary = json.loads(summary_path.read_text())
    rounded = (tmp_path / "out" / "adaround.encodings").is_file()
    assert rounded == ("--adaround" in techniques)
    assert summary["calibration_samples"] == 64
    reference = keras.saving.load_model(model_file)
    expected = np.mean(
        reference.predict(images, verbose=0).argmax(-1) == np.arange(64) % 3
    )
    assert summary["fp32_top1"] == pytest.approx(expected)
    assert 0.0 <= summary["quantized_top1"] <= 1.0
    assert summary["tflite_agrees_with_sim"] >= 0.95
    for key in ("tflite", "keras", "encodings", "saved_model"):
        assert (tmp_path / "out").exists()
        assert summary["sizes_bytes"][key] > 0, key
    assert "onnx_qdq" not in summary["artifacts"]


def test_data_that_does_not_fit_the_model_fails_with_1(
    model_file, tmp_path, capsys
):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 9, 9, 1), "float32"))
    argv = ["aimet-keras", "quantize", "--model", str(model_file)]
    argv += ["--data", str(tmp_path / "wrong.npy"), "--export", "none"]
    assert cli.main(argv) == 1
    error = capsys.readouterr().err
    assert "(4, 9, 9, 1)" in error and "(batch, 8, 8, 1)" in error


def _png(pixels):
    return tf.io.encode_png(pixels[..., None]).numpy()


def test_image_folder_gives_resized_images_and_class_labels(tmp_path):
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for index in range(2):
            pixels = np.full((10, 12), 255 * label, "uint8")
            (tmp_path / name / f"{index}.png").write_bytes(_png(pixels))
    images, labels = data_lib.load_data(tmp_path, (8, 8, 3))
    assert images.shape == (4, 8, 8, 3)
    assert labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(images[2:], 1.0)  # 255 -> 1 in "0-1"
    scaled, _ = data_lib.load_data(tmp_path, (8, 8, 3), pixel_range="-1-1")
    np.testing.assert_allclose(scaled[:2], -1.0)


def test_tfrecord_of_encoded_images_with_labels(tmp_path):
    path = tmp_path / "d.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label in range(3):
            feature = {
                "img": tf.train.Feature(
                    bytes_list=tf.train.BytesList(
                        value=[_png(np.zeros((6, 6), "uint8"))]
                    )
                ),
                "label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[label])
                ),
            }
            example = tf.train.Example(
                features=tf.train.Features(feature=feature)
            )
            writer.write(example.SerializeToString())
    images, labels = data_lib.load_data(path, (4, 4, 1), image_feature="img")
    assert images.shape == (3, 4, 4, 1) and labels.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="no feature 'image'.*image-feature"):
        data_lib.load_data(path, (4, 4, 1))


@pytest.mark.parametrize(
    "content, message",
    [
        ({"a": np.zeros((2, 3)), "b": np.zeros(2)}, "name the inputs"),
        ({"x": np.zeros((2, 3)), "y": np.zeros(3)}, "2 inputs but 3 labels"),
    ],
)
def test_npz_problems_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **content)
    with pytest.raises(ValueError, match=message) as error:
        data_lib.load_data(path, (3,))
    assert "bad.npz" in str(error.value)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(64, 8, 8, 1)).astype("float32")
    path = tmp_path_factory.mktemp("data") / "labelled.npz"
    np.savez(path, x=images, y=np.arange(64) % 3)
    unlabelled = path.with_name("unlabelled.npy")
    np.save(unlabelled, images)
    return path, unlabelled


def test_autoquant_reports_the_steps_it_tried(model_file, labelled, tmp_path):
    data, _ = labelled
    summary_path = tmp_path / "s.json"
    argv = ["aimet-keras", "autoquant", "--model", str(model_file)]
    argv += ["--data", str(data), "--eval-data", str(data), "--quiet"]
    argv += ["--export", "none", "--out", str(tmp_path / "out")]
    assert cli.main(argv + ["--json", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    steps = [entry["step"] for entry in summary["autoquant"]]
    assert steps and steps[0] == "batch_norm_fold"
    # A 1-point allowance: either the first step held or later ones ran.
    first = summary["autoquant"][0]
    assert (first["drop"] <= 0.01) == (len(steps) == 1)


def test_qat_trains_the_sim_and_needs_labels(
    model_file, labelled, tmp_path, capsys
):
    data, unlabelled = labelled
    summary_path = tmp_path / "s.json"
    argv = ["aimet-keras", "qat", "--model", str(model_file), "--quiet"]
    argv += ["--export", "tflite", "--out", str(tmp_path / "out")]
    argv += ["--scheme", "training_range_learning_with_tf_init"]
    assert (
        cli.main(
            argv
            + ["--data", str(data), "--eval-data", str(data)]
            + ["--epochs", "2", "--learning-rate", "1e-3"]
            + ["--json", str(summary_path)]
        )
        == 0
    )
    summary = json.loads(summary_path.read_text())
    assert summary["qat_epochs"] == 2 and "qat" in summary["seconds"]
    assert summary["tflite_agrees_with_sim"] >= 0.95
    assert cli.main(argv + ["--data", str(unlabelled)]) == 1
    assert "has no labels" in capsys.readouterr().err


def _compress_argv(name, first_block, data, ratio, tmp_path):
    """Saves a small conv net (``first_block`` after its first conv) and
    returns ``(model path, compress argv)``."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = first_block(keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    path = tmp_path / f"{name}.keras"
    keras.Model(inputs, outputs, name=name).save(path)
    argv = ["aimet-keras", "compress", "--model", str(path), "--quiet"]
    argv += ["--eval-data", str(data), "--target-ratio", str(ratio)]
    argv += ["--candidates", "4", "--out", str(tmp_path / "out")]
    return path, argv


def test_compress_keeps_the_target_cost_and_saves_the_model(labelled, tmp_path):
    data, _ = labelled
    path, argv = _compress_argv(
        "wide", keras.layers.ReLU(), data, 0.6, tmp_path
    )
    summary_path = tmp_path / "s.json"
    assert cli.main(argv + ["--json", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["achieved_ratio"] <= 0.6 + 1e-6
    assert summary["macs"][1] < summary["macs"][0]
    saved = keras.saving.load_model(summary["artifacts"]["keras"])
    assert saved.count_params() < keras.saving.load_model(path).count_params()
    assert cli.main(argv + ["--target-ratio", "1.5"]) == 2


def test_compress_refits_on_inputs_distilled_from_the_model(labelled, tmp_path):
    data, _ = labelled

    def batch_norm_relu(x):
        return keras.layers.ReLU()(keras.layers.BatchNormalization()(x))

    _, argv = _compress_argv("normed", batch_norm_relu, data, 0.7, tmp_path)
    summary_path = tmp_path / "s.json"
    argv += ["--data", "distilled", "--json", str(summary_path)]
    assert cli.main(argv) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["refit_data"] == "distilled"
    assert summary["achieved_ratio"] <= 0.7 + 1e-6


def test_export_rebuilds_the_sim_from_its_encodings(
    model_file, labelled, tmp_path
):
    data, unlabelled = labelled
    common = ["--model", str(model_file), "--quiet", "--export", "tflite"]
    first, second = tmp_path / "first", tmp_path / "second"
    argv = ["aimet-keras", "quantize", *common, "--data", str(data)]
    assert cli.main(argv + ["--out", str(first)]) == 0
    argv = ["aimet-keras", "export", *common]
    argv += ["--encodings", str(first / "tiny.encodings")]
    assert cli.main(argv + ["--out", str(second)]) == 0
    images = np.load(unlabelled)
    np.testing.assert_array_equal(
        cli._tflite_outputs(second / "tiny_int8.tflite", images),
        cli._tflite_outputs(first / "tiny_int8.tflite", images),
    )
    assert cli.main(["aimet-keras", "export", *common]) == 2  # no encodings


def test_compare_reports_each_layer_against_the_tflite_model(
    model_file, labelled, tmp_path, capsys
):
    data, _ = labelled
    common = ["--model", str(model_file), "--quiet", "--data", str(data)]
    argv = ["aimet-keras", "quantize", *common, "--export", "none"]
    assert cli.main(argv + ["--out", str(tmp_path)]) == 0
    summary_path = tmp_path / "compare.json"
    argv = ["aimet-keras", "compare", *common, "--out", str(tmp_path)]
    argv += ["--encodings", str(tmp_path / "tiny.encodings")]
    assert cli.main(argv + ["--json", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    assert summary["samples"] == 64
    layers = {row["layer"]: row for row in summary["layers"]}
    # The integer model computes what the sim does, layer by layer.
    assert summary["first_departure"] is None
    assert all(row["off_fraction"] <= 0.01 for row in layers.values())
    assert len(layers) >= 3


def test_analyze_writes_the_report_and_ranks_layers(model_file, tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(64, 8, 8, 1)).astype("float32")
    np.savez(tmp_path / "data.npz", x=images, y=np.arange(64) % 3)
    summary_path = tmp_path / "summary.json"
    code = cli.main(
        [
            "aimet-keras",
            "analyze",
            "--model",
            str(model_file),
            "--data",
            str(tmp_path / "data.npz"),
            "--eval-data",
            str(tmp_path / "data.npz"),
            "--weight-bits",
            "4",
            "--export",
            "tflite,onnx",
            "--out",
            str(tmp_path / "report"),
            "--json",
            str(summary_path),
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["command"] == "analyze"
    assert len(summary["ranked"]) == len(summary["layers"]) >= 3
    assert summary["first_departure"] is None or isinstance(
        summary["first_departure"], str
    )
    assert summary["export_comparison"]  # the TFLite export was compared
    assert summary["onnx_comparison"]  # and the ONNX one
    assert (tmp_path / "report" / "quant_analysis.html").is_file()
