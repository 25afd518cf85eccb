"""Data layer: image sources (folders, .npz), fixed-size decoding, batching, batched views."""

from selfsup.data.decode import BadImageError
from selfsup.data.loader import DecodedImages, ImageStream, decode_all
from selfsup.data.sources import DataFormatError, ImageSource, open_source

__all__ = [
    "BadImageError",
    "DataFormatError",
    "DecodedImages",
    "ImageSource",
    "ImageStream",
    "decode_all",
    "open_source",
]
