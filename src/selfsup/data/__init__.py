"""Data layer: image sources (folders, .npz, tar shards), fixed-size decoding, batching,
batched views."""

from selfsup.data.decode import BadImageError
from selfsup.data.formats import open_source
from selfsup.data.loader import DecodedImages, ImageStream, decode_all
from selfsup.data.sources import DataFormatError, ImageSource

__all__ = [
    "BadImageError",
    "DataFormatError",
    "DecodedImages",
    "ImageSource",
    "ImageStream",
    "decode_all",
    "open_source",
]
