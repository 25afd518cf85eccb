"""The files of transitive invariance, read where training needs them: a patch dataset
(`selfsup video patches`) and the graph over it (`selfsup graph build`), which records a
fingerprint of its patches so training refuses a graph built for other patches.

Reading lives here, below the tasks; building the graph (which embeds patches with a
backbone) lives in selfsup.graph.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.outputs import input_file

EDGE_TYPES = ("inter", "intra", "transitive")
GRAPH_NAME = "graph.npz"  # the graph's name inside a folder given as --out
PATCHES_NAME = "patches.npz"  # the combined copy `selfsup video patches` writes (small sets)
MANIFEST_NAME = "manifest.json"  # the index of its per-video shards, one patch set
GRAPH_KEYS = {"pairs", "pair_type", "cliques", "clusters", "patches_fingerprint", "patch_count"}


class GraphError(ValueError):
    """A graph or patch file is unusable; the message names it and why."""


@dataclass
class PatchSet:
    images: np.ndarray  # (N, P, P, 3) uint8
    track: np.ndarray  # (N,) track id; an image without a track is its own track
    frame: np.ndarray  # (N,) frame index (0 without video)
    video: np.ndarray  # (N,)
    path: Path
    labels: np.ndarray | None = None  # class labels, when the file has them (for purity)

    def fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=12)
        for array in (self.track, self.frame, self.video):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(str(self.images.shape).encode())
        digest.update(
            np.ascontiguousarray(self.images[:: max(1, len(self.images) // 64)]).tobytes()
        )
        return digest.hexdigest()


def load_patches(path: str | Path) -> PatchSet:
    """A patch dataset: the folder `selfsup video patches` wrote (its shards, through their
    manifest), a `patches.npz`, or a folder holding one. Plain
    image .npz files (`images` only, e.g. CIFAR decoded) load too, each image its own track.
    Optional class labels (`labels`, or `patch_labels` with -1 for unknown) give `graph stats`
    its purity figures."""
    if Path(path).is_dir() and (Path(path) / MANIFEST_NAME).is_file():
        return load_shards(Path(path))
    file = input_file(path, PATCHES_NAME)
    if not file.is_file():
        raise GraphError(
            f"{file}: no patch dataset there (expected the folder `selfsup video patches` "
            f"wrote, or the {PATCHES_NAME} in it)"
        )
    with open_npz(file, "a patch dataset (`selfsup video patches`)") as data:
        if "images" not in data:
            raise GraphError(f"{file}: no `images` array; keys are {', '.join(data.files)}")
        images = data["images"]
        n = len(images)
        track = data["track"] if "track" in data else np.arange(n)
        frame = data["frame"] if "frame" in data else np.zeros(n, np.int64)
        video = data["video"] if "video" in data else np.zeros(n, np.int64)
        # `patch_labels` (-1: unknown) serves mixed sets, e.g. video patches beside labelled
        # images, whose `labels` the image loaders would refuse; only statistics read them.
        key = next((k for k in ("labels", "patch_labels") if k in data), None)
        labels = data[key].astype(np.int64) if key else None
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise GraphError(
            f"{file}: `images` must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}"
        )
    for name, array in (("track", track), ("frame", frame), ("video", video)):
        if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
            raise GraphError(
                f"{file}: `{name}` has {array.size} entries of {array.dtype} for {n} images; "
                "expected one integer per image"
            )
    return PatchSet(
        images, track.astype(np.int64), frame.astype(np.int64), video.astype(np.int64), file, labels
    )


def load_shards(folder: Path) -> PatchSet:
    """The per-video shards listed in `folder/manifest.json` as one patch set, the same arrays
    the combined `patches.npz` holds: tracks numbered on from shard to shard, `video` the
    index of the shard's video among the manifest's videos (the chunks of a long video are
    shards of one video)."""
    manifest_file = folder / MANIFEST_NAME
    try:
        shards = json.loads(manifest_file.read_text())["shards"]
    except (ValueError, KeyError, TypeError) as err:
        raise GraphError(f"{manifest_file}: not a patch manifest ({err})") from err
    images, track, frame, video, offset, videos = [], [], [], [], 0, {}
    for index, shard in enumerate(shards):
        file = folder / shard["file"]
        with open_npz(file, "a patch shard (`selfsup video patches`)") as data:
            if len(data["track"]) != shard["patches"]:
                raise GraphError(
                    f"{file}: {len(data['track'])} patches, but {manifest_file} lists "
                    f"{shard['patches']}; the folder was changed after it was written"
                )
            images.append(data["images"])
            track.append(data["track"] + offset)
            frame.append(data["frame"])
            number = videos.setdefault(shard.get("video", index), len(videos))
            video.append(np.full(len(data["track"]), number, np.int64))
        offset += shard["tracks"]
    if not shards:
        raise GraphError(f"{manifest_file}: lists no shards")
    return PatchSet(
        np.concatenate(images),
        np.concatenate(track).astype(np.int64),
        np.concatenate(frame).astype(np.int64),
        np.concatenate(video),
        folder,
    )


def open_npz(file: Path, what: str):
    """np.load of an .npz, or GraphError naming the file and what it should have been."""
    try:
        return np.load(file)
    except PermissionError as err:
        raise GraphError(f"{file}: cannot be read ({err.strerror})") from err
    except Exception as err:  # OSError, EOFError (empty file), BadZipFile (cut short), ...
        raise GraphError(f"{file}: not {what}; it cannot be read as an .npz ({err})") from err


def find_graph(path: str | Path) -> Path | None:
    """The graph file `path` names (see selfsup.outputs), or None when it names no graph."""
    file = input_file(path, GRAPH_NAME)
    if not file.is_file():
        return None
    try:
        with np.load(file) as data:
            return file if set(data.files) >= GRAPH_KEYS else None
    except Exception:  # unreadable: not a graph (the caller reads it as what else it may be)
        return None


def load_graph(
    path: str | Path, patches: PatchSet | None = None, keys: tuple[str, ...] | None = None
) -> dict:
    """A saved graph (only its arrays `keys`, when given); with `patches`, check it was
    built for them."""
    file = input_file(path, GRAPH_NAME)
    if not file.is_file():
        raise GraphError(
            f"{path}: no graph there (expected a graph file written by `selfsup graph build`, "
            f"or a folder holding {GRAPH_NAME})"
        )
    with open_npz(file, "a graph file (written by `selfsup graph build`)") as data:
        if not set(data.files) >= GRAPH_KEYS:
            raise GraphError(
                f"{file}: not a graph file (written by `selfsup graph build`); it holds "
                f"{', '.join(data.files) or 'no arrays'}"
            )
        graph = {key: data[key] for key in data.files if keys is None or key in keys}
    if patches is not None and str(graph["patches_fingerprint"]) != patches.fingerprint():
        raise GraphError(
            f"{file} was built for other patches than {patches.path} ({int(graph['patch_count'])}"
            f" patches then, {len(patches.images)} now, or different content); rebuild it"
        )
    return graph
