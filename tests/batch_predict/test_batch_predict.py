"""``batch-predict`` end to end on real Ray Data, real decord, a real checkpoint and a real MLflow registry.

Over the synthetic test split plus three bad inputs (a truncated mp4, a text file named .mp4, a
missing file): one row per input, in input order, error rows with empty predictions for the bad
ones, and for every good video exactly what ``predict`` answers for it (same top-k labels, scores
within float tolerance: the actor scores several videos per forward pass, ``predict`` one).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from madapter.batch.dataflow import BatchRequest, batch_predict
from madapter.cli import app
from madapter.predict import predict
from tests.batch_predict.conftest import BAD, Dataset

pytestmark = pytest.mark.integration

TOLERANCE = 1e-5


def assert_matches_predict(table: pd.DataFrame, dataset: Dataset, model: str, sources: dict[str, Path]) -> None:
    """Every row without an error has ``predict``'s top-k (labels equal, scores within TOLERANCE)."""
    good = table[table["error"] == ""]
    expected = predict([sources[p] for p in good["path"]], model=model, params=dataset.params, top_k=3)
    for (_, row), want in zip(good.iterrows(), expected, strict=True):
        assert isinstance(want, list), f"predict failed on {row['path']}: {want}"
        assert [row[f"label_{i}"] for i in (1, 2, 3)] == [w["label"] for w in want], row["path"]
        for i, w in enumerate(want, start=1):
            assert row[f"score_{i}"] == pytest.approx(w["score"], abs=TOLERANCE), (row["path"], i)


def assert_error_rows(table: pd.DataFrame, bad_paths: set[str]) -> None:
    """Exactly the bad inputs have an error, one line each, and no predictions."""
    errors = table[table["error"] != ""]
    assert set(errors["path"]) == bad_paths
    for _, row in errors.iterrows():
        assert "\n" not in row["error"]
        for i in (1, 2, 3):
            assert pd.isna(row[f"label_{i}"]) and pd.isna(row[f"score_{i}"]), row.to_dict()
    scored = table[table["error"] == ""]
    assert scored[[f"label_{i}" for i in (1, 2, 3)]].notna().all().all()
    assert (scored["score_1"] >= scored["score_2"]).all() and (scored["score_2"] >= scored["score_3"]).all()


def test_split_with_bad_videos_to_parquet(dataset: Dataset, registered: str, ray_session, tmp_path: Path) -> None:
    """The registered champion over the test split (good videos + 3 bad inputs) -> Parquet."""
    output = tmp_path / "out" / "test.parquet"
    result = batch_predict(dataset.params, BatchRequest(output=output, model=registered, split="test"))

    table = pd.read_parquet(output)
    assert list(table.columns) == ["path", "true_label", "label_1", "score_1", "label_2", "score_2",
                                   "label_3", "score_3", "error"]
    assert list(table["path"]) == [row.path for row in dataset.rows]  # one row per input, in index order
    assert list(table["true_label"]) == [row.label_name for row in dataset.rows]
    assert (result.videos, result.errors) == (len(dataset.rows), len(BAD))
    assert result.views == len(dataset.good) * 2  # 2 clips x 1 crop per readable video
    assert_error_rows(table, set(BAD))
    errors = dict(zip(table["path"], table["error"], strict=True))
    assert "not found" in errors["bad/missing.mp4"]
    assert_matches_predict(table, dataset, registered, {p: dataset.source(p) for p in dataset.good})


def test_list_with_bad_videos_to_csv_via_cli(dataset: Dataset, checkpoint: Path, ray_session, tmp_path: Path) -> None:
    """``python -m madapter batch-predict --list`` with a checkpoint -> CSV; relative lines resolve
    against the list's folder; exit code 0 even though some inputs are bad."""
    raw = dataset.source(".")
    lines = [str(dataset.source(p)) for p in dataset.good[:3]] + ["bad/not_a_video.mp4", "/no/such/video.mp4",
                                                                  dataset.good[3]]
    list_file = raw / "to_score.txt"
    list_file.write_text("# videos to score\n" + "\n".join(lines) + "\n\n")
    output = tmp_path / "scores.csv"

    result = CliRunner().invoke(app, ["batch-predict", "--list", str(list_file), "--output", str(output),
                                      "--model", str(checkpoint), "--params", str(dataset.params_file)])
    assert result.exit_code == 0, result.output
    assert f"{output}: 6 rows (2 errors)" in result.stdout

    table = pd.read_csv(output, keep_default_na=False, na_values={f"score_{i}": [""] for i in (1, 2, 3)})
    table = table.replace({f"label_{i}": {"": None} for i in (1, 2, 3)})
    assert list(table["path"]) == lines
    assert "true_label" not in table.columns
    assert_error_rows(table, {"bad/not_a_video.mp4", "/no/such/video.mp4"})
    sources = {line: (raw / line) for line in lines}
    assert_matches_predict(table, dataset, str(checkpoint), sources)


@pytest.mark.parametrize(("option", "expected"), [(["--use-gpu"], "--use-gpu"), (["--actors", "2"], "--actors 2")])
def test_plans_the_cluster_cannot_run_are_refused(option: list[str], expected: str, dataset: Dataset,
                                                  checkpoint: Path, ray_session, tmp_path: Path) -> None:
    """GPU actors on a Ray without GPUs, or actors that leave no CPU to decode on (this Ray has 2 CPUs):
    one line naming the option, exit code 2, nothing written (a local Ray would otherwise wait forever)."""
    output = tmp_path / "never.parquet"
    result = CliRunner().invoke(app, ["batch-predict", "--split", "test", "--output", str(output), "--model",
                                      str(checkpoint), "--params", str(dataset.params_file), *option])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert not output.exists()
