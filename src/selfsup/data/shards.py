"""WebDataset tar shards as an image source: each shard indexed once, then read by offset.

A shard is an uncompressed tar of samples in webdataset's convention: the members of one sample
share a key (the name up to the first dot of its basename), an image member `KEY.jpg` (or
`.png`, ... any of IMAGE_SUFFIXES) and optionally `KEY.cls`, the class index as integer text.
`selfsup data pack` writes such shards with `webdataset.TarWriter`; shards written by
webdataset's own tools read the same way.

Why an index rather than webdataset's streaming iterator: training data is step-indexed (the
batch of step t is a function of (seed, step, rank), `selfsup.data.order`), so a resumed run
continues at the right sample and the ranks and DataLoader workers never share one. A stream
of shards can only be split by shard and shuffled within a buffer, which gives neither. So the
members' headers are read once (names, data offsets, sizes and the `.cls` labels: one pass over
the tar headers, cached by shard path, size and modification time), and a sample is then one
`pread` of its image bytes at a known offset: the shards become one source of N samples,
ordered by the same seeded permutation as a folder or an .npz.

The shard list comes from a path: one `.tar`, a folder of `.tar` files (sorted), or a pattern
with brace ranges (`train-{000000..001023}.tar`, expanded as webdataset does) and/or glob
wildcards.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import tarfile
from pathlib import Path

import numpy as np

from selfsup.data.decode import BadImageError, open_image
from selfsup.data.sources import (
    IMAGE_SUFFIXES,
    MAX_CLASSES,
    DataFormatError,
    ImageSource,
    image_files,
)

EXTRA = "pip install 'selfsup[webdataset]'"

# Bumped when the index layout changes, so an older cached index is not read.
INDEX_VERSION = 1


def require_webdataset():
    """The webdataset package, or DataFormatError naming the extra that installs it."""
    try:
        import webdataset
    except ImportError as err:
        raise DataFormatError(
            f"reading or writing tar shards needs the webdataset package: {EXTRA}"
        ) from err
    return webdataset


def is_shard_path(path: str | Path) -> bool:
    """Whether `path` names shards: a .tar file, a folder of .tar files (and no images or
    class folders, which would make it an image folder), or, when no such file exists, a
    name ending in .tar or a pattern (`{..}`, `*`, `?`, `[`)."""
    text, found = str(path), Path(path)
    if found.is_file():
        return text.lower().endswith(".tar")
    if found.is_dir():
        return (
            any(found.glob("*.tar"))
            and not image_files(found)
            and not any(d.is_dir() and not d.name.startswith(".") for d in found.iterdir())
        )
    return text.lower().endswith(".tar") or any(c in text for c in "{*?[")


def shard_paths(spec: str | Path) -> list[Path]:
    """The shards `spec` names, in order, or DataFormatError: a folder's `.tar` files sorted,
    a pattern's brace ranges expanded (`{000..003}`) and wildcards matched."""
    text = str(spec)
    folder = Path(text)
    if folder.is_dir():
        shards = sorted(folder.glob("*.tar"))
        if not shards:
            raise DataFormatError(f"{folder}: no .tar shards in the folder")
        return shards
    if folder.is_file() or not any(c in text for c in "{*?["):
        if not folder.exists():
            raise DataFormatError(f"{folder}: does not exist")
        return [folder]
    from braceexpand import braceexpand  # webdataset's dependency

    require_webdataset()
    names = list(braceexpand(text))
    shards: list[Path] = []
    for name in names:
        if any(c in name for c in "*?["):
            shards += sorted(Path(p) for p in glob.glob(name))
        elif Path(name).exists():
            shards.append(Path(name))
        elif len(names) > 1:
            # An explicit range names every shard: a gap is a shard lost in a copy.
            raise DataFormatError(f"{name}: does not exist ({text} names {len(names)} shards)")
    if not shards:
        raise DataFormatError(f"{text}: the pattern matches no files")
    return shards


def _cache_file(shard: Path) -> Path:
    from selfsup.outputs import default_cache_dir

    stat = shard.stat()
    digest = hashlib.blake2b(digest_size=10)
    digest.update(f"{shard.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{INDEX_VERSION}".encode())
    return default_cache_dir() / "shard_index" / f"{digest.hexdigest()}.npz"


def index_shard(shard: Path, base_plus_ext) -> dict[str, np.ndarray]:
    """One pass over the tar headers of `shard`: per sample with an image, its image member's
    name, data offset and size, and its `.cls` label (-1 without), or DataFormatError naming
    the shard (and member) when the tar is cut short, unreadable or holds no images."""
    size = shard.stat().st_size
    if size == 0:
        raise DataFormatError(f"{shard}: empty file (0 bytes)")
    samples: dict[str, dict] = {}
    end = 0
    try:
        with tarfile.open(shard, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                end = info.offset_data + info.size
                if end > size:
                    raise DataFormatError(
                        f"{shard}: truncated tar: member {info.name} ends at byte {end} but the "
                        f"file has {size} bytes"
                    )
                key, ext = base_plus_ext(info.name)
                if key is None:
                    continue  # a name without an extension belongs to no sample field
                sample = samples.setdefault(key, {})
                ext = ext.lower()
                if ext == "cls":
                    sample["cls"] = _label(tar.extractfile(info).read(), shard, info.name)
                elif "." + ext in IMAGE_SUFFIXES and "name" not in sample:
                    sample.update(name=info.name, offset=info.offset_data, size=info.size)
    except tarfile.TarError as err:
        raise DataFormatError(f"{shard}: not a readable uncompressed tar ({err})") from err
    # A tar ends with two zero blocks; without them it was cut at a member boundary.
    if size < -(-end // 512) * 512 + 1024:
        raise DataFormatError(
            f"{shard}: truncated tar: no end-of-archive marker after its last member"
        )
    images = [s for s in samples.values() if "name" in s]
    if not images:
        raise DataFormatError(
            f"{shard}: holds no image samples (looked for KEY{', KEY'.join(IMAGE_SUFFIXES)} "
            "members)"
        )
    return {
        "names": np.array([s["name"].encode() for s in images]),
        "offsets": np.array([s["offset"] for s in images], dtype=np.int64),
        "sizes": np.array([s["size"] for s in images], dtype=np.int64),
        "labels": np.array([s.get("cls", -1) for s in images], dtype=np.int64),
    }


def _label(text: bytes, shard: Path, member: str) -> int:
    try:
        label = int(text.decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise DataFormatError(
            f"{shard}: {member}: a .cls member must hold a class index as integer text, got "
            f"{text[:20]!r}"
        ) from None
    if not 0 <= label < MAX_CLASSES:
        raise DataFormatError(
            f"{shard}: {member}: label {label}: labels are class indices from 0 to "
            f"{MAX_CLASSES - 1:,}"
        )
    return label


def cached_index(shard: Path, base_plus_ext) -> dict[str, np.ndarray]:
    """`index_shard`, read from the cache when this shard (same path, size, modification
    time) was indexed before; written atomically, so ranks indexing at once do not clash."""
    from selfsup.outputs import save_npz

    cache = _cache_file(shard)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except Exception:  # a cache file from a crashed writer: index again
            pass
    index = index_shard(shard, base_plus_ext)
    with contextlib.suppress(OSError):  # an unwritable cache costs the next run a pass only
        save_npz(cache, index)
    return index


class ShardSource(ImageSource):
    """The image samples of tar shards, read by offset; names are `SHARD:MEMBER`."""

    def __init__(self, spec: str | Path):
        webdataset = require_webdataset()
        self.path = Path(str(spec))
        self.shards = shard_paths(spec)
        split = webdataset.tariterators.base_plus_ext  # the key.ext rule webdataset reads by
        indices = [cached_index(shard, split) for shard in self.shards]
        counts = [len(index["offsets"]) for index in indices]
        self.shard_of = np.repeat(np.arange(len(self.shards), dtype=np.int32), counts)
        self.members = np.concatenate([index["names"] for index in indices])
        self.offsets = np.concatenate([index["offsets"] for index in indices])
        self.sizes = np.concatenate([index["sizes"] for index in indices])
        labels = np.concatenate([index["labels"] for index in indices])
        if (labels >= 0).any():
            missing = np.flatnonzero(labels < 0)
            if len(missing):
                raise DataFormatError(
                    f"{self.name(int(missing[0]))}: has no .cls label but other samples do "
                    f"({len(missing)} of {len(labels)} lack one)"
                )
            self.labels = labels
            self.class_names = [str(i) for i in range(int(labels.max()) + 1)]
        self._files: tuple[int, dict[int, int]] | None = None  # (pid, shard -> descriptor)

    def __len__(self) -> int:
        return len(self.offsets)

    def name(self, index: int) -> str:
        return f"{self.shards[self.shard_of[index]]}:{self.members[index].decode()}"

    def _descriptor(self, shard: int) -> int:
        """An open descriptor of `shard`, one per process: a DataLoader worker forked from
        the trainer opens its own (pread keeps no shared file position either way)."""
        if self._files is None or self._files[0] != os.getpid():
            self._files = (os.getpid(), {})
        files = self._files[1]
        if shard not in files:
            files[shard] = os.open(self.shards[shard], os.O_RDONLY)
        return files[shard]

    def encoded(self, index: int) -> bytes | None:
        try:
            return self._read(index)
        except (OSError, BadImageError):
            return None

    def _read(self, index: int) -> bytes:
        size = int(self.sizes[index])
        data = os.pread(self._descriptor(int(self.shard_of[index])), size, int(self.offsets[index]))
        if len(data) < size:
            raise BadImageError(
                self.name(index), f"cut short: {len(data)} of {size} bytes (the tar shrank?)"
            )
        return data

    def load(self, index: int, min_size: int | None = None) -> np.ndarray:
        try:
            data = self._read(index)
        except OSError as err:
            raise BadImageError(self.name(index), f"cannot be read ({err})") from err
        return open_image(data, self.name(index), min_size)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_files": None}  # descriptors do not travel to a worker

    def describe(self) -> str:
        labels = f", {len(self.class_names)} classes" if self.labels is not None else ""
        return f"ShardSource {self.path} ({len(self.shards)} shards, {len(self)} images{labels})"
