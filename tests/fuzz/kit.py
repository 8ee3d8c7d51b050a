"""The fuzzing kit: loaders under test, their valid seeds, mutators and the
property every input must meet.

A *target* wraps one loader: it makes valid files the way our writers do
(encodings of a small calibrated sim in every version, AdaRound's flat
param file, the shipped quantsim configs, the CLI's arrays and images),
loads a file, and checks a successful load against what the file says.
:func:`run_one` feeds one input to a target and classifies the outcome:

* ``"loaded"``: the loader returned, and the values it returned are finite
  and equal to the file's;
* ``"refused"``: a ``ValueError`` (or subclass) naming the file;
* ``"failure"``: anything else: another exception type, a ``ValueError``
  that does not name the file, a hang, a load whose values differ from the
  file's, or a failed load that changed the sim.

The hypothesis tests (``test_fuzz.py``) and the benchmark
(``benchmarks/suites/fuzz.py``) share this module, so the property the
benchmark measures is the one CI checks.

Example:

>>> target = make_target("quantsim_config")
>>> seed = target.seeds()[0]
>>> run_one(target, seed.data, seed.suffix).status
'loaded'
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import io
import json
import math
import pathlib
import re
import signal
import tempfile
import traceback
import warnings

import numpy as np

__all__ = [
    "CORPUS_DIR",
    "LOADERS",
    "Outcome",
    "byte_mutate",
    "corpus_files",
    "make_target",
    "message_kind",
    "run_one",
    "save_to_corpus",
    "structured_mutate",
]

LOADERS = ("encodings", "adaround", "sim_load", "quantsim_config", "cli_data")
CORPUS_DIR = pathlib.Path(__file__).parent / "corpus"
# An input that takes longer than this to load counts as a hang.
HANG_SECONDS = 20
INPUT_SHAPE = (8, 8, 3)


@dataclasses.dataclass(frozen=True)
class Seed:
    """A valid input: its structure (``doc``), suffix and bytes."""

    name: str
    suffix: str
    doc: object
    data: bytes


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one input did: status ``loaded``, ``refused`` or ``failure``."""

    status: str
    message: str = ""


class SilentWrongLoad(AssertionError):
    """A load that returned values the file does not hold."""


class _Hang(BaseException):
    """Raised by the alarm; a BaseException so no loader swallows it."""


# --------------------------------------------------------------- the model


@functools.lru_cache(maxsize=None)
def _model():
    """A tiny conv + dense model."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inputs, outputs, name="tiny")


@functools.lru_cache(maxsize=None)
def _sim():
    """A calibrated sim of the tiny model (tflite_int8 config: per-channel
    conv kernel, per-tensor dense kernel, int32 biases)."""
    from aimet_keras.sim import QuantizationSimModel

    sim = QuantizationSimModel(_model(), config_file="tflite_int8")
    data = np.random.default_rng(0).normal(size=(8, *INPUT_SHAPE))
    sim.compute_encodings(data.astype("float32"), verbose=0)
    return sim


def _param_names(sim):
    from aimet_keras.sim import export as export_lib

    table = export_lib._quantizer_table(sim)
    return [name for name, (_, kind) in table.items() if kind == "param"]


@functools.lru_cache(maxsize=None)
def _encodings_docs():
    """``{seed name: encodings dict}`` of the tiny sim, every layout."""
    from aimet_keras.sim import export as export_lib

    sim = _sim()
    docs = {
        f"v{v.replace('.', '_')}": export_lib.sim_encodings(sim, v)
        for v in ("0.6.1", "1.0.0", "2.0.0")
    }
    # The split 2.0.0 layout aimet_keras wrote before following AIMET's.
    params = set(_param_names(sim))
    entries = docs["v2_0_0"]["encodings"]
    docs["v2_0_0_split"] = {
        "version": "2.0.0",
        "param_encodings": [e for e in entries if e["name"] in params],
        "activation_encodings": [e for e in entries if e["name"] not in params],
    }
    return docs


def _json_seed(name, doc):
    text = json.dumps(doc, indent=1, sort_keys=True)
    return Seed(name, ".json", doc, text.encode())


# --------------------------------------------------- what a file says


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float
        return False


def _file_grids(doc, param_names=()):
    """``{name: (kind, grid)}`` of an encodings doc the loader accepted,
    where grid is ``("float", bw)`` or ``("int", bw, scales, offsets)``.

    Only called after a successful load, so the structure is sound; the
    values are what the file holds, read without the loader's code.
    """
    params = set(param_names)
    version = doc.get("version")
    grids = {}
    if version is None and "param_encodings" not in doc:
        sections = {"param": doc}
        version = "0.6.1"
    elif version == "2.0.0" and "encodings" in doc:
        sections = {
            "entries": {e["name"]: e for e in doc["encodings"]},
        }
    else:
        sections = {}
        for key, kind in (
            ("param_encodings", "param"),
            ("activation_encodings", "activation"),
        ):
            section = doc.get(key, {})
            if isinstance(section, list):
                section = {e["name"]: e for e in section}
            sections[kind] = section
    for kind, section in sections.items():
        for name, entry in section.items():
            if kind == "entries":
                kind_here = "param" if name in params else "activation"
            else:
                kind_here = kind
            grids[name] = (kind_here, _entry_grid(entry, version))
    return grids


def _entry_grid(entry, version):
    if version == "0.6.1":
        if entry[0].get("dtype", "int") == "float":
            return ("float", entry[0]["bitwidth"])
        return (
            "int",
            entry[0]["bitwidth"],
            [e["scale"] for e in entry],
            [e["offset"] for e in entry],
        )
    if version == "1.0.0":
        if entry["dtype"] == "FLOAT":
            return ("float", entry["bw"])
        return ("int", entry["bw"], entry["scale"], entry["offset"])
    dtype = entry["output_dtype"]
    if dtype.startswith("float") or dtype.startswith("bfloat"):
        return ("float", {"float32": 32, "float16": 16}.get(dtype, None))
    signed = dtype.startswith("int")
    bitwidth = int(dtype[3:] if signed else dtype[4:])
    scales = np.atleast_1d(entry["y_scale"]).tolist()
    zero = np.atleast_1d(entry.get("y_zero_point", 0)).tolist()
    shift = 2 ** (bitwidth - 1) if signed else 0
    return ("int", bitwidth, scales, [-(z + shift) for z in zero])


def _check_grid(name, encoding, grid):
    """Raises SilentWrongLoad when ``encoding`` is not the file's grid."""
    if grid[0] == "float":
        if not encoding.is_float or (
            grid[1] is not None and encoding.bitwidth != grid[1]
        ):
            raise SilentWrongLoad(f"{name}: file {grid}, loaded {encoding!r}")
        return
    _, bitwidth, scales, offsets = grid
    delta = np.atleast_1d(np.asarray(encoding.delta, np.float64))
    offset = np.atleast_1d(np.asarray(encoding.offset, np.float64))
    lo = np.atleast_1d(np.asarray(encoding.min, np.float64))
    hi = np.atleast_1d(np.asarray(encoding.max, np.float64))
    values = np.concatenate([delta, offset, lo, hi])
    scales = np.atleast_1d(np.asarray(scales, np.float64))
    offsets = np.atleast_1d(np.asarray(offsets, np.float64))
    if offsets.size == 1 and scales.size > 1:
        offsets = np.repeat(offsets, scales.size)
    if (
        encoding.is_float
        or encoding.bitwidth != bitwidth
        or not np.all(np.isfinite(values))
        or not np.all(delta > 0)
        or np.any(lo > hi)
        or delta.shape != scales.shape
        or not np.array_equal(delta, scales)
        or not np.array_equal(offset, offsets)
    ):
        raise SilentWrongLoad(
            f"{name}: the file says bitwidth {bitwidth}, scale {scales}, "
            f"offset {offsets}; loaded {encoding!r}"
        )


def _check_encodings(doc, loaded, param_names=()):
    params, activations = loaded
    grids = _file_grids(doc, param_names)
    got = {**{n: ("param", e) for n, e in params.items()}}
    got.update({n: ("activation", e) for n, e in activations.items()})
    if sorted(got) != sorted(grids) or len(got) != len(params) + len(
        activations
    ):
        raise SilentWrongLoad(
            f"the file names {sorted(grids)}; loaded {sorted(got)}"
        )
    for name, (kind, grid) in grids.items():
        if got[name][0] != kind:
            raise SilentWrongLoad(f"{name}: a {kind} loaded as {got[name][0]}")
        _check_grid(name, got[name][1], grid)


# ---------------------------------------------------------------- targets


class _Target:
    """One loader. Subclasses define seeds, load and check."""

    name = ""
    structured = True  # whether structured_mutate applies to its docs

    def seeds(self):
        raise NotImplementedError

    def encode(self, doc, suffix):
        return json.dumps(doc, allow_nan=True).encode()

    def load(self, path):
        raise NotImplementedError

    def check(self, path, data, result):
        """Raises SilentWrongLoad for a load that does not match the file."""

    def before(self):
        """Restores any state a previous input changed."""

    def state(self):
        """What a refused input must leave unchanged (None: nothing)."""
        return None


class _EncodingsTarget(_Target):
    name = "encodings"

    def seeds(self):
        return [_json_seed(n, d) for n, d in _encodings_docs().items()]

    def load(self, path):
        from aimet_keras.export import encodings as encodings_lib

        return encodings_lib.read_encodings(path, _param_names(_sim()))

    def check(self, path, data, result):
        _check_encodings(json.loads(data), result, _param_names(_sim()))


def _sim_state(sim):
    """Everything about a sim's quantizers a load may change."""
    state = []
    for wrapper in sim.quant_wrappers():
        for quantizer in wrapper.quantizers:
            state.append(
                (
                    quantizer.name,
                    quantizer.switches,
                    quantizer.encoding_min.numpy().tobytes(),
                    quantizer.encoding_max.numpy().tobytes(),
                    quantizer.encoding_min.trainable,
                    id(quantizer) in sim._frozen,
                )
            )
    return state


class _SimLoadTarget(_Target):
    """``QuantizationSimModel.load_encodings_to_sim``."""

    name = "sim_load"

    def seeds(self):
        return _EncodingsTarget().seeds()

    def before(self):
        # Reloading the sim's own file restores every quantizer it names.
        sim = _sim()
        sim._frozen.clear()
        # A file that leaves a quantizer out disables it, and a disabled
        # quantizer is no longer a tensor the sim loads: re-enable first.
        for quantizer, enabled in _enabled_at_start().items():
            quantizer.enabled = enabled
        reference = _reference_file()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sim.load_encodings_to_sim(reference)
        for wrapper in sim.quant_wrappers():
            for quantizer in wrapper.quantizers:
                if quantizer.data_type == "int":
                    quantizer.encoding_min.trainable = True
                    quantizer.encoding_max.trainable = True

    def state(self):
        return _sim_state(_sim())

    def load(self, path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _sim().load_encodings_to_sim(path)
        return None

    def check(self, path, data, result):
        _check_sim(json.loads(data), params_only=False)


class _AdaroundTarget(_SimLoadTarget):
    """AdaRound's flat param file into ``set_and_freeze_param_encodings``."""

    name = "adaround"

    def seeds(self):
        doc = _encodings_docs()["v0_6_1"]["param_encodings"]
        return [_json_seed("adaround", doc)]

    def load(self, path):
        _sim().set_and_freeze_param_encodings(path)

    def check(self, path, data, result):
        _check_sim(json.loads(data), params_only=True)


@functools.lru_cache(maxsize=None)
def _enabled_at_start():
    return {
        quantizer: quantizer.enabled
        for wrapper in _sim().quant_wrappers()
        for quantizer in wrapper.quantizers
    }


@functools.lru_cache(maxsize=None)
def _reference_file():
    folder = pathlib.Path(tempfile.mkdtemp(prefix="fuzz-reference-"))
    path = folder / "reference.encodings"
    path.write_text(json.dumps(_encodings_docs()["v0_6_1"]))
    return path


def _check_sim(doc, params_only):
    """The sim's quantizers hold the file's grids after a load."""
    from aimet_keras.sim import export as export_lib

    sim = _sim()
    table = export_lib._quantizer_table(sim)
    grids = _file_grids(doc, _param_names(sim))
    for name, (kind, grid) in grids.items():
        if params_only and kind != "param":
            continue
        quantizer = table[name][0]
        if not quantizer.enabled:
            raise SilentWrongLoad(f"{name}: named in the file but disabled")
        if params_only and id(quantizer) not in sim._frozen:
            raise SilentWrongLoad(f"{name}: loaded but not frozen")
        encoding = quantizer.encoding
        if grid[0] == "int" and quantizer.axis is not None:
            scales = np.atleast_1d(grid[2])
            if scales.size == 1:  # one grid broadcast to every channel
                channels = quantizer.observer.num_channels
                grid = (
                    "int",
                    grid[1],
                    np.repeat(scales, channels),
                    np.repeat(np.atleast_1d(grid[3]), channels),
                )
        if encoding is None:
            raise SilentWrongLoad(f"{name}: no encoding after the load")
        if grid[0] == "int":
            # The sim keeps grids in float32 variables: compare to float32.
            _check_grid_close(name, encoding, grid)
        else:
            _check_grid(name, encoding, grid)


def _check_grid_close(name, encoding, grid):
    _, bitwidth, scales, offsets = grid
    delta = np.atleast_1d(np.asarray(encoding.delta, np.float64))
    offset = np.atleast_1d(np.asarray(encoding.offset, np.float64))
    scales = np.atleast_1d(np.asarray(scales, np.float64))
    offsets = np.atleast_1d(np.asarray(offsets, np.float64))
    if offsets.size == 1 and scales.size > 1:
        offsets = np.repeat(offsets, scales.size)
    if (
        encoding.bitwidth != bitwidth
        or delta.shape != scales.shape
        or not np.all(np.isfinite(delta))
        or not np.allclose(delta, scales, rtol=1e-5, atol=0)
        # float32 holds 24 bits: a wider grid's zero point moves a little.
        or not np.allclose(
            offset, offsets, rtol=0, atol=2 ** max(0, bitwidth - 23)
        )
    ):
        raise SilentWrongLoad(
            f"{name}: the file says bitwidth {bitwidth}, scale {scales}, "
            f"offset {offsets}; the sim holds {encoding!r}"
        )


class _ConfigTarget(_Target):
    """``load_quantsim_config``, then a sim built with the config."""

    name = "quantsim_config"

    def seeds(self):
        from aimet_keras.sim import config as config_lib

        return [
            _json_seed(
                n,
                json.loads((config_lib._CONFIG_DIR / f"{n}.json").read_text()),
            )
            for n in config_lib.CONFIG_NAMES
        ]

    def load(self, path):
        from aimet_keras.sim import QuantizationSimModel
        from aimet_keras.sim import config as config_lib

        config = config_lib.load_quantsim_config(path)
        _check_config(config)
        # The config must also build a sim (resolving it per layer).
        QuantizationSimModel(_model(), config_file=config)
        return config


def _check_config(config):
    """Every setting has the type the simulation expects."""
    from aimet_keras.sim import config as config_lib

    def is_bool(value, optional=True):
        return isinstance(value, bool) or (optional and value is None)

    def check_param(settings, where):
        bitwidth = settings.bitwidth
        if not (
            is_bool(settings.is_quantized)
            and is_bool(settings.is_symmetric)
            and (
                bitwidth is None
                or (type(bitwidth) is int and 2 <= bitwidth <= 32)
            )
        ):
            raise SilentWrongLoad(f"{where}: {settings!r}")

    for field in dataclasses.fields(config_lib.QuantSimConfig):
        value = getattr(config, field.name)
        if field.type == "bool" and not isinstance(value, bool):
            raise SilentWrongLoad(f"{field.name}={value!r}")
    if config.hw_version is not None and not isinstance(config.hw_version, str):
        raise SilentWrongLoad(f"hw_version={config.hw_version!r}")
    check_param(config.param_defaults, "defaults.params")
    for kind, settings in config.params.items():
        check_param(settings, f"params.{kind}")
    for name, op in config.op_types.items():
        for field in dataclasses.fields(config_lib.OpTypeSettings):
            value = getattr(op, field.name)
            if field.type == "bool" and not is_bool(value):
                raise SilentWrongLoad(f"op_type.{name}.{field.name}={value!r}")
        for kind, settings in op.params.items():
            check_param(settings, f"op_type.{name}.params.{kind}")
        if op.encoding_constraints is not None:
            low, high = op.encoding_constraints
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise SilentWrongLoad(
                    f"op_type.{name}.encoding_constraints={(low, high)}"
                )


class _DataTarget(_Target):
    """The CLI's ``load_data``: ``.npz``, ``.npy``, image folders and
    TFRecords."""

    name = "cli_data"

    def seeds(self):
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, size=(4, *INPUT_SHAPE)).astype("float32")
        y = np.arange(4, dtype="int64")
        seeds = [
            Seed("npz", ".npz", {"x": x, "y": y}, _npz_bytes({"x": x, "y": y})),
            Seed("npy", ".npy", {"": x}, _npy_bytes(x)),
        ]
        pixels = (rng.uniform(0, 255, size=(6, 5, 3))).astype("uint8")
        png = _png_bytes(pixels)
        seeds.append(Seed("png", ".png", None, png))
        seeds.append(Seed("tfrecord", ".tfrecord", None, _tfrecord_bytes(png)))
        return seeds

    def encode(self, doc, suffix):
        if suffix == ".npy":
            return _npy_bytes(doc[""])
        return _npz_bytes(doc)

    def load(self, path):
        from aimet_keras.cli import data as data_lib

        return data_lib.load_data(path, INPUT_SHAPE)

    def check(self, path, data, result):
        inputs, labels = result
        if (
            inputs.dtype != np.float32
            or inputs.shape[1:] != INPUT_SHAPE
            or len(inputs) == 0
            or not np.all(np.isfinite(inputs))
        ):
            raise SilentWrongLoad(
                f"inputs {inputs.dtype} {inputs.shape}, finite: "
                f"{bool(np.all(np.isfinite(inputs)))}"
            )
        if labels is not None and (
            labels.dtype != np.int64 or labels.shape != (len(inputs),)
        ):
            raise SilentWrongLoad(f"labels {labels.dtype} {labels.shape}")
        suffix = pathlib.Path(path).suffix
        if suffix in (".npz", ".npy"):
            raw = np.load(io.BytesIO(data), allow_pickle=False)
            if suffix == ".npz":
                from aimet_keras.cli import data as data_lib

                keys = list(raw.keys())
                key = next((k for k in data_lib._INPUT_KEYS if k in keys), None)
                want_x = raw[key or keys[0]]
                label_key = next(
                    (k for k in data_lib._LABEL_KEYS if k in keys), None
                )
                want_y = raw[label_key] if label_key else None
            else:
                want_x, want_y = raw, None
            with np.errstate(all="ignore"):
                want_x = np.asarray(want_x).astype(np.float32)
            if not np.array_equal(inputs, want_x):
                raise SilentWrongLoad("inputs differ from the file's values")
            if want_y is not None and not np.array_equal(
                labels, np.asarray(want_y).reshape(-1)
            ):
                raise SilentWrongLoad("labels differ from the file's values")
        elif np.any(inputs < 0) or np.any(inputs > 1):
            raise SilentWrongLoad("pixels outside the 0-1 range asked for")


def _npz_bytes(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _png_bytes(pixels):
    import tensorflow as tf

    return tf.io.encode_png(pixels).numpy()


def _tfrecord_bytes(png):
    import tensorflow as tf

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[png])
                ),
                "label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[1])
                ),
            }
        )
    )
    folder = pathlib.Path(tempfile.mkdtemp(prefix="fuzz-tfrecord-"))
    path = folder / "seed.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(example.SerializeToString())
    return path.read_bytes()


_TARGETS = {
    "encodings": _EncodingsTarget,
    "adaround": _AdaroundTarget,
    "sim_load": _SimLoadTarget,
    "quantsim_config": _ConfigTarget,
    "cli_data": _DataTarget,
}


def make_target(name):
    """The target of loader ``name`` (one of :data:`LOADERS`).

    Example:

    >>> make_target("encodings").name
    'encodings'
    """
    if name not in _TARGETS:
        raise ValueError(f"Unknown loader {name!r}; use one of {LOADERS}.")
    return _TARGETS[name]()


# ----------------------------------------------------------- the property


@contextlib.contextmanager
def _alarm(seconds):
    def ring(signum, frame):
        raise _Hang()

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _write_input(folder, data, suffix):
    """The path to hand the loader: a file, or a folder for an image."""
    if suffix == ".png":
        images = folder / "images"
        images.mkdir()
        (images / "input.png").write_bytes(data)
        return images
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    return path


def run_one(target, data, suffix, timeout=HANG_SECONDS):
    """Feeds ``data`` (a file's bytes) to ``target``; returns an Outcome.

    Example:

    >>> target = make_target("encodings")
    >>> run_one(target, b"{", ".json").status
    'refused'
    """
    with tempfile.TemporaryDirectory(prefix="fuzz-") as folder:
        path = _write_input(pathlib.Path(folder), data, suffix)
        target.before()
        before = target.state()
        try:
            with _alarm(timeout):
                result = target.load(path)
        except _Hang:
            return Outcome("failure", f"hang: no answer in {timeout} s")
        except ValueError as error:
            message = str(error)
            if str(path) not in message:
                return Outcome(
                    "failure",
                    f"ValueError not naming the file: {message[:300]}",
                )
            if before is not None and target.state() != before:
                return Outcome(
                    "failure", f"refused, but the sim changed: {message[:300]}"
                )
            return Outcome("refused", message.replace(str(path), "<file>"))
        except Exception as error:  # noqa: BLE001 - what fuzzing hunts
            where = traceback.extract_tb(error.__traceback__)[-1]
            return Outcome(
                "failure",
                f"{type(error).__name__}: {str(error)[:300]} "
                f"(at {pathlib.Path(where.filename).name}:{where.lineno})",
            )
        try:
            target.check(path, data, result)
        except SilentWrongLoad as error:
            return Outcome("failure", f"silent wrong load: {error}")
        except Exception as error:  # noqa: BLE001 - values the check can't read
            return Outcome(
                "failure",
                f"silent wrong load: the loaded values are unreadable "
                f"({type(error).__name__}: {str(error)[:200]})",
            )
        return Outcome("loaded")


def message_kind(message):
    """An error message with its numbers, names and values blanked out, so
    messages about the same problem count once.

    Example:

    >>> message_kind("<file>: tensor 'fc:0': scale must be > 0; got -1.0.")
    "<file>: tensor '_': scale must be > _; got _"
    """
    # Values cut short by "..." first: their quotes may not be closed.
    message = re.sub(r"[\[{('\"][^\n]*?\.\.\.", "_", message)
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "'_'", message)
    # Values shown in brackets, nested, count once.
    while True:
        inner = re.sub(r"[\[{(][^\[\]{}()]*[\]})]", "_", message)
        if inner == message:
            break
        message = inner
    return re.sub(r"-?\b\d[\w.+-]*|-?inf|nan", "_", message)


# ---------------------------------------------------------------- mutators

# Values a wrong file may hold where a number, string or list belongs.
_NASTY = (
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**64,
    -(2**63) - 1,
    10**400,
    0.5,
    -0.0,
    1e-320,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "True",
    "8",
    "int8",
    "uint0",
    "float8e4m3fn",
    "PER_CHANNEL",
    "\udcff",
    [],
    [None],
    [[1.0, 2.0]],
    {},
    {"name": "fc:0"},
)


def _nodes(doc, path=()):
    """Every ``(path, value)`` in a JSON tree, the root included."""
    yield path, doc
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _nodes(value, (*path, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _nodes(value, (*path, index))


def _nasty(rng, value):
    """A wrong value, often a near miss of ``value``."""
    if isinstance(value, bool):
        return rng.choice([not value, int(value), str(value), None])
    if isinstance(value, (int, float)) and rng.random() < 0.6:
        near_misses = (
            lambda: -value,
            lambda: value + 0.5,
            lambda: value * 2**40,
            lambda: value + 1,
            lambda: value - 1,
            lambda: float(value),
            lambda: int(value),
            lambda: str(value),
            lambda: [value],
            lambda: bool(value),
            lambda: value * float("nan") if value else float("nan"),
        )
        try:
            return rng.choice(near_misses)()
        except (OverflowError, ValueError):  # an int beyond float, or inf
            return float("inf")
    if isinstance(value, str) and rng.random() < 0.5:
        return rng.choice([value + "x", value[:-1], value.upper(), [value]])
    if isinstance(value, list) and value and rng.random() < 0.5:
        return rng.choice(
            [value[:-1], value + value[-1:], value[0], [value], value[::-1]]
        )
    return copy.deepcopy(rng.choice(_NASTY))


def _mutate_once(doc, rng):
    paths = list(_nodes(doc))
    path, value = rng.choice(paths)
    if not path:
        return _nasty(rng, value) if rng.random() < 0.1 else doc
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    action = rng.random()
    if action < 0.45:
        parent[key] = _nasty(rng, value)
    elif action < 0.6:
        del parent[key]  # a missing key, or a shorter list
    elif action < 0.7 and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(value))  # a duplicated entry
    elif action < 0.8 and isinstance(parent, dict):
        # An unknown key, or an entry under another tensor's name.
        others = [k for k in parent if k != key]
        new = rng.choice(others) if others and rng.random() < 0.5 else None
        parent[new or f"{key}_unknown"] = parent.pop(key)
    elif action < 0.9 and isinstance(value, dict):
        low, high = value.get("min"), value.get("max")
        if _number(low) and _number(high):
            value["min"], value["max"] = high, low  # min > max
        else:
            value[rng.choice(list(value) or ["x"])] = _nasty(rng, None)
    else:
        parent[key] = (
            [value, copy.deepcopy(value)]
            if rng.random() < 0.5
            else {"nested": value}
        )
    return doc


def _mutate_arrays(arrays, rng):
    """Wrong dtypes, shapes, values and labels for the data loader."""
    arrays = dict(arrays)
    key = rng.choice(list(arrays))
    value = arrays[key]
    action = rng.randrange(9)
    if action == 0:
        arrays[key] = value.astype(
            rng.choice(
                [
                    "float64",
                    "float16",
                    "int8",
                    "uint64",
                    "bool",
                    "complex64",
                    "U3",
                    "datetime64[s]",
                ]
            )
        )
    elif action == 1 and value.size:
        flat = value.astype("float64").reshape(-1)
        flat[rng.randrange(flat.size)] = rng.choice(
            [np.nan, np.inf, -np.inf, 1e300, -1e39, 0.5]
        )
        arrays[key] = flat.reshape(value.shape)
    elif action == 2:
        arrays[key] = (
            value[: rng.randrange(len(value) + 1)] if value.ndim else value
        )
    elif action == 3:
        arrays[key] = value.reshape(-1) if rng.random() < 0.5 else value[None]
    elif action == 4:
        arrays[key] = np.zeros((0,) + value.shape[1:], value.dtype)
    elif action == 5:
        new = rng.choice(["images", "labels", "targets", "junk", "y", "x"])
        arrays[new] = arrays.pop(key)
    elif action == 6:
        arrays[key] = np.array(rng.choice([2**63 - 1, -1, 1e20, 3.7]))
    elif action == 7 and len(arrays) > 1:
        del arrays[key]
    else:
        arrays["y"] = rng.choice(
            [
                np.array([0.5, 1.5, 2.0, 3.0]),
                np.array([1e20, 0, 0, 0]),
                np.array([np.nan] * 4),
                np.arange(5),
                np.array(["a", "b", "c", "d"]),
                np.arange(4).reshape(2, 2),
            ]
        )
    return arrays


def structured_mutate(target, seed, rng, count=None):
    """``(bytes, suffix)``: ``seed``'s structure with 1 to 4 mutations.

    Example:

    >>> import random
    >>> target = make_target("quantsim_config")
    >>> data, suffix = structured_mutate(
    ...     target, target.seeds()[0], random.Random(0))
    >>> suffix
    '.json'
    """
    if seed.doc is None:  # an image: only bytes to mutate
        return byte_mutate(seed.data, rng), seed.suffix
    count = count or rng.randint(1, 4)
    doc = copy.deepcopy(seed.doc)
    for _ in range(count):
        if seed.suffix in (".npz", ".npy"):
            try:
                with np.errstate(all="ignore"):
                    doc = _mutate_arrays(doc, rng)
            except (ValueError, TypeError, RuntimeError):
                pass  # a mutation that does not apply to this dtype
        else:
            try:
                doc = _mutate_once(doc, rng)
            except (OverflowError, RecursionError):
                pass  # a mutation the value does not allow (an int past float)
    if seed.suffix == ".npy":
        doc = {"": doc.get("", next(iter(doc.values()), np.zeros(0)))}
    try:
        return target.encode(doc, seed.suffix), seed.suffix
    except (ValueError, TypeError, UnicodeEncodeError):
        # Some garbage does not even serialize (a lone surrogate): write
        # it byte by byte instead.
        text = json.dumps(doc, ensure_ascii=True, allow_nan=True)
        return text.encode(), seed.suffix


_JUNK = (
    b"\x00",
    b"\xff\xfe",
    b"\xc3\x28",
    b"1e999",
    b"-1e999",
    b"NaN",
    b"Infinity",
    b"[" * 100_000,
    b'{"a":' * 50_000,
    b"99999999999999999999999999",
    b'"',
    b",",
    b"}",
    b"]",
    b"null",
    b"true",
)


def byte_mutate(data, rng):
    """Raw-file mutations: truncate, flip, insert junk, invalid UTF-8,
    huge numbers, deep nesting, spliced copies.

    Example:

    >>> import random
    >>> len(byte_mutate(b"abcdef", random.Random(1))) >= 0
    True
    """
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        action = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if action == 0:
            del data[at:]
        elif action == 1 and data:
            index = rng.randrange(len(data))
            data[index] ^= 1 << rng.randrange(8)
        elif action == 2:
            data[at:at] = rng.choice(_JUNK)
        elif action == 3:
            # A number replaced by another, often out of range.
            numbers = list(re.finditer(rb"-?\d+(\.\d+)?(e-?\d+)?", bytes(data)))
            if numbers:
                match = rng.choice(numbers)
                data[match.start() : match.end()] = rng.choice(
                    [b"1e999", b"-0", b"0", b"1e-400", b"2" * 40, b"0.5", b"-7"]
                )
        elif action == 4:
            end = min(len(data), at + rng.randrange(1, 64))
            data[at:end] = bytes(rng.randrange(256) for _ in range(end - at))
        elif action == 5 and data:
            start = rng.randrange(len(data))
            piece = data[start : start + rng.randrange(1, 200)]
            data[at:at] = piece
        else:
            del data[at : at + rng.randrange(1, 32)]
    return bytes(data)


# ------------------------------------------------------------------ corpus


def save_to_corpus(loader, data, suffix, root=CORPUS_DIR):
    """Saves an input under ``corpus/<loader>/``, named by its hash."""
    folder = pathlib.Path(root) / loader
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    path.write_bytes(data)
    return path


def corpus_files(root=CORPUS_DIR):
    """``[(loader, path)]`` of every saved input."""
    root = pathlib.Path(root)
    return (
        sorted(
            (folder.name, path)
            for folder in root.iterdir()
            if folder.is_dir() and folder.name in LOADERS
            for path in folder.iterdir()
            if path.is_file()
        )
        if root.is_dir()
        else []
    )
