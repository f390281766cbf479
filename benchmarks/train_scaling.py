"""Training throughput and peak memory per Ray worker: 1 vs 2 CPU workers, for every tuning mode.

One invocation runs the real train stage (Ray Train ``TorchTrainer``, gloo, per-epoch
checkpoints, MLflow logging to a scratch SQLite store) on a tiny synthetic set made by the real
data stages, for each (tuning, workers) pair, and reads the numbers the workers log: clips/s
(all workers together, last epoch so start-up is excluded) and the peak RSS of a worker process.

    .venv/bin/python benchmarks/train_scaling.py            # writes benchmarks/results/train_scaling.{json,png}

The absolute numbers are a 2-core shared CPU box with a random-init ViT-Ti at 32 px: compare
the modes and worker counts with each other, not with GPU numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

from madapter.config import Params, params_from_dict

logger = logging.getLogger("benchmarks.train_scaling")
RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("madapter", "linear", "inserted", "full")


def bench_params(work: Path, tuning: str, workers: int, epochs: int) -> Params:
    return params_from_dict({
        "base": {"seed": 0, "data_dir": str(work / "data"), "outputs_dir": str(work / f"out-{tuning}-{workers}")},
        "dataset": {"synthetic": {"classes": 4, "videos_per_class": 12, "num_frames": 8, "size": 32}},
        "scan": {"workers": 1},
        "decode": {"workers": 1, "frames_per_video": 8, "size": 32},
        "model": {"img_size": 32, "num_frames": 4, "width": 64, "tuning": tuning},
        "train": {"epochs": epochs, "batch_size": 4, "num_workers": workers, "cpus_per_worker": 1,
                  "storage_path": str(work / f"out-{tuning}-{workers}" / "ray"), "run_name": f"{tuning}-{workers}w",
                  "object_store_mb": 200},
        "mlflow": {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "experiment": "train-scaling"},
    }, "benchmarks/train_scaling.py")


def prepare_data(params: Params) -> None:
    from madapter.data.acquire.download import download_dataset
    from madapter.data.index.stage import build_index
    from madapter.data.store.decode import decode_dataset
    from madapter.data.store.scan import scan_videos

    for stage in (download_dataset, build_index, scan_videos, decode_dataset):
        stage(params)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.38
    for offset, workers in ((-width / 2, 1), (width / 2, 2)):
        sel = [r for r in rows if r["workers"] == workers]
        xs = [MODES.index(r["tuning"]) + offset for r in sel]
        ax_speed.bar(xs, [r["clips_per_s_per_worker"] for r in sel], width, label=f"{workers} worker(s)")
        ax_mem.bar(xs, [r["peak_memory_mb_per_worker"] for r in sel], width, label=f"{workers} worker(s)")
    for ax, label in ((ax_speed, "clips/s per worker"), (ax_mem, "peak RSS per worker (MB)")):
        ax.set_xticks(range(len(MODES)), MODES)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("Ray Train on CPU: throughput and memory per worker by tuning mode")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import ray

    from madapter.ray_runtime import worker_runtime_env
    from madapter.train.driver import train

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        prepare_data(bench_params(work, "madapter", 1, args.epochs))
        ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False,
                 runtime_env=worker_runtime_env())  # madapter on the path, Ray Train's cleaner noise filtered
        rows = []
        try:
            for tuning in args.modes:
                for workers in (1, 2):
                    started = time.perf_counter()
                    result = train(bench_params(work, tuning, workers, args.epochs))
                    last = result.history[-1]
                    rows.append({
                        "tuning": tuning,
                        "workers": workers,
                        "clips_per_s": round(last["clips_per_s"], 2),
                        "clips_per_s_per_worker": round(last["clips_per_s"] / workers, 2),
                        "peak_memory_mb_per_worker": round(last["peak_memory_mb"], 1),
                        "epoch_time_s": round(last["epoch_time_s"], 3),
                        "wall_s": round(time.perf_counter() - started, 1),
                    })
                    logger.info("%s", rows[-1])
        finally:
            ray.shutdown()
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "train_scaling",
        "machine": {"cpus_for_ray": 2, "platform": platform.platform(), "python": platform.python_version()},
        "setup": "synthetic 4 classes x 12 videos, vit_tiny_patch16_224 random init @32px, T=4, batch 4/worker, "
                 f"{args.epochs} epochs, numbers from the last epoch",
        "rows": rows,
    }
    (RESULTS / "train_scaling.json").write_text(json.dumps(report, indent=2))
    plot(rows, RESULTS / "train_scaling.png")
    logger.info("wrote %s", RESULTS / "train_scaling.json")


if __name__ == "__main__":
    main()
