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

from selfsup.data.split import save_packed


def write_sample(archive: np.lib.npyio.NpzFile, per_class: int, out: Path) -> int:
    """The first `per_class` images of each class, by file name, as a packed .npz at `out`;
    the images written."""
    labels, names, offsets, jpeg = (archive[k] for k in ("labels", "names", "offsets", "jpeg"))
    keep = []
    for label in range(len(archive["class_names"])):
        rows = np.flatnonzero(labels == label)
        keep += sorted(rows, key=lambda i: names[i])[:per_class]
    blobs = [jpeg[offsets[i] : offsets[i + 1]].tobytes() for i in keep]
    class_names = [str(name) for name in archive["class_names"]]
    save_packed(out, blobs, labels[keep], class_names, names=names[keep])
    return len(keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cifar10_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    args = parser.parse_args()
    for split, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        out = args.out_dir / f"cifar10_sample_{split}.npz"
        with np.load(args.cifar10_dir / f"{split}_jpeg.npz") as archive:
            count = write_sample(archive, per_class, out)
        print(f"{out}: {count} images, {out.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
