"""What a request may ask of a server: upload size, frame size and count, server-side paths.

Both servers apply it: the Ray Serve application (:mod:`madapter.serving`) and the MLflow pyfunc of
:mod:`madapter.registry` behind ``mlflow models serve`` (its server-side paths rule).  Every refusal is a :class:`Rejected` with an HTTP status and one line that names the limit (the
params.yaml key) and what to do; nothing here reads more than the limits allow.  Checks that need the
container (:func:`check_container`) run inside the decoding process, under its time limit.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from madapter.config import ServeSection


class Rejected(Exception):
    """A request the server refuses: its HTTP status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class UploadLimits:
    """The ``serve:`` limits a request is checked against (picklable: every replica gets a copy)."""

    max_upload_bytes: int
    max_decode_s: float
    max_frames: int
    max_frame_pixels: int
    allow_paths_under: Path | None = None

    @classmethod
    def from_section(cls, serve: ServeSection) -> UploadLimits:
        root = serve.allow_paths_under.resolve() if serve.allow_paths_under is not None else None
        return cls(int(serve.max_upload_mb * 2**20), serve.max_decode_s, serve.max_frames, serve.max_frame_pixels, root)

    @property
    def max_upload_mb(self) -> float:
        return self.max_upload_bytes / 2**20


def too_large(limits: UploadLimits) -> Rejected:
    return Rejected(413, f"the upload is larger than serve.max_upload_mb ({limits.max_upload_mb:g} MB)")


def allowed_path(path: str, root: Path | None) -> Path:
    """A server-side video path a request named, if the operator allowed its directory ``root``.

    Refused (403) unless ``root`` is set and the path, symlinks resolved, lies under it; then it must be
    a regular file (not a FIFO or a device).  Outside the allowed root the answer is the same whether
    the file exists or not.  The served MLflow pyfunc applies the same rule (``$MADAPTER_ALLOW_PATHS_UNDER``).
    """
    if root is None:
        raise Rejected(403, "server-side paths are refused: send the video itself, or have the operator allow a "
                            "directory (serve.allow_paths_under; $MADAPTER_ALLOW_PATHS_UNDER for the MLflow pyfunc)")
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise Rejected(403, f"{path}: not under the allowed directory")
    try:
        info = resolved.stat()
    except OSError:
        raise Rejected(404, f"{path}: no such file under the allowed directory") from None
    if not stat.S_ISREG(info.st_mode):
        raise Rejected(403, f"{path}: not a regular file")
    return resolved


def server_path(path: str, limits: UploadLimits) -> Path:
    """:func:`allowed_path` under ``serve.allow_paths_under``, and within the upload size limit."""
    resolved = allowed_path(path, limits.allow_paths_under)
    if resolved.stat().st_size > limits.max_upload_bytes:
        raise too_large(limits)
    return resolved


def check_container(path: Path, limits: UploadLimits) -> None:
    """Refuse before decoding what would cost more than the limits allow: no video stream, frames of
    more than ``serve.max_frame_pixels`` (a small file can declare 10,000 x 10,000 frames), more
    declared frames than ``serve.max_frames``.  A file PyAV cannot open at all is not a video (415)."""
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as err:
        raise Rejected(415, f"not a readable video file ({type(err).__name__}); upload an mp4, avi, mkv or webm") from None
    with container:
        if not container.streams.video:
            raise Rejected(415, "the upload has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height <= 0:
            raise Rejected(422, "the video stream declares no frame size (truncated or not a video)")
        if width * height > limits.max_frame_pixels:
            raise Rejected(422, f"frames are {width}x{height}, more than serve.max_frame_pixels "
                                f"({limits.max_frame_pixels:,} pixels)")
        frames = _declared_frames(stream, container)
        if frames > limits.max_frames:
            raise Rejected(422, f"the video declares {frames:,} frames, more than serve.max_frames ({limits.max_frames:,})")


def _declared_frames(stream, container) -> int:
    """Frames the container says the stream has: its frame count, else duration x rate (0 if neither)."""
    if stream.frames:
        return int(stream.frames)
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / 1_000_000  # av.time_base
    else:
        seconds = 0.0
    return int(seconds * rate)
