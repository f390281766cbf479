"""Server-side paths open only under the allowed directory; a decode that overruns its time costs the
request and its process, not the replica."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from madapter.data.clips import ViewProtocol
from madapter.request_checks import Rejected, UploadLimits, allowed_path, server_path
from madapter.serving.decoding import DecodingProcess
from tests.serve.conftest import encode

LIMITS = UploadLimits(max_upload_bytes=2**20, max_decode_s=60, max_frames=1000, max_frame_pixels=1920 * 1080)
PROTOCOL = ViewProtocol(num_frames=8, clips=2, crops=1, crop_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)


def test_paths_are_refused_unless_under_the_allowed_directory(tmp_path: Path) -> None:
    allowed = tmp_path / "videos"
    allowed.mkdir()
    inside = allowed / "a.mp4"
    inside.write_bytes(b"x" * 10)
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(b"x")
    (allowed / "escape.mp4").symlink_to(outside)
    os.mkfifo(allowed / "pipe.mp4")
    with pytest.raises(Rejected, match="server-side paths are refused") as refused:
        allowed_path(str(inside), None)
    assert refused.value.status == 403
    assert allowed_path(str(inside), allowed) == inside.resolve()
    for path, status, says in [(outside, 403, "not under"), (allowed / "escape.mp4", 403, "not under"),
                               (allowed / "../secret.mp4", 403, "not under"), (Path("/dev/zero"), 403, "not under"),
                               (allowed / "pipe.mp4", 403, "not a regular file"), (allowed / "none.mp4", 404, "no such")]:
        with pytest.raises(Rejected, match=says) as refused:
            allowed_path(str(path), allowed)
        assert refused.value.status == status, path
    big = allowed / "big.mp4"
    big.write_bytes(b"x" * (LIMITS.max_upload_bytes + 1))
    with pytest.raises(Rejected, match="serve.max_upload_mb") as refused:
        server_path(str(big), UploadLimits(**{**LIMITS.__dict__, "allow_paths_under": allowed}))
    assert refused.value.status == 413


@pytest.mark.integration
def test_a_decode_that_overruns_is_refused_and_its_process_replaced(tmp_path: Path) -> None:
    """A video that takes longer than ``max_decode_s`` to decode: 422, a new child process, and the same
    object decodes the next video as before."""
    slow = encode(tmp_path / "slow.mp4", np.random.default_rng(0).integers(0, 255, (30, 240, 320, 3), np.uint8))
    quick = encode(tmp_path / "quick.mp4", np.zeros((16, 48, 48, 3), np.uint8))
    decoding = DecodingProcess(LIMITS)
    try:
        views = decoding.views(quick.read_bytes(), PROTOCOL.to_dict())
        assert views.shape == (2, 8, 3, 32, 32) and views.dtype == np.float32
        first = decoding.proc.pid
        decoding.limits = UploadLimits(**{**LIMITS.__dict__, "max_decode_s": 0.001})
        with pytest.raises(Rejected, match=r"longer than serve.max_decode_s \(0.001 s\)") as refused:
            decoding.views(slow.read_bytes(), PROTOCOL.to_dict())
        assert refused.value.status == 422
        assert decoding.proc.pid != first and decoding.proc.is_alive()
        decoding.limits = LIMITS
        assert np.array_equal(decoding.views(quick.read_bytes(), PROTOCOL.to_dict()), views)
    finally:
        decoding.close()
