"""The user's images for `compress predict`: found, checked before the model loads, read one at a
time.

A file is refused (DataError, one line) when it is not an image Pillow reads, or when it holds
more than `MAX_IMAGE_PIXELS` pixels (checked from the header, before anything is decoded). The
COCO data loader, which decodes thousands of images, caps at 100M pixels; predict takes one image
at a time and allows up to Pillow's own decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS,
178.9M: a 13000 x 13000 photo passes, a 30000 x 30000 one is refused). EXIF orientation is
applied (a phone photo is predicted and drawn upright); 16-bit images are scaled to [0, 1] by
65535, not clipped at 255.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from compress.core.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MAX_IMAGE_PIXELS = 178_000_000
ORIENTATION = 0x0112  # the EXIF tag
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit (and 32-bit int) grey
# Above this many pixels the image is shrunk (antialiased, in 8/16-bit) before it becomes floats:
# every predictor resizes to at most 1333 px anyway, a 13000 px image is 2 GB as floats, and each
# mask the model returns is upsampled to this size first (16 MB a mask here).
WORK_MAX_PIXELS = 2048 * 2048


@dataclass(frozen=True)
class ImageFile:
    """One image to predict: its path and its size (width x height as stored in the file)."""

    path: Path
    width: int
    height: int


def collect_images(path: Path) -> list[Path]:
    """The image files at `path` (one file, or a folder's images, sorted; not recursive)."""
    if not path.exists():
        raise DataError("no such file or folder; expected an image or a folder of images",
                        file=str(path))
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)})",
                        file=str(path))
    return files


def _unreadable(path: Path, err: Exception) -> DataError:
    return DataError(f"not a readable image ({type(err).__name__}); allowed: "
                     f"{', '.join(IMAGE_SUFFIXES)} of at most {MAX_IMAGE_PIXELS:,} pixels",
                     file=str(path))


def _open(path: Path) -> Image.Image:
    """The image opened lazily (header read, pixels not decoded), its size checked."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        size = f"{int(found.group(1)):,} pixels: " if found else ""
        raise DataError(f"image is {size}more than {MAX_IMAGE_PIXELS:,} pixels is refused (a "
                        "decompression bomb or a wrong file)", file=str(path)) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err
    if image.width * image.height > MAX_IMAGE_PIXELS:
        image.close()
        raise DataError(f"image is {image.width}x{image.height}: more than {MAX_IMAGE_PIXELS:,} "
                        "pixels is refused (a decompression bomb or a wrong file)", file=str(path))
    return image


def check_image(path: Path) -> ImageFile:
    """The header of `path` read and checked (size cap), nothing decoded."""
    with _open(path) as image:
        return ImageFile(path, image.width, image.height)


def read_pil(path: Path) -> Image.Image:
    """The image decoded, upright (EXIF orientation applied), as RGB, or 'I' for 16-bit grey.
    No copy is made where none is needed (an upright RGB file is 676 MB a copy at 13000 px)."""
    raw = _open(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            raw.load()
            image = raw
            if raw.getexif().get(ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(raw)
            wanted = "I" if image.mode in WIDE_MODES else "RGB"
            if image.mode != wanted:
                image = image.convert(wanted)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raw.close()
        raise _unreadable(path, err) from err
    if image is not raw:
        raw.close()
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """A 3xHxW float32 tensor in [0, 1], built one channel at a time (no full-size temporaries
    beyond one channel: a 13000 px image is 2 GB as floats)."""
    out = torch.empty((3, image.height, image.width), dtype=torch.float32)
    if image.mode == "I":
        grey = np.asarray(image, dtype=np.float32)
        out[0] = torch.from_numpy(grey).clamp_(0.0, 65535.0).div_(65535.0)
        out[1].copy_(out[0])
        out[2].copy_(out[0])
        return out
    for index, band in enumerate(image.split()):
        out[index] = torch.from_numpy(np.asarray(band, dtype=np.float32))
        band.close()
    return out.div_(255.0)


def shrunk(image: Image.Image) -> Image.Image | None:
    """A copy of the image shrunk (aspect kept, antialiased) to at most WORK_MAX_PIXELS pixels,
    or None when it is small enough as it is."""
    pixels = image.width * image.height
    if pixels <= WORK_MAX_PIXELS:
        return None
    scale = (WORK_MAX_PIXELS / pixels) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.BILINEAR, reducing_gap=3.0)


def to_uint8_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy to draw on (16-bit grey scaled, not clipped)."""
    if image.mode == "I":
        grey = (np.asarray(image, dtype=np.float32).clip(0, 65535) / 257.0 + 0.5).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image
