"""Subclassed models as users bring them: mtcnn's RNet and ONet.

Both are ``keras.Model`` subclasses whose ``build(input_shape=(None, 24,
24, 3))`` builds every layer from a default shape: ``model.build()`` with
no argument records no input shape, so aimet_keras reads the default.
"""

import os

import keras
import numpy as np
import pytest

from aimet_keras import graph
from aimet_keras import ptq
from aimet_keras.sim import QuantizationSimModel
from tests.models import end_to_end

mtcnn = pytest.importorskip("mtcnn")


def _mtcnn_net(name):
    from mtcnn.network.onet import ONet
    from mtcnn.network.rnet import RNet
    from mtcnn.utils.tensorflow import load_weights

    model = {"rnet": RNet, "onet": ONet}[name]()
    model.build()
    weights = os.path.join(
        os.path.dirname(mtcnn.__file__), "assets", "weights", f"{name}.lz4"
    )
    model.set_weights(load_weights(weights))
    return model


def _faces(size):
    """LFW faces and non-faces as mtcnn input: RGB ``(x - 127.5) / 128``."""
    from skimage import data
    from skimage import transform

    grey = data.lfw_subset()  # 100 faces, then 100 non-faces, in [0, 1]
    resized = np.stack([transform.resize(g, (size, size)) for g in grey])
    rgb = np.repeat(resized[..., None], 3, axis=-1) * 255.0
    return ((rgb - 127.5) / 128.0).astype(np.float32)


def test_a_model_built_by_build_is_traced_with_its_default_shape():
    model = _mtcnn_net("rnet")
    prepared = graph.prepare_model(model)
    assert tuple(prepared.inputs[0].shape) == (None, 24, 24, 3)
    faces = _faces(24)[:8]
    for got, want in zip(prepared(faces), model(faces)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, size", [("rnet", 24), ("onet", 48)])
def test_mtcnn_nets_run_end_to_end_and_keep_their_face_scores(
    name, size, tmp_path
):
    model = _mtcnn_net(name)
    faces = _faces(size)
    result = end_to_end(model, faces[::2], tmp_path, adaround=name == "rnet")
    # The last output is the softmax face / not-face score.
    fp32 = keras.tree.flatten(model.predict(faces, verbose=0))[-1]
    w8a8 = keras.tree.flatten(result.sim.model.predict(faces, verbose=0))[-1]
    # The trained nets' decisions survive W8A8 on real faces and non-faces.
    assert np.mean(fp32.argmax(-1) == w8a8.argmax(-1)) >= 0.97
    assert np.max(np.abs(fp32[:, 1] - w8a8[:, 1])) <= 0.1
    # The exports decide as the sim does on every face.
    for outputs in (result.tflite_outputs, result.onnx_outputs):
        scores = outputs[-1]
        assert (
            np.mean(scores.argmax(-1) == result.sim_outputs[-1].argmax(-1))
            >= 0.97
        )
    # Box regressions (fine grids after PReLUs whose output grid is finer
    # than their input's) drift further: one-step differences upstream
    # become several steps there.
    assert result.tflite_agreement >= 0.8
    assert result.onnx_agreement >= 0.95


def test_an_unbuilt_subclassed_model_still_names_the_fix():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    with pytest.raises(ValueError, match="not built.*input_shape"):
        QuantizationSimModel(Net())
    with pytest.raises(ValueError, match="not built.*input_shape"):
        ptq.fold_all_batch_norms(Net())
