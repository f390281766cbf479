"""The sweep's parts without running one: the params section, the space, a trial's params, the
resume record, the choice of the best trial and the preset it writes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from madapter.config import ConfigError, params_from_dict
from madapter.overrides import resolve_params
from madapter.tune.preset import header, sections, write_preset
from madapter.tune.runs import TrialOutcome
from madapter.tune.space import check_space, describe_space, param_space
from madapter.tune.state import SweepState, check_resumable, spec_digest
from madapter.tune.sweep import best_trial, outcome_of, pinned_base
from madapter.tune.trial import SweepContext, trial_params
from tests.common.processes import REPO


def _params(**sections):
    return params_from_dict(sections, "tests/tune")


def test_tune_is_no_dvc_stage_and_no_stage_param() -> None:
    """A sweep explores; what it produces is a preset, which `dvc exp run` then tracks."""
    from madapter.stages import STAGES

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "tune" not in stages and "tune" not in {s.name for s in STAGES}
    for name, stage in stages.items():
        assert not [p for p in stage.get("params", []) if str(p).split(".")[0] == "tune"], name


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"grace_period": 5, "max_epochs": 4}, "tune.grace_period (5) must not exceed tune.max_epochs (4)"),
        ({"space": {"lr": [0.0, 0.1]}}, "tune.space.lr"),
        ({"space": {"weight_decay": [0.2, 0.1]}}, "tune.space.weight_decay"),
        ({"space": {"levels": [[]]}}, "tune.space.levels"),
        ({"space": {"temporal": ["lstm"]}}, "tune.space.temporal"),
        ({"metric": "top1"}, "tune.metric"),
        ({"name": "../elsewhere"}, "tune.name"),
    ],
)
def test_bad_tune_values_are_one_line_naming_the_key(tune, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _params(tune=tune)


def test_space_keys_are_the_params_keys_they_set() -> None:
    from ray import tune

    params = _params(tune={"space": {"levels": [None, [3, 7]], "fusion": []}})
    space = param_space(params.tune.space)
    assert set(space) == {"train.lr", "train.weight_decay", "model.width", "model.levels", "model.temporal"}
    assert isinstance(space["train.lr"].get_sampler(), tune.search.sample.LogUniform)
    assert space["model.levels"].categories == [None, [3, 7]]
    assert describe_space(params.tune.space)["train.lr"] == "loguniform(0.0001, 0.01)"


def test_a_space_that_searches_nothing_or_levels_on_features_is_refused() -> None:
    empty = {k: [] for k in ("lr", "weight_decay", "width", "levels", "temporal", "fusion")}
    with pytest.raises(ConfigError, match="nothing to search"):
        check_space(_params(tune={"space": empty}))
    with pytest.raises(ConfigError, match="train.source: features cannot search them"):
        check_space(_params(train={"source": "features"}, tune={"space": {"levels": [[5, 11]]}}))
    check_space(_params(train={"source": "features"}))  # the default space is fine on features


def test_a_trial_gets_its_values_its_own_outputs_one_worker_and_the_sweeps_store(tmp_path: Path) -> None:
    params = _params(base={"outputs_dir": str(tmp_path / "out")}, train={"num_workers": 4, "max_epochs_per_run": 1},
                     tune={"max_epochs": 3})
    base = pinned_base(params)
    assert base.mlflow.tracking_uri == f"sqlite:///{(tmp_path / 'out' / 'mlflow.db').resolve()}"
    assert Path(base.base.data_dir).is_absolute()
    ctx = SweepContext("s", str(tmp_path / "tune" / "s"), "parent", str(tmp_path))
    trial = trial_params(base, {"train.lr": 0.01, "model.levels": [3, 7], "model.fusion": "gated"}, ctx, "ab_00001")
    assert (trial.train.lr, trial.model.levels, trial.model.fusion) == (0.01, [3, 7], "gated")
    assert trial.base.outputs_dir == tmp_path / "tune" / "s" / "ab_00001"
    assert trial.train.storage_path == trial.base.outputs_dir / "ray"
    assert (trial.train.run_name, trial.train.epochs, trial.train.num_workers) == ("s-ab_00001", 3, 1)
    assert trial.train.max_epochs_per_run is None
    assert trial.mlflow.tracking_uri == base.mlflow.tracking_uri  # not moved with outputs_dir


def test_resuming_needs_the_same_search_and_store(tmp_path: Path) -> None:
    params = _params()
    state = SweepState("madapter-sweep", "p", "sqlite:///x.db", spec_digest(params))
    # where and how fast it runs, and the keys every trial overrides, may change
    for changed in (_params(tune={"storage_path": "elsewhere", "output": "x.yaml", "max_concurrent_trials": 1}),
                    _params(train={"epochs": 40, "num_workers": 8, "lr": 0.5}), _params(model={"width": 8})):
        check_resumable(state, changed, "sqlite:///x.db", tmp_path)
    for changed in (_params(tune={"trials": 9}), _params(tune={"space": {"width": [8]}}), _params(train={"batch_size": 2})):
        with pytest.raises(ConfigError, match="other tune/model/train settings"):
            check_resumable(state, changed, "sqlite:///x.db", tmp_path)
    with pytest.raises(ConfigError, match="logs to MLflow at sqlite:///x.db"):
        check_resumable(state, params, "http://elsewhere", tmp_path)


def _result(trial: str, epoch: int | None, loss: float | None = 1.0, error=None):
    metrics = {"epoch": epoch, "train_loss": loss} if epoch else {}
    return SimpleNamespace(metrics=metrics, config={"train.lr": 0.1}, error=error, path=f"/x/sweep/{trial}")


def test_how_each_trial_ended_and_which_is_best() -> None:
    seen = [outcome_of(_result("t_0", 3, 0.5), "TERMINATED", "train_loss", 3, ["train.lr"]),
            outcome_of(_result("t_1", 1, 0.4), "TERMINATED", "train_loss", 3, ["train.lr"]),
            outcome_of(_result("t_2", 2, 0.1), "RUNNING", "train_loss", 3, ["train.lr"]),
            outcome_of(_result("t_3", 1, 0.05, error=RuntimeError("boom\nmore")), "ERROR", "train_loss", 3,
                       ["train.lr"])]
    assert [(t.trial_id, t.outcome, t.epochs) for t in seen] == [
        ("t_0", "completed", 3), ("t_1", "stopped_early", 1), ("t_2", "unfinished", 2), ("t_3", "error", 1)]
    assert seen[3].error == "boom" and seen[0].config == {"train.lr": 0.1}
    assert best_trial(seen, "train_loss").trial_id == "t_2"  # lowest loss; a failed trial never wins
    assert best_trial(seen[:2], "train_loss").trial_id == "t_1"
    accuracies = [TrialOutcome("a", "completed", 3, 0.5, {}), TrialOutcome("b", "completed", 3, 0.75, {})]
    assert best_trial(accuracies, "val_acc").trial_id == "b"
    assert best_trial([TrialOutcome("a", "error", 0, None, {})], "val_acc") is None


def test_the_preset_holds_the_searched_keys_and_check_params_accepts_it(tmp_path: Path) -> None:
    params = _params()
    config = {"train.lr": 0.0023, "model.levels": [5, 11], "model.temporal": "attention"}
    assert sections(config) == {"model": {"levels": [5, 11], "temporal": "attention"}, "train": {"lr": 0.0023}}
    path = tmp_path / "tuned.yaml"
    write_preset(path, params, config, header(params, "ab_00002", 0.75, 4, "run1", "parent1", path))
    text = path.read_text()
    assert "trial ab_00002, val_acc 0.7500 after epoch 4" in text and f"preset-args {path}" in text
    resolved = resolve_params(REPO / "params.yaml", [path], None)
    assert (resolved.train.lr, resolved.model.levels, resolved.model.temporal) == (0.0023, [5, 11], "attention")
    with pytest.raises(ConfigError, match="model.width"):
        write_preset(tmp_path / "bad.yaml", params, {"model.width": -1}, "")
    assert not (tmp_path / "bad.yaml").exists()
