"""What the accuracy and ablation benchmarks share: the data, the frozen features, and ONE training loop
per source, all in-process (no Ray, no MLflow) but on the code paths users run.

* **data**: the real data stages (download -> index -> scan -> decode) make the synthetic set in a
  scratch directory (:func:`prepare_data`), for ``dataset.synthetic.task`` ``order`` or ``appearance``.
* **views, once**: :func:`extract_set` asks the features stage's own per-actor callable
  (:class:`~madapter.data.features.extractor.BackboneExtractor`) for every stored view: ``train``
  views ``v = 0..V-1`` are ``ClipDataset`` epoch ``v``'s clips, ``test`` the evaluation protocol's
  views of the source videos.  It keeps the CLIPS (for the modes that backpropagate through the
  backbone) and runs the frozen backbone on them once, tapping EVERY block, so the frozen modes of
  every seed and every ablation train on cached features and a level subset is a selection
  (:func:`select_levels`), not a new extraction.
* **training**: one loop, :func:`train_run`, for both sources.  The model is the pipeline's:
  :func:`~madapter.models.headless.build_feature_classifier` (``madapter``/``linear`` on features,
  as ``train.source: features``) or :func:`~madapter.models.build.build_model` (``inserted``/``full``
  on clips, as ``train.source: frames``); the epoch is :func:`madapter.train.step.train_epoch` and
  the optimiser :class:`madapter.train.optim.Optimisation` for both.  Epoch ``e`` trains on stored
  view ``e % V`` of every video (the features source's rule; the frames source is given the SAME
  clips, so "the same budget" means the same clips, epochs, batch, schedule and learning rate).
* **parallel**: :func:`run_jobs` runs independent trainings in 2 spawned processes with 1 torch
  thread each (these small models barely use a second thread); each process loads the set's tensors
  from the scratch directory once.
* **the runner**: :func:`study` is the whole run of both benchmarks (one budget, the same flags:
  :data:`STUDY`): the sets made once, the benchmark's jobs trained, their rows summarised; each
  benchmark only says which sets and jobs, and what its table and verdicts are.

The benchmarks that use it: :mod:`benchmarks.accuracy` and :mod:`benchmarks.ablations`
(``benchmarks/recipe_sweep.py`` trains through :func:`fit` and :func:`scores`).  It imports
nothing of the package at module level: ``recipe_sweep.py`` still runs as a script.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.trainer")

FROZEN = ("madapter", "linear")
"""Modes that train on cached features (the backbone never changes)."""
PACKAGES = ("torch", "timm", "numpy", "av", "decord")
"""Versions recorded with the results."""

BUDGET_FULL: dict[str, Any] = {
    # Why these (accuracy.py and ablations.py share them: one budget): a full/inserted training step
    # costs ~0.024 s per clip (64 px, T=4, ViT-Ti, 1 thread, forward + backward), and 12 such runs
    # must fit in ~8 minutes on 2 cores.  The two EASIEST reversal pairs at 72 videos a class: the
    # M-adapter head on frozen random-init features needs many videos per class (it overfits small
    # sets) far more than many classes; 16 epochs of 192 clips at batch 8 then separate the modes
    # (measured while choosing, seed 0: 0.96 test top-1 at 16 epochs, 0.71 at 10, vs 0.36-0.58 with
    # 4 pairs x 48 videos at 15-60 epochs).
    # Full 4x4 token grids (level_pool null): learned the order faster than 2x2 pooled ones.
    "classes": 4, "videos_per_class": 72, "source_frames": 8, "source_size": 64, "stored_frames": 8, "size": 64,
    "backbone": "vit_tiny_patch16_224", "num_frames": 4, "level_pool": None, "views": 4,
    "epochs": 16, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 0.5, "label_smoothing": 0.0, "weight_decay": 0.05,
    # The peak learning rate is the one per-mode setting: at 3e-3 full fine-tuning of the random-init
    # ViT did not learn at all (0.25 test top-1 = chance on the appearance set, seed 0, 10 epochs),
    # at 1e-4 it reached 0.83 (3e-4: 0.79); the heads and inserted adapters learn at 3e-3.
    "lr_by_mode": {"full": 1e-4},
    "seeds": [0, 1, 2],
}
"""The full run's data and budget: the same for every mode, set and ablation."""
BUDGET_QUICK: dict[str, Any] = {"epochs": 10, "seeds": [0]}
"""``--quick``: the same data, 10 epochs, 1 seed.  Not fewer videos: with half of them the M-adapter
head memorised the looks and sat below chance (0.17 test top-1); at 10 epochs it reached 0.71 where
16 gave 0.96 (seed 0), so ``--quick`` under-states it on the subtler pair."""
BUDGET_SMOKE: dict[str, Any] = {"classes": 2, "videos_per_class": 6, "source_size": 32, "size": 32, "views": 2,
                                "epochs": 1, "batch_size": 4, "seeds": [0, 1]}
"""The tests' tiny configuration (machinery only, not a result)."""
REPO = Path(__file__).resolve().parents[1]

Job = dict[str, Any]
"""One training: ``{"set", "tuning", "seed", "name", "overrides": {dotted params key: value}}``."""


# ----------------------------------------------------------------------------- parameters and data
def set_params(work: Path, task: str, setup: dict[str, Any], overrides: dict[str, Any] | None = None):
    """The pipeline's params for one synthetic ``task`` and the benchmark ``setup`` (scratch paths)."""
    from madapter.config import apply_override, load_params, params_from_dict

    data = load_params(REPO / "params.yaml").model_dump(mode="json")
    data["base"].update(seed=0, data_dir=str(work / task / "data"), outputs_dir=str(work / task / "out"))
    data["dataset"].update(name="synthetic")
    data["dataset"]["synthetic"].update(task=task, classes=setup["classes"], videos_per_class=setup["videos_per_class"],
                                        num_frames=setup["source_frames"], size=setup["source_size"])
    data["scan"]["workers"] = data["decode"]["workers"] = 1
    data["decode"].update(frames_per_video=setup["stored_frames"], size=setup["size"], format="raw")
    data["model"].update(backbone=setup["backbone"], pretrained=False, img_size=setup["size"],
                         num_frames=setup["num_frames"], levels=None, level_pool=setup["level_pool"])
    data["features"].update(train_views=setup["views"], dtype="float32", use_gpu=False)
    data["train"].update(epochs=setup["epochs"], batch_size=setup["batch_size"], lr=setup["lr"], num_workers=1,
                         warmup_epochs=setup["warmup_epochs"], label_smoothing=setup["label_smoothing"],
                         weight_decay=setup["weight_decay"], grad_accum=1, amp="none")
    data["evaluate"].update(clips=1, crops=1)
    for key, value in (overrides or {}).items():
        apply_override(data, key, value)
    data["train"]["source"] = "features" if data["model"]["tuning"] in FROZEN else "frames"  # as a user would
    data["train"]["lr"] = setup.get("lr_by_mode", {}).get(data["model"]["tuning"], data["train"]["lr"])
    return params_from_dict(data, "benchmarks/trainer.py")


def extract_set(params, out: Path) -> dict[str, Any]:
    """Clips and frozen features (every block tapped, full grids) of the train and test splits -> ``out``.

    Returns what it measured: videos per split, seconds of the view building and of the backbone.
    """
    import torch

    from madapter.data.features.extractor import BackboneExtractor
    from madapter.data.features.stage import plan_videos
    from madapter.models.backbone import Backbone
    from madapter.paths import StagePaths

    depth = Backbone(params.model.backbone, img_size=params.model.img_size, pretrained=False).depth
    data = params.model_dump(mode="json")
    data["model"].update(levels=list(range(depth)), level_pool=None, tuning="madapter")
    plan = plan_videos(params, StagePaths.from_params(params))
    extractor = BackboneExtractor(data, plan, 1, torch.get_num_threads())
    saved: dict[str, Any] = {"classes": None, "depth": depth}
    timing = {"views_s": 0.0, "backbone_s": 0.0}
    for split in ("train", "test"):
        started = time.perf_counter()
        clips = torch.stack([extractor.views(split, i) for i in range(len(plan.jobs[split]))])  # [N, V, T, 3, S, S]
        timing["views_s"] += time.perf_counter() - started
        started = time.perf_counter()
        levels, pooled = extractor.features(clips.flatten(0, 1))
        timing["backbone_s"] += time.perf_counter() - started
        n, v = clips.shape[:2]
        saved[split] = {
            "clips": clips, "labels": torch.tensor([job.label for job in plan.jobs[split]]),
            "levels": [torch.from_numpy(lv).unflatten(0, (n, v)) for lv in levels],
            "pooled": torch.from_numpy(pooled).unflatten(0, (n, v)),
        }
        names = {job.label: job.label_name for job in plan.jobs[split]}
        saved["classes"] = [names[k] for k in sorted(names)]
    torch.save(saved, out)
    return {"depth": depth, "classes": saved["classes"], "train_videos": len(plan.jobs["train"]), "test_videos": len(plan.jobs["test"]),
            **{k: round(s, 1) for k, s in timing.items()}}


def select_levels(levels: list, indices: list[int]) -> list:
    """The tapped blocks ``indices`` out of the every-block extraction (``levels[k]`` is block ``k``)."""
    return [levels[i] for i in indices]


# ----------------------------------------------------------------------------- one training
_LOADED: dict[str, Any] = {}


def _load(path: str) -> dict[str, Any]:
    """A set's tensors, loaded once per process."""
    import torch

    if path not in _LOADED:
        _LOADED.clear()
        _LOADED[path] = torch.load(path, weights_only=False)
    return _LOADED[path]


def _inputs(data: dict[str, Any], split: str, tuning: str, level_idx: list[int], level_pool: int | None):
    """The model inputs of every video and view of ``split``: clips, or (levels, pooled) features."""
    from madapter.models.classifier import pool_level_grids

    part = data[split]
    if tuning not in FROZEN:
        return part["clips"]
    if tuning == "linear":
        return ([], part["pooled"])
    n, v = part["pooled"].shape[:2]
    grids = [g.flatten(0, 1) for g in select_levels(part["levels"], level_idx)]
    grids = [g.unflatten(0, (n, v)) for g in pool_level_grids(grids, level_pool)]
    return (grids, part["pooled"])


def _view(inputs, idx, view: int) -> tuple:
    """Rows ``idx`` of stored view ``view`` as ``forward``'s positional arguments."""
    if isinstance(inputs, tuple):
        levels, pooled = inputs
        return ([lv[idx, view] for lv in levels], pooled[idx, view])
    return (inputs[idx, view],)


def build(params, data: dict[str, Any], level_idx: list[int]):
    """The pipeline's model of ``params.model.tuning``: the head alone (frozen modes) or the full model."""
    import torch

    from madapter.models.backbone import LevelInfo
    from madapter.models.build import build_model
    from madapter.models.headless import build_feature_classifier

    torch.manual_seed(params.base.seed)
    classes = len(data["classes"])
    if params.model.tuning in FROZEN:
        levels = [LevelInfo(i, int(data["train"]["levels"][i].shape[-1])) for i in level_idx]
        return build_feature_classifier(params.model, levels, int(data["train"]["pooled"].shape[-1]), classes, {})
    return build_model(params.model, classes)


def train_run(params, data: dict[str, Any]) -> dict[str, Any]:
    """Train one model for ``train.epochs`` on stored view ``epoch % V``; test top-1 (overall, per pair).

    ``seconds`` is the training wall time (model build + epochs + test), in this process, 1 thread.
    """
    from madapter.models.backbone import resolve_levels
    from madapter.models.build import count_parameters

    started = time.perf_counter()
    cfg, tuning = params.train, params.model.tuning
    level_idx = resolve_levels(params.model.levels, data["depth"])
    model = build(params, data, level_idx)
    train_in = _inputs(data, "train", tuning, level_idx, params.model.level_pool)
    train_acc = fit(model, cfg, params.base.seed, train_in, data["train"]["labels"], cfg.batch_size)
    train_s = time.perf_counter() - started
    probs = scores(model, _inputs(data, "test", tuning, level_idx, params.model.level_pool))
    test_labels = data["test"]["labels"]
    hit = probs.argmax(1) == test_labels
    counts = count_parameters(model)
    return {
        "test_top1": round(float(hit.float().mean()), 4),
        "test_per_pair": per_pair(hit, test_labels, data["classes"]),
        "train_acc_last": train_acc[-1], "train_acc": train_acc,
        "trainable_params": counts["trainable"], "levels": level_idx,
        "train_s": round(train_s, 1), "seconds": round(time.perf_counter() - started, 1),
    }


def fit(model, cfg, seed: int, inputs, labels, batch_size: int) -> list[float]:
    """Train ``model`` for ``cfg.epochs``: epoch ``e`` on stored view ``e % V`` of every video, shuffled
    with a generator seeded by ``seed``, batches of ``batch_size``, through the pipeline's
    :func:`~madapter.train.step.train_epoch` and :class:`~madapter.train.optim.Optimisation`.

    ``inputs``: clips ``[N, V, ...]`` or ``(levels, pooled)`` features ``[N, V, ...]``.  Returns the
    training accuracy of every epoch.
    """
    import torch

    from madapter.train.optim import Optimisation
    from madapter.train.step import train_epoch

    n = len(labels)
    views = (inputs[1] if isinstance(inputs, tuple) else inputs).shape[1]
    opt = Optimisation.build(model, cfg, math.ceil(n / batch_size), torch.device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(n, generator=generator)
        batches = [(_view(inputs, order[i:i + batch_size], epoch % views), labels[order[i:i + batch_size]])
                   for i in range(0, n, batch_size)]
        sums = train_epoch(model, model, batches, opt, 1, "none", torch.device("cpu"), lambda _: None)
        history.append(round(sums.correct / max(1.0, sums.seen), 4))
    return history


def scores(model, inputs) -> Any:
    """Softmax averaged over the stored test views (the evaluate stage's protocol)."""
    import torch

    model.eval()
    first = inputs[1] if isinstance(inputs, tuple) else inputs
    n, views = first.shape[:2]
    probs = None
    with torch.no_grad():
        for v in range(views):
            for i in range(0, n, 32):
                idx = torch.arange(i, min(n, i + 32))
                p = model(*_view(inputs, idx, v)).softmax(-1)
                probs = torch.zeros(n, p.shape[1]) if probs is None else probs
                probs[idx] += p / views
    return probs


def per_pair(hit, labels, classes: list[str]) -> dict[str, float]:
    """Top-1 per pair of labels ``2k, 2k+1`` (the order set's reversal pairs)."""
    out = {}
    for k in range(0, len(classes) - 1, 2):
        mask = (labels == k) | (labels == k + 1)
        out[f"{classes[k]}/{classes[k + 1]}"] = round(float(hit[mask].float().mean()), 4)
    return out


# ----------------------------------------------------------------------------- jobs in 2 processes
def run_job(job: Job, data_files: dict[str, str], work: str, setup: dict[str, Any]) -> dict[str, Any]:
    """One training in this (worker) process: the row for the report, or the error that stopped it."""
    import torch

    torch.set_num_threads(1)
    row = {k: job[k] for k in ("name", "set", "tuning", "seed")} | {"overrides": job.get("overrides", {})}
    try:
        overrides = {"model.tuning": job["tuning"], "base.seed": job["seed"], **job.get("overrides", {})}
        params = set_params(Path(work), job["set"], setup, overrides)
        row.update(train_run(params, _load(data_files[job["set"]])))
    except Exception as exc:  # noqa: BLE001 -- one failing point is reported, the rest still runs
        logger.exception("job %s failed", job["name"])
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[-1][:300]
    return row


def _init_worker() -> None:
    """A spawned worker: 1 torch thread (2 workers share 2 cores), and only warnings in the log."""
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def run_jobs(jobs: list[Job], data_files: dict[str, str], work: Path, setup: dict[str, Any], processes: int,
             on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run ``jobs`` in ``processes`` spawned processes (1: in this one), longest first; rows in job order."""
    import multiprocessing

    from tqdm import tqdm

    cost = {"full": 4, "inserted": 4}
    ordered = sorted(range(len(jobs)), key=lambda i: -cost.get(jobs[i]["tuning"], 1))
    rows: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(jobs), desc="trainings", unit="run")

    def done(i: int, row: dict[str, Any]) -> None:
        rows[i] = row
        bar.update()
        logger.info("%s: %s", row["name"], row.get("error") or f"test top-1 {row['test_top1']:.3f} "
                    f"per pair {row['test_per_pair']} ({row['seconds']:.0f} s)")
        if on_done:
            on_done(row)

    if processes <= 1:
        for i in ordered:
            done(i, run_job(jobs[i], data_files, str(work), setup))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(run_job, jobs[i], data_files, str(work), setup): i for i in ordered}
            for future in as_completed(futures):
                done(futures[future], future.result())
    bar.close()
    return [rows[i] for i in range(len(jobs))]


def make_set(work: Path, task: str, setup: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """Make one task's set with the data stages and extract it: tensors file, what it cost, class names."""
    import torch

    from benchmarks.harness import data_stages

    started = time.perf_counter()
    params = set_params(work, task, setup)
    data_stages(params)
    data_s = time.perf_counter() - started
    out = work / f"{task}.pt"
    info = extract_set(params, out)
    classes = info.pop("classes")
    cost = {"depth": info.pop("depth"), "data_stages_s": round(data_s, 1), **info, "threads": torch.get_num_threads(),
            "total_s": round(time.perf_counter() - started, 1)}
    return str(out), cost, classes


def make_sets(work: Path, tasks: Iterable[str], setup: dict[str, Any],
              processes: int = 1) -> tuple[dict[str, str], dict[str, Any], dict[str, list[str]]]:
    """Every task's set, made and extracted once (in parallel processes when asked):
    ``{task: tensors file}``, what each cost, their class names."""
    import multiprocessing

    tasks = list(tasks)
    if processes > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(processes, len(tasks)), mp_context=ctx, initializer=_init_worker) as pool:
            made = list(pool.map(make_set, [work] * len(tasks), tasks, [setup] * len(tasks)))
    else:
        made = [make_set(work, task, setup) for task in tasks]
    for task, (_, cost, _) in zip(tasks, made, strict=True):
        logger.info("set %s made and extracted: %s", task, cost)
    return ({t: m[0] for t, m in zip(tasks, made, strict=True)}, {t: m[1] for t, m in zip(tasks, made, strict=True)},
            {t: m[2] for t, m in zip(tasks, made, strict=True)})


def summarise(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple]) -> list[dict[str, Any]]:
    """Mean and std (over seeds) of test top-1 and per pair, per ``key`` group of the rows without errors."""
    import statistics

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault(key(row), []).append(row)
    out = []
    for group, members in groups.items():
        tops = [r["test_top1"] for r in members]
        pairs = members[0]["test_per_pair"]
        out.append({
            "group": list(group), "seeds": [r["seed"] for r in members], "n": len(members),
            "top1_mean": round(statistics.fmean(tops), 4),
            "top1_std": round(statistics.stdev(tops), 4) if len(tops) > 1 else 0.0,
            "per_pair_mean": {p: round(statistics.fmean(r["test_per_pair"][p] for r in members), 4) for p in pairs},
            "per_pair_min": {p: round(min(r["test_per_pair"][p] for r in members), 4) for p in pairs},
            "per_pair_max": {p: round(max(r["test_per_pair"][p] for r in members), 4) for p in pairs},
            "trainable_params": members[0]["trainable_params"],
            "seconds_mean": round(statistics.fmean(r["seconds"] for r in members), 1),
        })
    return out


# ----------------------------------------------------------------------------- the runner
def options(parser: argparse.ArgumentParser) -> None:
    from benchmarks.harness import positive

    parser.add_argument("--processes", type=positive, default=2, help="trainings run in parallel, 1 torch thread each")


STUDY: dict[str, Any] = {"packages": PACKAGES, "quick": "1 seed and 10 epochs (the same data)", "options": options,
                         "smoke": True, "work_dir": True}
"""What accuracy's and ablations' declarations share (:class:`benchmarks.harness.Benchmark`): flags and budget."""


def study(args: argparse.Namespace, sets: Sequence[str], jobs: Callable[[dict[str, Any], dict[str, Any]], list[Job]],
          group: Callable[[dict[str, Any]], tuple]) -> dict[str, Any]:
    """One run: the full budget (``--quick``/``--smoke`` changes on top), every set of ``sets`` made and
    extracted once, ``jobs(setup, data_cost)`` trained (``--processes`` at a time, 1 torch thread each),
    the rows summarised per ``group(row)``."""
    import torch

    torch.set_num_threads(1)
    setup = {**BUDGET_FULL, **(BUDGET_SMOKE if args.smoke else BUDGET_QUICK if args.quick else {})}
    files, cost, classes = make_sets(args.work, sets, setup, args.processes)
    todo = jobs(setup, cost)
    runs = run_jobs(todo, files, args.work, setup, args.processes)
    for job, row in zip(todo, runs, strict=True):
        row.update({k: v for k, v in job.items() if k not in row})  # e.g. an ablation's configuration
    return {"setup": setup, "setup_text": setup_text(setup), "classes": classes, "data_cost": cost,
            "summary": summarise(runs, group), "runs": runs, "errors": [r["name"] for r in runs if "error" in r]}


def table_end(lines: list[str], report: dict[str, Any], setup: str, json_path: str) -> str:
    """A docs table's last lines: the failed runs, the setup, the JSON and the command."""
    lines += [f"\nError in {row['name']}: {row['error']}" for row in report["runs"] if "error" in row]
    return "\n".join([*lines, "", f"Setup: {setup}", "", f"From `{json_path}`, command `{report['command']}`."]) + "\n"


def setup_text(setup: dict[str, Any]) -> str:
    """One line describing the data and the budget, for the docs' tables."""
    return (f"{setup['classes']} classes x {setup['videos_per_class']} videos ({setup['source_frames']} frames, "
            f"{setup['source_size']} px), {setup['backbone']} random init at {setup['size']} px, T={setup['num_frames']}; "
            f"{setup['epochs']} epochs over {setup['views']} stored views, batch {setup['batch_size']}, AdamW peak lr "
            f"{setup['lr']}{''.join(f' ({m}: {lr})' for m, lr in setup.get('lr_by_mode', {}).items())}, "
            f"warm-up {setup['warmup_epochs']} epoch + cosine, seeds {setup['seeds']}")
