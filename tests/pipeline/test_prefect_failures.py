"""Failure states of the Prefect flow, on a miniature DVC repository whose stages are shell commands.

The flow and its tasks are the real ones (real Prefect API from the test harness, real
``dvc repro``); only the stage commands are replaced, so a download that fails, or a bad
params.yaml, can be produced on demand in a few seconds.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from madapter.stages import STAGE_NAMES
from pipelines.dvc_stages import StageFailed, run_dvc_stage
from pipelines.flows import madapter_pipeline
from tests.common.processes import REPO, run

pytestmark = pytest.mark.integration


def _stage_cmd(stage: str, fail: bool) -> str:
    """A stage that records each attempt in attempts/<stage>; the failing one ends like a real stage error."""
    code = (
        "import pathlib, sys; p = pathlib.Path('attempts'); p.mkdir(exist_ok=True); "
        f"f = p / '{stage}'; f.write_text(f.read_text() + 'x' if f.exists() else 'x'); "
        f"pathlib.Path('out').mkdir(exist_ok=True); pathlib.Path('out/{stage}').write_text('done'); "
        + ("sys.exit('error: https://mirror.invalid/ucf101.rar: connection refused after 4 retries')" if fail else "")
    )
    return f'{sys.executable} -c "{code}"'


def make_mini_repo(root: Path, failing: str | None = None) -> Path:
    """git + DVC repo with the pipeline's stage names, chained through files under out/."""
    root.mkdir()
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    stages = {}
    previous = None
    for stage in STAGE_NAMES:
        stages[stage] = {
            "cmd": _stage_cmd(stage, fail=stage == failing),
            "deps": [f"out/{previous}"] if previous else [],
            "outs": [{f"out/{stage}": {"cache": False}}],
        }
        previous = stage
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    return root


def _attempts(repo: Path, stage: str) -> int:
    f = repo / "attempts" / stage
    return len(f.read_text()) if f.exists() else 0


def test_failed_download_is_retried_then_fails_the_flow_with_dvc_error(tmp_path, harness):
    repo = make_mini_repo(tmp_path / "mini", failing="download")
    state = madapter_pipeline(
        repo_dir=str(repo), download_retries=1, download_retry_delay_s=0.0, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(StageFailed, match=r"dvc stage 'download' failed .*connection refused"):
        state.result()
    assert _attempts(repo, "download") == 2, "one try + one Prefect retry"
    assert _attempts(repo, "index") == 0, "nothing downstream of a failed stage may run"


def test_bad_params_fail_the_flow_before_any_stage(tmp_path, harness):
    repo = make_mini_repo(tmp_path / "mini")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["epochs"] = -1
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    state = madapter_pipeline(repo_dir=str(repo), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=r"params.yaml: train.epochs: Input should be greater than 0"):
        state.result()
    assert not (repo / "attempts").exists()


def test_a_real_dataset_with_the_demos_settings_is_warned_in_the_flow_run(tmp_path, harness, caplog):
    """The flow validates params before any stage: a real dataset with params.yaml's demo-only settings
    gets the lines ``check-params`` prints, as warnings of the flow run (its log and the Prefect UI)."""
    repo = make_mini_repo(tmp_path / "mini")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["dataset"].update(name="list", list_root=str(tmp_path))
    params["model"]["level_pool"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    with caplog.at_level("WARNING", logger="prefect"):
        state = madapter_pipeline(repo_dir=str(repo), return_state=True)
    assert state.is_completed()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.getMessage().startswith(
        ("model.level_pool:", "model.img_size:", "decode.size:"))]
    assert [line.split(":")[0] for line in warned] == ["model.level_pool", "model.img_size", "decode.size"]


def test_stage_runner_reports_ran_then_skipped(tmp_path):
    """Outside Prefect: the same helper says whether DVC ran the stage or found it up to date."""
    repo = make_mini_repo(tmp_path / "mini")
    first = run_dvc_stage("download", repo)
    second = run_dvc_stage("download", repo)
    forced = run_dvc_stage("download", repo, force=True)
    assert (first.ran, second.ran, forced.ran) == (True, False, True)
    assert _attempts(repo, "download") == 2
    with pytest.raises(ValueError, match="unknown stage"):
        run_dvc_stage("deploy", repo)
