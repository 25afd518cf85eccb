"""Build the CIFAR-10 sample bundled with selfsup for `selfsup demo`.

Usage: python tools/make_demo_sample.py CIFAR10_DIR OUT_DIR [--train-per-class 500]
                                        [--test-per-class 100]

CIFAR10_DIR holds `train_jpeg.npz` and `test_jpeg.npz` (packed JPEG: `jpeg` bytes, `offsets`,
`labels`, `names`, `class_names`). The first N images of each class (in file-name order) are
copied with their JPEG bytes unchanged into OUT_DIR/cifar10_sample_{train,test}.npz.
"""

import argparse
from pathlib import Path

import numpy as np


def take_per_class(archive: np.lib.npyio.NpzFile, per_class: int) -> dict[str, np.ndarray]:
    labels, names, offsets, jpeg = (archive[k] for k in ("labels", "names", "offsets", "jpeg"))
    keep = []
    for label in range(len(archive["class_names"])):
        rows = np.flatnonzero(labels == label)
        keep += sorted(rows, key=lambda i: names[i])[:per_class]
    blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in keep]
    new_offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return {
        "jpeg": np.concatenate(blobs),
        "offsets": new_offsets,
        "labels": labels[keep],
        "names": names[keep],
        "class_names": archive["class_names"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cifar10_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        with np.load(args.cifar10_dir / f"{split}_jpeg.npz") as archive:
            sample = take_per_class(archive, per_class)
        out = args.out_dir / f"cifar10_sample_{split}.npz"
        np.savez(out, **sample)  # JPEG bytes do not compress further
        print(f"{out}: {len(sample['labels'])} images, {out.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
