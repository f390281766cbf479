"""Online serving under load: Ray Serve (``python -m madapter serve``) against ``mlflow models serve``.

The same registered model (a random-init ViT-tiny at 64 px, 8 frames, logged as the register stage
logs it) behind both servers, in one run, on loopback: for 1, 4 and 16 concurrent clients, each
server answers the same fixed number of uploads of the same synthetic clips (bytes in the request:
the Ray Serve app as a raw body, MLflow's as base64 ``video_bytes``).  Reported per server and
concurrency: videos per second, p50 / p95 / p99 latency and failed requests.  Then a mixed run at
the highest concurrency sends 10 % hostile uploads (empty, text, a truncated mp4, a 10,000 x 10,000
frame) to Ray Serve: every good request must succeed and every hostile one get a 4xx.

The Ray Serve application runs one decoding replica and one model replica (a CPU each) with
batching across requests; ``mlflow models serve`` one worker that decodes and classifies each
request in turn.  Targets (issue 23): no failed good request, and at 16 clients at least 2x
``mlflow models serve``'s throughput.  Last, with the servers stopped, the model's forward pass per
video alone and in a full batch: what batching across requests can save on this machine.

    .venv/bin/python -m benchmarks.serve_load            # ~6 min; benchmarks/results/serve_load.{json,png,md}
    .venv/bin/python -m benchmarks.serve_load --quick    # ~3 min: 32 requests per point instead of 96
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import Benchmark, BenchmarkError, div, fmt, page, pyplot, save, table

logger = logging.getLogger("benchmarks.serve_load")
TARGET_RATIO = 2.0
"""Issue target: Ray Serve's throughput at the highest concurrency >= 2x mlflow models serve's."""
MODEL = "serve-bench"
FULL: dict[str, Any] = {"clients": [1, 4, 16], "requests": 96, "hostile_share": 0.1, "img_size": 64,
                        "num_frames": 8, "clip_frames": 16, "clip_size": 64, "videos": 6, "forward_repeats": 10}
PROFILES: dict[str, dict[str, Any]] = {
    "full": FULL,
    "quick": {**FULL, "requests": 32},
    "smoke": {**FULL, "clients": [1, 2], "requests": 4, "img_size": 32, "videos": 2, "forward_repeats": 2},  # the test's
}
Post = Callable[[bytes], tuple[bool, int]]
"""One request with a video's bytes: (answered as a good video should be, HTTP status)."""


# ----------------------------------------------------------------------------- set-up
def free_loopback_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_params(work: Path, s: dict[str, Any]):
    from madapter.config import Params

    return Params.model_validate({
        "base": {"outputs_dir": str(work / "outputs"), "data_dir": str(work / "data")},
        "model": {"img_size": s["img_size"], "num_frames": s["num_frames"], "width": 64},
        "decode": {"frames_per_video": 2 * s["num_frames"]},
        "evaluate": {"device": "cpu"},
        "mlflow": {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}"},
        "register": {"model_name": MODEL, "top_k": 3},
        # room for every client in flight: the benchmark measures serving, not refusals
        "serve": {"port": free_loopback_port(), "device": "cpu", "max_ongoing_requests": 32,
                  "max_queued_requests": 256, "max_batch_size": 8},
    })


def register_model(params):
    """One version of a random-init model, logged as the register stage logs it; alias ``champion``.
    Returns the model (in eval mode), which :func:`per_video_costs` times."""
    from madapter.models.build import build_model
    from madapter.models.checkpoint import save_checkpoint
    from madapter.registry import register_checkpoint

    model = build_model(params.model, num_classes=12)
    checkpoint = save_checkpoint(Path(params.base.outputs_dir) / "checkpoint.pt", model, [f"class{i}" for i in range(12)])
    register_checkpoint(params, checkpoint, {"frames": params.model.num_frames, "clips": 1, "crops": 1, "split": "test"})
    return model.eval()


def synthetic_clips(work: Path, s: dict[str, Any]) -> list[bytes]:
    from madapter.config import SyntheticSection
    from madapter.data.acquire.synthetic import encode_video, render

    cfg = SyntheticSection(num_frames=s["clip_frames"], size=s["clip_size"])
    return [encode_video(work / f"clip{i}.mp4", render(i % 12, i, cfg, seed=3), cfg.fps).read_bytes()
            for i in range(s["videos"])]


def hostile_uploads(work: Path, good: bytes) -> dict[str, bytes]:
    """What a careless or hostile client sends; each must get a 4xx."""
    import av

    bomb = work / "bomb.mov"
    with av.open(str(bomb), "w") as container:  # ~100 kB holding one 10,000 x 10,000 frame
        stream = container.add_stream("png", rate=1)
        stream.width = stream.height = 10_000
        stream.pix_fmt = "gray"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(np.zeros((10_000, 10_000), np.uint8), "gray")),
                       *stream.encode()]:
            container.mux(packet)
    return {"empty": b"", "text": b"not a video\n" * 50, "truncated": good[: len(good) // 2],
            "10000x10000 frame": bomb.read_bytes()}


def start_mlflow_serve(params, work: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow models serve`` of the champion, one worker, its environment this one's."""
    import requests

    port = free_loopback_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": params.mlflow.tracking_uri, "MADAPTER_DEVICE": "cpu",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (work / "mlflow-serve.log").open("w")
    proc = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchmarkError(f"mlflow models serve exited ({proc.returncode}); see {work / 'mlflow-serve.log'}")
        try:
            if requests.get(f"{url}/ping", timeout=5).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(1)
    proc.kill()
    raise BenchmarkError(f"mlflow models serve did not answer /ping in 300 s; see {work / 'mlflow-serve.log'}")


def ray_serve_post(url: str) -> Post:
    import requests

    def post(data: bytes) -> tuple[bool, int]:
        answer = requests.post(f"{url}/predict", data=data, timeout=300)
        return answer.status_code == 200 and bool(answer.json().get("top_k")), answer.status_code

    return post


def mlflow_post(url: str) -> Post:
    import requests

    def post(data: bytes) -> tuple[bool, int]:
        body = {"dataframe_records": [{"video_bytes": base64.b64encode(data).decode()}], "params": {"top_k": 3}}
        answer = requests.post(f"{url}/invocations", json=body, timeout=300)
        good = answer.status_code == 200 and not answer.json()["predictions"][0]["error"]
        return good, answer.status_code

    return post


# ----------------------------------------------------------------------------- measurement
def load(post: Post, uploads: list[bytes], clients: int) -> dict[str, Any]:
    """Every upload once, ``clients`` at a time: throughput over the whole run, latency per request."""
    def one(data: bytes) -> tuple[bool, int, float]:
        started = time.perf_counter()
        try:
            good, status = post(data)
        except Exception as err:  # noqa: BLE001 - a refused connection or a timeout is a failed request
            logger.warning("request failed: %s", str(err).splitlines()[0] if str(err) else type(err).__name__)
            good, status = False, 0
        return good, status, time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(one, uploads))
    wall = time.perf_counter() - started
    latency_ms = np.array([seconds for _, _, seconds in done]) * 1000
    ok = sum(good for good, _, _ in done)
    return {"clients": clients, "requests": len(done), "ok": ok, "failed": len(done) - ok,
            "videos_per_s": round(ok / wall, 2), "p50_ms": round(float(np.percentile(latency_ms, 50)), 1),
            "p95_ms": round(float(np.percentile(latency_ms, 95)), 1),
            "p99_ms": round(float(np.percentile(latency_ms, 99)), 1), "seconds": round(wall, 2)}


def mixed(post: Post, good: list[bytes], hostile: dict[str, bytes], clients: int, requests: int,
          share: float) -> dict[str, Any]:
    """``requests`` uploads, ``share`` of them hostile, ``clients`` at a time: what each kind got."""
    every = max(2, round(1 / share))
    plan = [("hostile", list(hostile)[(i // every) % len(hostile)]) if i % every == every - 1 else ("good", i)
            for i in range(requests)]

    def one(item: tuple[str, Any]) -> tuple[str, bool, int]:
        kind, key = item
        try:
            ok, status = post(hostile[key] if kind == "hostile" else good[key % len(good)])
        except Exception:  # noqa: BLE001 - counted as a failure of its kind
            ok, status = False, 0
        return kind, ok, status

    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(one, plan))
    goods = [(ok, status) for kind, ok, status in done if kind == "good"]
    bad = [status for kind, _, status in done if kind == "hostile"]
    return {"clients": clients, "requests": requests, "good": len(goods), "good_failed": sum(not ok for ok, _ in goods),
            "hostile": len(bad), "hostile_4xx": sum(400 <= s < 500 for s in bad),
            "hostile_statuses": sorted(set(bad))}


def per_video_costs(params, model, clip: Path, repeats: int) -> dict[str, Any]:
    """What batching saves where the model replicas run: the served model's forward pass in ms per video,
    one video alone and ``serve.max_batch_size`` at once, beside what decoding one clip costs (best of
    ``repeats`` each), on the CPU with one thread, as a replica with one CPU runs it (Ray sets its
    ``OMP_NUM_THREADS`` to 1).

    Why: batching across requests is what the Ray Serve design adds, and it pays only where a forward
    pass of N videos costs much less than N passes of one (a GPU); this says how much it can pay here.
    """
    import torch

    from madapter.data.clips import ViewProtocol, load_video_views
    from madapter.inference import view_logits

    batch = params.serve.max_batch_size
    size = params.model.img_size

    def best_ms(work: Callable[[], Any]) -> float:
        work()  # warm-up: first-call allocations are not the cost
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            best = min(best, time.perf_counter() - started)
        return best * 1000

    def forward(videos: int) -> Callable[[], Any]:
        views = torch.zeros(videos, 1, params.model.num_frames, 3, size, size)
        return lambda: view_logits(model, views)

    protocol = ViewProtocol(params.model.num_frames, 1, 1, size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with torch.no_grad():
        alone, batched = best_ms(forward(1)), best_ms(forward(batch)) / batch
    return {"device": "cpu", "threads": torch.get_num_threads(), "batch": batch, "ms_per_video_alone": round(alone, 2),
            "ms_per_video_batched": round(batched, 2), "saving": round(alone / batched, 2),
            "decode_ms": round(best_ms(lambda: load_video_views(clip, protocol)), 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from madapter.serving import server

    torch.set_num_threads(1)
    s = {**PROFILES[args.configuration], "configuration": args.configuration}
    work = args.work
    params = bench_params(work, s)
    model = register_model(params)
    clips = synthetic_clips(work, s)
    uploads = [clips[i % len(clips)] for i in range(s["requests"])]
    serving = server.start(params)
    mlflow_proc, mlflow_url = start_mlflow_serve(params, work)
    posts = {"ray_serve": ray_serve_post(serving.url), "mlflow": mlflow_post(mlflow_url)}
    points: list[dict[str, Any]] = []
    try:
        for post in posts.values():  # one request each: both warm before anything is timed
            post(clips[0])
        for clients in s["clients"]:  # the servers take turns at each concurrency
            for name, post in posts.items():
                point = {"server": name, **load(post, uploads, clients)}
                logger.info("%s, %d clients: %.1f videos/s, p99 %.0f ms, %d failed", name, clients,
                            point["videos_per_s"], point["p99_ms"], point["failed"])
                points.append(point)
        hostile = mixed(posts["ray_serve"], clips, hostile_uploads(work, clips[0]), max(s["clients"]),
                        s["requests"], s["hostile_share"])
    finally:
        mlflow_proc.kill()
        mlflow_proc.wait(30)
        server.stop()
    forward = per_video_costs(params, model, work / "clip0.mp4", s["forward_repeats"])  # after the servers stopped: the CPU is this run's alone
    return {"settings": s, "points": points, "mixed": hostile, "forward": forward,
            "headline": headline(points, hostile, forward)}


def headline(points: list[dict[str, Any]], hostile: dict[str, Any], forward: dict[str, Any]) -> dict[str, Any]:
    top = max(p["clients"] for p in points)
    at_top = {p["server"]: p for p in points if p["clients"] == top}
    ratio = div(at_top["ray_serve"]["videos_per_s"], at_top["mlflow"]["videos_per_s"])
    failed = sum(p["failed"] for p in points if p["server"] == "ray_serve") + hostile["good_failed"]
    met = ratio is not None and ratio >= TARGET_RATIO and failed == 0 and hostile["hostile_4xx"] == hostile["hostile"]
    return {"clients": top, "throughput_ratio": ratio and round(ratio, 2), "target_ratio": TARGET_RATIO,
            "ray_serve_failed_good": failed, "hostile_all_4xx": hostile["hostile_4xx"] == hostile["hostile"],
            "target_met": met, "batching_saving": forward["saving"]}


# ----------------------------------------------------------------------------- report (pure)
NAMES = {"ray_serve": "Ray Serve (`madapter serve`)", "mlflow": "`mlflow models serve`"}


def markdown(report: dict[str, Any], json_path: str) -> str:
    s, h, m = report["settings"], report["headline"], report["mixed"]
    rows = [[NAMES[p["server"]], p["clients"], f"{p['ok']}/{p['requests']}", f"{p['videos_per_s']:.1f}",
             f"{p['p50_ms']:.0f}", f"{p['p95_ms']:.0f}", f"{p['p99_ms']:.0f}"] for p in report["points"]]
    return page([
        *table(["server", "clients", "answered", "videos/s", "p50 ms", "p95 ms", "p99 ms"], rows), "",
        f"Mixed run, {m['clients']} clients, {m['requests']} requests ({m['hostile']} hostile: empty, text, a "
        f"truncated mp4, a 10,000 x 10,000 frame): {m['good'] - m['good_failed']}/{m['good']} good answered, "
        f"{m['hostile_4xx']}/{m['hostile']} hostile refused with a 4xx (statuses {m['hostile_statuses']}).", "",
        f"At {h['clients']} clients Ray Serve answers {fmt(h['throughput_ratio'], '.2f', 'x')} the videos per "
        f"second of `mlflow models serve` (target >= {h['target_ratio']:.0f}x, no failed good request): "
        f"**{'met' if h['target_met'] else 'NOT met'}**. Same model (random-init ViT-tiny, {s['img_size']} px, "
        f"{s['num_frames']} frames), same {s['videos']} synthetic {s['clip_size']}-px clips, {s['requests']} "
        "requests per point, loopback, one decoding and one model replica against one MLflow worker.", "",
        f"What batching can save here: the model's forward pass costs {report['forward']['ms_per_video_batched']:.1f} ms "
        f"per video in a batch of {report['forward']['batch']} against {report['forward']['ms_per_video_alone']:.1f} ms "
        f"alone ({fmt(h['batching_saving'], '.2f', 'x')}; {report['forward']['device']}, "
        f"{report['forward']['threads']} thread); decoding one clip into its view costs "
        f"{report['forward']['decode_ms']:.1f} ms.",
    ], report, json_path, unit="s")


def plot(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for server, label in NAMES.items():
        series = [p for p in report["points"] if p["server"] == server]
        clients = [p["clients"] for p in series]
        left.plot(clients, [p["videos_per_s"] for p in series], marker="o", label=label.replace("`", ""))
        right.plot(clients, [p["p99_ms"] for p in series], marker="o", label=label.replace("`", ""))
    for ax, ylabel in ((left, "videos / s"), (right, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.legend()
    left.set_title("throughput")
    right.set_title("tail latency")
    save(fig, path, dpi=110)


BENCHMARK = Benchmark(
    "serve_load", __doc__, run, markdown, plot, packages=("ray", "mlflow", "torch", "fastapi"),
    quick="32 requests per point instead of 96", minutes=(6.0, 3.0), smoke=True, work_dir=True,
    failures=lambda report: [f"{p['server']} at {p['clients']} clients: {p['failed']} failed"
                             for p in report["points"] if p["failed"]]
    + ([f"mixed: {report['mixed']['good_failed']} good failed"] if report["mixed"]["good_failed"] else []))

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
