"""Probe and decode an uploaded video in a process of its own, under a time limit.

A hostile or broken file can hang a decoder or crash it (decord and FFmpeg are C code).  The replica
that serves the request must not go with it: :class:`DecodingProcess` sends the bytes to a spawned
child, waits at most ``serve.max_decode_s``, and when the child overruns or dies it is killed and
replaced, the request gets a 422 with one line, and the next request is decoded as before.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from madapter.request_checks import Rejected, UploadLimits, check_container

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
"""A fresh child imports torch and the decoders: slow on a busy machine, but bounded."""


class DecodingProcess:
    """One spawned child that turns video bytes into the protocol's views (``[V, T, 3, H, W]`` float32)."""

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # never fork a replica holding Ray's and torch's threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, self.limits), daemon=True, name="madapter-decode")
        self.proc.start()
        child.close()
        if not self.conn.poll(START_TIMEOUT_S) or self.conn.recv() != "ready":
            raise RuntimeError(f"the decoding process did not start (exit code {self.proc.exitcode})")

    def _replace(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()
        self._start()

    def views(self, data: bytes, protocol: dict[str, Any]) -> np.ndarray:
        """The views of ``data`` under ``protocol`` (a :meth:`ViewProtocol.to_dict`); :class:`Rejected` otherwise."""
        if not data:
            raise Rejected(400, "the upload is empty (0 bytes)")
        try:
            self.conn.send((data, protocol))
            finished = self.conn.poll(self.limits.max_decode_s)
        except (BrokenPipeError, EOFError, OSError):
            finished = False
        if not finished:
            alive = self.proc.is_alive()
            self._replace()
            if alive:
                raise Rejected(422, f"decoding took longer than serve.max_decode_s ({self.limits.max_decode_s:g} s)")
            raise Rejected(422, "the decoder crashed on this upload (a damaged or hostile file)")
        try:
            status, payload = self.conn.recv()
        except (EOFError, OSError):
            self._replace()
            raise Rejected(422, "the decoder crashed on this upload (a damaged or hostile file)") from None
        if status == "ok":
            return payload
        raise Rejected(*payload)

    def close(self) -> None:
        self.proc.kill()
        self.proc.join(5)


def _child_main(conn, limits: UploadLimits) -> None:
    """The child's loop: bytes in, views or ``(status, reason)`` out, until the pipe closes."""
    import torch

    from madapter.data.clips import ViewProtocol, load_video_views
    from madapter.data.video import short_error

    torch.set_num_threads(1)
    conn.send("ready")
    while True:
        try:
            data, protocol = conn.recv()
        except EOFError:
            return
        fd, name = tempfile.mkstemp(prefix="madapter-upload-", suffix=".video")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            check_container(path, limits)
            views = load_video_views(path, ViewProtocol.from_dict(protocol)).tensor.numpy()
            conn.send(("ok", np.ascontiguousarray(views, dtype=np.float32)))
        except Rejected as rejected:
            conn.send(("error", (rejected.status, rejected.reason)))
        except Exception as err:  # noqa: BLE001 - any decoder failure is a bad upload, in one line
            conn.send(("error", (422, f"cannot decode the upload: {short_error(err, path=path)}")))
        finally:
            path.unlink(missing_ok=True)
