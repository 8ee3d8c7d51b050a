"""What users hand to QuantizationSimModel: a model and calibration data.

The common mistakes (a file path instead of a model, images without their
channel axis, raw uint8 pixels, a dataset never batched, NaN in the data)
end in one line that names the input, what was expected, what was given
and the fix, instead of a TensorFlow traceback. The checks read shapes and
dtypes once per call; the data's values are only scanned after a failure,
so calibration itself runs as fast as before.
"""

from __future__ import annotations

import os
import pathlib
import typing
import zipfile

import keras
import numpy as np

if typing.TYPE_CHECKING:
    from collections.abc import Iterator

    import tensorflow as tf


__all__ = ["CalibrationData", "layer_class", "resolve_model"]

_MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
# Layers that scale their input: integer data feeding them is expected.
_SCALING_LAYERS = ("Rescaling", "Normalization")


def _load_error(path, error):
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    first = first.replace(str(path), "it")
    if len(first) > 120:
        first = first[:117] + "..."
    return (
        f"Could not load '{path}' with keras.saving.load_model: {first} "
        "(Custom layers? Load it inside keras.saving.custom_object_scope "
        "and pass the model.)"
    )


def _load_model_file(given):
    path = pathlib.Path(given).expanduser()
    if not path.exists():
        where = "" if path.is_absolute() else f" (looked in {os.getcwd()})"
        raise FileNotFoundError(
            f"No model file at '{given}'{where}; check the path, or pass a "
            "keras.Model."
        )
    if path.is_dir():
        if any(
            (path / name).exists()
            for name in ("saved_model.pb", "saved_model.pbtxt")
        ):
            raise ValueError(
                f"'{given}' is a TensorFlow SavedModel folder, which Keras 3 "
                "cannot load as a keras.Model (keras.layers.TFSMLayer only "
                "wraps it for inference). Pass the .keras or .h5 file of the "
                "model instead (model.save('model.keras') writes one)."
            )
        raise ValueError(
            f"'{given}' is a folder, not a model file; pass a .keras or .h5 "
            "file (model.save('model.keras') writes one)."
        )
    if path.suffix.lower() not in _MODEL_SUFFIXES:
        raise ValueError(
            f"'{given}' is not a .keras or .h5 file (suffix "
            f"{path.suffix or 'none'!r}); save the model with "
            "model.save('model.keras') and pass that file."
        )
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ValueError(
            f"'{given}' is not a valid .keras file (a .keras file is a zip "
            "archive); save the model again with model.save('model.keras')."
        )
    try:
        if path.suffix.lower() in (".h5", ".hdf5"):
            # Keras 2 (tf_keras) files too: arguments Keras 3 dropped go.
            from aimet_keras.graph import legacy

            return legacy.from_tf_keras(path)
        return keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(_load_error(given, error)) from error


def _describe(value):
    kind = type(value)
    name = kind.__qualname__
    if kind.__module__ not in ("builtins",):
        name = f"{kind.__module__}.{name}"
    shape = getattr(value, "shape", None)
    return name + (f" of shape {tuple(shape)}" if shape is not None else "")


def resolve_model(model: keras.Model | str | os.PathLike) -> keras.Model:
    """Returns the ``keras.Model`` that ``model`` is, or names, or raises.

    Args:
        model: a ``keras.Model``, or the path (``str`` or ``os.PathLike``)
            of a ``.keras`` or ``.h5`` file, loaded with
            ``keras.saving.load_model(path, compile=False)``.

    Returns:
        The model.

    Raises:
        FileNotFoundError: when no file exists at the path, naming it.
        ValueError: for a SavedModel folder (Keras 3 cannot load one as a
            model), another kind of file, or a file that does not load.
        TypeError: for anything else, naming what was given.

    Example:

    >>> import tempfile, pathlib
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.keras"
    >>> model.save(path)
    >>> resolve_model(str(path)).output_shape
    (None, 2)
    """
    if isinstance(model, keras.Model):
        return model
    if type(model).__module__.startswith("tf_keras"):
        from aimet_keras.graph import legacy

        return legacy.from_tf_keras(model)
    if isinstance(model, (str, os.PathLike)):
        return _load_model_file(model)
    if hasattr(model, "layers") and callable(model):
        # Model-like (tf_keras, say): prepare_model decides.
        return model
    expected = "model must be a keras.Model or the path of a .keras/.h5 file"
    if isinstance(model, keras.layers.Layer):
        raise TypeError(
            f"{expected}; got layer {model.name!r} ({type(model).__name__}). "
            "Wrap it in a model: keras.Sequential([keras.Input(shape), "
            "layer])."
        )
    raise TypeError(f"{expected}; got {_describe(model)}.")


def layer_class(layer: keras.layers.Layer) -> str:
    """The class name of a layer, or of the layer a wrapper wraps."""
    return type(getattr(layer, "layer", layer)).__name__


def _input_name(model, tensor):
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) and (
            layer.output is tensor
        ):
            return layer.name
    return tensor.name


def _readers(model, tensor):
    """The layers of ``model`` that take ``tensor`` as an input."""
    readers = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            inputs = keras.tree.flatten(layer.input)
        except (AttributeError, ValueError):
            continue
        if any(t is tensor for t in inputs):
            readers.append(layer)
    return readers


def _kind(dtype):
    """'float', 'int' (bool too), 'string' or 'other'."""
    if isinstance(dtype, np.dtype) and dtype.kind in "USO":
        return "string" if dtype.kind in "US" else "other"
    name = _dtype_name(dtype)
    if "float" in name:
        return "float"
    if "int" in name or name == "bool":
        return "int"
    if name == "string":
        return "string"
    return "other"


def _dtype_name(dtype):
    try:
        return keras.backend.standardize_dtype(dtype)
    except ValueError:
        return str(dtype)


def _fits(expected, given):
    return len(expected) == len(given) and all(
        e is None or g is None or e == g for e, g in zip(expected, given)
    )


def _shape_fix(expected, given, tensors):
    """``(what to do, expression of "{x}")`` for data shaped ``given``.

    ``tensors`` picks TensorFlow spellings (for a dataset's elements) over
    NumPy ones. The expression is None where none applies.
    """
    rank, dims = len(expected), expected[1:]
    known = all(d is not None for d in dims)
    if (
        len(given) == rank - 1
        and expected[-1] == 1
        and _fits(expected[:-1], given)
    ):
        return "add a channel axis", "{x}[..., None]"
    if len(given) == rank - 1 and _fits(dims, given):
        if tensors:
            return "batch the dataset", None
        return "add a batch axis (it is one sample)", "{x}[None]"
    if (
        len(given) == rank + 1
        and given[-1] == 1
        and _fits(expected, given[:-1])
    ):
        return "drop the last axis", "{x}[..., 0]"
    if len(given) == rank + 1 and _fits(dims, given[2:]):
        if tensors:
            return (
                "it is batched twice: drop one .batch(...) or add .unbatch()",
                None,
            )
        return "merge the two leading axes", "{x}.reshape(-1, *{x}.shape[2:])"
    if len(given) == rank and rank >= 3:
        last = (0, *range(2, rank), 1)
        first = (0, rank - 1, *range(1, rank - 1))
        if _fits(expected, [given[a] for a in last]):
            if tensors:
                return "move the channel axis last", (
                    f"tf.transpose({{x}}, {list(last)})"
                )
            return "move the channel axis last", "np.moveaxis({x}, 1, -1)"
        if _fits(expected, [given[a] for a in first]):
            if tensors:
                return "move the channel axis to axis 1", (
                    f"tf.transpose({{x}}, {list(first)})"
                )
            return "move the channel axis to axis 1", "np.moveaxis({x}, -1, 1)"
    sizes = given[1:]
    if (
        known
        and all(d is not None for d in sizes)
        and int(np.prod(sizes)) == int(np.prod(dims))
    ):
        target = ", ".join(str(d) for d in (-1, *dims))
        if tensors:
            return "reshape it", f"tf.reshape({{x}}, ({target}))"
        return "reshape it", f"{{x}}.reshape({target})"
    target = "(N, " + ", ".join(str(d) for d in dims) + ")"
    return (
        f"reshape or resize it to {target}, or check that it is this "
        "model's data",
        None,
    )


def _cast_fix(given_dtype, expected_dtype, tensors):
    """``(what to do, expression of "{x}")`` to cast integer data to float."""
    scale = " / 255" if _dtype_name(given_dtype) == "uint8" else ""
    if tensors:
        expr = f"tf.cast({{x}}, tf.{expected_dtype}){scale}"
    else:
        expr = f"{{x}}.astype('{expected_dtype}'){scale}"
    return f"cast to {expected_dtype} and scale as in training", expr


class _Input:
    """One model input: name, shape (batch axis first), dtype, readers."""

    def __init__(self, model, tensor):
        self.name = _input_name(model, tensor)
        self.shape = tuple(tensor.shape)
        self.dtype = _dtype_name(tensor.dtype)
        self.readers = _readers(model, tensor)

    @property
    def scaled(self):
        return any(
            layer_class(layer) in _SCALING_LAYERS for layer in self.readers
        )


class CalibrationData:
    """Calibration data checked against a model's inputs, in batches.

    Accepts what ``compute_encodings`` accepts: an array (anything
    ``np.asarray`` takes, a ``tf.Tensor`` included), a list or tuple of
    arrays in the order of ``model.inputs`` or a dict keyed by input name
    (several inputs), or a batched ``tf.data.Dataset`` whose elements are
    inputs or ``(inputs, targets, ...)`` tuples, as Keras reads them. Shapes
    and dtypes are checked here, once; integer data for a float input is
    cast (as Keras does), with a warning unless a ``Rescaling`` or
    ``Normalization`` layer reads it.

    Args:
        model: the ``keras.Model`` the data feeds.
        data: the calibration data.
        batch_size: batch size for arrays. Defaults to 32.

    Raises:
        ValueError: for data whose structure, shape or dtype does not fit
            the model's inputs, naming the input, the expected and given
            shapes and the fix; or for empty data.
        TypeError: for data of an unsupported kind (a generator, say).

    Example:

    >>> inputs = keras.Input((28, 28, 1), name="image")
    >>> model = keras.Model(inputs, keras.layers.Flatten()(inputs))
    >>> images = np.zeros((4, 28, 28), "float32")
    >>> try:
    ...     CalibrationData(model, images)
    ... except ValueError as error:
    ...     print(str(error).split("float32. ")[-1])
    Add a channel axis, e.g. x[..., None].
    >>> data = CalibrationData(model, images[..., None], batch_size=3)
    >>> [batch[0].shape for batch in data.batches()]
    [(3, 28, 28, 1), (1, 28, 28, 1)]
    """

    def __init__(
        self, model: keras.Model, data: object, batch_size: int = 32
    ) -> None:
        import tensorflow as tf

        self.model_name = model.name
        self.inputs = [_Input(model, t) for t in model.inputs]
        self.batch_size = batch_size
        # Messages to warn with, left to the caller (which knows the
        # stack level of the user's call).
        self.warnings = []
        self.is_dataset = isinstance(data, tf.data.Dataset)
        if self.is_dataset:
            self._dataset = data
            self._check_dataset(data.element_spec)
        else:
            self.arrays = self._check_arrays(data)

    # Structure: data leaves in the order of the model's inputs.

    def _names(self):
        return ", ".join(repr(i.name) for i in self.inputs)

    def _ordered(self, structure, what):
        """The leaves of ``structure`` (a dict, list or tuple of inputs) in
        input order, or raises."""
        count = len(self.inputs)
        if isinstance(structure, dict):
            missing = [i.name for i in self.inputs if i.name not in structure]
            if missing:
                raise ValueError(
                    f"{what} is a dict with keys {sorted(structure)}, but "
                    f"model {self.model_name!r} needs inputs "
                    f"{self._names()}; missing {missing}. Key the data by "
                    "input name."
                )
            return [structure[i.name] for i in self.inputs]
        if len(structure) == count:
            return list(structure)
        if count == 1:
            raise ValueError(
                f"{what} is a {type(structure).__name__} of "
                f"{len(structure)} items, but model {self.model_name!r} has "
                f"one input ({self._names()}). Pass only the inputs, as one "
                "array (x, not (x, y); np.stack a list of samples)."
            )
        raise ValueError(
            f"{what} has {len(structure)} items, but model "
            f"{self.model_name!r} has {count} inputs ({self._names()}). Pass "
            f"{count} arrays in that order, or a dict keyed by those names."
        )

    # Arrays.

    def _check_arrays(self, data):
        what = "The calibration data"
        if isinstance(data, (str, bytes)) or not (
            isinstance(data, (dict, list, tuple))
            or hasattr(data, "__array__")
            or hasattr(data, "shape")
        ):
            raise TypeError(
                "compute_encodings takes calibration data as a "
                "tf.data.Dataset, an array (a list or dict of arrays for "
                "several inputs) or a callback; got "
                f"{_describe(data)}"
                + (
                    f" {data!r}"
                    if isinstance(data, str) and len(data) < 60
                    else ""
                )
                + ". Wrap a generator in "
                "tf.data.Dataset.from_generator(...)."
            )
        if isinstance(data, dict):
            leaves = self._ordered(data, what)
        elif isinstance(data, (list, tuple)) and (
            len(self.inputs) > 1 or any(hasattr(x, "shape") for x in data)
        ):
            # A structure of inputs. (For one input, a list of plain
            # numbers is the array itself.)
            leaves = self._ordered(data, what)
        elif len(self.inputs) > 1:
            raise ValueError(
                f"The calibration data is one array, but model "
                f"{self.model_name!r} has {len(self.inputs)} inputs "
                f"({self._names()}). Pass {len(self.inputs)} arrays in that "
                "order, or a dict keyed by those names."
            )
        else:
            leaves = [data]
        arrays = [
            self._check_array(spec, leaf)
            for spec, leaf in zip(self.inputs, leaves)
        ]
        counts = {len(a) for a in arrays}
        if len(counts) > 1:
            sizes = ", ".join(
                f"{spec.name!r}: {len(a)}"
                for spec, a in zip(self.inputs, arrays)
            )
            raise ValueError(
                f"The calibration inputs of model {self.model_name!r} have "
                f"different numbers of samples ({sizes}); give every input "
                "the same samples."
            )
        if not counts or counts == {0}:
            raise ValueError(
                f"The calibration data for model {self.model_name!r} has no "
                "samples; pass at least one batch."
            )
        return arrays

    def _check_array(self, spec, leaf):
        array = np.asarray(leaf)
        head = f"Calibration data for input {spec.name!r}"
        if array.dtype == object:
            raise ValueError(
                f"{head} is an object array (ragged or mixed items); pass "
                f"one numeric array of shape {_batch_shape(spec.shape)}."
            )
        self._check(spec, array.shape, array.dtype, head, tensors=False)
        return array

    # Datasets.

    def _check_dataset(self, spec):
        import tensorflow as tf

        self._tuple = isinstance(spec, tuple)
        x = spec[0] if self._tuple and spec else spec
        what = (
            "The first item of each dataset element (read, as Keras does, as "
            "(x, y, ...))"
            if self._tuple
            else "Each dataset element"
        )
        if isinstance(x, (dict, list, tuple)):
            specs = self._ordered(x, what)
            self._extract = (
                (lambda e: [e[i.name] for i in self.inputs])
                if isinstance(x, dict)
                else list
            )
        elif len(self.inputs) == 1:
            specs = [x]
            self._extract = lambda e: [e]
        else:
            raise ValueError(
                f"{what} is one tensor, but model {self.model_name!r} has "
                f"{len(self.inputs)} inputs ({self._names()}). Yield the "
                "inputs together, as ((a, b), y) or a dict keyed by name."
            )
        for input_spec, leaf in zip(self.inputs, specs):
            head = f"Calibration dataset elements for input {input_spec.name!r}"
            if not isinstance(leaf, tf.TensorSpec):
                raise ValueError(
                    f"{head} are {type(leaf).__name__}s; calibration takes "
                    "dense tensors (ragged.to_tensor() or sparse.to_dense())."
                )
            shape = tuple(leaf.shape) if leaf.shape.rank is not None else None
            self._check(input_spec, shape, leaf.dtype.name, head, tensors=True)
        self._casts = [
            None if _dtype_name(leaf.dtype) == i.dtype else i.dtype
            for i, leaf in zip(self.inputs, specs)
        ]

    def _map_hint(self, expression, spec):
        """A ``dataset.map`` applying ``expression`` to input ``spec``."""
        if len(self.inputs) > 1:
            return (
                f"{expression.format(x='x')} on input {spec.name!r} in a "
                "dataset.map"
            )
        if self._tuple:
            body = expression.format(x="x")
            return f"dataset.map(lambda x, *rest: ({body}, *rest))"
        return f"dataset.map(lambda x: {expression.format(x='x')})"

    # Shape and dtype of one input.

    def _check(self, spec, shape, dtype, head, tensors):
        given_kind, expected_kind = _kind(dtype), _kind(spec.dtype)
        given_dtype = _dtype_name(dtype)
        given = f"shape {_shape(shape)}, dtype {given_dtype}"
        expected = f"shape {_shape(spec.shape)}, dtype {spec.dtype}"
        intro = (
            f"{head} of model {self.model_name!r} have"
            if tensors
            else f"{head} of model {self.model_name!r} has"
        )
        problem = f"{intro} {given}; the model expects {expected}."
        if given_kind != expected_kind and not (
            given_kind == "int" and expected_kind == "float"
        ):
            if given_kind == "float" and expected_kind == "int":
                cast = (
                    f"tf.cast(x, tf.{spec.dtype})"
                    if tensors
                    else f"x.astype('{spec.dtype}')"
                )
                fix = f"Cast it if it holds whole numbers (ids), e.g. {cast}."
            else:
                fix = f"Pass {spec.dtype} data, as the model was trained on."
            raise ValueError(f"{problem} {fix}")
        needs_cast = (
            given_kind == "int"
            and expected_kind == "float"
            and given_dtype != "bool"
        )
        if shape is not None and not _fits(spec.shape, shape):
            fix = self._fix(spec, shape, dtype, needs_cast, tensors)
            raise ValueError(f"{problem} {fix}")
        if needs_cast and not spec.scaled:
            _, cast = _cast_fix(dtype, spec.dtype, tensors)
            self.warnings.append(
                f"{head} {'are' if tensors else 'is'} {given_dtype}, cast to "
                f"{spec.dtype} as Keras does. If the model was trained on "
                "scaled data, scale it the same way first (e.g. "
                f"{cast.format(x='x')}), or the activation ranges will be "
                "wrong."
            )

    def _fix(self, spec, shape, dtype, needs_cast, tensors):
        """The sentence saying how to fix data of the wrong shape."""
        action, expression = _shape_fix(spec.shape, shape, tensors)
        if expression is None:
            hint = (
                "dataset.batch(32)" if action == "batch the dataset" else None
            )
            if needs_cast:
                action += ", then cast to float and scale as in training"
        else:
            if needs_cast:
                cast_action, cast = _cast_fix(dtype, spec.dtype, tensors)
                action = f"{action}, {cast_action}"
                expression = cast.format(x=expression)
            if tensors:
                hint = self._map_hint(expression, spec)
            else:
                hint = expression.format(x="x")
        sentence = action[0].upper() + action[1:]
        return sentence + (f", e.g. {hint}." if hint else ".")

    # Batches.

    @property
    def num_batches(self) -> int | None:
        """How many batches :meth:`batches` yields, or None if unknown."""
        if not self.is_dataset:
            return -(-len(self.arrays[0]) // self.batch_size)
        count = int(self._dataset.cardinality())
        return count if count >= 0 else None

    def batches(self) -> Iterator[list]:
        """Yields each batch as a list of inputs, in input order, cast."""
        import tensorflow as tf

        if self.is_dataset:
            for element in self._dataset:
                x = element[0] if self._tuple else element
                yield [
                    t if cast is None else tf.cast(t, cast)
                    for t, cast in zip(self._extract(x), self._casts)
                ]
            return
        for start in range(0, len(self.arrays[0]), self.batch_size):
            yield [
                np.asarray(a[start : start + self.batch_size], dtype=i.dtype)
                for a, i in zip(self.arrays, self.inputs)
            ]

    def as_dataset(self) -> tf.data.Dataset:
        """The data as a ``tf.data.Dataset`` of input tuples, cast."""
        import tensorflow as tf

        if not self.is_dataset:
            arrays = tuple(
                np.asarray(a, dtype=i.dtype)
                for a, i in zip(self.arrays, self.inputs)
            )
            return tf.data.Dataset.from_tensor_slices(arrays).batch(
                self.batch_size
            )

        def inputs(x):
            return tuple(
                t if cast is None else tf.cast(t, cast)
                for t, cast in zip(self._extract(x), self._casts)
            )

        if self._tuple:
            return self._dataset.map(lambda *element: inputs(element[0]))
        return self._dataset.map(inputs)

    def non_finite_input(self, index: int, batch: list) -> str | None:
        """Describes the first input of ``batch`` holding NaN or inf.

        Args:
            index: the batch's index in :meth:`batches`.
            batch: the batch, a list of inputs.

        Returns:
            A one-line description naming the input, the batch and the
            first bad sample, or None when every input is finite.
        """
        for spec, value in zip(self.inputs, batch):
            array = np.asarray(value)
            if _kind(array.dtype) != "float" or not array.size:
                continue
            if not array.ndim:
                array = array.reshape(1)
            finite = np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            bad = np.flatnonzero(~finite)
            if not len(bad):
                continue
            reader = spec.readers[0] if spec.readers else None
            read = (
                f"; the first layer reading it is {reader.name!r} "
                f"({layer_class(reader)})"
                if reader is not None
                else ""
            )
            if self.is_dataset:
                return (
                    f"Calibration dataset batch {index} holds NaN or inf in "
                    f"input {spec.name!r} (sample {bad[0]} of the batch, "
                    f"{len(bad)} bad){read}. Filter those samples out "
                    "(tf.math.is_finite finds them)"
                )
            start = index * self.batch_size
            return (
                f"Calibration data for input {spec.name!r} holds NaN or inf "
                f"at sample {start + bad[0]} ({len(bad)} bad in batch {index}, "
                f"samples {start}-{start + len(array) - 1}){read}. Drop or fix "
                "those samples (np.isfinite finds them)"
            )
        return None

    def sample(self, index: int, offset: int) -> str:
        """How to name sample ``offset`` of batch ``index`` in a message."""
        if self.is_dataset:
            return f"calibration batch {index}, sample {offset} of the batch"
        start = index * self.batch_size
        return f"calibration batch {index}, sample {start + offset}"


def _shape(shape):
    if shape is None:
        return "(unknown rank)"
    return (
        "("
        + ", ".join(str(d) for d in shape)
        + (",)" if len(shape) == 1 else ")")
    )


def _batch_shape(shape):
    return "(N, " + ", ".join(str(d) for d in shape[1:]) + ")"
