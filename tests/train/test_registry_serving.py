"""Evaluation, the champion/challenger gate on a real MLflow registry, the pyfunc and `mlflow models serve`.

All on the model trained by the real 2-worker Ray run (``trained`` fixture: the head trained on
cached features, its checkpoint the full model) and the real MLflow server.  Evaluation, the
pyfunc and the served model all run the full model rebuilt from the checkpoint on the SOURCE
videos (``train.source: frames`` for evaluate), as a deployment does; that model must be clearly
better than chance on the held-out test videos.  The "deliberately worse" model is it with its
trainable weights zeroed (constant logits: it always answers class 0).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from mlflow import MlflowClient

from madapter.evaluate import evaluate
from madapter.models.checkpoint import load_checkpoint, save_checkpoint
from madapter.paths import StagePaths
from madapter.predict import VideoPredictor, predict
from madapter.registry import register
from tests.common.processes import BIN, free_port, stop, wait_http
from tests.common.synthetic_data import LEARN_EPOCHS, LEARNED_TOP1, learn_params

pytestmark = pytest.mark.integration
MODEL = "madapter-gate"


def _videos(params, split: str = "train") -> tuple[list[str], list[int], list[str]]:
    """A split's source videos (absolute paths), their labels, and the class names, from the index."""
    paths = StagePaths.from_params(params)
    with open(paths.index / f"{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    classes = (paths.index / "classes.txt").read_text().split()
    return [str(paths.raw / r["path"]) for r in rows], [int(r["label"]) for r in rows], classes


def _on_source_videos(params):
    """The same params, scoring the full model on the source videos (not the head on cached features)."""
    return params.model_copy(update={"train": params.train.model_copy(update={"source": "frames"})})


@pytest.fixture(scope="module")
def evaluated(trained):
    params, _ = trained
    params = _on_source_videos(params)
    return params.model_copy(update={"register": params.register.model_copy(update={"model_name": MODEL})}), evaluate(params)


@pytest.fixture(scope="module")
def worse_params(trained, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """A deliberately worse model: trained checkpoint with all trainable weights zeroed, own MLflow run."""
    params, result = trained
    outputs = tmp_path_factory.mktemp("worse") / "worse"
    worse = learn_params(Path(params.base.data_dir), outputs, mlflow_server, register={"model_name": MODEL},
                         train={"source": "frames"})
    model, ckpt = load_checkpoint(result.checkpoint)
    model.load_trainable_state_dict({k: torch.zeros_like(v) for k, v in model.trainable_state_dict().items()})
    paths = StagePaths.from_params(worse)
    save_checkpoint(paths.train / "checkpoint.pt", model, ckpt["classes"])
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    experiment = client.get_experiment_by_name(worse.mlflow.experiment)
    run = client.create_run(experiment.experiment_id, run_name="worse-baseline")
    client.set_terminated(run.info.run_id, status="FINISHED")  # a complete run: eligible for champion
    epochs = result.epochs
    (paths.train / "run.json").write_text(
        json.dumps({"run_id": run.info.run_id, "completed": True, "epochs_done": epochs, "epochs": epochs})
    )
    return worse


@pytest.fixture(scope="module")
def gate(evaluated, worse_params):
    """worse (no champion yet -> champion), better (beats it -> champion), worse again (-> challenger)."""
    better_params, better_metrics = evaluated
    worse_metrics = evaluate(worse_params)
    first = register(worse_params)
    second = register(better_params)
    third = register(worse_params)
    return {"worse": worse_metrics, "better": better_metrics, "steps": (first, second, third), "worse_params": worse_params}


def test_evaluate_is_deterministic_and_logged_to_the_training_run(evaluated, trained, mlflow_server: str) -> None:
    params, first = evaluated
    again = evaluate(params)
    assert again == first
    assert first["protocol"] == "4x1x1" and first["split"] == "test" and first["dataset"] == "synthetic"
    assert first["source"] == "frames" and first["num_videos"] == len(_videos(params, "test")[0]) == 40
    assert 0.0 <= first["top1"] <= first["top5"] <= 1.0
    # it learned: clearly better than chance (0.25) and than any order-blind model (0.5) on held-out videos
    assert first["top1"] >= LEARNED_TOP1, f"held-out top-1 of the trained model is only {first['top1']:.3f}"
    out = StagePaths.from_params(params).evaluate
    for name in ("metrics.json", "confusion.csv", "per_class.csv", "predictions.csv", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    # the training curves are train's own output; evaluate no longer copies them
    assert not (out / "train_curves.json").exists()
    assert len(json.loads((StagePaths.from_params(params).train / "history.json").read_text())) == LEARN_EPOCHS
    run = MlflowClient(mlflow_server, registry_uri=mlflow_server).get_run(trained[1].run_id)
    assert run.data.metrics["test_4x1x1_top1"] == pytest.approx(first["top1"])
    assert run.data.tags["eval_protocol"] == "4x1x1"


def test_multi_view_protocol_is_named_and_differs_from_single_view(trained, evaluated) -> None:
    params, single = evaluated
    multi = evaluate(params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"clips": 2, "crops": 3})}))
    assert multi["protocol"] == "4x2x3" and multi["clips"] == 2 and multi["crops"] == 3
    assert multi["checkpoint_md5"] == single["checkpoint_md5"]
    evaluate(params)  # restore the 1x1 outputs the registry tests read


def test_gate_promotes_better_and_keeps_worse_as_challenger(gate, mlflow_server: str) -> None:
    worse, better = gate["worse"], gate["better"]
    assert worse["top1"] == pytest.approx(0.25)  # constant logits -> always class 0 -> 10 of 40 test videos
    assert better["top1"] > worse["top1"], "the trained model must beat the zeroed one on the test split"
    first, second, third = gate["steps"]
    assert (first.alias, second.alias, third.alias) == ("champion", "champion", "challenger")
    assert second.champion_before == first.version and "beats champion" in second.reason
    assert not third.promoted and "does not beat" in third.reason
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    assert client.get_model_version_by_alias(MODEL, "champion").version == second.version
    assert client.get_model_version_by_alias(MODEL, "challenger").version == third.version
    versions = {v.version: v for v in client.search_model_versions(f"name='{MODEL}'")}
    assert set(versions) == {first.version, second.version, third.version}
    assert all(s.complete for s in gate["steps"]) and {v.tags["incomplete"] for v in versions.values()} == {"false"}
    assert float(versions[second.version].tags["top1"]) == pytest.approx(better["top1"])
    assert float(versions[third.version].tags["top1"]) == pytest.approx(worse["top1"])
    assert versions[third.version].tags["decision_reason"] == third.reason

    registration = json.loads((StagePaths.from_params(gate["worse_params"]).register / "registration.json").read_text())
    assert registration["alias"] == "challenger" and registration["version"] == third.version


def test_pyfunc_by_alias_predicts_the_held_out_videos(gate, trained, evaluated, mlflow_server: str) -> None:
    params, result = trained
    videos, labels, classes = _videos(params, "test")
    by_alias = predict(videos, f"models:/{MODEL}@champion", params, top_k=2)
    local = VideoPredictor.from_checkpoint(result.checkpoint, params=params)
    predicted = [r[0]["label"] for r in by_alias]
    assert predicted == [local.predict_path(v, 1)[0]["label"] for v in videos]  # served == local checkpoint
    accuracy = np.mean([p == classes[y] for p, y in zip(predicted, labels, strict=True)])
    assert accuracy >= LEARNED_TOP1, f"held-out accuracy through the registered model is only {accuracy:.3f}"
    assert accuracy == pytest.approx(evaluated[1]["top1"])  # the served model sees what evaluate saw
    assert all(len(r) == 2 and r[0]["score"] >= r[1]["score"] for r in by_alias)


def test_predict_reports_bad_files_and_predicts_the_rest(trained, tmp_path: Path) -> None:
    params, result = trained
    videos, _, _ = _videos(params)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    out = predict([videos[0], str(bad), videos[1]], str(result.checkpoint), params, top_k=3)
    assert len(out[0]) == 3 and len(out[2]) == 3
    assert set(out[1]) == {"error"} and out[1]["error"].startswith(str(bad)) and "\n" not in out[1]["error"]


def test_mlflow_models_serve_answers_a_video_request(gate, trained, mlflow_server: str, tmp_path: Path) -> None:
    params, result = trained
    videos, labels, classes = _videos(params)
    port = free_port()
    log = tmp_path / "serve.log"
    # the scoring server execs `uvicorn` from PATH: put the venv first, as an activated venv would
    # paths are refused unless the operator allows their directory
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MADAPTER_ALLOW_PATHS_UNDER": str(StagePaths.from_params(params).raw)}
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion", "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, timeout=120, log=log)
        response = requests.post(
            f"http://127.0.0.1:{port}/invocations",
            json={"dataframe_records": [{"video": videos[0]}], "params": {"top_k": 2}},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        prediction = response.json()["predictions"][0]
        local = VideoPredictor.from_checkpoint(result.checkpoint, params=params).predict_path(videos[0], 2)
        assert prediction["labels"] == [p["label"] for p in local] and prediction["error"] == ""
        assert prediction["scores"] == pytest.approx([p["score"] for p in local], abs=1e-5)
    finally:
        stop(proc)


def test_the_pyfunc_opens_paths_only_under_the_allowed_directory(gate, trained, mlflow_server: str,
                                                                  tmp_path: Path) -> None:
    """Served, a ``video`` path is a file on the server any client could name: refused unless allowed."""
    import mlflow.pyfunc
    import pandas as pd

    from madapter.tracking import fluent_tracking

    params, _ = trained
    videos, _, _ = _videos(params)
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(Path(videos[0]).read_bytes())
    frame = pd.DataFrame({"video": [videos[0], str(outside), "/dev/zero"]})
    with fluent_tracking(mlflow_server):
        default = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion", model_config={"device": "cpu"})
        allowed = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion", model_config={
            "device": "cpu", "allow_paths_under": str(StagePaths.from_params(params).raw)})
    refused = default.predict(frame, params={"top_k": 2})
    assert all(e.startswith(f"{v}: server-side paths are refused") for v, e in zip(frame.video, refused.error, strict=True))
    assert all("\n" not in e for e in refused.error)
    answered = allowed.predict(frame, params={"top_k": 2})
    assert answered.error[0] == "" and len(answered.labels[0]) == 2
    assert answered.error[1] == f"{outside}: not under the allowed directory"
    assert answered.error[2] == "/dev/zero: not under the allowed directory"


def test_cli_predict_prints_each_good_video_and_one_line_per_bad_one(trained, tmp_path: Path) -> None:
    """`python -m madapter predict`: a missing and a corrupt file do not stop the good ones (exit code 1)."""
    import yaml

    params, result = trained
    videos, labels, _ = _videos(params)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(2048))
    missing = tmp_path / "missing.mp4"
    cmd = [str(BIN / "python"), "-m", "madapter", "predict", videos[0], str(missing), str(corrupt), videos[1],
           "--model", str(result.checkpoint), "--params", str(params_file), "--top-k", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [p["video"] for p in printed] == [videos[0], videos[1]]
    assert all(len(p["predictions"]) == 2 for p in printed)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and str(missing) in errors[0] and str(corrupt) in errors[1]
