"""AIMET's encodings files: versions 0.6.1 (default), 1.0.0 and 2.0.0.

An encodings file maps tensor names to grids. aimet_keras keeps grids as
:class:`~aimet_keras.quant.Encoding` objects; this module turns a
``{name: Encoding}`` mapping into the JSON layouts Qualcomm's converters and
AIMET read, and back:

* 0.6.1: ``{"version", "activation_encodings": {name: [entry, ...]},
  "param_encodings": {...}, "quantizer_args": {...}}``, one entry per
  channel with ``bitwidth``, ``dtype``, ``is_symmetric`` (the *string*
  "True"/"False"), ``min``, ``max``, ``offset`` (the negative zero point)
  and ``scale``; float tensors are ``{"bitwidth": 16, "dtype": "float"}``.
* 1.0.0: lists of ``{name, enc_type, dtype, bw, is_sym, scale: [..],
  offset: [..]}``, plus ``excluded_layers``.
* 2.0.0: one list, ``"encodings"``, of ``{name, output_dtype, y_scale,
  y_zero_point, axis}`` for params and activations alike (as AIMET writes
  and validates it), aligned with ONNX ``QuantizeLinear``. As aimet-onnx
  2.42 writes and reads them: symmetric grids are ``int<bw>`` with zero
  point 0 (full), -1 (strict: the 0.6.1 offset ``-(2**(b-1) - 1)``) or
  ``-2**(b-1)`` (unsigned symmetric: offset 0); asymmetric grids are
  ``uint<bw>`` with ``y_zero_point = -offset``; a zero point of 0 is left
  out. Every level of each grid is a level of the ONNX grid those fields
  describe. ``int<bw>`` with zero point 0 does not say whether the grid
  drops its lowest level (ONNX tools write strict grids that way too):
  it reads back with strictness left to the quantizer; any other signed
  zero point reads as the asymmetric grid it describes. The
  ``axis`` of a per-channel entry is the Keras axis of the tensor (for
  example 3 for a Conv2D kernel ``(H, W, I, O)``), written only when given.
  Float tensors are ``float16``, ``bfloat16``, or ``float8e4m3fn`` /
  ``float8e5m2`` with their ``y_scale`` (8-bit floats are 2.0.0 only;
  0.6.1 and 1.0.0, like AIMET, hold 16-bit casts and cannot tell bf16 from
  fp16).

AIMET's flat AdaRound file (``{param_name: [entry, ...]}``) reads as 0.6.1
param encodings.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
import typing

import numpy as np

from aimet_keras.export import staging as staging_lib
from aimet_keras.quant import encoding as encoding_lib

if typing.TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from aimet_keras.quant.encoding import Encoding

__all__ = [
    "ENCODING_VERSIONS",
    "encodings_to_dict",
    "encodings_from_dict",
    "read_encodings",
    "write_encodings",
]

ENCODING_VERSIONS = ("0.6.1", "1.0.0", "2.0.0")
_ONNX_INT_WIDTHS = (2, 4, 8, 16, 32)


def _as_bool(value, where):
    """AIMET writes booleans as "True"/"False" strings or as JSON bools."""
    if isinstance(value, bool):
        return value
    if value in ("True", "False"):
        return value == "True"
    raise ValueError(f"{where}: expected True/False, got {_shown(value)}.")


def _shown(value, limit=60):
    """``repr(value)``, cut short: a wrong value may be a whole file."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _channels(enc):
    return [
        np.atleast_1d(np.asarray(getattr(enc, field), dtype=np.float64))
        for field in ("min", "max", "delta", "offset")
    ]


# ----------------------------------------------------------------- 0.6.1


def _scaled_float_refused(name, enc, version):
    """8-bit floats carry a scale, which only 2.0.0 files hold."""
    fmt = enc.float_format
    if fmt is not None and not fmt.is_cast:
        raise ValueError(
            f"Tensor {name!r} is {fmt.name}: encodings {version} hold float "
            "tensors as 16-bit casts only (as AIMET writes them); write "
            "version 2.0.0, whose float8 entries carry the scale."
        )


def _to_0_6_1(name, enc):
    if enc.is_float:
        _scaled_float_refused(name, enc, "0.6.1")
        return [{"bitwidth": enc.bitwidth, "dtype": "float"}]
    return [
        {
            "bitwidth": enc.bitwidth,
            "dtype": "int",
            "is_symmetric": str(enc.is_symmetric),
            "max": float(hi),
            "min": float(lo),
            "offset": int(offset),
            "scale": float(delta),
        }
        for lo, hi, delta, offset in zip(*_channels(enc))
    ]


def _from_0_6_1(entries, where):
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: expected a non-empty list of encodings.")
    for channel, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(
                f"{where}: channel {channel} is {_shown(entry)}, not an object "
                "with bitwidth, scale and offset."
            )
    dtype = _one_value(entries, "dtype", where, default="int")
    if dtype not in ("int", "float"):
        raise ValueError(
            f"{where}: dtype {_shown(dtype)}; use 'int' or 'float'."
        )
    bitwidth = _whole(_one_value(entries, "bitwidth", where), "bitwidth", where)
    if dtype == "float":
        return _float_encoding(bitwidth, None, None, where)
    symmetric = _as_bool(
        _one_value(entries, "is_symmetric", where, "False"), where
    )
    scale = [_real(_key(e, "scale", where), "scale", where) for e in entries]
    offset = [
        _whole(_key(e, "offset", where), "offset", where) for e in entries
    ]
    encoding = _from_scale_offset(scale, offset, bitwidth, symmetric, where)
    _check_stated_range(entries, encoding, where)
    return encoding


def _key(entry, key, where):
    if key not in entry:
        raise ValueError(f"{where}: missing key {key!r}.")
    return entry[key]


def _one_value(entries, key, where, default=None):
    """The value every channel's entry gives ``key`` (they must agree)."""
    values = [e.get(key, default) for e in entries]
    if values[0] is None:
        raise ValueError(f"{where}: missing key {key!r}.")
    if len({repr(v) for v in values}) > 1:
        raise ValueError(
            f"{where}: the channels disagree on {key!r} ({_shown(values)}); "
            "one tensor has one grid kind."
        )
    return values[0]


def _real(value, what, where):
    """A finite JSON number (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"{where}: {what} must be a number; got {_shown(value)}."
        )
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(
            f"{where}: {what} must be finite; got {_shown(value)} (a NaN or "
            "inf grid comes from a tensor that held NaN or inf)."
        )
    return number


def _whole(value, what, where):
    """A whole JSON number: 8 or 8.0, never 8.5, "8" or true."""
    number = _real(value, what, where)
    if number != int(number):
        raise ValueError(
            f"{where}: {what} must be a whole number; got {_shown(value)}."
        )
    return int(value)


def _reals(value, what, where, scalar_ok):
    """A non-empty list of finite numbers (or one number when allowed)."""
    if scalar_ok and not isinstance(value, list):
        return [_real(value, what, where)]
    if not isinstance(value, list) or not value:
        raise ValueError(
            f"{where}: {what} must be a non-empty list of numbers; got "
            f"{_shown(value)}."
        )
    return [_real(v, what, where) for v in value]


def _check_stated_range(entries, encoding, where):
    """A 0.6.1 entry's min and max, when given, must be its grid's."""
    lows = np.atleast_1d(encoding.min)
    highs = np.atleast_1d(encoding.max)
    steps = np.atleast_1d(encoding.delta)
    for channel, entry in enumerate(entries):
        for key, grid in (("min", lows), ("max", highs)):
            if key not in entry:
                continue
            stated = _real(entry[key], key, where)
            # A step of slack (and a little): writers round min and max to
            # float32, and AIMET writes a strict symmetric grid's max one
            # step above its top level (at 2^(b-1) steps).
            if abs(stated - grid[channel]) > steps[channel] * (1 + 1e-3):
                raise ValueError(
                    f"{where}: channel {channel}'s {key} is {stated!r}, but "
                    f"its scale and offset put it at {grid[channel]!r} "
                    "(min above max, or a range that does not match the "
                    "grid); fix or drop min and max."
                )


def _float_encoding(bitwidth, exponent_bits, scale, where):
    try:
        return encoding_lib.float_encoding(bitwidth, exponent_bits, scale)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _from_scale_offset(scale, offset, bitwidth, symmetric, where):
    if symmetric and isinstance(bitwidth, int) and 1 < bitwidth < 64:
        # A symmetric grid centres on zero (signed, strict) or starts at
        # it (unsigned); any other offset contradicts the flag, and the sim
        # would keep the symmetric grid, not the file's.
        half = 2 ** (bitwidth - 1)
        allowed = (-half, 1 - half, 0)
        if offset[0] not in allowed or any(o != offset[0] for o in offset):
            raise ValueError(
                f"{where}: a symmetric {bitwidth}-bit grid has offset "
                f"{-half} (or {1 - half} strict, 0 unsigned) on every "
                f"channel; got offset {offset[:4]}. Mark the grid "
                "asymmetric or fix the offset."
            )
    try:
        with np.errstate(over="ignore"):
            encoding = encoding_lib.encoding_from_scale_offset(
                scale if len(scale) > 1 else scale[0],
                offset if len(offset) > 1 else offset[0],
                bitwidth,
                symmetric,
            )
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if not np.all(np.isfinite([encoding.min, encoding.max])):
        raise ValueError(
            f"{where}: scale {scale[:4]} times the {bitwidth}-bit grid's "
            "levels overflows a float64 range; the scale is wrong."
        )
    return encoding


# ----------------------------------------------------------------- 1.0.0


def _to_1_0_0(name, enc):
    if enc.is_float:
        _scaled_float_refused(name, enc, "1.0.0")
        return {
            "name": name,
            "dtype": "FLOAT",
            "enc_type": "PER_TENSOR",
            "bw": enc.bitwidth,
        }
    _, _, delta, offset = _channels(enc)
    return {
        "name": name,
        "dtype": "INT",
        "enc_type": "PER_CHANNEL" if enc.is_per_channel else "PER_TENSOR",
        "bw": enc.bitwidth,
        "is_sym": bool(enc.is_symmetric),
        "scale": [float(d) for d in delta],
        "offset": [int(o) for o in offset],
    }


def _from_1_0_0(entry, where):
    dtype = _key(entry, "dtype", where)
    if dtype not in ("INT", "FLOAT"):
        raise ValueError(
            f"{where}: dtype {_shown(dtype)}; use 'INT' or 'FLOAT'."
        )
    bitwidth = _whole(_key(entry, "bw", where), "bw", where)
    if dtype == "FLOAT":
        return _float_encoding(bitwidth, None, None, where)
    enc_type = _key(entry, "enc_type", where)
    if enc_type not in ("PER_TENSOR", "PER_CHANNEL"):
        raise ValueError(
            f"{where}: enc_type {_shown(enc_type)} is not supported; "
            "aimet_keras reads PER_TENSOR and PER_CHANNEL encodings."
        )
    scale = _reals(_key(entry, "scale", where), "scale", where, False)
    offset = [
        _whole(o, "offset", where)
        for o in _reals(_key(entry, "offset", where), "offset", where, False)
    ]
    if enc_type == "PER_TENSOR" and len(scale) != 1:
        raise ValueError(
            f"{where}: a PER_TENSOR entry has one scale; this one has "
            f"{len(scale)}. Mark it PER_CHANNEL or give one scale."
        )
    if len(offset) != len(scale):
        raise ValueError(
            f"{where}: {len(scale)} scales but {len(offset)} offsets; give "
            "one offset per scale."
        )
    symmetric = _as_bool(_key(entry, "is_sym", where), where)
    return _from_scale_offset(scale, offset, bitwidth, symmetric, where)


# ----------------------------------------------------------------- 2.0.0


def _to_2_0_0(name, enc, axis):
    if enc.is_float:
        fmt = enc.float_format
        if fmt is None:
            return {"name": name, "output_dtype": "float32"}
        entry = {"name": name, "output_dtype": fmt.onnx_dtype}
        if not fmt.is_cast:
            scales = np.atleast_1d(np.asarray(enc.delta, np.float64))
            if scales.size > 1:
                entry["y_scale"] = [float(d) for d in scales]
                if axis is not None:
                    entry["axis"] = int(axis)
            else:
                entry["y_scale"] = float(scales[0])
        return entry
    if enc.bitwidth not in _ONNX_INT_WIDTHS:
        raise ValueError(
            f"Tensor {name!r}: 2.0.0 encodings need a bitwidth in "
            f"{_ONNX_INT_WIDTHS} (ONNX integer types); got {enc.bitwidth}. "
            "Use version 0.6.1 or 1.0.0."
        )
    _, _, delta, offset = _channels(enc)
    # AIMET's convention: the signed type marks a symmetric grid and its
    # zero point which one (0 full, -1 strict, -2**(b-1) unsigned), the
    # 0.6.1 offset moved onto the signed levels.
    shift = 2 ** (enc.bitwidth - 1) if enc.is_symmetric else 0
    zero_point = [int(-(o + shift)) for o in offset]
    entry = {
        "name": name,
        "output_dtype": f"{'int' if enc.is_symmetric else 'uint'}"
        f"{enc.bitwidth}",
    }
    if enc.is_per_channel:
        entry["y_scale"] = [float(d) for d in delta]
        if axis is not None:
            entry["axis"] = int(axis)
    else:
        entry["y_scale"] = float(delta[0])
        zero_point = zero_point[0]
    if np.any(zero_point):  # AIMET leaves a zero point of 0 out
        entry["y_zero_point"] = zero_point
    return entry


# 2.0.0's float output types: (bitwidth, exponent bits).
_FLOAT_TYPES = {
    "float32": (32, None),
    "float16": (16, 5),
    "bfloat16": (16, 8),
    "float8e4m3fn": (8, 4),
    "float8e5m2": (8, 5),
}


def _from_2_0_0(entry, where):
    dtype = _key(entry, "output_dtype", where)
    if isinstance(dtype, str) and dtype in _FLOAT_TYPES:
        bitwidth, exponent_bits = _FLOAT_TYPES[dtype]
        scale = None
        if bitwidth == 8:
            scale = _reals(
                _key(entry, "y_scale", where), "y_scale", where, True
            )
            scale = np.asarray(scale if len(scale) > 1 else scale[0])
        return _float_encoding(bitwidth, exponent_bits, scale, where)
    match = (
        re.fullmatch(r"(u?int)([0-9]{1,2})", dtype)
        if isinstance(dtype, str)
        else None
    )
    if match is None:
        raise ValueError(
            f"{where}: output_dtype {_shown(dtype)} is not an ONNX type 2.0.0 "
            f"files use (int8, uint8, ..., or one of {sorted(_FLOAT_TYPES)})."
        )
    signed = match.group(1) == "int"
    bitwidth = int(match.group(2))
    scale = _reals(_key(entry, "y_scale", where), "y_scale", where, True)
    zero_point = [
        _whole(z, "y_zero_point", where)
        for z in _reals(
            entry.get("y_zero_point", 0), "y_zero_point", where, True
        )
    ]
    if "axis" in entry:
        _whole(entry["axis"], "axis", where)
    if len(zero_point) == 1:
        zero_point = zero_point * len(scale)
    if len(zero_point) != len(scale):
        raise ValueError(
            f"{where}: {len(scale)} scales but {len(zero_point)} zero points; "
            "give one zero point, or one per scale."
        )
    shift = 2 ** (bitwidth - 1) if signed else 0
    offset = [-(z + shift) for z in zero_point]
    # AIMET's symmetric zero points: full, strict, unsigned (see the module
    # docstring); other signed zero points are the affine grid they say.
    symmetric = signed and any(
        all(z == level for z in zero_point) for level in (0, -1, -shift)
    )
    encoding = _from_scale_offset(scale, offset, bitwidth, symmetric, where)
    if symmetric and not np.any(zero_point):
        # int<bw> with zero point 0 does not say whether the lowest level
        # is used: None leaves it to the quantizer it is loaded into.
        encoding = dataclasses.replace(encoding, strict_symmetric=None)
    return encoding


# ----------------------------------------------------------------- files


def encodings_to_dict(
    param_encodings: dict[str, Encoding],
    activation_encodings: dict[str, Encoding],
    version: str = "0.6.1",
    quantizer_args: dict | None = None,
    excluded_layers: Sequence[str] = (),
    axes: dict[str, int] | None = None,
) -> dict:
    """Builds an AIMET encodings file's JSON structure.

    Args:
        param_encodings: ``{param name: Encoding}``, e.g.
            ``{"conv2d/kernel:0": enc}``.
        activation_encodings: ``{tensor name: Encoding}``.
        version: ``"0.6.1"`` (default), ``"1.0.0"`` or ``"2.0.0"``.
        quantizer_args: the ``quantizer_args`` section (global settings);
            omitted when None. Defaults to None.
        excluded_layers: layer names for the 1.0.0 ``excluded_layers`` key.
            Defaults to ().
        axes: ``{name: Keras channel axis}`` for per-channel 2.0.0 entries.
            Defaults to None.

    Returns:
        A JSON-serializable dict.

    Raises:
        ValueError: for an unknown version.

    Example:

    >>> enc = compute_encoding(-0.5, 1.3, 8)
    >>> d = encodings_to_dict({}, {"input_1:0": enc})
    >>> d["activation_encodings"]["input_1:0"][0]["offset"]
    -71
    """
    if version not in ENCODING_VERSIONS:
        raise ValueError(
            f"version={version!r} is not an AIMET encodings version; use one "
            f"of {ENCODING_VERSIONS}."
        )
    axes = axes or {}
    sections = {
        "param_encodings": param_encodings,
        "activation_encodings": activation_encodings,
    }
    data = {"version": version}
    if version == "2.0.0":
        # One list: a 2.0.0 file does not say which tensors are params.
        data["encodings"] = [
            _to_2_0_0(n, e, axes.get(n))
            for encodings in sections.values()
            for n, e in encodings.items()
        ]
    for key, encodings in sections.items():
        if version == "0.6.1":
            data[key] = {n: _to_0_6_1(n, e) for n, e in encodings.items()}
        elif version == "1.0.0":
            data[key] = [_to_1_0_0(n, e) for n, e in encodings.items()]
    if quantizer_args is not None:
        data["quantizer_args"] = dict(quantizer_args)
    if version == "1.0.0":
        data["excluded_layers"] = list(excluded_layers)
    return data


def encodings_from_dict(
    data: dict,
    source: str = "encodings",
    param_names: Sequence[str] | None = None,
) -> tuple[dict[str, Encoding], dict[str, Encoding]]:
    """Reads any supported layout into ``(param, activation)`` encodings.

    Accepts AIMET's 0.6.1, 1.0.0 and 2.0.0 files and its flat AdaRound
    parameter file (read as param encodings). A 2.0.0 file keeps params
    and activations in one ``"encodings"`` list; its entries named in
    ``param_names`` are params, the others activations.

    Args:
        data: the parsed JSON.
        source: a name for error messages (the file path). Defaults to
            ``"encodings"``.
        param_names: the model's parameter tensor names, which sort a
            2.0.0 file's entries. Defaults to None: every entry of a
            2.0.0 ``"encodings"`` list reads as an activation.

    Returns:
        A tuple ``(param_encodings, activation_encodings)`` of
        ``{name: Encoding}`` dicts.

    Raises:
        ValueError: naming the file and the tensor or key that is wrong:
            a value of the wrong JSON type (``"8"``, ``true`` or ``8.5``
            for a bit width), NaN or inf, a scale that is not positive, an
            offset off the grid or contradicting the symmetric flag, a
            0.6.1 min or max that its scale and offset do not give,
            per-channel lists of different lengths, a tensor named twice.

    Example:

    >>> enc = compute_encoding(-1.0, 1.0, 8, is_symmetric=True)
    >>> params, acts = encodings_from_dict(
    ...     encodings_to_dict({"dense/kernel:0": enc}, {}, version="1.0.0"))
    >>> int(params["dense/kernel:0"].offset)
    -128
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object at the top level.")
    version = data.get("version")
    if version is None and "param_encodings" not in data:
        # AIMET's AdaRound output: a flat {param name: [entries]} mapping.
        params = {
            n: _from_0_6_1(e, f"{source}: tensor {n!r}")
            for n, e in data.items()
        }
        return params, {}
    if version not in ENCODING_VERSIONS:
        raise ValueError(
            f"{source}: version {_shown(version)} is not supported; "
            f"aimet_keras reads {ENCODING_VERSIONS} and AdaRound's flat files."
        )
    sections = ("param_encodings", "activation_encodings")
    if version == "2.0.0":
        if "encodings" in data:
            return _one_list_2_0_0(data["encodings"], source, param_names)
        # Files aimet_keras wrote before it followed AIMET's layout split
        # the list into the two sections; they still read.
        if not any(key in data for key in sections):
            raise ValueError(
                f"{source}: a 2.0.0 encodings file needs an 'encodings' "
                f"list; this one has only {sorted(data)}."
            )
    result = []
    for key in sections:
        section = data.get(key, {} if version == "0.6.1" else [])
        if version == "0.6.1":
            if not isinstance(section, dict):
                raise ValueError(f"{source}: {key!r} must be an object.")
            items = section.items()
            reader = _from_0_6_1
        else:
            items = _named_entries(section, key, source)
            reader = _from_1_0_0 if version == "1.0.0" else _from_2_0_0
        result.append(
            {
                n: reader(e, f"{source}: tensor {n!r} in {key!r}")
                for n, e in items
            }
        )
    both = sorted(set(result[0]) & set(result[1]))
    if both:
        raise ValueError(
            f"{source}: tensor {both[0]!r} is in both 'param_encodings' and "
            "'activation_encodings'; a tensor is one or the other."
        )
    return tuple(result)


def _named_entries(section, key, source):
    """``[(name, entry)]`` of a list section; names must be unique."""
    if not isinstance(section, list):
        raise ValueError(f"{source}: {key!r} must be a list.")
    items, seen = [], set()
    for position, entry in enumerate(section):
        if not isinstance(entry, dict) or "name" not in entry:
            raise ValueError(
                f"{source}: entry {position} of {key!r} is not an object "
                "with a 'name'."
            )
        name = entry["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"{source}: entry {position} of {key!r} has name "
                f"{_shown(name)}; tensor names are non-empty strings."
            )
        if name in seen:
            raise ValueError(
                f"{source}: tensor {name!r} appears twice in {key!r}; "
                "which grid is meant is unclear."
            )
        seen.add(name)
        items.append((name, entry))
    return items


def _one_list_2_0_0(entries, source, param_names):
    """``(params, activations)`` of AIMET's 2.0.0 ``"encodings"`` list."""
    params = set(param_names or ())
    result = ({}, {})
    for name, entry in _named_entries(entries, "encodings", source):
        where = f"{source}: tensor {name!r}"
        result[name not in params][name] = _from_2_0_0(entry, where)
    return result


def write_encodings(path: str | os.PathLike, data: dict) -> pathlib.Path:
    """Writes an encodings dict as JSON, atomically.

    The JSON goes to a temporary file in the same folder, which replaces
    ``path`` only once complete, so a failure leaves no half-written file.

    Args:
        path: the ``.encodings`` file to write.
        data: a dict from :func:`encodings_to_dict`.

    Returns:
        The ``pathlib.Path`` written.

    Example:

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "model.encodings"
    >>> write_encodings(out, encodings_to_dict({}, {})).name
    'model.encodings'
    """
    path = pathlib.Path(path)
    text = json.dumps(data, indent=2, sort_keys=True)
    return staging_lib.write_atomically(path, text)


def read_encodings(
    path: str | os.PathLike,
    param_names: Sequence[str] | None = None,
) -> tuple[dict[str, Encoding], dict[str, Encoding]]:
    """Reads an encodings file into ``(param, activation)`` encodings.

    Args:
        path: an AIMET encodings JSON file (0.6.1, 1.0.0, 2.0.0 or
            AdaRound's flat parameter file).
        param_names: the model's parameter tensor names, which sort a
            2.0.0 file's single list (see :func:`encodings_from_dict`).

    Returns:
        A tuple of ``{name: Encoding}`` dicts, as :func:`encodings_from_dict`.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: for invalid JSON (see :func:`read_json`) or entries
            (see :func:`encodings_from_dict`), naming the file.
    """
    path = pathlib.Path(path)
    data = read_json(path, "Encodings file")
    return encodings_from_dict(data, str(path), param_names)


def read_json(path: str | os.PathLike, what: str) -> object:
    """Parses a JSON file strictly, every problem a ValueError naming it.

    Refuses bytes that are not UTF-8, nesting deeper than Python's
    recursion allows, and an object that gives one key twice (the JSON
    module would keep the last value silently).

    Args:
        path: the file.
        what: what the file is, for messages (``"Encodings file"``).

    Returns:
        The parsed JSON.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: for anything that is not valid JSON, naming the file.

    Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "twice.json"
    >>> _ = path.write_text('{"a": 1, "a": 2}')
    >>> read_json(path, "Config")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Config ... gives key 'a' twice in one object; ...
    """
    raw = pathlib.Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{what} {path} is not UTF-8 text (byte {error.start}): "
            "a JSON file is expected."
        ) from None

    def unique_keys(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except _DuplicateKey as error:
        raise ValueError(
            f"{what} {path} gives key {error.key!r} twice in one object; "
            "which value is meant is unclear."
        ) from None
    except RecursionError:
        raise ValueError(
            f"{what} {path} nests JSON deeper than Python can read."
        ) from None
    except ValueError as error:  # JSONDecodeError, or an int too long
        raise ValueError(f"{what} {path} is not valid JSON: {error}") from None


class _DuplicateKey(Exception):
    def __init__(self, key):
        super().__init__(key)
        self.key = key
