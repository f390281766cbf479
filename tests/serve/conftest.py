"""A real Ray Serve application on 127.0.0.1 over a real MLflow registry (SQLite) holding two versions.

The two versions are random-init tiny models (different seeds, so they answer differently), logged the
way the register stage logs them (:func:`madapter.registry.register_checkpoint`: models from code, the
backbone's settings, the view protocol).  The application follows ``models:/served@champion`` with a
one-second poll and test-sized limits.  It runs on the session's local Ray, which is shut down when
the folder is done (Serve's detached controller and proxy must not outlive it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from madapter.config import Params
from tests.common.fixtures import local_ray, stop_ray_after_this_folder
from tests.common.processes import free_port

MODEL = "served"
CLASSES = ["walk", "run", "jump", "sit"]
SEEDS = (0, 1)

_stop_ray_after_this_folder = pytest.fixture(scope="package", autouse=True)(stop_ray_after_this_folder)
"""Serve's controller and proxy are detached actors: the folder's Ray goes with them."""


def serve_params(root: Path) -> Params:
    """A tiny ViT at 32 px on 8 frames; the limits small enough for hostile files to be cheap to make."""
    return Params.model_validate({
        "base": {"outputs_dir": str(root / "outputs"), "data_dir": str(root / "data")},
        "model": {"img_size": 32, "num_frames": 8, "width": 32},
        "decode": {"frames_per_video": 16},
        "evaluate": {"device": "cpu"},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
        "register": {"model_name": MODEL, "top_k": 3},
        "serve": {"port": free_port(), "device": "cpu", "max_upload_mb": 2, "max_decode_s": 60, "max_frames": 300,
                  "max_frame_pixels": 1920 * 1080, "max_batch_size": 4, "max_ongoing_requests": 8,
                  "max_queued_requests": 8, "retry_after_s": 2, "alias_poll_s": 1},
    })


def write_checkpoint(path: Path, params: Params, seed: int) -> Path:
    from madapter.models.build import build_model
    from madapter.models.checkpoint import save_checkpoint

    model = build_model(params.model.model_copy(update={"init_seed": seed}), num_classes=len(CLASSES))
    return save_checkpoint(path, model, CLASSES)


@dataclass(frozen=True)
class Registry:
    params: Params
    checkpoints: dict[str, Path]
    """Version -> the checkpoint it was logged from."""

    def client(self):
        from mlflow import MlflowClient

        uri = self.params.mlflow.tracking_uri
        return MlflowClient(uri, registry_uri=uri)


@pytest.fixture(scope="package")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Two registered versions of :data:`MODEL`; alias ``champion`` on version 1."""
    from madapter.registry import CHAMPION, register_checkpoint

    root = tmp_path_factory.mktemp("serve")
    params = serve_params(root)
    registry = Registry(params, {})
    evaluation = {"frames": params.model.num_frames, "clips": 1, "crops": 1, "split": "test"}
    for seed in SEEDS:
        checkpoint = write_checkpoint(root / f"checkpoint-{seed}.pt", params, seed)
        version = register_checkpoint(params, checkpoint, evaluation, alias=CHAMPION if seed == SEEDS[0] else None)
        registry.checkpoints[version] = checkpoint
    return registry


@dataclass(frozen=True)
class App:
    url: str
    registry: Registry


@pytest.fixture(scope="package")
def app(registry: Registry) -> Iterator[App]:
    """The application, ready (``/readyz`` answered), on the session's local Ray."""
    from madapter.serving.server import start, stop

    local_ray()
    serving = start(registry.params)
    try:
        yield App(serving.url, registry)
    finally:
        stop()


@pytest.fixture(scope="package")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small real mp4s of the synthetic set (different classes)."""
    from madapter.config import SyntheticSection
    from madapter.data.acquire.synthetic import encode_video, render

    root = tmp_path_factory.mktemp("clips")
    cfg = SyntheticSection(num_frames=16, size=48)
    return [encode_video(root / f"clip-{i}.mp4", render(i, 0, cfg, seed=7), cfg.fps) for i in range(3)]


def encode(path: Path, frames, fps: int = 8, codec: str = "libx264", pix_fmt: str = "yuv420p") -> Path:
    """Frames (``[T, H, W, 3]`` uint8, or ``[T, H, W]`` for gray) into a container, as a camera would write them."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        fmt = "gray" if frames.ndim == 3 else "rgb24"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format=fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

