"""Conversions without chatter: what TensorFlow and tf2onnx log, muted.

The TFLite converter, tf2onnx and TensorFlow's graph freezing log notices
that a user of aimet_keras cannot act on: deprecation notices for the
TensorFlow 1 APIs tf2onnx calls (``convert_variables_to_constants``,
``extract_sub_graph``), absl's "Please consider providing the
trackable_obj argument", the converter's "Statistics for quantized inputs
were expected" (the fake-quant ops carry them), tf2onnx's progress lines.
:func:`quiet_conversion` mutes them around aimet_keras's own calls into
those converters and puts everything back afterwards: levels, filters,
warning filters and environment are the caller's again once the block
ends, error or not.

Errors still show, and so do TensorFlow's other warnings and Python
warnings other than the listed notices.

What it cannot reach: TensorFlow's C++ logs (grappler, MLIR and XLA lines,
the oneDNN notice, TFLite's XNNPACK line) are written to the process's
stderr from C++, at a level TensorFlow reads from ``TF_CPP_MIN_LOG_LEVEL``
once, when it loads. A program sets it before importing TensorFlow
(``examples/quickstart.py`` does); a library cannot.
"""

from __future__ import annotations

import contextlib
import logging
import os
import typing
import warnings

if typing.TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["quiet_conversion"]

# Loggers that log errors only while a conversion runs. (absl's has a level
# of its own, WARNING, once absl's flags are parsed: it is raised all the
# same, and set back.)
MUTED_LOGGERS = ("absl", "tf2onnx")

# Python warnings the converters raise on every export, none actionable.
MUTED_WARNINGS = (
    # TFLite: input statistics come from the fake-quant ops' ranges.
    r"Statistics for quantized inputs were expected",
)

# Importing tf2onnx.convert sets TF_CPP_MIN_LOG_LEVEL=3 in os.environ
# (tf2onnx/convert.py): hidden C++ errors in every subprocess started later.
_RESTORED_ENV = ("TF_CPP_MIN_LOG_LEVEL",)

_DEPRECATION_NOTICE = "is deprecated and will be removed"


class _DropDeprecationNotices(logging.Filter):
    """Drops TensorFlow's "X (from Y) is deprecated" log records."""

    def filter(self, record):
        return _DEPRECATION_NOTICE not in record.getMessage()


def _tf_deprecation_module():
    """TensorFlow's deprecation module, when it has the switch we use."""
    try:
        from tensorflow.python.util import deprecation
    except ImportError:
        return None
    if not hasattr(deprecation, "_PRINT_DEPRECATION_WARNINGS"):
        return None
    return deprecation


@contextlib.contextmanager
def quiet_conversion() -> Iterator[None]:
    """Mutes TensorFlow's, tf2onnx's and absl's notices inside the block.

    * TensorFlow deprecation notices are not printed (TensorFlow's own
      switch, as ``deprecation.silence()`` sets it: a deprecated call the
      user makes later still warns once), and a filter on the
      ``tensorflow`` logger drops any that get through;
    * the ``absl`` and ``tf2onnx`` loggers log errors only;
    * the converters' notices in :data:`MUTED_WARNINGS` are ignored;
    * ``TF_CPP_MIN_LOG_LEVEL`` in ``os.environ`` is restored (tf2onnx sets
      it on import).

    Everything is restored when the block ends, also on an error.

    Example:

    >>> before = logging.getLogger("absl").level
    >>> with quiet_conversion():
    ...     logging.getLogger("absl").level == logging.ERROR
    True
    >>> logging.getLogger("absl").level == before
    True
    """
    environment = {name: os.environ.get(name) for name in _RESTORED_ENV}
    levels = {
        logger: logger.level
        for logger in map(logging.getLogger, MUTED_LOGGERS)
        if logger.getEffectiveLevel() < logging.ERROR
    }
    tf_logger = logging.getLogger("tensorflow")
    drop = _DropDeprecationNotices()
    deprecation = _tf_deprecation_module()
    printing = deprecation and deprecation._PRINT_DEPRECATION_WARNINGS
    try:
        for logger in levels:
            logger.setLevel(logging.ERROR)
        tf_logger.addFilter(drop)
        if deprecation is not None:
            deprecation._PRINT_DEPRECATION_WARNINGS = False
        with warnings.catch_warnings():
            for message in MUTED_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        if deprecation is not None:
            deprecation._PRINT_DEPRECATION_WARNINGS = printing
        tf_logger.removeFilter(drop)
        for logger, level in levels.items():
            logger.setLevel(level)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
