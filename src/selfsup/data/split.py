"""`selfsup data split`: a labelled source as a training and a held-out packed `.npz`.

The evaluation commands take `--data` and `--test` apart, so that a probe is never scored on
images it was fitted (or had its L2 strength chosen) on. Data that comes as one labelled folder
needs a held-out part first: this holds out N images (or a fraction) of every class, drawn at
random with a seed, or the last N of each class in the source's order (`last=True`), and
writes both parts as packed `.npz` files that keep every image's encoded bytes, so they decode
to exactly the source's pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from selfsup.data.pack import stored_image
from selfsup.data.sources import DataFormatError, ImageSource
from selfsup.outputs import save_npz


def save_packed(
    path: Path,
    blobs: list[bytes],
    labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    **arrays: np.ndarray,
) -> None:
    """Encoded images `blobs` as a packed `.npz` (`jpeg` bytes, `offsets`, and `labels`,
    `class_names` and `arrays` where given), replaced whole: a writer stopped halfway, or two
    writing the same file, leave a whole file."""
    sizes = [len(blob) for blob in blobs]
    packed = {
        "jpeg": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        **({} if labels is None else {"labels": labels}),
        **({} if class_names is None else {"class_names": np.array(class_names)}),
        **arrays,
    }
    save_npz(path, packed)  # encoded images do not compress further


def write_rows(source: ImageSource, rows: np.ndarray, path: Path, progress: bool = False) -> None:
    """Images `rows` of `source` with their labels and class names as an `.npz` at `path`:
    packed (their encoded bytes; PNG for images stored decoded), or decoded beside their
    masks where the source has masks (which only decoded images carry)."""
    labels = {} if source.labels is None else {"labels": source.labels[rows]}
    names = source.class_names if source.names_given else None
    if source.masks is not None:
        arrays = {"images": source.decoded_array()[rows], "masks": source.masks[rows]}
        save_npz(path, {**arrays, **labels, **({"class_names": names} if names else {})})
        return
    bar = tqdm(rows, desc=f"writing {path.name}", unit="img", disable=not progress, leave=False)
    blobs = [stored_image(source, int(index))[1] for index in bar]
    save_packed(path, blobs, labels.get("labels"), names)


def holdout_rows(
    labels: np.ndarray,
    holdout: float,
    seed: int | None = 0,
    where: str = "data",
    class_names: list[str] | None = None,
) -> np.ndarray:
    """The rows held out of every class: `holdout` images of it (a whole number), or that
    fraction of it (under 1, rounded, at least one), drawn with `seed`, or the class's last
    ones in source order when `seed` is None. Sorted. A class that would keep no training
    image is an error naming it (`where`: the data's name)."""
    rng = None if seed is None else np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(holdout) if holdout >= 1 else max(1, round(holdout * len(members)))
        if count >= len(members):
            raise DataFormatError(
                f"{where}: class {class_names[label] if class_names else label} has "
                f"{len(members)} images; holding out {count} would "
                "leave it none to train on (lower the hold-out)"
            )
        held.append(members[-count:] if rng is None else rng.choice(members, count, False))
    return np.sort(np.concatenate(held))


def split_source(
    source: ImageSource, out: Path, holdout: float, seed: int | None = 0, progress: bool = True
) -> dict[Path, int]:
    """`source` as `out`/train.npz and `out`/val.npz, `holdout_rows` of it in the second;
    the images each holds, by path."""
    if source.labels is None:
        raise DataFormatError(
            f"{source.path}: has no labels; a split holds out images of every class (an "
            "ImageFolder tree, an .npz with `labels` or shards with `.cls`)"
        )
    if holdout <= 0 or (holdout > 1 and holdout != int(holdout)):
        raise DataFormatError(
            f"hold-out {holdout:g}: must be a whole count per class (1 or more) or a fraction "
            "under 1"
        )
    held = holdout_rows(source.labels, holdout, seed, str(source.path), source.class_names)
    kept = np.setdiff1d(np.arange(len(source)), held)
    paths = Path(out) / "train.npz", Path(out) / "val.npz"
    for path, rows in zip(paths, (kept, held)):
        write_rows(source, rows, path, progress)
    return {paths[0]: len(kept), paths[1]: len(held)}
