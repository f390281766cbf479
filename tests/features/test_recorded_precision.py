"""Where and in what precision the backbone REALLY ran, for features and for what is trained on them.

On cached features the backbone ran once, in the features stage, wherever its actors were: the
training run and ``metrics.json`` must record THAT device and precision (read from
``features.json``), never the current run's device combined with ``model.half_precision``
(which once recorded "bf16" for features computed on the CPU in fp32).  ``features.json`` records
what the actors report, and ``features.use_gpu: true`` without a usable GPU is refused before any
work starts, instead of silently extracting on the CPU under a cache key that says GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from madapter.config import ConfigError, Params
from madapter.data.features import stage as features_stage
from madapter.data.features.feature_store import FEATURES_META, read_features_meta
from madapter.data.features.stage import extract_features
from madapter.errors import StageError
from madapter.paths import StagePaths

from .conftest import feature_params

CPU_FP32 = {"device": "cpu", "backbone_precision": "fp32"}
CUDA_BF16 = {"device": "cuda", "backbone_precision": "bf16"}


def _meta(computed_on: dict | None = None, use_gpu: bool = False) -> dict:
    """The parts of a ``features.json`` the record reads."""
    meta = {"enabled": True, "cache_key": {"use_gpu": use_gpu, "half_precision": True}}
    if computed_on is not None:
        meta["computed_on"] = computed_on
    return meta


@pytest.fixture
def half_precision_features(data_copy: Path, ray_session) -> tuple[Params, Path]:
    """Features extracted on the CPU by the real stage, with params asking for half precision and bf16."""
    params = feature_params(data_copy, model={"half_precision": True}, train={"amp": "bf16"})
    return params, extract_features(params)


@pytest.mark.integration
def test_features_json_records_cpu_fp32_for_a_cpu_extraction_even_under_half_precision(
    half_precision_features: tuple[Params, Path],
) -> None:
    params, root = half_precision_features
    meta = read_features_meta(root)
    assert params.model.half_precision and meta["cache_key"]["half_precision"] is True
    assert meta["computed_on"] == {**CPU_FP32, "actors_agree": True, "actors": [CPU_FP32]}


def test_the_record_of_a_run_on_features_is_the_extractions_not_this_runs() -> None:
    from madapter.data.features.feature_store import backbone_computed_on
    from madapter.models.precision import describe_recorded as recorded

    def describe_recorded(half_precision: bool, amp: str, device: torch.device, meta: dict | None) -> dict:
        """The record of a run reading the features of ``meta`` (features.json), or of frames (``None``)."""
        return recorded(half_precision, amp, device, None if meta is None else backbone_computed_on(meta))

    cuda = torch.device("cuda")  # the head on a GPU (a device object needs no GPU to exist)
    on_gpu_head = describe_recorded(True, "bf16", cuda, _meta({**CPU_FP32, "actors_agree": True}))
    assert on_gpu_head == {"device": "cuda", "backbone_device": "cpu", "backbone_precision": "fp32",
                           "train_amp": "bf16", "train_amp_effective": "bf16"}
    on_cpu_head = describe_recorded(False, "bf16", torch.device("cpu"), _meta({**CUDA_BF16, "actors_agree": True}))
    assert on_cpu_head == {"device": "cpu", "backbone_device": "cuda", "backbone_precision": "bf16",
                           "train_amp": "bf16", "train_amp_effective": "fp32"}
    # a features.json written before extraction recorded it: CPU actors ran fp32; GPU ones cannot be told
    assert describe_recorded(True, "none", cuda, _meta(None, use_gpu=False))["backbone_precision"] == "fp32"
    older_gpu = describe_recorded(True, "none", cuda, _meta(None, use_gpu=True))
    assert (older_gpu["backbone_device"], older_gpu["backbone_precision"]) == ("unknown", "unknown")
    # on frames the backbone runs in this process: its device, and model.half_precision on it
    frames = describe_recorded(True, "bf16", torch.device("cpu"), None)
    assert frames == {"device": "cpu", "backbone_device": "cpu", "backbone_precision": "fp32", "train_amp": "bf16",
                      "train_amp_effective": "fp32"}


def test_actors_that_disagree_are_recorded_as_such() -> None:
    from madapter.data.features.feature_store import backbone_computed_on, computed_on_record

    record = computed_on_record([("cuda", "bf16"), ("cpu", "fp32"), ("cuda", "bf16")])
    assert record == {"device": "cpu+cuda", "backbone_precision": "bf16+fp32", "actors_agree": False,
                      "actors": [CPU_FP32, CUDA_BF16]}
    assert backbone_computed_on(_meta(record)) == {"device": "cpu+cuda", "backbone_precision": "bf16+fp32"}


class _Tags:
    """Stands in for the MLflow client of :class:`madapter.train.mlflow_log.RunLog`: records tags."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.tags[key] = value

    def log_metric(self, run_id: str, key: str, value: float) -> None:
        pass


def _head(params: Params, root: Path):
    from madapter.data.features.dataset import level_infos
    from madapter.data.features.feature_store import FeatureStore
    from madapter.models.headless import build_feature_classifier

    store = FeatureStore(root, "train")
    return build_feature_classifier(params.model, level_infos(store), store.pooled_dim, len(store.classes),
                                    store.meta["backbone"])


@pytest.mark.integration
def test_training_tags_and_metrics_json_on_features_record_the_extraction(
    half_precision_features: tuple[Params, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import madapter.evaluate
    from madapter.models.checkpoint import save_checkpoint
    from madapter.train.mlflow_log import RunLog

    params, root = half_precision_features
    head = _head(params, root)
    # training: rank 0's MLflow tags, the worker's head on a GPU (params: half precision, amp bf16)
    run_log = RunLog.__new__(RunLog)
    run_log.client, run_log.run_id = _Tags(), "run"
    run_log.setup(head, params, torch.device("cuda"), str(root))
    tags = run_log.client.tags
    assert (tags["train.device"], tags["train.backbone_device"], tags["train.backbone_precision"]) == \
        ("cuda", "cpu", "fp32")
    assert tags["train.train_amp_effective"] == "bf16"  # the head's own autocast on the GPU is this run's

    # evaluation on the cached views: metrics.json (the MLflow logging itself is evaluate's business)
    paths = StagePaths.from_params(params)
    save_checkpoint(paths.train / "checkpoint.pt", head, list(json.loads((root / FEATURES_META).read_text())["classes"]))
    (paths.train / "run.json").write_text(json.dumps({"run_id": "run"}))
    monkeypatch.setattr(madapter.evaluate, "_log_to_run", lambda *args: None)
    evaluate_params = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"device": "cpu"})})
    result = madapter.evaluate.evaluate(evaluate_params)
    written = json.loads((paths.evaluate / "metrics.json").read_text())
    assert result["source"] == "features" and written == json.loads(json.dumps(result))
    assert (written["backbone_device"], written["backbone_precision"]) == ("cpu", "fp32")

    # the same head on the same views, had a GPU extracted them in bf16: read from features.json, not derived
    meta = json.loads((root / FEATURES_META).read_text())
    meta["computed_on"] = {**CUDA_BF16, "actors_agree": True, "actors": [CUDA_BF16]}
    (root / FEATURES_META).write_text(json.dumps(meta))
    written = madapter.evaluate.evaluate(evaluate_params)
    assert (written["device"], written["backbone_device"], written["backbone_precision"]) == ("cpu", "cuda", "bf16")


def _fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An NVIDIA H100 on driver 535 that torch cannot use (see tests/gpu_check/test_gpu_check_diagnosis.py)."""
    import madapter.gpu_diagnosis as diagnosis

    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 535.104.05'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(diagnosis, "PROC_VERSION", tmp_path / "no-proc-file")


@pytest.mark.parametrize("gpu_present", [False, True])
def test_features_use_gpu_without_cuda_is_one_line_before_any_work(
    data_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gpu_present: bool,
) -> None:
    def work_started(*args, **kwargs):
        raise AssertionError("the features stage started working before refusing features.use_gpu")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    for name in ("plan_videos", "describe_model", "_write_all"):
        monkeypatch.setattr(features_stage, name, work_started)
    if gpu_present:
        _fake_nvidia_smi(tmp_path, monkeypatch)
    else:
        monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
        monkeypatch.setattr("madapter.gpu_diagnosis.PROC_VERSION", tmp_path / "no-proc-file")
    params = feature_params(data_copy, features={"use_gpu": True})
    with pytest.raises((ConfigError, StageError)) as err:
        extract_features(params)
    line = str(err.value)
    assert "\n" not in line and line.startswith("features.use_gpu: true")
    assert "set features.use_gpu: false" in line
    assert ("535.104.05" in line and "NVIDIA H100 80GB HBM3" in line) is gpu_present
    features = StagePaths.from_params(params).features
    assert not features.exists() and not features.with_name(features.name + ".partial").exists()


def test_an_extraction_actor_without_cuda_refuses_instead_of_running_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ray actor given a GPU that torch cannot use (e.g. an old driver on a cluster node)."""
    from madapter.data.features.extractor import BackboneExtractor, Plan

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = feature_params(tmp_path, features={"use_gpu": True})
    threads = torch.get_num_threads()
    with pytest.raises(StageError) as err:
        BackboneExtractor(params.model_dump(mode="json"), Plan(str(tmp_path)), 2, threads)
    line = str(err.value)
    assert "\n" not in line and line.startswith("features.use_gpu: true") and "set features.use_gpu: false" in line
