"""Safe image loading: any file or upload to an RGB float tensor in [0,1] at a model's size.

Grayscale, palette, CMYK, 16-bit and alpha images are converted to RGB (alpha composited on
white; an animation gives its first frame); :func:`open_image` says so, and names a resize that
stretches the image. Files that are too large, too big in pixels, or not images at all get a
one-line :class:`~mlalp_core.errors.InvalidInputError`; Pillow's decompression-bomb guard stays on.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InvalidInputError

#: Largest upload accepted, in bytes.
MAX_FILE_BYTES = 25 * 1024 * 1024
#: Largest image accepted, in pixels (width * height).
MAX_PIXELS = 40_000_000


def _open(source: str | os.PathLike | bytes | io.IOBase, name: str) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if len(source) > MAX_FILE_BYTES:
            raise InvalidInputError(f"{name} is {len(source) / 2**20:.1f} MB; the limit is {MAX_FILE_BYTES // 2**20} MB")
        fh = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InvalidInputError(f"{name}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidInputError(f"{name} is larger than {MAX_FILE_BYTES // 2**20} MB")
        try:
            with path.open("rb") as fh:  # read-only, closed once the pixels are in memory
                return _open(fh.read(MAX_FILE_BYTES + 1), name)
        except OSError as exc:
            raise InvalidInputError(f"{name}: cannot be read ({exc.strerror or exc})") from exc
    else:
        fh = source
    try:
        img = Image.open(fh)
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise InvalidInputError(f"{name} is {w}x{h} pixels; the limit is {MAX_PIXELS // 10**6} megapixels")
        img.load()
    except InvalidInputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise InvalidInputError(f"{name} is not a readable image ({type(exc).__name__})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInputError(f"{name} is corrupt or truncated: {exc}") from exc
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB of any PIL image: EXIF orientation applied, alpha composited on white."""
    img = ImageOps.exif_transpose(img)
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGBa"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba)
    return img.convert("RGB")


def _transparent_fraction(img: Image.Image) -> float:
    """The share of pixels that :func:`to_rgb` composites on white (not fully opaque)."""
    if img.mode == "P" and "transparency" in img.info or img.mode in ("RGBA", "LA", "PA", "RGBa"):
        alpha = np.asarray(img.convert("RGBA"))[..., 3]
        return float((alpha < 255).mean())
    return 0.0


#: Aspect ratios that differ by less than this factor count as the same (rounding of sizes).
ASPECT_TOLERANCE = 1.01


def open_image(source: str | os.PathLike | bytes | io.IOBase, name: str | None = None,
               size: tuple[int, int] | None = None) -> tuple[Image.Image, list[str]]:
    """The RGB image of a file path, bytes or file object (with size limits), and what was done to
    make it one a model takes, one line each, for the user to see (the CLI prints them, the app
    shows them): transparent pixels composited on white, an animation reduced to its first frame,
    and, for a model's ``size`` = (H, W), a resize that changes the aspect ratio."""
    label = name or (str(source) if isinstance(source, (str, os.PathLike)) else "the image")
    img = _open(source, label)
    notes = []
    frames = int(getattr(img, "n_frames", 1) or 1)
    if frames > 1:
        notes.append(f"the image is animated ({frames} frames): only its first frame is used")
    clear = _transparent_fraction(img)
    if clear > 0:
        notes.append(f"{clear:.0%} of the image's pixels are transparent or translucent: they were composited on "
                     "white (the model sees RGB)" if clear >= 0.005 else
                     "some of the image's pixels are transparent or translucent: they were composited on white "
                     "(the model sees RGB)")
    rgb = to_rgb(img)
    if size is not None:
        h, w = int(size[0]), int(size[1])
        ratio = (rgb.width / rgb.height) / (w / h)
        if max(ratio, 1 / ratio) > ASPECT_TOLERANCE:
            notes.append(f"the image ({rgb.width}x{rgb.height}) is resized to the model's {w}x{h}, which stretches "
                         f"it (aspect ratio {rgb.width / rgb.height:.2f} to {w / h:.2f}); crop it to the model's "
                         "aspect ratio first to avoid that")
    return rgb, notes


def load_image(source: str | os.PathLike | bytes | io.IOBase, name: str | None = None) -> Image.Image:
    """Open a file path, bytes or file object as an RGB PIL image, with size limits (what was done
    to it: :func:`open_image`)."""
    return open_image(source, name)[0]


def pil_to_tensor(img: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(3, H, W) float32 in [0,1]; resized bilinearly (with antialiasing) to size = (H, W)."""
    img = to_rgb(img)
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((int(size[1]), int(size[0])), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """(3, H, W) tensor in [0,1] to an 8-bit RGB image (rounded, clipped)."""
    arr = (x.detach().cpu().clamp(0, 1) * 255.0).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


def load_tensor(source: str | os.PathLike | bytes | io.IOBase, size: tuple[int, int] | None = None,
                name: str | None = None) -> torch.Tensor:
    """Shortcut: :func:`load_image` then :func:`pil_to_tensor`."""
    return pil_to_tensor(load_image(source, name), size)
