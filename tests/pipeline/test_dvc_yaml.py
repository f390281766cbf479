"""``dvc.yaml`` is the one stage graph: check it against the code, the params and the paths.

These read the graph through DVC's own API (templating resolved), so what is checked is what
``dvc repro`` will run.
"""

from __future__ import annotations

import pytest
import yaml
from dvc.repo import Repo

from madapter.cli import app
from madapter.config import flatten_keys as flatten
from madapter.config import load_params
from madapter.paths import StagePaths
from madapter.stages import STAGE_NAMES, STAGES
from pipelines.dvc_deps import NOT_A_DEP, expected_code_deps, rewrite_code_deps, stage_sources
from tests.common.processes import REPO

STAGE_MODULE = {stage.name: stage.module for stage in STAGES}


@pytest.fixture(scope="module")
def stages():
    with Repo(str(REPO)) as repo:
        return {stage.addressing: stage for stage in repo.index.stages}


def test_stage_order_and_one_library_entry_point_each(stages):
    assert list(stages) == list(STAGE_NAMES)
    cli_commands = [command.name for command in app.registered_commands]
    assert [name for name in cli_commands if name in STAGE_NAMES] == list(STAGE_NAMES)
    for name, stage in stages.items():
        assert stage.cmd == f"python -m madapter {name}"


@pytest.mark.parametrize("stage_name", STAGE_NAMES)
def test_deps_are_exactly_the_modules_the_stage_imports(stages, stage_name):
    """A module the stage imports but DVC does not watch would leave stale outputs after an edit."""
    module = STAGE_MODULE[stage_name]
    used = stage_sources(REPO, module) - NOT_A_DEP
    assert module.replace(".", "/") + ".py" in used, f"madapter/stages.py names {module}, which does not exist"
    declared = {str(d.def_path) for d in stages[stage_name].deps if str(d.def_path).startswith("madapter/")}
    assert used - declared == set(), f"add to {stage_name}.deps in dvc.yaml"
    assert declared - used == set(), f"{stage_name}.deps lists modules the stage does not import"
    assert all((REPO / p).is_file() for p in declared)


def test_dep_rewriter_replaces_only_code_deps_and_keeps_the_rest():
    """``python -m pipelines.dvc_deps --write`` must keep data deps, params and comments."""
    text = (REPO / "dvc.yaml").read_text()
    expected = expected_code_deps(REPO)
    assert rewrite_code_deps(text, dict(expected)) == text, "run: python -m pipelines.dvc_deps --write"
    stale = text.replace("      - madapter/config.py\n", "      - madapter/config.py\n      - madapter/gone.py\n", 1)
    assert "madapter/gone.py" not in rewrite_code_deps(stale, dict(expected))
    assert rewrite_code_deps(stale, dict(expected)) == text


def test_params_exist_and_outs_follow_stage_paths(stages):
    params_yaml = yaml.safe_load((REPO / "params.yaml").read_text())
    keys = set(flatten(params_yaml)) | set(params_yaml) | {k.rsplit(".", 1)[0] for k in flatten(params_yaml)}
    for name, stage in stages.items():
        for dep in stage.params:
            missing = set(dep.params) - keys
            assert not missing, f"{name}: params {missing} not in params.yaml"
    paths = StagePaths.from_params(load_params(REPO / "params.yaml"))
    expected = {
        "download": paths.raw, "index": paths.index, "scan": paths.scan, "decode": paths.frames, "features": paths.features,
        "train": paths.train, "evaluate": paths.evaluate, "register": paths.register,
    }
    for name, stage in stages.items():
        assert str(expected[name]) in [str(o.def_path) for o in stage.outs], name


def test_data_flows_along_the_graph(stages):
    """Each stage depends on the outputs of the stage(s) before it (so DVC orders and re-runs them)."""
    outs = {name: {str(o.def_path) for o in stage.outs} for name, stage in stages.items()}
    deps = {name: {str(d.def_path) for d in stage.deps} for name, stage in stages.items()}
    for upstream, downstream in zip(STAGE_NAMES, STAGE_NAMES[1:], strict=False):
        assert outs[upstream] & deps[downstream], f"{downstream} does not depend on {upstream}'s output"


def test_ray_checkpoints_persist_and_metrics_plots_declared():
    train = {str(o.def_path): o for o in _stage("train").outs}
    ray_dir = str(load_params(REPO / "params.yaml").train.storage_path)
    assert train[ray_dir].persist and not train[ray_dir].use_cache
    raw = yaml.safe_load((REPO / "dvc.yaml").read_text())
    assert any("metrics.json" in m for m in raw["metrics"])
    plot_text = yaml.safe_dump(raw["plots"])
    assert "history.json" in plot_text and "predictions.csv" in plot_text and "confusion" in plot_text


def _stage(name: str):
    with Repo(str(REPO)) as repo:
        return next(s for s in repo.index.stages if s.addressing == name)


def test_default_remote_is_a_local_directory():
    with Repo(str(REPO)) as repo:
        remote = repo.config["core"]["remote"]
        url = repo.config["remote"][remote]["url"]
    assert "://" not in url, "the default remote must work offline (a local directory)"
