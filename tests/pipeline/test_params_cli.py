"""params.yaml, presets and the CLI's configuration path, end to end through ``python -m madapter``.

A bad params.yaml must stop a stage before it does any work, with ONE line naming the key and
exit code 2; these tests run the real CLI in a subprocess and check the working directory is
left untouched.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from madapter.config import (
    ConfigError,
    Params,
    demo_only_settings,
    leaf_of,
    load_params,
    params_from_dict,
    split_key,
)
from madapter.config import flatten_keys as flatten
from madapter.overrides import parse_overrides, resolve_params
from madapter.tracking import flatten_params
from tests.common.processes import REPO, run, run_cli

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
    assert params.train.use_gpu is False and params.train.num_workers == 1
    assert params.train.source == "features"  # the demo trains on cached backbone outputs
    assert params.mlflow.tracking_uri is None  # local store under outputs/


@pytest.mark.integration
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


@pytest.mark.integration
def test_bad_override_names_the_key(tmp_path):
    proc = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "-S", "train.batch_size=0"], tmp_path)
    assert proc.returncode == 2
    assert "train.batch_size" in proc.stderr and "greater than 0" in proc.stderr


@pytest.mark.integration
def test_missing_params_file_is_one_line(tmp_path):
    proc = run_cli(["scan"], tmp_path)
    assert proc.returncode == 2
    assert "params.yaml: file not found" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.integration
def test_check_params_ok_and_overrides_parse_as_yaml(tmp_path):
    proc = run_cli(
        ["check-params", "--params", str(REPO / "params.yaml"), "-S", "train.epochs=7", "-S", "model.levels=[1,3]"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout and "epochs=7" in proc.stdout
    assert "warning" not in proc.stderr  # the demo's own small settings are the demo's to keep
    assert parse_overrides(["model.levels=[1,3]", "dataset.source=null"]) == {
        "model.levels": [1, 3],
        "dataset.source": None,
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["train.epochs"])


@pytest.mark.integration
def test_check_params_warns_when_a_real_dataset_keeps_the_demos_small_settings(tmp_path):
    """Users who point params.yaml at their own videos get the demo's 64-px frames (and, set to save
    disk, 2x2 grids) silently otherwise: one warning line per key, naming it and what to set; still
    valid (exit 0)."""
    proc = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "-S", "dataset.name=list",
                    "-S", f"dataset.list_root={tmp_path}", "-S", "model.level_pool=2"], tmp_path)
    assert proc.returncode == 0 and "OK (dataset=list" in proc.stdout, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
    assert [w.split(":")[1].strip() for w in warnings] == ["model.level_pool", "model.img_size", "decode.size"]
    assert all("presets/custom_list.yaml" in w for w in warnings), warnings


def test_demo_only_settings_are_flagged_only_off_the_demo_and_no_preset_keeps_one():
    demo = load_params(REPO / "params.yaml")
    assert demo_only_settings(demo) == []
    on_real_data = demo.model_copy(update={"dataset": demo.dataset.model_copy(update={"name": "ucf101"})})
    assert [line.split(":")[0] for line in demo_only_settings(on_real_data)] == ["model.img_size", "decode.size"]
    pooled = on_real_data.model_copy(update={"model": demo.model.model_copy(update={"level_pool": 2})})
    assert [line.split(":")[0] for line in demo_only_settings(pooled)] == [
        "model.level_pool", "model.img_size", "decode.size"]
    three = pooled.model_copy(update={"model": demo.model.model_copy(update={"level_pool": 3})})
    assert "model.level_pool" not in " ".join(demo_only_settings(three))
    for preset in PRESETS:
        assert demo_only_settings(resolve_params(REPO / "params.yaml", [preset], None)) == [], preset.name


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


@pytest.mark.integration
def test_preset_args_round_trip_to_dvc_set_param(tmp_path):
    """``preset-args`` prints what ``dvc exp run`` needs; DVC's own parser (Hydra) reads back the preset."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    preset = REPO / "presets/ssv2.yaml"
    proc = run_cli(["preset-args", str(preset), "--params", str(REPO / "params.yaml")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    args = [arg.removeprefix("--set-param=") for arg in shlex.split(proc.stdout)]
    parsed = OverridesParser.create().parse_overrides(args)
    assert {o.key_or_group: o.value() for o in parsed} == flatten(yaml.safe_load(preset.read_text()))


@pytest.mark.integration
def test_bad_preset_is_rejected_with_its_file_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 0\n")
    proc = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "--preset", str(bad)], tmp_path)
    assert proc.returncode == 2 and "train.epochs" in proc.stderr
    proc = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "--preset", "nope.yaml"], tmp_path)
    assert proc.returncode == 2 and "nope.yaml: preset file not found" in proc.stderr


# --------------------------------------------------------------------------- keys that contain dots
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64

TRICKY_PRESET: dict = {
    "dataset": {"name": "ucf101", "source": "http://mirror.example/ucf,101 (copy)/"},
    "download": {
        "checksums": {
            "UCF101.rar": SHA_A,
            "annotations/k400 train (v2).csv": SHA_B,
            "2020.rar": SHA_C,
        }
    },
    "model": {"backbone": "vit_base_patch16_clip_224.openai", "levels": [2, 5, 11]},
    "train": {"lr": 3e-4, "run_name": "1.0", "use_gpu": True},
    "mlflow": {"experiment": "ucf ${not-an-interpolation}"},
}
"""A preset with everything that a naive flatten or a naive ``-S`` rendering gets wrong: file
names with dots (and a space, parentheses, a leading number) as mapping keys, a string that
looks like a float, a comma (a Hydra sweep unquoted), ``${`` (an OmegaConf interpolation)."""


def _write_preset(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_flatten_stops_at_schema_fields_so_dotted_mapping_keys_survive():
    flat = flatten(TRICKY_PRESET)
    assert flat["download.checksums"] == TRICKY_PRESET["download"]["checksums"]
    assert not any(key.startswith("download.checksums.") for key in flat)
    assert split_key("download.checksums.UCF101.rar") == ("download", "checksums", "UCF101.rar")
    assert split_key("dataset.synthetic.classes") == ("dataset", "synthetic", "classes")
    assert split_key("train.epochz.x") == ("train", "epochz", "x"), "unknown keys split fully (validation names them)"


def test_dotted_mapping_keys_round_trip_through_a_preset(tmp_path):
    preset = _write_preset(tmp_path / "tricky.yaml", TRICKY_PRESET)
    params = resolve_params(REPO / "params.yaml", [preset], None)
    assert params.download.checksums == TRICKY_PRESET["download"]["checksums"]
    assert params.train.run_name == "1.0" and params.mlflow.experiment == "ucf ${not-an-interpolation}"


def test_two_presets_setting_a_mapping_merge_like_dvc(tmp_path):
    first = _write_preset(tmp_path / "a.yaml", {"download": {"checksums": {"UCF101.rar": SHA_A}}})
    second = _write_preset(tmp_path / "b.yaml", {"download": {"checksums": {"split.zip": SHA_B}}})
    params = resolve_params(REPO / "params.yaml", [first, second], None)
    assert params.download.checksums == {"UCF101.rar": SHA_A, "split.zip": SHA_B}


@pytest.mark.parametrize(
    "sets",
    [
        [f"download.checksums.UCF101.rar={SHA_A}"],
        [f"download.checksums={{UCF101.rar: {SHA_A}}}"],
        [f"download.checksums={{UCF101.rar: {SHA_B}}}", f"download.checksums.UCF101.rar={SHA_A}"],
    ],
    ids=["entry-key", "mapping-value", "entry-over-mapping"],
)
def test_set_splits_only_as_deep_as_the_schema(sets):
    params = resolve_params(REPO / "params.yaml", None, sets)
    assert params.download.checksums == {"UCF101.rar": SHA_A}


@pytest.mark.integration
def test_set_into_a_plain_value_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.levels is one value, not a mapping"):
        parse_overrides(["model.levels.0=3"])
    proc = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "-S", "train.epochs.x=1"], tmp_path)
    assert proc.returncode == 2 and "train.epochs is one value" in proc.stderr and "Traceback" not in proc.stderr


def test_mlflow_params_keep_a_mapping_as_one_json_param():
    params = params_from_dict({"download": {"checksums": TRICKY_PRESET["download"]["checksums"]}})
    flat = flatten_params(params)
    assert json.loads(flat["download.checksums"]) == TRICKY_PRESET["download"]["checksums"]
    assert not any(key.startswith("download.checksums.") for key in flat)
    assert all(leaf_of(key) == (key, leaf_of(key)[1]) for key in flat), "every param is exactly one schema field"
    assert flat["train.lr"] == str(params.train.lr) and flat["mlflow.tracking_uri"] == "null"


@pytest.mark.integration
def test_preset_args_refuses_what_dvc_cannot_express(tmp_path):
    preset = _write_preset(tmp_path / "p.yaml", {"download": {"checksums": {"10": SHA_A}}})
    proc = run_cli(["preset-args", str(preset), "--params", str(REPO / "params.yaml")], tmp_path)
    assert proc.returncode == 2 and "download.checksums" in proc.stderr and "params.yaml instead" in proc.stderr


def _dvc_repo(root: Path) -> Path:
    """A throw-away git + DVC repository: this checkout's params.yaml and one stage reading it."""
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    sections = list(yaml.safe_load((REPO / "params.yaml").read_text()))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"noop": {"cmd": "echo ok", "params": sections}}}))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "test@madapter.local"],
        ["git", "config", "user.name", "madapter tests"],
        ["dvc", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "init"],
    ):
        run(cmd, root)
    return root


@pytest.mark.integration
@pytest.mark.parametrize("preset", [*PRESETS, None], ids=[*(p.stem for p in PRESETS), "tricky"])
def test_preset_args_piped_into_real_dvc_exp_run_gives_the_preset(tmp_path, preset):
    """The documented command, for real: ``preset-args P | xargs dvc exp run`` must leave params.yaml
    resolving to exactly what ``--preset P`` gives (dotted file names, quoting and all)."""
    preset = preset or _write_preset(tmp_path / "tricky.yaml", TRICKY_PRESET)
    repo = _dvc_repo(tmp_path / "repo")
    madapter = f"{shlex.quote(sys.executable)} -m madapter"
    pipe = f"{madapter} preset-args {shlex.quote(str(preset))} | xargs dvc exp run --quiet"
    run(["bash", "-o", "pipefail", "-c", pipe], repo, timeout=300)
    applied = load_params(repo / "params.yaml")
    expected = resolve_params(REPO / "params.yaml", [preset], None)
    assert applied.model_dump() == expected.model_dump()


OVERLAYS = sorted((REPO / "presets" / "overlays").glob("*.yaml"))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.stem for p in OVERLAYS])
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_overlays_apply_after_every_dataset_preset_and_win(preset, overlay):
    """docs/benchmarks.md tells GPU users to stack an overlay after a dataset preset: it must validate,
    and the overlay's keys must be what runs (the dataset preset's own values for them lose)."""
    params = resolve_params(REPO / "params.yaml", [preset, overlay], None)
    assert params.dataset.name == resolve_params(REPO / "params.yaml", [preset], None).dataset.name
    for key, value in flatten(yaml.safe_load(overlay.read_text())).items():
        node = params
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value, key
