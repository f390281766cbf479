"""``model.weights_file`` names the same file wherever the params are read (Ray workers, a served
model, a KubeRay pod run elsewhere): a relative path is anchored at the directory of params.yaml."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from madapter.config import load_params


@pytest.mark.parametrize("written", ["weights/lite0.pth", "./weights/lite0.pth"])
def test_relative_weights_file_is_read_against_the_params_directory(tmp_path: Path, monkeypatch, written: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(f"model:\n  weights_file: {written}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    params = load_params(repo / "params.yaml")
    assert params.model.weights_file == (repo / "weights" / "lite0.pth").resolve()
    overridden = load_params(os.path.relpath(repo / "params.yaml"), {"model.weights_file": "other.safetensors"})
    assert overridden.model.weights_file == (repo / "other.safetensors").resolve()


def test_absolute_and_unset_weights_file_are_kept(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("model:\n  weights_file: /data/weights/vit.pth\n")
    assert load_params(tmp_path / "params.yaml").model.weights_file == Path("/data/weights/vit.pth")
    (tmp_path / "params.yaml").write_text("model:\n  backbone: resnet18\n")
    assert load_params(tmp_path / "params.yaml").model.weights_file is None
