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
import pathlib
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
    raise ValueError(f"{where}: expected True/False, got {value!r}.")


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
    first = entries[0]
    try:
        if first.get("dtype", "int") == "float":
            return encoding_lib.float_encoding(int(first["bitwidth"]))
        bitwidth = int(first["bitwidth"])
        symmetric = _as_bool(first.get("is_symmetric", "False"), where)
        scale = [float(e["scale"]) for e in entries]
        offset = [int(e["offset"]) for e in entries]
    except KeyError as error:
        raise ValueError(f"{where}: missing key {error}.") from None
    return _from_scale_offset(scale, offset, bitwidth, symmetric, where)


def _from_scale_offset(scale, offset, bitwidth, symmetric, where):
    try:
        return encoding_lib.encoding_from_scale_offset(
            scale if len(scale) > 1 else scale[0],
            offset if len(offset) > 1 else offset[0],
            bitwidth,
            symmetric,
        )
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


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
    try:
        if entry["dtype"] == "FLOAT":
            return encoding_lib.float_encoding(int(entry["bw"]))
        if entry["enc_type"] not in ("PER_TENSOR", "PER_CHANNEL"):
            raise ValueError(
                f"{where}: enc_type {entry['enc_type']!r} is not supported; "
                "aimet_keras reads PER_TENSOR and PER_CHANNEL encodings."
            )
        return _from_scale_offset(
            [float(s) for s in entry["scale"]],
            [int(o) for o in entry["offset"]],
            int(entry["bw"]),
            _as_bool(entry["is_sym"], where),
            where,
        )
    except KeyError as error:
        raise ValueError(f"{where}: missing key {error}.") from None


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
    try:
        dtype = entry["output_dtype"]
        if dtype in _FLOAT_TYPES:
            bitwidth, exponent_bits = _FLOAT_TYPES[dtype]
            scale = None
            if bitwidth == 8:
                scale = np.asarray(entry["y_scale"], np.float64)
            return encoding_lib.float_encoding(bitwidth, exponent_bits, scale)
        signed = dtype.startswith("int")
        bitwidth = int(dtype[3:] if signed else dtype[4:])
        scale = np.atleast_1d(entry["y_scale"]).astype(np.float64).tolist()
        zero_point = np.atleast_1d(entry.get("y_zero_point", 0)).astype(int)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{where}: bad 2.0.0 entry ({error}).") from None
    shift = 2 ** (bitwidth - 1) if signed else 0
    offset = (-(zero_point + shift)).tolist()
    # AIMET's symmetric zero points: full, strict, unsigned (see the module
    # docstring); other signed zero points are the affine grid they say.
    symmetric = signed and any(
        bool(np.all(zero_point == z)) for z in (0, -1, -shift)
    )
    if len(offset) == 1 and len(scale) > 1:
        offset = offset * len(scale)
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
        ValueError: naming the file and the tensor or key that is wrong.

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
            f"{source}: version {version!r} is not supported; aimet_keras "
            f"reads {ENCODING_VERSIONS} and AdaRound's flat files."
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
        ValueError: for invalid JSON or entries, naming the file.
    """
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    return encodings_from_dict(data, str(path), param_names)
