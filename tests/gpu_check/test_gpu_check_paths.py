"""What ``make gpu-check`` measures, checked on a CPU with the CUDA calls replaced.

Two things a GPU run cannot show by passing, because both once made it FAIL (or pass) for the
wrong reason:

* each path states its own ``train.source`` (and the rest of what it measures), so a default in
  params.yaml (``train.source: features`` today) can never turn the frames path into the features
  path behind the check's back;
* the "ran on the GPU" threshold of ``evaluate`` comes from the model evaluate really ran: the head
  alone on cached features (< 1 MiB for the demo) or the full model on frames (backbone included).

No pipeline runs here: only the check's own functions, with ``evaluate`` and the CUDA allocator
reading replaced (``cuda_peak_of``), and a real tiny checkpoint for the weight bytes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from infra.gpu_check import device, frames, settings
from infra.gpu_check.common import CheckFailed, Context
from madapter.config import load_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """params.yaml alone, its defaults turned AGAINST both paths: source frames, no GPU, no half precision."""
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["train"].update(source="features", use_gpu=False, amp="none", epochs=7, num_workers=3)
    data["model"]["half_precision"] = False
    data["features"]["use_gpu"] = False
    data["evaluate"]["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path


GPU_SETUP = {"model.half_precision": True, "train.use_gpu": True, "train.amp": "bf16", "train.epochs": 2,
             "train.num_workers": 1, "evaluate.device": "cuda"}
"""What both paths run with on the GPU, whatever params.yaml says."""


def _dotted(params, key: str):
    section, name = key.split(".")
    return getattr(getattr(params, section), name)


def test_frames_path_states_train_source_frames_whatever_params_yaml_says(repo_copy: Path) -> None:
    """The pipeline check (dvc repro, then evaluate/predict/serve/nccl) is the presets' path: frames."""
    overrides = settings.gpu_overrides("bf16")
    assert overrides["train"]["source"] == "frames"
    settings.write_params(repo_copy, overrides)
    params = load_params(repo_copy / "params.yaml")
    assert params.train.source == "frames" and params.features.use_gpu is False
    assert {key: _dotted(params, key) for key in GPU_SETUP} == GPU_SETUP
    ctx = Context(work=repo_copy, repo=repo_copy)
    nccl = settings.nccl_cli(ctx)
    assert "train.source=frames" in nccl and "train.num_workers=2" in nccl


def test_features_path_states_train_source_features_and_its_gpu_setup(repo_copy: Path) -> None:
    """The features checks layer ``-S`` overrides that name every key they measure, source included."""
    ctx = Context(work=repo_copy, repo=repo_copy, amp="bf16")
    sets = settings.feature_sets(ctx)
    assert sets["train.source"] == "features" and sets["features.use_gpu"] is True
    params = settings.features_params(ctx)  # over a params.yaml whose defaults say the opposite
    assert params.train.source == "features" and params.features.use_gpu is True
    assert {key: _dotted(params, key) for key in GPU_SETUP} == GPU_SETUP
    for stage in ("features", "train"):
        cmd = settings.feature_cli(ctx, stage)
        pairs = {cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-S"}
        assert cmd[2:4] == ["madapter", stage]
        assert {"train.source=features", "features.use_gpu=true", "model.half_precision=true", "train.use_gpu=true",
                "train.amp=bf16", "evaluate.device=cuda"} <= pairs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, int]:
    """A real tiny checkpoint: (path, full model's weight bytes, head's weight bytes)."""
    from madapter.config import ModelSection
    from madapter.models.build import build_model
    from madapter.models.checkpoint import save_checkpoint

    model = build_model(ModelSection(img_size=32, num_frames=4, level_pool=1, width=32), 3)
    path = save_checkpoint(tmp_path_factory.mktemp("ckpt") / "outputs" / "train" / "checkpoint.pt", model,
                           ["a", "b", "c"])
    full = sum(p.numel() * p.element_size() for p in model.parameters())
    head = sum(p.numel() * p.element_size() for p in model.adapter.parameters())
    assert head * 4 < full  # the backbone dominates: a head-only peak is far below half the full model
    return path, full, head


def _run_evaluate_check(monkeypatch: pytest.MonkeyPatch, checkpoint: Path, source: str,
                        peak: int) -> str:
    """``check_evaluate`` with evaluate returning ``source`` and the allocator reading ``peak`` bytes."""
    import madapter.evaluate

    result = {"top1": 0.5, "num_videos": 4, "source": source}
    monkeypatch.setattr(madapter.evaluate, "evaluate", lambda params: result)
    monkeypatch.setattr(frames, "cuda_peak_of", lambda fn: (fn(), peak))
    repo = checkpoint.parents[2]
    ctx = Context(work=repo, repo=repo, params=SimpleNamespace(base=SimpleNamespace(outputs_dir="outputs")))
    return frames.check_evaluate(ctx)


def test_evaluate_threshold_is_the_head_when_evaluate_scored_cached_features(
    checkpoint: tuple[Path, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, full, head = checkpoint
    peak = head  # the head's fp32 weights on the GPU: all a cached-feature evaluation allocates
    detail = _run_evaluate_check(monkeypatch, path, "features", peak)
    assert "head" in detail and f"{head / 2**20:.2f} MiB" in detail
    with pytest.raises(CheckFailed, match="head"):  # a head left on the CPU allocates ~nothing
        _run_evaluate_check(monkeypatch, path, "features", head // 2 - 1)


def test_evaluate_threshold_is_the_full_model_when_evaluate_scored_frames(
    checkpoint: tuple[Path, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, full, head = checkpoint
    detail = _run_evaluate_check(monkeypatch, path, "frames", full // 2)
    assert "full model" in detail and f"{full / 2**20:.2f} MiB" in detail
    with pytest.raises(CheckFailed, match="full model"):  # the head's bytes are not the full model's
        _run_evaluate_check(monkeypatch, path, "frames", head)


def test_evaluate_features_check_uses_the_same_threshold_function(checkpoint: tuple[Path, int, int]) -> None:
    path, full, head = checkpoint
    assert device.evaluated_weight_bytes(path, "features") == head
    assert device.evaluated_weight_bytes(path, "frames") == full
    with pytest.raises(ValueError, match="train.source"):
        device.evaluated_weight_bytes(path, "clips")

