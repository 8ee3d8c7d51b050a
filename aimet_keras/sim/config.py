"""AIMET's quantsim config JSON, parsed and checked into plain data.

The file's sections apply from least to most specific (AIMET's order):
``defaults`` -> ``params`` -> ``op_type`` -> ``supergroups`` ->
``model_input`` -> ``model_output``. This module reads a file, checks every
key (an unknown key or a bad value is an error naming its path, such as
``op_type.Conv.per_chanel_quantization``) and returns a frozen
:class:`QuantSimConfig`; the simulation resolves it per layer and never
reads the JSON itself.

Booleans are AIMET's strings ``"True"``/``"False"``; JSON booleans are
accepted too.

Extensions. AIMET checks a config against its JSON schema, which allows no
key but its own, so the keys below go in a second file beside the config,
``<stem>.extensions.json`` (the same sections, merged over the config's
entries key by key), and the config itself stays one AIMET reads: the
shipped ``tflite_int8.json`` leaves biases unquantized, as AIMET simulates
them, and ``tflite_int8.extensions.json`` gives them 32 bits. The same keys
are still accepted inside a config. The keys: a param entry may carry
``"bitwidth"`` (the shipped TFLite configs give biases 32 bits), and an op
type entry
``"decomposed_quantization": "True"`` quantizes the intermediate tensors of
an op the target runs as a chain of integer ops (``LayerNormalization``
in the shipped TFLite configs, see :mod:`aimet_keras.sim.layer_norm`; and
``Add``, whose partial sums of three or more inputs get grids, see
:func:`aimet_keras.sim.internals.partial_sums`; and ``Swish`` and
``HardSigmoid``, see :func:`aimet_keras.sim.internals.activation_tensors`);
and an op type entry
``"output_on_input_grid": "True"`` puts the op's output on the grid of the
tensor it reads, calibrated or not (TFLite's int8 ``AVERAGE_POOL_2D``
must keep its input's scale: the shipped TFLite configs set it for
``AveragePool``); and ``"inputs_on_output_grid": "True"`` puts each
producer of the op on the op's output grid, unless that producer's grid is
already fixed or taken (TFLite's int8 ``CONCATENATION`` keeps one scale on
its inputs and output: the converter gives a producer that feeds only the
concatenation its scale and requantizes any other producer, which XNNPACK
computes with an 8-bit multiplier, a step off on a few percent of the
values; the shipped TFLite configs set it for ``Concat``); and
``"output_ties_away_from_zero": "True"`` rounds an output exactly
between two levels away from the zero of the signed integer the target
stores, where AIMET rounds it up a level (TFLite's int8
``AVERAGE_POOL_2D`` rounds its integer mean so: a 2x2 window's mean is a
tie on a quarter of the values); and ``"as_depthwise_conv": "True"``
simulates the per-channel affine layers of the op type (``Normalization``,
and ``Rescaling`` under ``Mul``) as the 1x1 depthwise convolution TFLite
runs them as (:func:`aimet_keras.graph.channel_affines_as_depthwise`).

Shipped configs, by name: ``"default"`` (AIMET's default), ``"tflite_int8"``
(TFLite's int8 spec: symmetric per-channel int8 conv weights with the
-127..127 range, per-tensor Dense weights, asymmetric int8 activations,
int32 biases, softmax/sigmoid/tanh outputs on TFLite's fixed grids through
``encoding_constraints``), ``"tflite_16x8"`` (the same with symmetric
activations, for TFLite's 16x8 mode with ``default_output_bw=16``) and
``"htp"`` (like AIMET's HTP V73 config).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import typing

from aimet_keras.export import encodings as encodings_lib
from aimet_keras.sim import op_types

if typing.TYPE_CHECKING:
    import os


__all__ = [
    "CONFIG_NAMES",
    "OpTypeSettings",
    "ParamSettings",
    "QuantSimConfig",
    "load_quantsim_config",
    "read_quantsim_config",
]

_CONFIG_DIR = pathlib.Path(__file__).parent / "configs"
CONFIG_NAMES = ("default", "tflite_int8", "tflite_16x8", "htp")


@dataclasses.dataclass(frozen=True)
class ParamSettings:
    """Settings of one parameter kind (``weight``, ``bias``, ...).

    None means "not set here": a less specific section decides.
    """

    is_quantized: bool = None
    is_symmetric: bool = None
    bitwidth: int = None


@dataclasses.dataclass(frozen=True)
class OpTypeSettings:
    """``op_type.<name>`` settings; None means "not set here"."""

    is_input_quantized: bool = None
    is_output_quantized: bool = None
    is_symmetric: bool = None
    per_channel_quantization: bool = None
    params: dict = dataclasses.field(default_factory=dict)
    encoding_constraints: tuple = None
    supported_kernels: tuple = ()
    decomposed_quantization: bool = None
    output_on_input_grid: bool = None
    inputs_on_output_grid: bool = None
    output_ties_away_from_zero: bool = None
    as_depthwise_conv: bool = None


@dataclasses.dataclass(frozen=True)
class QuantSimConfig:
    """A checked quantsim config.

    Attributes:
        output_quantized: ``defaults.ops.is_output_quantized``.
        activation_symmetric: ``defaults.ops.is_symmetric``.
        param_defaults: ``defaults.params`` as :class:`ParamSettings`.
        strict_symmetric: ``defaults.strict_symmetric``.
        unsigned_symmetric: ``defaults.unsigned_symmetric``.
        per_channel_quantization: ``defaults.per_channel_quantization``.
        hw_version: ``defaults.hw_version`` or None.
        supported_kernels: ``defaults.supported_kernels``.
        params: ``{param kind: ParamSettings}``.
        op_types: ``{ONNX op type: OpTypeSettings}``.
        supergroups: tuples of op types fused for quantization.
        model_input_quantized: ``model_input.is_input_quantized``.
        model_output_quantized: ``model_output.is_output_quantized``.
        source: where the config came from.
    """

    output_quantized: bool = False
    activation_symmetric: bool = False
    param_defaults: ParamSettings = ParamSettings(False, False)
    strict_symmetric: bool = False
    unsigned_symmetric: bool = False
    per_channel_quantization: bool = False
    hw_version: str = None
    supported_kernels: tuple = ()
    params: dict = dataclasses.field(default_factory=dict)
    op_types: dict = dataclasses.field(default_factory=dict)
    supergroups: tuple = ()
    model_input_quantized: bool = False
    model_output_quantized: bool = False
    source: str = "<dict>"


class _Reader:
    """Walks the JSON, naming the path of anything wrong."""

    def __init__(self, source):
        self.source = source

    def fail(self, path, message):
        raise ValueError(f"Quantsim config {self.source}: {path}: {message}")

    def object(self, value, path, allowed):
        if not isinstance(value, dict):
            self.fail(path, f"expected an object, got {type(value).__name__}.")
        for key in value:
            if key not in allowed:
                hint = op_types.did_you_mean(key, allowed)
                self.fail(
                    f"{path}.{key}" if path else key,
                    f"unknown key.{hint} Known keys: {sorted(allowed)}.",
                )
        return value

    def boolean(self, value, path):
        if isinstance(value, bool):
            return value
        if value in ("True", "False"):
            return value == "True"
        self.fail(path, f'expected "True" or "False", got {value!r}.')

    def text(self, obj, key, path):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(f"{path}.{key}", f"expected a string, got {value!r}.")
        return value

    def optional_bool(self, obj, key, path):
        return self.boolean(obj[key], f"{path}.{key}") if key in obj else None

    def param(self, value, path):
        obj = self.object(
            value, path, ("is_quantized", "is_symmetric", "bitwidth")
        )
        bitwidth = obj.get("bitwidth")
        if bitwidth is not None:
            self.bitwidth(bitwidth, f"{path}.bitwidth", range(2, 33))
        return ParamSettings(
            self.optional_bool(obj, "is_quantized", path),
            self.optional_bool(obj, "is_symmetric", path),
            bitwidth,
        )

    def bitwidth(self, value, path, allowed):
        if type(value) is not int or value not in allowed:
            self.fail(
                path,
                f"expected an int {allowed[0]}..{allowed[-1]}, got {value!r}.",
            )
        return value

    def number(self, value, path):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
        ):
            self.fail(path, f"expected a finite number, got {value!r}.")
        return float(value)

    def op_type_name(self, name, path):
        if not isinstance(name, str):
            self.fail(path, f"expected an op type name, got {name!r}.")
        if name not in op_types.ONNX_OP_TYPES:
            hint = op_types.did_you_mean(name, op_types.ONNX_OP_TYPES)
            self.fail(
                path,
                f"{name!r} is not an op type aimet_keras knows (AIMET's "
                f"configs name ONNX op types such as 'Conv', 'Gemm', "
                f"'Relu').{hint}",
            )
        return name

    def kernels(self, value, path):
        if not isinstance(value, list):
            self.fail(path, "expected a list of {activation, param} kernels.")
        for index, kernel in enumerate(value):
            where = f"{path}[{index}]"
            self.object(kernel, where, ("activation", "param"))
            for side in ("activation", "param"):
                spec = self.object(
                    kernel.get(side, {}),
                    f"{where}.{side}",
                    ("bitwidth", "dtype"),
                )
                if spec.get("dtype", "int") not in ("int", "float"):
                    self.fail(
                        f"{where}.{side}.dtype", "expected 'int' or 'float'."
                    )
                if "bitwidth" in spec:
                    self.bitwidth(
                        spec["bitwidth"],
                        f"{where}.{side}.bitwidth",
                        range(2, 33),
                    )
        return tuple(json.dumps(k, sort_keys=True) for k in value)

    def op_type(self, value, path):
        obj = self.object(
            value,
            path,
            (
                "is_input_quantized",
                "is_output_quantized",
                "is_symmetric",
                "per_channel_quantization",
                "params",
                "encoding_constraints",
                "supported_kernels",
                "decomposed_quantization",
                "output_on_input_grid",
                "inputs_on_output_grid",
                "output_ties_away_from_zero",
                "as_depthwise_conv",
            ),
        )
        params = {
            kind: self.param(setting, f"{path}.params.{kind}")
            for kind, setting in self.object(
                obj.get("params", {}), f"{path}.params", _AnyKey()
            ).items()
        }
        constraints = None
        if "encoding_constraints" in obj:
            where = f"{path}.encoding_constraints"
            bounds = self.object(
                obj["encoding_constraints"], where, ("min", "max")
            )
            if "min" not in bounds or "max" not in bounds:
                self.fail(where, "expected numbers 'min' and 'max'.")
            constraints = tuple(
                self.number(bounds[key], f"{where}.{key}")
                for key in ("min", "max")
            )
            if constraints[0] > constraints[1]:
                self.fail(where, "min must not exceed max.")
        return OpTypeSettings(
            is_input_quantized=self.optional_bool(
                obj, "is_input_quantized", path
            ),
            is_output_quantized=self.optional_bool(
                obj, "is_output_quantized", path
            ),
            is_symmetric=self.optional_bool(obj, "is_symmetric", path),
            per_channel_quantization=self.optional_bool(
                obj, "per_channel_quantization", path
            ),
            params=params,
            encoding_constraints=constraints,
            supported_kernels=self.kernels(
                obj.get("supported_kernels", []), f"{path}.supported_kernels"
            ),
            decomposed_quantization=self.optional_bool(
                obj, "decomposed_quantization", path
            ),
            output_on_input_grid=self.optional_bool(
                obj, "output_on_input_grid", path
            ),
            inputs_on_output_grid=self.optional_bool(
                obj, "inputs_on_output_grid", path
            ),
            output_ties_away_from_zero=self.optional_bool(
                obj, "output_ties_away_from_zero", path
            ),
            as_depthwise_conv=self.optional_bool(
                obj, "as_depthwise_conv", path
            ),
        )


class _AnyKey(tuple):
    """An ``allowed`` that accepts every key (param kinds are open)."""

    def __contains__(self, key):
        return isinstance(key, str)


def _parse(data, source):
    read = _Reader(source)
    top = read.object(
        data,
        "",
        (
            "defaults",
            "params",
            "op_type",
            "supergroups",
            "model_input",
            "model_output",
        ),
    )
    defaults = read.object(
        top.get("defaults", {}),
        "defaults",
        (
            "ops",
            "params",
            "strict_symmetric",
            "unsigned_symmetric",
            "per_channel_quantization",
            "hw_version",
            "supported_kernels",
        ),
    )
    ops = defaults.get("ops", {})
    if isinstance(ops, dict) and "is_input_quantized" in ops:
        read.fail(
            "defaults.ops.is_input_quantized",
            "not allowed in defaults (as in AIMET); set is_input_quantized "
            "per op_type or model_input.",
        )
    ops = read.object(
        ops, "defaults.ops", ("is_output_quantized", "is_symmetric")
    )
    param_defaults = read.param(defaults.get("params", {}), "defaults.params")
    supergroups = []
    raw_groups = top.get("supergroups", [])
    if not isinstance(raw_groups, list):
        read.fail("supergroups", "expected a list of {op_list: [...]}.")
    for index, group in enumerate(raw_groups):
        where = f"supergroups[{index}]"
        ops_list = read.object(group, where, ("op_list",)).get("op_list")
        if not isinstance(ops_list, list) or len(ops_list) < 2:
            read.fail(
                f"{where}.op_list", "expected a list of at least 2 op types."
            )
        supergroups.append(
            tuple(
                read.op_type_name(name, f"{where}.op_list[{i}]")
                for i, name in enumerate(ops_list)
            )
        )
    model_input = read.object(
        top.get("model_input", {}), "model_input", ("is_input_quantized",)
    )
    model_output = read.object(
        top.get("model_output", {}), "model_output", ("is_output_quantized",)
    )
    return QuantSimConfig(
        output_quantized=bool(
            read.optional_bool(ops, "is_output_quantized", "defaults.ops")
        ),
        activation_symmetric=bool(
            read.optional_bool(ops, "is_symmetric", "defaults.ops")
        ),
        param_defaults=ParamSettings(
            bool(param_defaults.is_quantized),
            bool(param_defaults.is_symmetric),
            param_defaults.bitwidth,
        ),
        strict_symmetric=bool(
            read.optional_bool(defaults, "strict_symmetric", "defaults")
        ),
        unsigned_symmetric=bool(
            read.optional_bool(defaults, "unsigned_symmetric", "defaults")
        ),
        per_channel_quantization=bool(
            read.optional_bool(defaults, "per_channel_quantization", "defaults")
        ),
        hw_version=read.text(defaults, "hw_version", "defaults"),
        supported_kernels=read.kernels(
            defaults.get("supported_kernels", []), "defaults.supported_kernels"
        ),
        params={
            kind: read.param(setting, f"params.{kind}")
            for kind, setting in read.object(
                top.get("params", {}), "params", _AnyKey()
            ).items()
        },
        op_types={
            read.op_type_name(name, f"op_type.{name}"): read.op_type(
                setting, f"op_type.{name}"
            )
            for name, setting in read.object(
                top.get("op_type", {}), "op_type", _AnyKey()
            ).items()
        },
        supergroups=tuple(supergroups),
        model_input_quantized=bool(
            read.optional_bool(model_input, "is_input_quantized", "model_input")
        ),
        model_output_quantized=bool(
            read.optional_bool(
                model_output, "is_output_quantized", "model_output"
            )
        ),
        source=source,
    )


def load_quantsim_config(
    config: QuantSimConfig | dict | str | os.PathLike | None = None,
) -> QuantSimConfig:
    """Reads and checks an AIMET quantsim config.

    Args:
        config: None (AIMET's default config), a shipped config's name
            (one of :data:`CONFIG_NAMES`), a path to a JSON
            file, a dict, or a :class:`QuantSimConfig` (returned as is).
            Defaults to None.

    Returns:
        A :class:`QuantSimConfig`.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for invalid JSON, an unknown key or a bad value, naming
            the file and the key's path.

    Example:

    >>> config = load_quantsim_config("tflite_int8")
    >>> config.per_channel_quantization
    True
    >>> config.op_types["Gemm"].per_channel_quantization
    False
    >>> config.params["bias"].bitwidth
    32
    """
    if isinstance(config, QuantSimConfig):
        return config
    if config is None:
        config = "default"
    if isinstance(config, dict):
        return _parse(config, "<dict>")
    data, source = _config_json(config)
    return _parse(data, source)


def read_quantsim_config(config: str | os.PathLike) -> dict:
    """A config's JSON as the simulation reads it: a dict to edit.

    The file's ``<stem>.extensions.json``, if there is one, is merged in,
    so a shipped config edited and passed back as ``config_file`` keeps
    its behaviour.

    Args:
        config: a shipped config's name or a path to a JSON file.

    Returns:
        The JSON as a dict.

    Example:

    >>> data = read_quantsim_config("tflite_int8")
    >>> data["params"]["bias"]["bitwidth"]  # from the extensions file
    32
    >>> data["defaults"]["params"]["is_symmetric"] = "False"
    >>> load_quantsim_config(data).params["bias"].bitwidth
    32
    """
    return _config_json(config)[0]


def _config_json(config):
    """``(the JSON merged with its extensions, a name for messages)``."""
    if isinstance(config, str) and config in CONFIG_NAMES:
        path = _CONFIG_DIR / f"{config}.json"
    else:
        path = pathlib.Path(config)
        if not path.is_file():
            raise FileNotFoundError(
                f"Quantsim config {path} not found; pass a JSON file or one "
                f"of the shipped configs {list(CONFIG_NAMES)}."
            )
    data = _read_json(path)
    extensions = path.with_name(f"{path.stem}.extensions.json")
    if not extensions.is_file():
        return data, str(path)
    return (
        _merged(data, _read_json(extensions)),
        f"{path} + {extensions.name}",
    )


def _read_json(path):
    return encodings_lib.read_json(path, "Quantsim config")


def _merged(base, extra):
    """``base`` with ``extra``'s entries put over it, objects key by key."""
    if not isinstance(base, dict) or not isinstance(extra, dict):
        return extra
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(base[key], value) if key in base else value
    return out
