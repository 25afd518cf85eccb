"""`selfsup data pack`: any image source written as WebDataset tar shards.

Each sample is `KEY.EXT` (the image's own encoded bytes, so shards decode to exactly the pixels
of the source, EXIF orientation included; images stored decoded are written as lossless PNG)
and `KEY.cls` when the source has labels. Shards are `PREFIX-000000.tar`, ... with
`shard_size` samples each, written by `webdataset.TarWriter` under a temporary name and renamed
when whole, so an interrupted pack leaves no shard half-written.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from selfsup.data.shards import require_webdataset
from selfsup.data.sources import DataFormatError, FilesSource, ImageSource, NpzSource


def stored_image(source: ImageSource, index: int) -> tuple[str, bytes]:
    """(extension, bytes) of image `index` as stored; PNG for images stored decoded."""
    encoded = source.encoded(index)
    if encoded is not None:
        if isinstance(source, FilesSource):
            ext = source.files[index].suffix.lower().lstrip(".")
        else:
            ext = "jpg" if isinstance(source, NpzSource) else "bin"
        return ("jpg" if ext == "jpeg" else ext), encoded
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(source.load(index))).save(buffer, format="PNG")
    return "png", buffer.getvalue()


def pack(
    source: ImageSource,
    out: str | Path,
    *,
    shard_size: int = 1000,
    prefix: str = "train",
    progress: bool = True,
) -> list[Path]:
    """Write every image of `source` (with its label) into shards under `out`; the shards."""
    from selfsup.outputs import written_atomically

    webdataset = require_webdataset()
    out = Path(out)
    if out.is_dir() and any(out.glob("*.tar")):
        raise DataFormatError(
            f"{out}: already holds .tar files; read as one dataset they would mix with the new "
            "shards. Choose an empty --out or remove them"
        )
    out.mkdir(parents=True, exist_ok=True)
    count = len(source)
    width = max(6, len(str((count - 1) // shard_size)))
    bar = tqdm(total=count, desc=f"packing {source.path.name}", unit="img", disable=not progress)
    shards = []
    for first in range(0, count, shard_size):
        shard = out / f"{prefix}-{first // shard_size:0{width}d}.tar"
        with (
            written_atomically(shard) as temporary,
            open(temporary, "wb") as stream,
            webdataset.TarWriter(stream) as writer,
        ):
            for index in range(first, min(first + shard_size, count)):
                ext, data = stored_image(source, index)
                sample = {"__key__": f"{index:08d}", ext: data}
                if source.labels is not None:
                    sample["cls"] = str(int(source.labels[index])).encode()
                writer.write(sample)
                bar.update(1)
        shards.append(shard)
    bar.close()
    return shards


def shard_pattern(shards: list[Path]) -> str:
    """The brace pattern naming `shards` (PREFIX-NNNNNN.tar, numbered from 0), for --data."""
    first, last = shards[0], shards[-1]
    stem, number = first.stem.rsplit("-", 1)
    if len(shards) == 1:
        return str(first)
    return str(first.parent / f"{stem}-{{{number}..{last.stem.rsplit('-', 1)[1]}}}.tar")
