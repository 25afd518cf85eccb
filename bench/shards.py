"""Reading tar shards against the same images as a folder of files and as a packed-JPEG .npz:
images/s of stream-mode batches (DataLoader workers decode and fit them), each form timed in
turn, rounds interleaved so a change in the machine's load falls on all three alike.

    python bench/shards.py [--quick] [--workers 2] [--rounds 3]

Two image sets: the bundled CIFAR-10 sample (32 px: per-sample overhead dominates) and 600
JPEGs of 256x320 px fitted to 224 (decoding dominates); also the shards' first open against
a cached one. Writes bench/results/shards.json.
"""

from __future__ import annotations

import io
import os
import shutil
import statistics
import time

import numpy as np
from harness.record import ASSETS, WORK, machine, parser, results_file, say, write_json
from PIL import Image

from selfsup.data import open_source
from selfsup.data.pack import pack, shard_pattern
from selfsup.data.split import save_packed
from selfsup.data.throughput import decode_throughput


def photo_npz(path, count: int, height: int = 256, width: int = 320) -> None:
    """`count` smooth random JPEGs (quality 90, ~20 KB) as a packed-JPEG .npz with labels."""
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(count):
        coarse = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        blobs.append(buffer.getvalue())
    save_packed(path, blobs, labels=np.arange(count) % 10)


def as_folder(npz, folder) -> None:
    """The .npz's JPEGs as an ImageFolder tree: the same bytes, one file each."""
    source = open_source(npz)
    for index in range(len(source)):
        path = folder / str(source.labels[index]) / f"{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source.encoded(index))


def prepare(name: str, npz, work) -> dict[str, str]:
    """npz, folder and shards (1000 per shard) of one image set: form -> --data path."""
    folder, shards = work / name / "folder", work / name / "shards"
    shutil.rmtree(work / name, ignore_errors=True)
    as_folder(npz, folder)
    written = pack(open_source(npz), shards, shard_size=1000, progress=False)
    return {"npz": str(npz), "folder": str(folder), "shards": shard_pattern(written)}


def index_times(pattern: str) -> dict:
    """Seconds to open the shards with no cached index (every header read), then cached."""
    os.environ["SELFSUP_CACHE"] = str(WORK / "shards_bench_cache" / str(time.time_ns()))
    start = time.perf_counter()
    source = open_source(pattern)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    open_source(pattern)
    return {
        "images": len(source),
        "first_open_s": cold,
        "cached_open_s": time.perf_counter() - start,
    }


def main() -> None:
    p = parser(__doc__, "--quick", "--results")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per form (default 3)")
    args = p.parse_args()
    work = WORK / "shards_bench"
    photos = work / "photos.npz"
    photos.parent.mkdir(parents=True, exist_ok=True)
    photo_npz(photos, 120 if args.quick else 600)
    sets = {
        "cifar_sample_32px": (
            ASSETS / "cifar10_sample_train.npz",
            32,
            1024 if args.quick else 4096,
        ),
        "photos_256x320_to_224px": (photos, 224, 120 if args.quick else 512),
    }
    results: dict = {"machine": {**machine(), "load_average_1_5_15": os.getloadavg()}}
    results["settings"] = {"workers": args.workers, "rounds": args.rounds, "batch_size": 64}
    for name, (npz, size, images) in sets.items():
        paths = prepare(name, npz, work)
        rates: dict[str, list[float]] = {form: [] for form in paths}
        for _ in range(args.rounds):
            for form, path in paths.items():
                rate = decode_throughput(
                    path, size, decode="cpu", workers=args.workers, max_images=images
                )
                rates[form].append(rate)
        row = {
            form: {"images_per_s_median": statistics.median(r), "rounds": r}
            for form, r in rates.items()
        }
        row["size"], row["timed_images"] = size, images
        row["index"] = index_times(paths["shards"])
        results[name] = row
        say(
            name + ": " + ", ".join(f"{f} {row[f]['images_per_s_median']:.0f} img/s" for f in paths)
        )
    results["machine"]["load_average_after"] = os.getloadavg()
    out = results_file("shards", args.quick, args.results)
    write_json(out, results)
    say(f"wrote {out}")


if __name__ == "__main__":
    main()
