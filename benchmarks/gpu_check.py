"""``make gpu-check``: the GPU acceptance check a user runs on a machine with an NVIDIA GPU.

CPU machines cannot run it (and ``make test`` never does): without CUDA it stops at once with one
line and exit code 2.  On one GPU it takes a few minutes (budget: 10) and checks, printing one
``PASS name (details)`` or ``FAIL name: reason`` line each:

``cuda``       the device, and whether it has native bf16 (the branch's ``train.amp`` follows it).
``memory``     ``benchmarks/memory.py --device cuda`` (ViT-B/16, 8 frames, 224px, batch 32): peak
               training memory per tuning mode; ``madapter`` must stay below 12.7 GB (DiST, the
               lowest published figure); writes ``benchmarks/results/memory_cuda.{json,png,md}``.
               Runs first, while no other process of the check holds GPU memory.
``pipeline``   ``dvc repro`` of the whole synthetic pipeline in a throw-away copy of this checkout
               (download -> ... -> register) on the FRAMES path, the presets' path: ``train.source:
               frames`` (the full model, DDP over the adapter, the frozen backbone on the GPU) with
               ``train.use_gpu: true``, ``model.half_precision: true``, ``train.amp: bf16``,
               ``evaluate.device: cuda``, 2 epochs, 1 Ray worker.  A Ray worker that asks for a GPU only
               starts on one, so a completed run trained on the GPU; its status file must say it
               trained the full model (``VideoClassifier``) on frames, and metrics.json ``source: frames``.
``evaluate``   the evaluate stage again, in this process, asserting through the CUDA allocator that
               the evaluated model ran on the GPU (at least half the fp32 weight bytes of the model
               evaluate really ran -- the full model on frames, the head alone on features).
``predict``    ``madapter.predict.predict`` on test videos, the same way, plus sane probabilities.
``serve``      ``mlflow models serve --env-manager local`` of the registered model with
               ``MADAPTER_DEVICE=cuda``, one video scored over HTTP; it must agree with ``predict``,
               and device memory in use must grow while the server holds the model (a CPU-served
               model touches no GPU memory at all).
``nccl``       with 2 or more GPUs: a 2-worker NCCL training run (``train.num_workers=2``), the
               end-of-epoch reductions included; with one GPU the line says SKIP.
``features``   the ``features`` stage (``python -m madapter features``) with ``train.source: features``
               and ``features.use_gpu: true``: Ray Data actors that each ask for a GPU.  Device
               memory in use (polled from this process over every GPU) must grow while it runs (an
               actor that fell back to the CPU touches none); the stored dtype and shapes must be
               the ones ``features.json`` declares; and the first stored views must agree with the
               same views recomputed on the CPU in fp32 (cosine >= 0.99: the GPU ran the backbone in
               bf16/fp16 under ``model.half_precision``, so they are close, not equal).
``train_features`` ``python -m madapter train`` on those features with ``train.use_gpu: true``: the Ray
               worker built the head alone (``FeatureClassifier``, its status file), recorded device
               cuda and the branch's autocast, and its CUDA allocator peak holds at least the head's
               fp32 weights (a head left on the CPU would allocate ~nothing on the GPU).
``evaluate_features`` the evaluate stage on the cached test views with ``evaluate.device: cuda``: the
               head alone on the GPU (allocator peak >= half its weights), and its per-video scores
               agree with the same checkpoint's FULL model on the source videos on the GPU
               (``score_frames``): the cached path and the online path give the same answer on CUDA.

Both paths state every key they measure (``gpu_setup`` + ``train.source`` + ``features.use_gpu``:
``gpu_overrides`` for the frames path, written into the copy's params.yaml; ``feature_sets`` for the
features path, as ``-S`` overrides), so a default in params.yaml never changes what a check measures.

``--list`` prints the checks in run order and exits (it needs no GPU).

Exit code: 0 when every check passes, 1 when one fails, 2 when there is no CUDA device (or an NVIDIA
GPU torch cannot use, e.g. a driver too old for this torch's CUDA: the line says which and what to
install; :mod:`madapter.gpu_diagnosis`).  Logs of
every subprocess are kept under the printed work directory when a check fails (``--keep`` keeps
them always).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("gpu-check")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NO_CUDA = (
    "gpu-check: no CUDA device (torch.cuda.is_available() is False); run this on a machine with an NVIDIA GPU"
)
TARGET_GB = 12.7
"""DiST's published training memory, the lowest of the published peers (benchmarks/memory.py)."""
SERVED_MIN_MIB = 64
"""Device memory a process that really runs the model on the GPU takes at least (CUDA context + weights)."""
BUDGET_S = 600

TIMEOUTS = {"memory": 420, "pipeline": 480, "serve_start": 180, "nccl": 360, "check_params": 120,
            "features": 300, "train_features": 360,
            "batch_predict": 300}
"""Hang guards per subprocess (seconds), not budgets: on a working GPU each takes a fraction of this."""

FEATURES_OUT = "outputs-features"
"""``base.outputs_dir`` of the features checks: their training run and evaluation stay apart from the pipeline's."""
MIN_COSINE = 0.99
"""GPU (bf16/fp16 backbone, stored fp16) vs CPU (fp32) features of the same view: at least this similar."""
MAX_SCORE_GAP = 0.05
"""Cached vs online evaluation on the GPU: largest difference of a video's averaged class probability."""
MIN_TOP1_AGREEMENT = 0.9
"""Cached vs online evaluation on the GPU: share of videos with the same predicted class."""

TOP_LEVEL_SKIP = {
    ".git", ".venv", "data", "outputs", "mlruns", "mlartifacts", "mlflow.db", ".dvc-remote", ".prefect", "dvc.lock",
    ".pytest_cache", ".ruff_cache", "build", "dist",
}
"""What a fresh clone would not have: run products, caches, the virtualenv (as tests/pipeline/conftest.py)."""


class CheckFailed(RuntimeError):
    """A check's expectation did not hold; the message is the one-line reason."""


@dataclass
class Context:
    """What the checks share: the work directory, the repository copy and results of earlier checks."""

    work: Path
    amp: str = "bf16"
    gpus: int = 1
    repo: Path | None = None
    params: Any = None
    predictions: list[Any] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        path = self.work / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path


# ----------------------------------------------------------------------------- subprocesses
def child_env(**extra: str) -> dict[str, str]:
    """This venv's bin first on PATH (dvc.yaml runs ``python``; mlflow serve runs ``uvicorn``)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update({"DVC_NO_ANALYTICS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **extra})
    return env


def stop_group(proc: subprocess.Popen) -> None:
    """End a child started in its own session and everything it started (Ray, uvicorn workers)."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(cmd: list[str], cwd: Path, log: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` with its output in ``log``; return the output; raise CheckFailed on failure or timeout."""
    logger.info("running %s (log: %s)", " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), log)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or child_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"timed out after {timeout:.0f} s (last line: {last_line(log)}; log: {log})") from None
        finally:
            stop_group(proc)
    if code != 0:
        raise CheckFailed(f"exit {code}: {last_line(log)} (log: {log})")
    return log.read_text()


def last_line(log: Path) -> str:
    """The most telling line of a log: the last error line if there is one, else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):  # DVC's/our CLI's error line, or a Python exception's (ConfigError: ...)
        if re.search(r"^(ERROR|error|FAIL)\b|^[\w.]*Error: ", line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- repository copy
def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n in {"__pycache__"} or n.endswith((".pyc", ".egg-info"))}
    here = Path(directory).resolve()
    if here == REPO:
        skipped |= TOP_LEVEL_SKIP & set(names)
    elif here == REPO / ".dvc":
        skipped |= {"cache", "tmp", "config.local"} & set(names)
    elif here == REPO / "benchmarks":
        skipped |= {"results"} & set(names)
    return skipped


def copy_repo(dst: Path) -> Path:
    """This checkout's working tree (uncommitted edits included) as a fresh git repository."""
    shutil.copytree(REPO, dst, ignore=_copy_ignore)
    git = ["git", "-c", "user.email=gpu-check@madapter.local", "-c", "user.name=madapter gpu-check"]
    for cmd in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-q", "-m", "gpu-check copy"]):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst


def gpu_setup(amp: str) -> dict[str, Any]:
    """What BOTH paths run with, stated in full: everything on the GPU, bf16/fp16 backbone, the branch
    in ``amp``, 2 short epochs on 1 Ray worker.  Never left to params.yaml's defaults."""
    return {"model.half_precision": True, "train.use_gpu": True, "train.amp": amp, "train.epochs": 2,
            "train.num_workers": 1, "evaluate.device": "cuda"}


def gpu_overrides(amp: str) -> dict[str, dict[str, Any]]:
    """The frames path (the presets' path), written into the copy's params.yaml for ``dvc repro``:
    :func:`gpu_setup` with ``train.source: frames`` -- the full model, DDP over the adapter with the
    frozen backbone on the GPU -- and ``features.use_gpu: false`` (its features stage only records
    that it is disabled).  ``train.source`` is stated because params.yaml's default may be either."""
    sets = {**gpu_setup(amp), "train.source": "frames", "features.use_gpu": False, "train.run_name": "gpu-check"}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in sets.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    return nested


def write_params(repo: Path, overrides: dict[str, dict[str, Any]]) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


# ----------------------------------------------------------------------------- CUDA helpers
def cuda_unavailable_line() -> str | None:
    """``None`` when CUDA works, else the one line that explains why the check cannot run here: a GPU
    torch cannot use (old driver, CPU-only torch; :mod:`madapter.gpu_diagnosis`) is named as such."""
    import torch

    from madapter.gpu_diagnosis import describe_unusable_gpu

    if torch.cuda.is_available():
        return None
    unusable = describe_unusable_gpu()
    if unusable:
        return f"gpu-check: {unusable}"
    if torch.version.cuda is None:
        return f"{NO_CUDA} and a CUDA build of torch (this torch {torch.__version__} is CPU-only)"
    return NO_CUDA


def evaluated_weight_bytes(checkpoint: Path, source: str) -> int:
    """fp32 bytes of the weights of the model that runs on ``source``: the head alone on cached features
    (``adapter.*``: what evaluate on features loads), the full model (backbone included) on frames."""
    from madapter.models.checkpoint import load_checkpoint

    if source not in ("frames", "features"):
        raise ValueError(f"unknown train.source {source!r}: expected frames or features")
    model, _ = load_checkpoint(checkpoint, map_location="cpu")
    weights = model.adapter.parameters() if source == "features" else model.parameters()
    return sum(p.numel() * p.element_size() for p in weights)


def cuda_peak_of(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and the CUDA allocator's peak bytes while it ran (0 when it never touched the GPU)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() - baseline


def require_on_gpu(what: str, peak: int, checkpoint: Path, source: str) -> str:
    """CheckFailed unless ``peak`` shows the weights of the model that ran on ``source`` (head or full
    model: :func:`evaluated_weight_bytes`) were on the GPU; else the detail text."""
    weights = evaluated_weight_bytes(checkpoint, source)
    model = "head" if source == "features" else "full model"
    # Half of the fp32 weights: holds whether the backbone's weights stay fp32 or are cast to bf16.
    if peak < weights // 2:
        raise CheckFailed(
            f"{what} allocated {peak / 2**20:.2f} MiB on cuda, less than half the {model}'s {weights / 2**20:.2f} MiB "
            f"of weights ({source}): it did not run on the GPU (check evaluate.device and the device code)"
        )
    return f"{peak / 2**20:.2f} MiB allocated on cuda for the {model}'s {weights / 2**20:.2f} MiB of weights"


# ----------------------------------------------------------------------------- the checks
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
    """benchmarks/memory.py --device cuda: peak training memory per mode; madapter below 12.7 GB."""
    out = REPO / "benchmarks" / "results" / "memory_cuda.json"
    run_logged([sys.executable, str(REPO / "benchmarks" / "memory.py"), "--device", "cuda", "--out", str(out)],
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
    from pipelines.dvc_stages import PIPELINE_STAGES

    if ran != list(PIPELINE_STAGES):
        raise CheckFailed(f"dvc repro ran {ran}, expected {list(PIPELINE_STAGES)} (log: {ctx.logs / 'pipeline.log'})")
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
            raise CheckFailed(f"mlflow models serve exited with {proc.returncode}: {last_line(log)} (log: {log})")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise CheckFailed(f"{url} did not answer within {timeout:.0f} s: {last_line(log)} (log: {log})")


def check_serve(ctx: Context) -> str:
    """``mlflow models serve`` of the registered model on the GPU; agrees with predict."""
    import requests
    import torch

    from madapter.tracking import resolve_tracking_uri

    registration = json.loads((ctx.repo / ctx.params.base.outputs_dir / "register" / "registration.json").read_text())
    uri = f"models:/{registration['model_name']}@{registration['alias']}"
    port, log = free_port(), ctx.logs / "serve.log"
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
           "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free_before = torch.cuda.mem_get_info()[0]
    logger.info("serving %s on port %d (log: %s)", uri, port, log)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ctx.work, env=child_env(MLFLOW_TRACKING_URI=resolve_tracking_uri(ctx.params), MADAPTER_DEVICE="cuda"),
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ping(f"http://127.0.0.1:{port}/ping", proc, log, TIMEOUTS["serve_start"])
        response = requests.post(f"http://127.0.0.1:{port}/invocations", timeout=120,
                                 json={"dataframe_records": [{"video": ctx.videos[0]}], "params": {"top_k": 2}})
        in_use = (free_before - torch.cuda.mem_get_info()[0]) / 2**20
    finally:
        stop_group(proc)
    if response.status_code != 200:
        raise CheckFailed(f"HTTP {response.status_code}: {response.text[:300]}")
    served = response.json()["predictions"][0]
    if served["error"]:
        raise CheckFailed(f"the served model answered an error: {served['error']}")
    local = ctx.predictions[0]
    if served["labels"][0] != local[0]["label"] or abs(served["scores"][0] - local[0]["score"]) > 1e-3:
        raise CheckFailed(f"served {served['labels'][0]} ({served['scores'][0]:.4f}) but predict gave "
                          f"{local[0]['label']} ({local[0]['score']:.4f}) for {ctx.videos[0]}")
    if in_use < SERVED_MIN_MIB:
        raise CheckFailed(f"GPU memory in use grew by only {in_use:.0f} MiB while the server held the model "
                          f"(>= {SERVED_MIN_MIB} MiB expected): the served model is not on the GPU")
    return f"{uri} -> {served['labels'][0]} ({served['scores'][0]:.3f}) = predict; server took {in_use:.0f} MiB on the GPU"


NCCL_OUT = "outputs-nccl"


def nccl_cli(ctx: Context) -> list[str]:
    """``python -m madapter train`` on the frames path with 2 workers, every measured key stated."""
    sets = {**gpu_setup(ctx.amp), "train.source": "frames", "train.num_workers": 2, "base.outputs_dir": NCCL_OUT,
            "train.storage_path": f"{NCCL_OUT}/ray", "train.run_name": "gpu-check-nccl"}
    return [sys.executable, "-m", "madapter", "train", *_set_args(sets)]


def _set_args(sets: dict[str, Any]) -> list[str]:
    """``-S key=value`` pairs as a user would type them (YAML booleans lower case)."""
    return [a for k, v in sets.items() for a in ("-S", f"{k}={str(v).lower() if isinstance(v, bool) else v}")]


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


# ----------------------------------------------------------------------------- the features path
def feature_sets(ctx: Context) -> dict[str, Any]:
    """The features path, stated in full over the copy's params.yaml: :func:`gpu_setup`, ``train.source:
    features`` and ``features.use_gpu: true`` (GPU extraction actors), its own outputs and MLflow store.

    Nothing is inherited from the frames path's overrides or params.yaml's defaults.  ``features.use_gpu``
    is part of the features' cache key, so train and evaluate must say it too; the MLflow store is named
    outright, so the subprocesses and this process use the same one.
    """
    return {
        **gpu_setup(ctx.amp), "train.source": "features", "features.use_gpu": True, "base.outputs_dir": FEATURES_OUT,
        "train.storage_path": f"{FEATURES_OUT}/ray", "train.run_name": "gpu-check-features",
        "mlflow.tracking_uri": f"sqlite:///{ctx.repo / FEATURES_OUT / 'mlflow.db'}",
    }


def features_params(ctx: Context):
    """The copy's params.yaml (GPU overrides applied) with :func:`feature_sets` on top."""
    from madapter.config import load_params

    return load_params(ctx.repo / "params.yaml", overrides=feature_sets(ctx))


def feature_cli(ctx: Context, stage: str) -> list[str]:
    """``python -m madapter <stage>`` with :func:`feature_sets` as ``-S`` overrides (as a user would type it)."""
    return [sys.executable, "-m", "madapter", stage, *_set_args(feature_sets(ctx))]


def device_memory_growth(fn: Callable[[], Any], interval_s: float = 0.2) -> tuple[Any, float]:
    """``fn()`` and the largest growth (MiB) of device memory in use, summed over every GPU, while it ran.

    Polled from this process with ``cudaMemGetInfo``, so it sees what OTHER processes allocate (a Ray
    actor, whose allocator this process cannot read), on whichever GPU Ray gave them.
    """
    import threading

    import torch

    devices = range(torch.cuda.device_count())
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free_before = [torch.cuda.mem_get_info(d)[0] for d in devices]  # also creates this process's contexts first
    growth = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(interval_s):
            used = sum(before - torch.cuda.mem_get_info(d)[0] for d, before in zip(devices, free_before, strict=True))
            growth[0] = max(growth[0], used)

    thread = threading.Thread(target=poll, name="gpu-check-memory-poll", daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return result, growth[0] / 2**20


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two arrays of the same shape, in float64."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-30))


def cpu_reference_views(params: Any) -> dict[str, Any]:
    """The first work item's views recomputed on the CPU in fp32, by the stage's own actor class."""
    import numpy as np
    import torch

    from madapter.data.features.extract import plan_videos, work_items
    from madapter.data.features.extractor import BackboneExtractor
    from madapter.data.store.format import read_store_meta
    from madapter.paths import StagePaths

    cpu = params.model_copy(update={"features": params.features.model_copy(update={"use_gpu": False})})
    paths = StagePaths.from_params(cpu)
    plan = plan_videos(cpu, paths)
    classes = len(read_store_meta(paths.frames.resolve())["classes"])
    threads = torch.get_num_threads()
    try:
        extractor = BackboneExtractor(cpu.model_dump(mode="json"), plan, classes, threads)
        if extractor.device.type != "cpu":
            raise CheckFailed(f"the CPU reference extractor runs on {extractor.device} (features.use_gpu was false)")
        item = work_items(plan, cpu.features.batch_size)[0]
        return extractor({key: np.array([value]) for key, value in item.items()})
    finally:
        torch.set_num_threads(threads)  # the extractor set this process's threads


def compare_with_reference(params: Any, reference: dict[str, Any]) -> str:
    """The stored (GPU) views of ``reference``'s rows: declared dtype and shapes, values close to the CPU's."""
    import numpy as np

    from madapter.data.features.format import FeatureStore, read_features_meta
    from madapter.paths import StagePaths

    root = StagePaths.from_params(params).features
    meta = read_features_meta(root)
    dtype = np.dtype(meta["dtype"])
    worst = 1.0
    for row in range(len(reference["view"])):
        split, video, view = str(reference["split"][row]), int(reference["video"][row]), int(reference["view"][row])
        levels, pooled, _ = FeatureStore(root, split).view(video, view)
        stored = {"pooled": pooled, **{f"level{k}": level for k, level in enumerate(levels)}}
        for name, array in stored.items():
            expected = reference[name][row]
            if array.dtype != dtype or array.shape != expected.shape:
                raise CheckFailed(f"{root}: {split} video {video} view {view} {name} is {array.dtype} {array.shape}, "
                                  f"expected {dtype} {expected.shape} (features.json dtype, CPU recompute shape)")
            worst = min(worst, cosine(array, expected))
    if worst < MIN_COSINE:
        raise CheckFailed(f"{root}: GPU features differ from the same views recomputed on the CPU (cosine {worst:.4f} "
                          f"< {MIN_COSINE}): wrong device placement or dtype in the extraction actor")
    return f"{len(reference['view'])} views {dtype} match a CPU fp32 recompute (min cosine {worst:.4f})"


def check_features(ctx: Context) -> str:
    """The features stage with ``features.use_gpu: true`` (Ray Data GPU actors): ran on a GPU, values right."""
    from madapter.data.features.format import read_features_meta
    from madapter.paths import StagePaths

    started = time.monotonic()
    _, grew = device_memory_growth(
        lambda: run_logged(feature_cli(ctx, "features"), ctx.repo, ctx.logs / "features.log", TIMEOUTS["features"]))
    seconds = time.monotonic() - started
    params = features_params(ctx)
    meta = read_features_meta(StagePaths.from_params(params).features)
    if not meta.get("enabled") or meta.get("cache_key", {}).get("use_gpu") is not True:
        raise CheckFailed(f"features.json says enabled={meta.get('enabled')}, use_gpu="
                          f"{meta.get('cache_key', {}).get('use_gpu')}: the stage did not extract with GPU actors")
    computed = meta.get("computed_on", {})
    if computed.get("device") != "cuda" or computed.get("backbone_precision") not in ("bf16", "fp16"):
        raise CheckFailed(f"features.json says the actors computed the features on {computed.get('device')!r} in "
                          f"{computed.get('backbone_precision')!r}, expected cuda in bf16/fp16 (model.half_precision)")
    if grew < SERVED_MIN_MIB:
        raise CheckFailed(f"device memory in use grew by only {grew:.0f} MiB while the features stage ran "
                          f"(>= {SERVED_MIN_MIB} MiB expected): the Ray Data actors did not run the backbone on a GPU")
    views = sum(split["views_total"] for split in meta["splits"].values())
    matched = compare_with_reference(params, cpu_reference_views(params))
    return (f"{views} views in {seconds:.0f} s with GPU actors (device memory +{grew:.0f} MiB), "
            f"{meta['bytes'] / 2**20:.1f} MiB stored; {matched}")


def check_train_features(ctx: Context) -> str:
    """Ray Train on the cached features with ``train.use_gpu: true``: the head alone, on the GPU."""
    from madapter.train.identity import ray_run_name

    started = time.monotonic()
    run_logged(feature_cli(ctx, "train"), ctx.repo, ctx.logs / "train-features.log", TIMEOUTS["train_features"])
    params = features_params(ctx)
    out = ctx.repo / FEATURES_OUT
    run = json.loads((out / "train" / "run.json").read_text())
    epochs = params.train.epochs
    if not run["completed"] or run["epochs_done"] != epochs:
        raise CheckFailed(f"training on features stopped after {run['epochs_done']}/{epochs} epochs "
                          f"(log: {ctx.logs / 'train-features.log'})")
    expect_trained(params, "features", "FeatureClassifier")  # the head alone
    status = json.loads((Path(params.train.storage_path).resolve() / ray_run_name(params) / "workers"
                         / "rank-0.json").read_text())
    tags = run_tags(ctx, run["run_id"], params)
    trained = expect_recorded("training run's MLflow tags",
                              {k.removeprefix("train."): v for k, v in tags.items() if k.startswith("train.")}, ctx.amp)
    last = run["history"][-1]
    head_mib = status["model_parameters"] * 4 / 2**20
    # On CUDA, history's peak_memory_mb is the worker's allocator peak: the head's weights, gradients,
    # AdamW state and batches.  A head left on the CPU would show only the reductions' few bytes.
    if last["peak_memory_mb"] < head_mib:
        raise CheckFailed(f"the worker's CUDA allocator peaked at {last['peak_memory_mb']:.1f} MiB, less than the head's "
                          f"{head_mib:.1f} MiB of fp32 weights: the head did not train on the GPU")
    if not math.isfinite(last["train_loss"]) or not math.isfinite(last["val_loss"]):
        raise CheckFailed(f"non-finite loss on the GPU: train {last['train_loss']}, val {last['val_loss']} "
                          f"(train.amp {ctx.amp})")
    return (f"{epochs}/{epochs} epochs in {time.monotonic() - started:.0f} s, FeatureClassifier "
            f"({status['model_parameters'] / 1e6:.2f} M params, no backbone) on {trained}; "
            f"{last['clips_per_s']:.0f} clips/s, CUDA peak {last['peak_memory_mb']:.0f} MiB, val_acc {last['val_acc']:.3f}")


def check_evaluate_features(ctx: Context) -> str:
    """Evaluate on the cached views on CUDA (head only); agrees with the full model on the source videos."""
    import numpy as np

    from madapter import metrics
    from madapter.evaluate import evaluate, score_frames

    params = features_params(ctx)
    checkpoint = ctx.repo / FEATURES_OUT / "train" / "checkpoint.pt"
    run = json.loads((ctx.repo / FEATURES_OUT / "train" / "run.json").read_text())
    result, peak = cuda_peak_of(lambda: evaluate(params))
    if result.get("source") != "features":
        raise CheckFailed(f"evaluate scored {result.get('source')!r}, expected the cached features")
    recorded = expect_recorded(f"{ctx.repo / FEATURES_OUT / 'evaluate' / 'metrics.json'}", result, None)
    on_gpu = require_on_gpu("evaluate on features", peak, checkpoint, "features")
    cached = cached_scores(params, checkpoint)
    online = score_frames(params, checkpoint)
    online_scores = metrics.average_views(online.logits)
    if not np.array_equal(cached[1], online.labels):
        raise CheckFailed("the cached and the source-video evaluation scored different videos (labels differ)")
    agree = float(np.mean(cached[0].argmax(1) == online_scores.argmax(1)))
    gap = float(np.abs(softmax(cached[0]) - softmax(online_scores)).max())
    if agree < MIN_TOP1_AGREEMENT or gap > MAX_SCORE_GAP:
        raise CheckFailed(f"on the GPU, cached-feature evaluation disagrees with the full model on the source videos: "
                          f"same top-1 for {agree:.0%} of videos (>= {MIN_TOP1_AGREEMENT:.0%} expected), largest "
                          f"probability gap {gap:.3f} (<= {MAX_SCORE_GAP})")
    return (f"top1 {result['top1']:.3f} on {result['num_videos']} videos ({recorded}, run {run['run_id'][:8]}); "
            f"{on_gpu}; agrees with the full model on the source videos "
            f"(same top-1 {agree:.0%}, max probability gap {gap:.4f})")


def cached_scores(params: Any, checkpoint: Path) -> tuple[Any, Any]:
    """Per-video averaged logits and labels of the cached views (``score_features``) on ``evaluate.device``."""
    from madapter import metrics
    from madapter.evaluate import score_features

    scored = score_features(params, checkpoint)
    if scored.device.type != "cuda":
        raise CheckFailed(f"score_features ran the head on {scored.device}, expected cuda (evaluate.device: cuda)")
    return metrics.average_views(scored.logits), scored.labels


def softmax(logits: Any) -> Any:
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


CHECKS: tuple[tuple[str, Callable[[Context], str], str | None], ...] = (
    ("cuda", check_cuda, None),
    ("memory", check_memory, "cuda"),
    ("pipeline", check_pipeline, "cuda"),
    ("evaluate", check_evaluate, "pipeline"),
    ("predict", check_predict, "pipeline"),
    ("serve", check_serve, "predict"),
    ("batch_predict", check_batch_predict, "predict"),
    ("nccl", check_nccl, "pipeline"),
    ("features", check_features, "pipeline"),
    ("train_features", check_train_features, "features"),
    ("evaluate_features", check_evaluate_features, "train_features"),
)
"""(name, function, the check it needs to have passed), in the order they run."""


# ----------------------------------------------------------------------------- driver
def report(line: str) -> None:
    """The check's product: one line per check on stdout (progress goes to the log on stderr)."""
    print(line, flush=True)  # noqa: T201


def run_checks(ctx: Context) -> dict[str, bool]:
    """Run every check in order; a check whose prerequisite failed is reported failed without running."""
    passed: dict[str, bool] = {}
    for name, fn, needs in CHECKS:
        if name == "nccl" and ctx.gpus < 2:
            report(f"SKIP nccl (needs 2 GPUs, this machine has {ctx.gpus})")
            continue
        if needs is not None and not passed.get(needs):
            report(f"FAIL {name}: not run, '{needs}' failed")
            passed[name] = False
            continue
        started = time.monotonic()
        try:
            detail = fn(ctx)
        except Exception as err:  # noqa: BLE001 - every failure is one line; the traceback goes to the debug log
            logger.debug("%s failed", name, exc_info=True)
            text = str(err).strip().splitlines()
            report(f"FAIL {name}: {text[0] if text else type(err).__name__}")
            passed[name] = False
            continue
        passed[name] = True
        report(f"PASS {name} ({detail}; {time.monotonic() - started:.0f} s)")
    return passed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (repository copy, logs) on success")
    parser.add_argument("--log-level", default="INFO", help="DEBUG also logs the traceback of a failed check")
    parser.add_argument("--list", action="store_true", help="print the checks in the order they run and exit (no GPU needed)")
    return parser.parse_args(argv)


def check_list() -> list[str]:
    """One line per check, in run order: name, what it needs to have passed, what it checks."""
    return [f"{name:<18} needs {needs or '-':<15} {(fn.__doc__ or '').strip().splitlines()[0]}"
            for name, fn, needs in CHECKS]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for line in check_list():
            report(line)
        return 0
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    unavailable = cuda_unavailable_line()
    if unavailable:
        print(unavailable, file=sys.stderr)  # noqa: T201 - the one line a user reads
        return 2
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS"):
        os.environ.pop(key, None)  # the check uses its own stores and a local Ray, never the user's
    ctx = Context(work=Path(tempfile.mkdtemp(prefix="madapter-gpu-check-")))
    started = time.monotonic()
    try:
        passed = run_checks(ctx)
    except KeyboardInterrupt:  # the running subprocess group was already stopped by its finally
        report(f"gpu-check: interrupted; logs and repository copy in {ctx.work}")
        return 130
    finally:
        os.chdir(REPO)
    minutes = (time.monotonic() - started) / 60
    failed = [name for name, ok in passed.items() if not ok]
    if failed or args.keep:
        where = f"; logs and repository copy kept in {ctx.work}"
    else:
        shutil.rmtree(ctx.work, ignore_errors=True)
        where = ""
    report(f"gpu-check: {len(passed) - len(failed)} passed, {len(failed)} failed in {minutes:.1f} min{where}")
    if minutes * 60 > BUDGET_S:
        logger.warning("the check took longer than its %d min budget", BUDGET_S // 60)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
