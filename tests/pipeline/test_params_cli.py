"""params.yaml, presets and the CLI's configuration path, end to end through ``python -m madapter``.

A bad params.yaml must stop a stage before it does any work, with ONE line naming the key and
exit code 2; these tests run the real CLI in a subprocess and check the working directory is
left untouched.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from madapter.cli import parse_overrides, resolve_params
from madapter.config import ConfigError, Params, load_params
from madapter.config import flatten_keys as flatten
from tests.pipeline.conftest import REPO, run_cli

PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def _bad_params(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    edit(data)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path


def test_params_yaml_spells_out_every_schema_key():
    """DVC tracks params by key, and params.yaml documents the defaults: no key may be missing."""
    in_file = set(flatten(yaml.safe_load((REPO / "params.yaml").read_text())))
    in_schema = set(flatten(json.loads(Params().model_dump_json())))
    assert in_schema - in_file == set(), "add these keys (with a comment) to params.yaml"
    assert in_file - in_schema == set(), "params.yaml has keys the schema does not know"


def test_default_params_are_the_offline_demo():
    params = load_params(REPO / "params.yaml")
    assert params.dataset.name == "synthetic"
    assert params.model.pretrained is False and params.model.weights_file is None
    assert params.train.use_gpu is False and params.train.num_workers == 2
    assert params.mlflow.tracking_uri is None  # local store under outputs/


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["train"].update(epochz=3), "unknown key 'train.epochz'"),
        (lambda d: d["train"].update(epochs=-1), "train.epochs"),
        (lambda d: d["dataset"].update(name="imagenet"), "dataset.name"),
        (lambda d: d.update(trainer={"epochs": 1}), "unknown key 'trainer'"),
    ],
    ids=["unknown-key", "negative-epochs", "unknown-dataset", "unknown-section"],
)
@pytest.mark.parametrize("stage", ["download", "train"])
def test_bad_params_fail_before_any_work_with_one_line(tmp_path, edit, expected, stage):
    cwd = _bad_params(tmp_path, edit)
    proc = run_cli([stage], cwd)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    error_lines = [line for line in errors if line.startswith("error:")]
    assert len(error_lines) == 1 and expected in error_lines[0] and "params.yaml" in error_lines[0], errors
    assert sorted(p.name for p in cwd.iterdir()) == ["params.yaml"], "the stage did work before validating"


def test_bad_override_names_the_key(tmp_path):
    proc = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "-S", "train.batch_size=0"], tmp_path)
    assert proc.returncode == 2
    assert "train.batch_size" in proc.stderr and "greater than 0" in proc.stderr


def test_missing_params_file_is_one_line(tmp_path):
    proc = run_cli(["scan"], tmp_path)
    assert proc.returncode == 2
    assert "params.yaml: file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_check_params_ok_and_overrides_parse_as_yaml(tmp_path):
    proc = run_cli(
        ["check-params", "--params", str(REPO / "params.yaml"), "-S", "train.epochs=7", "-S", "model.levels=[1,3]"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout and "epochs=7" in proc.stdout
    assert parse_overrides(["model.levels=[1,3]", "dataset.source=null"]) == {
        "model.levels": [1, 3],
        "dataset.source": None,
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.epochs"])


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_presets_validate_and_change_only_params(preset):
    data = yaml.safe_load(preset.read_text())
    params = resolve_params(REPO / "params.yaml", [preset], None)
    assert params.dataset.name != "synthetic"
    for key, value in flatten(data).items():
        section, *rest = key.split(".")
        node = getattr(params, section)
        for part in rest:
            node = getattr(node, part)
        assert (str(node) if isinstance(node, Path) else node) == value, key


def test_ucf101_preset_is_clip_b16_eight_frames():
    params = resolve_params(REPO / "params.yaml", [REPO / "presets/ucf101_clip_b16.yaml"], None)
    assert (params.dataset.name, params.dataset.fold) == ("ucf101", 1)
    assert params.model.backbone == "vit_base_patch16_clip_224.openai" and params.model.pretrained
    assert params.model.num_frames == 8


def test_preset_args_round_trip_to_dvc_set_param(tmp_path):
    """``preset-args`` prints what ``dvc exp run`` needs; parsing it back gives the preset."""
    preset = REPO / "presets/ssv2.yaml"
    proc = run_cli(["preset-args", str(preset), "--params", str(REPO / "params.yaml")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    pairs = [arg.removeprefix("--set-param=") for arg in shlex.split(proc.stdout)]
    assert all("=" in p for p in pairs)
    assert parse_overrides(pairs) == flatten(yaml.safe_load(preset.read_text()))


def test_bad_preset_is_rejected_with_its_file_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 0\n")
    proc = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "--preset", str(bad)], tmp_path)
    assert proc.returncode == 2 and "train.epochs" in proc.stderr
    proc = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "--preset", "nope.yaml"], tmp_path)
    assert proc.returncode == 2 and "nope.yaml: preset file not found" in proc.stderr
