"""Photos as they are displayed: the EXIF orientation tag is applied on every decode path."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup.data import open_source
from selfsup.data.device_decode import DeviceJpegDecoder
from selfsup.data.selections import FileListSource
from selfsup.video.reader import ReadOptions, read_video

# What a viewer does for each EXIF orientation (PIL's ImageOps.exif_transpose), and its
# inverse, which a camera's stored pixels are: 1 upright, 2 mirrored, 3 upside down, 4 flipped,
# 5 transposed, 6 turned a quarter clockwise, 7 transversed, 8 a quarter anticlockwise.
STORED_AS = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright() -> np.ndarray:
    """A 24x40 scene whose orientation shows: red block top left, blue block bottom right."""
    scene = np.full((24, 40, 3), 128, np.uint8)
    scene[:8, :12] = (230, 20, 20)
    scene[-8:, -12:] = (20, 20, 230)
    return scene


def stored_jpeg(orientation: int) -> bytes:
    """The upright scene as a camera stores it with `orientation` in its EXIF."""
    image = Image.fromarray(upright())
    if STORED_AS[orientation] is not None:
        image = image.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


def assert_upright(pixels: np.ndarray, orientation: int) -> None:
    assert pixels.shape == upright().shape, (orientation, pixels.shape)
    error = np.abs(pixels.astype(int) - upright()).mean()
    assert error < 6, (orientation, error)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for orientation in STORED_AS:
        (folder / f"o{orientation}.jpg").write_bytes(stored_jpeg(orientation))
    return folder


def test_folders_and_file_lists_decode_photos_as_displayed(photos):
    for source in (open_source(photos), FileListSource(sorted(photos.glob("*.jpg")))):
        for index in range(len(source)):
            assert_upright(source.load(index), int(source.name(index)[-5]))


def test_packed_jpeg_npz_decodes_photos_as_displayed(tmp_path):
    blobs = [np.frombuffer(stored_jpeg(o), np.uint8) for o in STORED_AS]
    offsets = np.cumsum([0, *map(len, blobs)])
    np.savez(tmp_path / "photos.npz", jpeg=np.concatenate(blobs), offsets=offsets)
    source = open_source(tmp_path / "photos.npz")
    for index, orientation in enumerate(STORED_AS):
        assert_upright(source.load(index), orientation)


def test_frame_folders_decode_frames_as_displayed(tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    for t in range(3):
        (clip / f"{t:03d}.jpg").write_bytes(stored_jpeg(6))
    for frame in read_video(clip, ReadOptions()):
        assert_upright(frame, 6)


def test_the_device_jpeg_decoder_applies_the_orientation_too():
    """torchvision's batched decoder (nvjpeg on a GPU; here its CPU kernel) is told to apply
    the tag, so `data.decode=device` gives the same upright images."""
    decoder = DeviceJpegDecoder(fitted=None, device="cpu")
    encoded = [torch.frombuffer(bytearray(stored_jpeg(o)), dtype=torch.uint8) for o in STORED_AS]
    for orientation, data in zip(STORED_AS, encoded):
        image = decoder._decode_one(data)
        assert_upright(image.permute(1, 2, 0).numpy(), orientation)
