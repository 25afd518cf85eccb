"""Reading videos: files (mp4, avi, ... through OpenCV), frame folders (the DAVIS layout) and
packed-JPEG .npz clips, all as one sequence of (H, W, 3) RGB uint8 frames.

OpenCV rather than PyAV: the same dependency gives dense optical flow, RANSAC homographies,
connected components and visual trackers, which the rest of this package needs; its FFmpeg
backend reads the common containers (mp4, avi, mkv, mov) and codecs (H.264, MPEG-4, MJPEG).

A video file is checked against the frame count its container declares: a file that stops
early is truncated, and reading it raises `VideoError` naming the file and how far it got,
unless `keep_partial=True` asks for the frames read so far.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfsup.data.decode import BadImageError, open_image

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MOTION_FRAMES = 2  # what motion masks need: a frame and a neighbour
# Containers round their frame count (variable frame rates, edit lists): a few missing
# frames at the end are not a truncation.
FRAME_COUNT_SLACK = 2


class VideoError(ValueError):
    """A video could not be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ReadOptions:
    stride: int = 1  # keep every stride-th frame
    size: int | None = None  # resize so the shorter side is `size` (None: native)
    max_frames: int | None = None  # stop after this many kept frames
    keep_partial: bool = False  # a truncated file yields what was read instead of failing


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def is_npz(path: Path) -> bool:
    return path.suffix.lower() == ".npz"


def natural_key(path: Path) -> list:
    """`frame10.jpg` -> ['frame', 10, '.jpg']: numbers in names compare as numbers, so the
    frames of ffmpeg's `%d` pattern (0.jpg ... 10.jpg) come in time order, not as text
    (0, 1, 10, 11, 2, ...)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """A frame folder's images in time order (numbers in their names as numbers)."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), key=natural_key
    )


def frame_order_note(files: list[Path]) -> str | None:
    """What to tell the user when the time order is not the names' text order."""
    if [p.name for p in files] == sorted(p.name for p in files):
        return None
    shown = ", ".join(p.name for p in files[:3])
    return f"frames taken in numeric order ({shown}, ..., {files[-1].name}), not as text"


def check_unique_names(videos: list[Path]) -> None:
    """Outputs are written per clip under its name: two clips of one name would mix."""
    seen: dict[str, Path] = {}
    for video in videos:
        name = video_name(video)
        if name in seen:
            raise VideoError(
                f"two videos are named {name!r}: {seen[name]} and {video}; their outputs would "
                "be written to the same place: rename one, or give them in separate commands"
            )
        seen[name] = video


def find_videos(paths: list[str | Path]) -> list[Path]:
    """Expand user arguments into videos: a video file, a frame folder, a packed .npz clip,
    or a folder of those (a DAVIS `JPEGImages/480p` root holds one frame folder per clip)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise VideoError(f"{path}: no such file or folder")
        if path.is_file() or frame_files(path):
            found.append(path)
        else:
            children = sorted(
                (
                    p
                    for p in path.iterdir()
                    if is_video_file(p) or is_npz(p) or (p.is_dir() and frame_files(p))
                ),
                key=natural_key,
            )
            if not children:
                raise VideoError(
                    f"{path}: no video files ({', '.join(VIDEO_SUFFIXES)}), frame images or "
                    "frame folders in it"
                )
            found.extend(children)
    check_unique_names(found)
    return found


def video_name(path: Path) -> str:
    return path.stem if path.is_file() else path.name


def resize_frame(frame: np.ndarray, size: int | None) -> np.ndarray:
    import cv2

    if size is None:
        return frame
    h, w = frame.shape[:2]
    scale = size / min(h, w)
    if scale == 1:
        return frame
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    kernel = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(frame, shape, interpolation=kernel)


def _file_frames(path: Path, keep_partial: bool, skip: int = 0) -> Iterator[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"{path}: cannot be opened as a video (unknown format or corrupt)")
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    read = 0
    try:
        # Skipped frames are grabbed, not converted: seeking (CAP_PROP_POS_FRAMES) lands on
        # the nearest key frame with some codecs, and a chunk must start where it says.
        while read < skip and capture.grab():
            read += 1
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            read += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()
    if read == 0:
        raise VideoError(f"{path}: no frame could be decoded (corrupt or empty video)")
    if declared > 0 and read < declared - FRAME_COUNT_SLACK and not keep_partial:
        raise VideoError(
            f"{path}: truncated or corrupt: decoding stopped after {read} of {declared} "
            "frames (pass keep_partial / --keep-partial to use the frames read)"
        )


def _folder_frames(path: Path, keep_partial: bool, skip: int = 0) -> Iterator[np.ndarray]:
    files = frame_files(path)
    if not files:
        raise VideoError(f"{path}: no frame images ({', '.join(FRAME_SUFFIXES)}) in folder")
    note = frame_order_note(files) if not skip else None  # said once, by the first chunk
    if note:
        print(f"{path}: {note}")
    for file in files[skip:]:
        try:
            yield open_image(file, str(file))
        except BadImageError as err:
            if keep_partial:
                return
            raise VideoError(f"{err} (frame of video {path})") from err


def _npz_frames(path: Path, keep_partial: bool, skip: int = 0) -> Iterator[np.ndarray]:
    try:
        archive = np.load(path)
    except Exception as err:  # OSError, EOFError (empty file), BadZipFile (cut short), ...
        raise VideoError(f"{path}: cannot be read as an .npz clip ({err})") from err
    with archive:
        if "images" in archive:
            images = archive["images"]
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise VideoError(
                    f"{path}: `images` must be (T, H, W, 3) uint8, got {images.shape} "
                    f"{images.dtype}"
                )
            yield from images[skip:]
            return
        if not {"jpeg", "offsets"} <= set(archive.files):
            raise VideoError(
                f"{path}: an .npz video needs `images` (T,H,W,3 uint8) or packed `jpeg` + "
                f"`offsets`; it has {', '.join(archive.files)}"
            )
        jpeg, offsets = archive["jpeg"], archive["offsets"]
    for i in range(skip, len(offsets) - 1):
        name = f"{path}[{i}]"
        try:
            yield open_image(jpeg[offsets[i] : offsets[i + 1]].tobytes(), name)
        except BadImageError as err:
            if keep_partial:
                return
            raise VideoError(str(err)) from err


def frame_source(path: Path, keep_partial: bool, skip: int = 0) -> Iterator[np.ndarray]:
    """The decoded frames of a video from raw frame `skip` on (those before are not decoded
    where the format allows)."""
    if not path.exists():
        raise VideoError(f"{path}: no such file or folder")
    if path.is_dir():
        return _folder_frames(path, keep_partial, skip)
    if is_npz(path):
        return _npz_frames(path, keep_partial, skip)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _file_frames(path, keep_partial, skip)
    raise VideoError(
        f"{path}: not a video: expected a video file ({', '.join(VIDEO_SUFFIXES)}), a "
        "folder of frame images or an .npz clip"
    )


def iter_frames(
    path: str | Path, options: ReadOptions = ReadOptions(), first: int = 0
) -> Iterator[np.ndarray]:
    """Yield the kept frames of a video, resized if asked, from kept frame `first` on
    (`max_frames` of them at most)."""
    path = Path(path)
    if options.stride < 1:
        raise VideoError(f"stride must be >= 1, got {options.stride}")
    kept = 0
    for index, frame in enumerate(frame_source(path, options.keep_partial, first * options.stride)):
        if index % options.stride:
            continue
        yield resize_frame(frame, options.size)
        kept += 1
        if options.max_frames is not None and kept >= options.max_frames:
            return


def count_frames(path: str | Path, options: ReadOptions = ReadOptions()) -> int:
    """How many frames `iter_frames` keeps, without decoding them: a folder's images, an .npz
    clip's length, a video file's declared frame count (which containers may round: a
    reader of its last frames goes to the end of the file, not to this count)."""
    import cv2

    path = Path(path)
    if path.is_dir():
        raw = len(frame_files(path))
    elif is_npz(path):
        try:
            with np.load(path) as archive:
                key = "images" if "images" in archive else "offsets"
                raw = len(archive[key]) - (key == "offsets")
        except Exception as err:
            raise VideoError(f"{path}: cannot be read as an .npz clip ({err})") from err
    else:
        capture = cv2.VideoCapture(str(path))
        raw = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if capture.isOpened() else 0
        capture.release()
    kept = -(-raw // max(options.stride, 1))
    return min(kept, options.max_frames) if options.max_frames is not None else kept


def read_video(
    path: str | Path, options: ReadOptions = ReadOptions(), min_frames: int = 1, first: int = 0
) -> np.ndarray:
    """All kept frames (from kept frame `first` on) as one (T, H, W, 3) uint8 array; at least
    `min_frames` of them (motion needs two: a single frame would give an empty "nothing
    moves" mask, not an answer). With `min_frames=0`, no frames is an empty array (a chunk
    past the end of a video whose container declared more frames than it holds)."""
    frames = list(iter_frames(path, options, first))
    if not frames and min_frames == 0:
        return np.zeros((0, 0, 0, 3), np.uint8)
    if not frames:  # an .npz clip with 0 frames, or max_frames=0: nothing to stack
        raise VideoError(f"{path}: the video has no frames")
    if len(frames) < min_frames:
        kept = f" kept (every {options.stride}th)" if options.stride > 1 else ""
        raise VideoError(
            f"{path}: {len(frames)} frame{'s' * (len(frames) != 1)}{kept}; motion needs at "
            f"least {min_frames}"
        )
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoError(f"{path}: frames differ in size ({sorted(shapes)[:3]}); resize them")
    return np.stack(frames)
