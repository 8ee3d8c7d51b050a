"""Exporters: AIMET's encodings files (more formats follow)."""

from aimet_keras.export.encodings import ENCODING_VERSIONS
from aimet_keras.export.encodings import encodings_from_dict
from aimet_keras.export.encodings import encodings_to_dict
from aimet_keras.export.encodings import read_encodings
from aimet_keras.export.encodings import write_encodings

__all__ = [
    "ENCODING_VERSIONS",
    "encodings_from_dict",
    "encodings_to_dict",
    "read_encodings",
    "write_encodings",
]
