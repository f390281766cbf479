"""The checks of the frames path (the presets' path): the device, the GPU memory benchmark, the whole
pipeline under ``dvc repro``, then evaluate, predict, batch-predict, serve (MLflow and Ray Serve) and NCCL
on its products."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.gpu_check.common import (
    BIN,
    MAX_SCORE_GAP,
    NCCL_OUT,
    REPO,
    SERVED_MIN_MIB,
    TARGET_GB,
    TIMEOUTS,
    CheckFailed,
    Context,
    logger,
)
from infra.gpu_check.device import cuda_peak_of, require_on_gpu
from infra.gpu_check.process import child_env, copy_repo, free_port, last_line, run_logged, stop_group
from infra.gpu_check.settings import gpu_overrides, nccl_cli, write_params

if TYPE_CHECKING:
    import requests


def check_cuda(ctx: Context) -> str:
    """The CUDA device, its memory and whether it has native bf16 (``train.amp`` follows it)."""
    import torch

    ctx.gpus = torch.cuda.device_count()
    props = torch.cuda.get_device_properties(0)
    native_bf16 = props.major >= 8
    ctx.amp = "bf16" if native_bf16 else "fp16"
    return (
        f"{props.name}, {props.total_memory / 2**30:.1f} GB, {ctx.gpus} device(s), compute {props.major}.{props.minor}, "
        f"{'native bf16' if native_bf16 else 'no native bf16: train.amp fp16'}, torch {torch.__version__}"
    )


def check_memory(ctx: Context) -> str:
    """python -m benchmarks.memory --device cuda: peak training memory per mode; madapter below 12.7 GB."""
    out = REPO / "benchmarks" / "results" / "memory_cuda.json"
    run_logged([sys.executable, "-m", "benchmarks.memory", "--device", "cuda", "--out", str(out)],
               REPO, ctx.logs / "memory.log", TIMEOUTS["memory"])
    report = json.loads(out.read_text())
    modes = report["modes"]

    def shown(mode: str) -> str:
        r = modes[mode]
        if r.get("oom"):
            return f"{mode} OOM"
        return f"{mode} {r['peak_gb']:.2f} GB" if "peak_gb" in r else f"{mode} failed ({r.get('error')})"

    detail = ", ".join(shown(m) for m in ("madapter", "linear", "inserted", "full"))
    broken = [m for m, r in modes.items() if "peak_gb" not in r and not r.get("oom")]
    if broken:
        raise CheckFailed(f"{', '.join(broken)} crashed: {detail} (log: {ctx.logs / 'memory.log'})")
    madapter = modes["madapter"]
    if madapter.get("oom") or not report["target"]["met"]:
        raise CheckFailed(f"madapter is not below {TARGET_GB} GB (DiST): {detail} on a "
                          f"{report['setup']['gpu_total_gb']:.1f} GB GPU")
    return f"{detail}; madapter < {TARGET_GB} GB (DiST); {out.relative_to(REPO)}"


def check_pipeline(ctx: Context) -> str:
    """``dvc repro`` of the synthetic pipeline on the GPU in a throw-away copy of this checkout."""
    from madapter.config import load_params

    ctx.repo = copy_repo(ctx.work / "repo")
    write_params(ctx.repo, gpu_overrides(ctx.amp))
    run_logged([sys.executable, "-m", "madapter", "check-params"], ctx.repo, ctx.logs / "check-params.log",
               TIMEOUTS["check_params"])
    started = time.monotonic()
    output = run_logged([sys.executable, "-m", "dvc", "repro"], ctx.repo, ctx.logs / "pipeline.log",
                        TIMEOUTS["pipeline"])
    seconds = time.monotonic() - started
    ran = re.findall(r"Running stage '([^']+)'", output)
    from madapter.stages import STAGE_NAMES

    if ran != list(STAGE_NAMES):
        raise CheckFailed(f"dvc repro ran {ran}, expected {list(STAGE_NAMES)} (log: {ctx.logs / 'pipeline.log'})")
    os.chdir(ctx.repo)  # params.yaml's paths are relative to the repository, as for a user
    ctx.params = load_params(ctx.repo / "params.yaml")
    out = ctx.repo / ctx.params.base.outputs_dir
    run = json.loads((out / "train" / "run.json").read_text())
    if not run["completed"] or run["epochs_done"] != 2:
        raise CheckFailed(f"training stopped after {run['epochs_done']}/2 epochs (completed={run['completed']})")
    metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
    registration = json.loads((out / "register" / "registration.json").read_text())
    expect_trained(ctx.params, "frames", "VideoClassifier")
    if metrics.get("source") != "frames":
        raise CheckFailed(f"{out / 'evaluate' / 'metrics.json'}: evaluate scored {metrics.get('source')!r}, "
                          "expected the full model on frames (train.source: frames)")
    train_tags = {k.removeprefix("train."): v for k, v in run_tags(ctx, run["run_id"]).items() if k.startswith("train.")}
    trained = expect_recorded("training run's MLflow tags", train_tags, ctx.amp)
    evaluated = expect_recorded(f"{out / 'evaluate' / 'metrics.json'}", metrics, None)
    return (
        f"dvc repro: {len(ran)} stages in {seconds:.0f} s; train 2/2 epochs on 1 GPU worker ({trained}), "
        f"peak {run['history'][-1]['peak_memory_mb']:.0f} MB; evaluate ({evaluated}) top1 {metrics['top1']:.3f} "
        f"({metrics['protocol']}); {registration['model_name']} v{registration['version']} @{registration['alias']}"
    )


def run_tags(ctx: Context, run_id: str, params: Any = None) -> dict[str, str]:
    """Tags of an MLflow run in the store of ``params`` (default: the pipeline's)."""
    from mlflow import MlflowClient

    from madapter.tracking import resolve_tracking_uri

    return dict(MlflowClient(tracking_uri=resolve_tracking_uri(params or ctx.params)).get_run(run_id).data.tags)


def expect_recorded(source: str, recorded: dict[str, Any], amp: str | None) -> str:
    """What a stage says it ran on (``madapter.models.precision.describe_recorded``) must be the GPU setup:
    this run on cuda, and the backbone on cuda in half precision (on features: as features.json records)."""
    wrong = []
    for key in ("device", "backbone_device"):
        if recorded.get(key) != "cuda":
            wrong.append(f"{key} {recorded.get(key)!r}, expected 'cuda'")
    if recorded.get("backbone_precision") not in ("bf16", "fp16"):
        wrong.append(f"backbone_precision {recorded.get('backbone_precision')!r}, expected bf16/fp16")
    if amp is not None and recorded.get("train_amp_effective") != amp:
        wrong.append(f"train_amp_effective {recorded.get('train_amp_effective')!r}, expected {amp!r}")
    if wrong:
        raise CheckFailed(f"{source} records {'; '.join(wrong)}")
    shown = [recorded["device"], f"backbone {recorded['backbone_precision']}"]
    return ", ".join(shown + ([f"branch {amp}"] if amp else []))


def expect_trained(params: Any, source: str, model_class: str) -> None:
    """Rank 0's status file must say the worker trained ``model_class`` on ``source`` (what the path measures)."""
    from madapter.train.identity import ray_run_name

    status_file = Path(params.train.storage_path).resolve() / ray_run_name(params) / "workers" / "rank-0.json"
    status = json.loads(status_file.read_text())
    if status.get("source") != source or status.get("model") != model_class:
        raise CheckFailed(f"{status_file}: the worker trained {status.get('model')} on {status.get('source')}, "
                          f"expected {model_class} on {source} (train.source: {source})")


def _checkpoint(ctx: Context) -> Path:
    return ctx.repo / ctx.params.base.outputs_dir / "train" / "checkpoint.pt"


def check_evaluate(ctx: Context) -> str:
    """The evaluate stage in this process; the evaluated model's weights must be allocated on the GPU."""
    from madapter.evaluate import evaluate

    metrics, peak = cuda_peak_of(lambda: evaluate(ctx.params))
    return f"top1 {metrics['top1']:.3f} on {metrics['num_videos']} videos ({metrics['source']}); " + require_on_gpu(
        "evaluate", peak, _checkpoint(ctx), metrics["source"]
    )


def sample_videos(ctx: Context, count: int) -> list[str]:
    from madapter.paths import StagePaths

    paths = StagePaths.from_params(ctx.params)
    with (paths.index / "test.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))[:count]
    return [str((paths.raw / row["path"]).resolve()) for row in rows]


def check_predict(ctx: Context) -> str:
    """``madapter.predict.predict`` on test videos on the GPU; probabilities finite and summing to 1."""
    from madapter.paths import StagePaths
    from madapter.predict import predict

    ctx.videos = sample_videos(ctx, 3)
    index = StagePaths.from_params(ctx.params).index
    classes = len([c for c in (index / "classes.txt").read_text().splitlines() if c.strip()])
    results, peak = cuda_peak_of(lambda: predict(ctx.videos, str(_checkpoint(ctx)), ctx.params, top_k=classes))
    for video, result in zip(ctx.videos, results, strict=True):
        if isinstance(result, dict):
            raise CheckFailed(f"{video}: {result['error']}")
        scores = [r["score"] for r in result]
        if not all(math.isfinite(s) for s in scores) or abs(sum(scores) - 1.0) > 1e-3:
            raise CheckFailed(f"{video}: probabilities are not finite or do not sum to 1: {scores}")
    ctx.predictions = results
    top = ", ".join(r[0]["label"] for r in results)
    return f"{len(results)} videos -> {top}; " + require_on_gpu("predict", peak, _checkpoint(ctx), "frames")


def check_batch_predict(ctx: Context) -> str:
    """``batch-predict`` on Ray Data with ``--use-gpu`` (GPU model actors) over predict's videos; same
    top-1 label as predict, score within MAX_SCORE_GAP."""
    listing, out = ctx.work / "batch-videos.txt", ctx.work / "batch-predictions.csv"
    listing.write_text("".join(f"{video}\n" for video in ctx.videos))
    cmd = [sys.executable, "-m", "madapter", "batch-predict", "--params", str(ctx.repo / "params.yaml"),
           "--list", str(listing), "--output", str(out), "--model", str(_checkpoint(ctx)), "--use-gpu", "--top-k", "1"]
    run_logged(cmd, ctx.repo, ctx.logs / "batch_predict.log", TIMEOUTS["batch_predict"])
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if len(rows) != len(ctx.videos):
        raise CheckFailed(f"{out}: {len(rows)} rows for {len(ctx.videos)} videos")
    for row, expected in zip(rows, ctx.predictions, strict=True):
        if row["error"]:
            raise CheckFailed(f"{row['path']}: {row['error']}")
        if row["label_1"] != expected[0]["label"] or abs(float(row["score_1"]) - expected[0]["score"]) > MAX_SCORE_GAP:
            raise CheckFailed(f"{row['path']}: batch-predict {row['label_1']} {float(row['score_1']):.3f}, "
                              f"predict {expected[0]['label']} {expected[0]['score']:.3f}")
    return f"{len(rows)} videos on GPU actors, same top-1 as predict"


def _wait_ping(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CheckFailed(f"the server exited with {proc.returncode}: {last_line(log)} (log: {log})")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise CheckFailed(f"{url} did not answer within {timeout:.0f} s: {last_line(log)} (log: {log})")


def _serve_one_video(cmd: list[str], cwd: Path, env: dict[str, str], ready_url: str, log: Path,
                     send: Callable[[], requests.Response]) -> tuple[dict, float]:
    """Start a server (its own session), wait for ``ready_url``, send one request; returns the answer's JSON
    and how many MiB of GPU memory the server took while it held the model.  Fails in one line on an HTTP
    error or when the server did not put the model on the GPU."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free_before = torch.cuda.mem_get_info()[0]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ping(ready_url, proc, log, TIMEOUTS["serve_start"])
        response = send()
        in_use = (free_before - torch.cuda.mem_get_info()[0]) / 2**20
    finally:
        stop_group(proc)
    if response.status_code != 200:
        raise CheckFailed(f"HTTP {response.status_code}: {response.text[:300]}")
    if in_use < SERVED_MIN_MIB:
        raise CheckFailed(f"GPU memory in use grew by only {in_use:.0f} MiB while the server held the model "
                          f"(>= {SERVED_MIN_MIB} MiB expected): the served model is not on the GPU (log: {log})")
    return response.json(), in_use


def _agrees_with_predict(ctx: Context, server: str, label: str, score: float) -> None:
    local = ctx.predictions[0][0]
    if label != local["label"] or abs(score - local["score"]) > 1e-3:
        raise CheckFailed(f"{server} answered {label} ({score:.4f}) but predict gave "
                          f"{local['label']} ({local['score']:.4f}) for {ctx.videos[0]}")


def check_serve(ctx: Context) -> str:
    """``mlflow models serve`` of the registered model on the GPU; agrees with predict."""
    import requests

    from madapter.tracking import resolve_tracking_uri

    registration = json.loads((ctx.repo / ctx.params.base.outputs_dir / "register" / "registration.json").read_text())
    uri = f"models:/{registration['model_name']}@{registration['alias']}"
    port, log = free_port(), ctx.logs / "serve.log"
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    env = child_env(MLFLOW_TRACKING_URI=resolve_tracking_uri(ctx.params), MADAPTER_DEVICE="cuda",
                    MADAPTER_ALLOW_PATHS_UNDER=str(Path(ctx.videos[0]).parent.parent))
    logger.info("serving %s on port %d (log: %s)", uri, port, log)
    answer, in_use = _serve_one_video(
        cmd, ctx.work, env, f"http://127.0.0.1:{port}/ping", log,
        lambda: requests.post(f"http://127.0.0.1:{port}/invocations", timeout=120,
                              json={"dataframe_records": [{"video": ctx.videos[0]}], "params": {"top_k": 2}}))
    served = answer["predictions"][0]
    if served["error"]:
        raise CheckFailed(f"the served model answered an error: {served['error']}")
    _agrees_with_predict(ctx, "mlflow models serve", served["labels"][0], served["scores"][0])
    return f"{uri} -> {served['labels'][0]} ({served['scores'][0]:.3f}) = predict; server took {in_use:.0f} MiB on the GPU"


def check_ray_serve(ctx: Context) -> str:
    """``python -m madapter serve`` with its model replica on the GPU: one upload's answer equals predict's,
    and the GPU holds the model while it serves."""
    import requests

    port, log = free_port(), ctx.logs / "ray-serve.log"
    cmd = [sys.executable, "-m", "madapter", "serve", "-S", f"serve.port={port}", "-S", "serve.device=cuda",
           "-S", "serve.gpus_per_model_replica=1"]
    logger.info("serving the champion on Ray Serve, port %d (log: %s)", port, log)
    answer, in_use = _serve_one_video(
        cmd, ctx.repo, child_env(), f"http://127.0.0.1:{port}/readyz", log,
        lambda: requests.post(f"http://127.0.0.1:{port}/predict?top_k=2", timeout=120,
                              data=Path(ctx.videos[0]).read_bytes()))
    served = answer["top_k"][0]
    _agrees_with_predict(ctx, "Ray Serve", served["label"], served["score"])
    return f"{served['label']} ({served['score']:.3f}) = predict; the model replica took {in_use:.0f} MiB on the GPU"


def check_nccl(ctx: Context) -> str:
    """With 2+ GPUs: a 2-worker NCCL training run (SKIP with one GPU)."""
    out_dir = NCCL_OUT
    started = time.monotonic()
    run_logged(nccl_cli(ctx), ctx.repo, ctx.logs / "nccl.log", TIMEOUTS["nccl"])
    run = json.loads((ctx.repo / out_dir / "train" / "run.json").read_text())
    if not run["completed"] or len(run["history"]) != 2:
        raise CheckFailed(f"2-worker run stopped after {run['epochs_done']}/2 epochs (log: {ctx.logs / 'nccl.log'})")
    last = run["history"][-1]
    return (f"2 workers x 1 GPU, nccl: 2/2 epochs in {time.monotonic() - started:.0f} s, "
            f"val_acc {last['val_acc']:.3f}, max peak over workers {last['peak_memory_mb']:.0f} MB")
