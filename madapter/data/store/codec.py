"""How one stored frame becomes bytes and back: JPEG through simplejpeg (libjpeg-turbo).

Why JPEG and why this library (``benchmarks/store.py``; docs/benchmarks.md, "Frame store"): on
240 px frames of natural-looking video, quality 90 with 4:2:0 chroma keeps ~1/10 of the uint8
bytes at a mean absolute error of ~2.3 (0-255; the source video's own h264 is ~4.5 off the frames
it was made from), and libjpeg-turbo decodes a frame in ~0.25 ms on one core.  Of the libraries
measured on the same frames, simplejpeg decoded fastest: it wraps libjpeg-turbo's TurboJPEG API,
ships the library inside its wheels (nothing to install on the system) and decodes straight into
the caller's array, so a clip's frames land in one buffer without a copy.  torchvision's
``decode_jpeg`` (the same library, ~20% slower here) is deprecated since torchvision 0.29; Pillow's
JPEG (the same library again) pays a stream object and a copy per frame (~40% slower); WebP
(Pillow) is ~40% smaller at the same error but 4x slower to decode and ~30x slower to encode,
and decoding is what every training step pays.

Determinism: libjpeg-turbo's encoder is a pure function of the pixels and these settings (its
SIMD and C code paths are bit-exact), so the same frames give the same bytes, which DVC hashes.
A different libjpeg-turbo version may change them; ``store.json`` records the library version
(:meth:`JpegCodec.describe`), so such a store is a new store, not a silently different one.

Decoding is strict: libjpeg-turbo's warnings (corrupt entropy data, premature end of data) are
errors here, so a damaged frame fails loudly instead of decoding to grey blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import numpy as np
import simplejpeg

SUBSAMPLING = "420"
"""Chroma subsampling of stored frames (4:2:0).  The source videos are yuv420p already (h264,
VP9, MPEG-4 all are), so halving the chroma again at the stored size costs little: at quality 90,
4:4:4 takes ~25% more bytes (1/8.1 of uint8 instead of 1/10) for an error of 1.9 instead of 2.3
(``benchmarks/store.py`` codec table)."""


class CodecError(ValueError):
    """Bytes the codec cannot decode (damaged or not a JPEG); the store turns it into a StoreError."""


@dataclass(frozen=True)
class JpegCodec:
    """Encode uint8 ``[H, W, 3]`` RGB frames to JPEG bytes and decode them into a caller's array."""

    quality: int
    subsampling: str = SUBSAMPLING

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100 (got {self.quality})")

    def encode(self, frame: np.ndarray) -> bytes:
        """One frame's JPEG bytes (baseline, accurate integer DCT)."""
        return simplejpeg.encode_jpeg(np.ascontiguousarray(frame), quality=self.quality, colorspace="RGB",
                                      colorsubsampling=self.subsampling, fastdct=False)

    def decode_into(self, data: Any, out: np.ndarray) -> None:
        """Decode ``data`` (any bytes-like object) into ``out`` (uint8 ``[H, W, 3]``, C-contiguous).

        Accurate IDCT and chroma upsampling: every reader decodes a stored frame to the same pixels.
        """
        try:
            decoded = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False,
                                             buffer=out, strict=True)
        except (ValueError, RuntimeError) as err:
            raise CodecError(str(err).strip() or type(err).__name__) from None
        if decoded.shape != out.shape:
            raise CodecError(f"decoded {list(decoded.shape)}, expected {list(out.shape)}")

    def describe(self) -> dict[str, Any]:
        """What ``store.json`` records: enough to know how the bytes were made."""
        return {"name": "jpeg", "quality": self.quality, "subsampling": f"{self.subsampling[0]}:"
                f"{self.subsampling[1]}:{self.subsampling[2]}", "library": f"simplejpeg {version('simplejpeg')}"}
