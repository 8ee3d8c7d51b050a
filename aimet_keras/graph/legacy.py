"""Models from tf_keras (Keras 2) as Keras 3 models.

tfmot users hold Keras 2 models: ``.h5`` files written by tf_keras, or the
live objects. Keras 3 reads a Keras 2 ``.h5`` file itself, but refuses the
layer arguments Keras 2 wrote and Keras 3 dropped (``groups`` on a
``DepthwiseConv2D``, for one). :func:`from_tf_keras` removes exactly the
arguments Keras 3 names as unknown, in a copy of the file, and loads that;
for a live tf_keras model it writes the file first (tf_keras installed) and
checks that both models compute the same outputs.
"""

import json
import pathlib
import re
import shutil
import tempfile
import warnings

import numpy as np

_UNKNOWN = re.compile(
    r"Unrecognized keyword arguments? passed to (\w+): (\{.*?\})"
)
_ATTEMPTS = 50


def from_tf_keras(model, check_inputs=None, atol=1e-5):
    """A Keras 3 model computing what a tf_keras (Keras 2) model computes.

    Args:
        model: the path of a Keras 2 ``.h5`` file, or a live tf_keras
            ``Model`` (needs ``tf_keras`` installed).
        check_inputs: for a live model, inputs both models are run on;
            defaults to random inputs of the model's input shapes (batch 2).
        atol: the largest output difference accepted. Defaults to 1e-5.

    Returns:
        A ``keras.Model`` (Keras 3), weights loaded, not compiled.

    Raises:
        FileNotFoundError: for a path with no file.
        ValueError: for a layer Keras 3 cannot build even without the
            arguments it refuses (naming the layer and the argument), or
            outputs further than ``atol`` from the tf_keras model's.

    Example:

    >>> import tempfile, h5py  # a Keras 2 file's config, as tf_keras writes
    >>> import keras
    >>> model = keras.Sequential([keras.Input((4, 4, 2)),
    ...                           keras.layers.DepthwiseConv2D(3)])
    >>> path = tempfile.mkdtemp() + "/legacy.h5"
    >>> model.save(path)  # Keras 3 writes the same legacy format
    >>> with h5py.File(path, "r+") as f:  # what tf_keras adds
    ...     config = json.loads(f.attrs["model_config"])
    ...     config["config"]["layers"][1]["config"]["groups"] = 1
    ...     f.attrs["model_config"] = json.dumps(config)
    >>> converted = from_tf_keras(path)
    >>> np.allclose(converted.get_weights()[0], model.get_weights()[0])
    True
    """
    if isinstance(model, (str, pathlib.Path)):
        return _load_legacy_h5(pathlib.Path(model))
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "model.h5"
        with warnings.catch_warnings():
            # tf_keras calls .h5 legacy: it is the format both Kerases share.
            warnings.simplefilter("ignore", UserWarning)
            model.save(path)
        converted = _load_legacy_h5(path)
    _check_outputs(model, converted, check_inputs, atol)
    return converted


def _load_legacy_h5(path):
    import h5py
    import keras

    if not path.is_file():
        raise FileNotFoundError(f"No Keras 2 .h5 file at {path}.")
    with tempfile.TemporaryDirectory() as folder:
        # The file itself first: a Keras 3 file, or a Keras 2 one Keras 3
        # takes as it is, is never copied.
        source, removed = path, {}
        for _ in range(_ATTEMPTS):
            try:
                return keras.saving.load_model(source, compile=False)
            except (TypeError, ValueError) as error:
                match = _UNKNOWN.search(str(error))
                if match is None:
                    raise ValueError(
                        f"Keras 3 cannot load {path}: "
                        f"{str(error).splitlines()[0]}"
                    ) from None
                class_name = match.group(1)
                keys = set(re.findall(r"'(\w+)'\s*:", match.group(2)))
                if keys <= removed.get(class_name, set()):
                    raise ValueError(
                        f"Keras 3 refuses arguments {sorted(keys)} of "
                        f"{class_name} layers in {path} even without them."
                    ) from None
                removed.setdefault(class_name, set()).update(keys)
                if source == path:
                    source = pathlib.Path(folder) / path.name
                    shutil.copyfile(path, source)
                with h5py.File(source, "r+") as file:
                    config = json.loads(file.attrs["model_config"])
                    _drop_arguments(config, class_name, keys)
                    file.attrs["model_config"] = json.dumps(config)
        raise ValueError(f"Keras 3 could not load {path}.")


def _drop_arguments(config, class_name, keys):
    """Removes ``keys`` from every ``class_name`` layer config, nested."""
    if isinstance(config, dict):
        if config.get("class_name") == class_name and isinstance(
            config.get("config"), dict
        ):
            for key in keys:
                config["config"].pop(key, None)
        for value in config.values():
            _drop_arguments(value, class_name, keys)
    elif isinstance(config, list):
        for value in config:
            _drop_arguments(value, class_name, keys)


def _check_outputs(original, converted, inputs, atol):
    if inputs is None:
        rng = np.random.default_rng(0)
        shapes = [tuple(t.shape[1:]) for t in original.inputs]
        inputs = [rng.random((2, *s)).astype("float32") for s in shapes]
        inputs = inputs[0] if len(inputs) == 1 else inputs
    expected = original.predict(inputs, verbose=0)
    got = converted.predict(inputs, verbose=0)
    for a, b in zip(
        expected if isinstance(expected, list) else [expected],
        got if isinstance(got, list) else [got],
    ):
        gap = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        if gap > atol:
            raise ValueError(
                f"The Keras 3 copy of {original.name!r} differs from it by "
                f"{gap:.3g} (more than {atol}); a layer converts differently."
            )
