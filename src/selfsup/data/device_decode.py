"""JPEG decoding on the training device (nvjpeg through torchvision), for streamed data.

With `data.decode=device`, DataLoader workers only read each image's bytes, and the thread
that feeds the GPU decodes a whole batch with one `torchvision.io.decode_jpeg(list,
device=...)` call, then fits each image to (3, S, S) on the device by the rule of
`decode.fit_to_square`. A full-size ImageNet JPEG costs a CPU core several milliseconds with
PIL; a GPU decodes a batch of them in a fraction of that, so a few workers keep up.

Per image, the CPU (PIL) path still decodes what the device decoder cannot:

- files that are not JPEG (PNG, ...) and images stored decoded: in the worker, as with
  `data.decode=cpu`;
- JPEGs the device decoder refuses (corrupt files, encodings nvjpeg lacks): PIL then either
  decodes them or raises the same `BadImageError` naming the file (or skips it, with
  `data.on_bad_image=skip`) as `data.decode=cpu` would.

Pixels are close to, not identical with, the CPU path's: PIL decodes large JPEGs at a reduced
DCT scale (`Image.draft`) before resizing, and libjpeg and nvjpeg upsample chroma differently.
tests/test_data.py bounds the difference.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg

from selfsup.data.decode import BadImageError, fit_tensor_to_square

JPEG_START = b"\xff\xd8\xff"  # start-of-image marker followed by the next segment's marker


class EncodedImages(Dataset):
    """Worker side: source[i] -> (i, fitted (3, S, S) uint8 or None, JPEG bytes or None,
    (S, S) mask or None).

    A JPEG comes back as its bytes, for the device; anything else is decoded and fitted here by
    `fitted` (the CPU path's dataset: source[i] -> (i, image or None, mask or None)).
    """

    def __init__(self, fitted: Dataset):
        self.fitted = fitted

    def __len__(self) -> int:
        return len(self.fitted)

    def __getitem__(self, index: int) -> tuple:
        source = self.fitted.source
        # Masks exist only for decoded arrays, which have no bytes to send anyway.
        data = source.encoded(index) if source.masks is None else None
        if data is not None and data.startswith(JPEG_START):
            return index, None, data, None
        _, image, mask = self.fitted[index]
        return index, image, None, mask


class DeviceJpegDecoder:
    """Decode a batch of JPEG bytes on `device` and fit each image to (3, S, S) uint8 there.

    `fitted` is the CPU path's dataset (it knows the source, size and bad-image policy); it
    decodes the images the device decoder refuses.
    """

    def __init__(self, fitted: Dataset, device: torch.device | str):
        self.fitted, self.device = fitted, torch.device(device)

    def __call__(self, indices: list[int], jpegs: list[bytes]) -> list[torch.Tensor | None]:
        """One (3, S, S) uint8 tensor on the device per image, None for a bad image skipped
        under `on_bad_image=skip`."""
        if not jpegs:
            return []
        encoded = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in jpegs]
        try:
            decoded = decode_jpeg(
                encoded, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True
            )
        except RuntimeError:
            # One bad file fails the whole batched call: decode one at a time to find it.
            decoded = [self._decode_one(data) for data in encoded]
        return [self._fit(index, image) for index, image in zip(indices, decoded)]

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor | None:
        try:
            return decode_jpeg(
                data, mode=ImageReadMode.RGB, device=self.device, apply_exif_orientation=True
            )
        except RuntimeError:
            return None

    def _fit(self, index: int, image: torch.Tensor | None) -> torch.Tensor | None:
        fitted = self.fitted
        if image is None:  # refused by the device decoder: PIL decodes it, or says why not
            _, cpu_image, _ = fitted[index]
            return None if cpu_image is None else cpu_image.to(self.device, non_blocking=True)
        try:
            name = fitted.source.name(index)
            return fit_tensor_to_square(image, fitted.size, name, fitted.small_images)
        except BadImageError:  # a small image under small_images=reject
            if fitted.on_bad_image == "raise":
                raise
            return None

    def fill(
        self, indices: list[int], images: list, jpegs: list, masks: list
    ) -> tuple[list[int], list, list]:
        """One batch from `EncodedImages` workers -> (indices, images on the device or None,
        masks): the JPEGs decoded here, the images the workers decoded moved here."""
        todo = [k for k, data in enumerate(jpegs) if data is not None]
        images = [None if im is None else im.to(self.device, non_blocking=True) for im in images]
        for k, image in zip(todo, self([indices[k] for k in todo], [jpegs[k] for k in todo])):
            images[k] = image
        return indices, images, masks
