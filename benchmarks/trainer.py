"""What the accuracy and ablation benchmarks share: the data, the frozen features, and ONE training loop
per source, all in-process (no Ray, no MLflow) but on the code paths users run.

* **views, once**: :func:`make_set` makes a synthetic set with the data stages and asks the features
  stage's per-actor callable for every stored view.  It keeps the CLIPS (for the modes that
  backpropagate through the backbone) and runs the frozen backbone on them once, tapping EVERY
  block: every seed and ablation of the frozen modes trains on cached features, and a level subset
  is a selection, not a new extraction.
* **training**: one loop, :func:`train_run`, on the pipeline's model, epoch and optimiser.  Epoch
  ``e`` trains on stored view ``e % V`` of every video (the features source's rule; the frames
  source gets the SAME clips: "the same budget" means the same clips, epochs, batch and schedule).
* **the runner**: :func:`study` is the whole run of both benchmarks (one budget, the flags of
  :data:`STUDY`), 2 trainings at a time in spawned processes, 1 torch thread each.

``recipe_sweep.py`` trains through :func:`fit` and :func:`scores` too, so nothing of the package
is imported at module level.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.trainer")

FROZEN = ("madapter", "linear")
"""Modes that train on cached features (the backbone never changes)."""
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
    # A 2-epoch warm-up for every mode: with half an epoch the M-adapter head did not learn a pair at all on
    # 2 of 5 seeds (0.775 +- 0.27 test top-1); with 2 epochs every seed learned both (0.954 +- 0.017).
    "epochs": 16, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 2.0, "label_smoothing": 0.0, "weight_decay": 0.05,
    # The peak learning rate is the one per-mode setting: at 3e-3 full fine-tuning of the random-init
    # ViT did not learn at all (0.25 test top-1 = chance on the appearance set, seed 0, 10 epochs),
    # at 1e-4 it reached 0.83 (3e-4: 0.79); the inserted adapters learn at 3e-3, the M-adapter head
    # best at 1e-3 in 16 epochs (0.979 +- 0.030 over 5 seeds with the 2-epoch warm-up, 0.954 at 3e-3;
    # the ablations' schedule axis shows both).
    "lr_by_mode": {"full": 1e-4, "madapter": 1e-3},
    "seeds": [0, 1, 2, 3, 4],
}
"""The full run's data and budget: the same for every mode, set and ablation."""
DATA_SETS: dict[str, dict[str, Any]] = {
    "order": {"task": "order"},
    "appearance": {"task": "appearance"},
    # The second order-dependent set: the order set's pairs over busy scenes (textured backgrounds, a
    # static distractor, heavier noise), longer videos at a larger size, so a finding on one generator's
    # flat 64-px look is checked on another (ViT-Ti at 96 px: a 6x6 token grid).
    "textured": {"task": "textured", "source_frames": 24, "source_size": 96, "size": 96},
}
"""The named synthetic sets: each one's task and what it changes in the budget's data."""
FIXED_FRAMES = "-fixed"
"""A set name ending in this gives every training view the same T frames, the segment centres of the
stored grid (uniform over the whole video), where the pipeline jitters each view's frames within
their segments: the frame-sampling ablation.  Test views are the centres either way."""
BUDGET_QUICK: dict[str, Any] = {"epochs": 10, "seeds": [0]}
"""``--quick``: the same data, 10 epochs, 1 seed.  Not fewer videos: with half of them the M-adapter
head memorised the looks and sat below chance (0.17 test top-1); at 10 epochs it reached 0.71 where
16 gave 0.96 (seed 0), so ``--quick`` under-states it on the subtler pair."""
BUDGET_SMOKE: dict[str, Any] = {"classes": 2, "videos_per_class": 6, "source_size": 32, "size": 32, "views": 2,
                                "epochs": 1, "batch_size": 4, "seeds": [0, 1]}
"""The tests' tiny configuration (machinery only, not a result)."""
REPO = Path(__file__).resolve().parents[1]

Job = dict[str, Any]
"""One training: ``{"set", "tuning", "seed", "name", "overrides": {dotted params key: value}}``, and an
optional ``"edit"`` (:data:`benchmarks.variants.EDITS`)."""


# ----------------------------------------------------------------------------- parameters and data
def set_setup(name: str, budget: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """The budget as set ``name`` sees it: ``budget``, then the set's :data:`DATA_SETS` entry (and the
    :data:`FIXED_FRAMES` suffix), then ``changes`` (``--quick``/``--smoke``: they win, so a smoke run stays tiny)."""
    fixed = {"fixed_train_frames": True} if name.endswith(FIXED_FRAMES) else {}
    return {**budget, **DATA_SETS[name.removesuffix(FIXED_FRAMES)], **fixed, **changes}


def set_params(work: Path, name: str, setup: dict[str, Any], overrides: dict[str, Any] | None = None):
    """The pipeline's params for the synthetic set ``name`` as :func:`set_setup` made ``setup`` (scratch paths)."""
    from madapter.config import apply_override, load_params, params_from_dict

    data = load_params(REPO / "params.yaml").model_dump(mode="json")
    data["base"].update(seed=0, data_dir=str(work / name / "data"), outputs_dir=str(work / name / "out"))
    data["dataset"].update(name="synthetic")
    data["dataset"]["synthetic"].update(task=setup["task"], classes=setup["classes"], videos_per_class=setup["videos_per_class"],
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
    if "train.lr" not in (overrides or {}):  # an ablation's own lr wins over the mode's
        data["train"]["lr"] = setup.get("lr_by_mode", {}).get(data["model"]["tuning"], data["train"]["lr"])
    return params_from_dict(data, "benchmarks/trainer.py")


def make_set(work: Path, name: str, setup: dict[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """Set ``name`` made by the data stages, then its clips and frozen features (every block tapped,
    full grids) of the train and test splits saved: the tensors file, what it cost, the class names."""
    import torch

    from benchmarks.harness import data_stages
    from madapter.data.features.extractor import BackboneExtractor
    from madapter.data.features.stage import plan_videos
    from madapter.models.backbone import Backbone
    from madapter.paths import StagePaths

    started = time.perf_counter()
    params = set_params(work, name, setup)
    data_stages(params)
    cost: dict[str, Any] = {"data_stages_s": round(time.perf_counter() - started, 1)}
    depth = Backbone(params.model.backbone, img_size=params.model.img_size, pretrained=False).depth
    data = params.model_dump(mode="json")
    data["model"].update(levels=list(range(depth)), level_pool=None, tuning="madapter")
    plan = plan_videos(params, StagePaths.from_params(params))
    # fixed_train_frames: every training view the centred clip (the frame-sampling ablation)
    extractor = BackboneExtractor(data, plan, 1, torch.get_num_threads(),
                                  augment_train=not setup.get("fixed_train_frames"))
    saved: dict[str, Any] = {"depth": depth}
    timing = {"views_s": 0.0, "backbone_s": 0.0}
    for split in ("train", "test"):
        jobs = plan.jobs[split]
        mark = time.perf_counter()
        clips = torch.stack([extractor.views(split, i) for i in range(len(jobs))])  # [N, V, T, 3, S, S]
        timing["views_s"] += time.perf_counter() - mark
        mark = time.perf_counter()
        levels, pooled = extractor.features(clips.flatten(0, 1))
        timing["backbone_s"] += time.perf_counter() - mark
        n, v = clips.shape[:2]
        saved[split] = {"clips": clips, "labels": torch.tensor([job.label for job in jobs]),
                        "levels": [torch.from_numpy(lv).unflatten(0, (n, v)) for lv in levels],
                        "pooled": torch.from_numpy(pooled).unflatten(0, (n, v))}
        names = {job.label: job.label_name for job in jobs}
        saved["classes"] = [names[k] for k in sorted(names)]
    out = work / f"{name}.pt"
    torch.save(saved, out)
    cost = {"depth": depth, **cost, "train_videos": len(plan.jobs["train"]),
            "test_videos": len(plan.jobs["test"]), **{k: round(s, 1) for k, s in timing.items()},
            "threads": torch.get_num_threads(), "total_s": round(time.perf_counter() - started, 1)}
    return str(out), cost, saved["classes"]


# ----------------------------------------------------------------------------- one training
@functools.lru_cache(maxsize=1)
def _load(path: str) -> dict[str, Any]:
    """A set's tensors, loaded once per process."""
    import torch

    return torch.load(path, weights_only=False)


def _inputs(data: dict[str, Any], split: str, tuning: str, level_idx: list[int], level_pool: int | None):
    """The model inputs of every video and view of ``split``: clips, or (levels, pooled) features
    (``levels[k]`` of the every-block extraction is block ``k``)."""
    from madapter.models.classifier import pool_level_grids

    part = data[split]
    if tuning not in FROZEN:
        return part["clips"]
    if tuning == "linear":
        return ([], part["pooled"])
    n, v = part["pooled"].shape[:2]
    grids = pool_level_grids([part["levels"][i].flatten(0, 1) for i in level_idx], level_pool)
    return ([g.unflatten(0, (n, v)) for g in grids], part["pooled"])


def _view(inputs, idx, view: int) -> tuple:
    """Rows ``idx`` of stored view ``view`` as ``forward``'s positional arguments."""
    if isinstance(inputs, tuple):
        levels, pooled = inputs
        return ([lv[idx, view] for lv in levels], pooled[idx, view])
    return (inputs[idx, view],)


def train_run(params, data: dict[str, Any], edit: str | None = None) -> dict[str, Any]:
    """Train the pipeline's model of ``params.model.tuning`` (the head alone for the frozen modes) for
    ``train.epochs``; test top-1 overall and per pair.  ``seconds``: build + epochs + test, 1 thread.
    ``edit``: a :data:`benchmarks.variants.EDITS` name, applied to the built model before training."""
    import torch

    from benchmarks.variants import EDITS
    from madapter.models.backbone import LevelInfo, resolve_levels
    from madapter.models.build import build_model, count_parameters
    from madapter.models.headless import build_feature_classifier

    started = time.perf_counter()
    cfg, tuning, level_pool = params.train, params.model.tuning, params.model.level_pool
    level_idx = resolve_levels(params.model.levels, data["depth"])
    torch.manual_seed(params.base.seed)
    if tuning in FROZEN:
        levels = [LevelInfo(i, int(data["train"]["levels"][i].shape[-1])) for i in level_idx]
        pooled_dim = int(data["train"]["pooled"].shape[-1])
        model = build_feature_classifier(params.model, levels, pooled_dim, len(data["classes"]), {})
    else:
        model = build_model(params.model, len(data["classes"]))
    if edit is not None:
        EDITS[edit](model)
    train_in = _inputs(data, "train", tuning, level_idx, level_pool)
    train_acc = fit(model, cfg, params.base.seed, train_in, data["train"]["labels"], cfg.batch_size)
    train_s = time.perf_counter() - started
    test_labels = data["test"]["labels"]
    hit = scores(model, _inputs(data, "test", tuning, level_idx, level_pool)).argmax(1) == test_labels
    return {
        "test_top1": round(float(hit.float().mean()), 4),
        "test_per_pair": per_pair(hit, test_labels, data["classes"]),
        "train_acc_last": train_acc[-1], "train_acc": train_acc,
        "trainable_params": count_parameters(model)["trainable"], "levels": level_idx,
        "train_s": round(train_s, 1), "seconds": round(time.perf_counter() - started, 1),
    }


def fit(model, cfg, seed: int, inputs, labels, batch_size: int) -> list[float]:
    """Train ``model`` for ``cfg.epochs`` (the pipeline's ``train_epoch`` and ``Optimisation``): epoch ``e``
    on stored view ``e % V`` of ``inputs`` (clips or ``(levels, pooled)``, each ``[N, V, ...]``), shuffled by
    ``seed``, in batches of ``batch_size``.  Returns the training accuracy of every epoch."""
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
    n, views = (inputs[1] if isinstance(inputs, tuple) else inputs).shape[:2]
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
    pairs = {f"{classes[k]}/{classes[k + 1]}": (labels == k) | (labels == k + 1)
             for k in range(0, len(classes) - 1, 2)}
    return {pair: round(float(hit[mask].float().mean()), 4) for pair, mask in pairs.items()}


# ----------------------------------------------------------------------------- the runner
def run_job(job: Job, data_file: str, work: str, setup: dict[str, Any]) -> dict[str, Any]:
    """One training in this (worker) process: the row for the report, or the error that stopped it."""
    import torch

    torch.set_num_threads(1)
    row = {k: job[k] for k in ("name", "set", "tuning", "seed")} | {"overrides": job.get("overrides", {})}
    try:
        overrides = {"model.tuning": job["tuning"], "base.seed": job["seed"], **job.get("overrides", {})}
        row.update(train_run(set_params(Path(work), job["set"], setup, overrides), _load(data_file), job.get("edit")))
    except Exception as exc:  # noqa: BLE001 -- one failing point is reported, the rest still runs
        logger.exception("job %s failed", job["name"])
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[-1][:300]
    return row


def _init_worker() -> None:
    """A spawned worker: 1 torch thread (2 workers share 2 cores), and only warnings in the log."""
    from benchmarks.harness import one_thread

    one_thread()
    logging.basicConfig(level=logging.WARNING)


def summarise(rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], tuple]) -> list[dict[str, Any]]:
    """Mean and std (over seeds) of test top-1 and per pair, per ``key`` group of the rows without errors."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault(key(row), []).append(row)
    out = []
    for group, members in groups.items():
        tops = [r["test_top1"] for r in members]
        pairs = {p: [r["test_per_pair"][p] for r in members] for p in members[0]["test_per_pair"]}
        out.append({
            "group": list(group), "seeds": [r["seed"] for r in members], "n": len(members),
            "top1_mean": round(statistics.fmean(tops), 4),
            "top1_std": round(statistics.stdev(tops), 4) if len(tops) > 1 else 0.0,
            **{f"per_pair_{name}": {p: round(stat(v), 4) for p, v in pairs.items()}
               for name, stat in (("mean", statistics.fmean), ("min", min), ("max", max))},
            "trainable_params": members[0]["trainable_params"],
            "seconds_mean": round(statistics.fmean(r["seconds"] for r in members), 1),
        })
    return out


def difference_margin(a: dict[str, Any], b: dict[str, Any], test_videos: int) -> float:
    """How far apart two groups' mean top-1 (modes, recipes: ``top1_mean``, ``top1_std`` over ``n`` seeds)
    must be to call one better: two standard errors of the difference, from the seeds' spread or, if
    larger, from the binomial noise of the test videos."""
    seeds = math.sqrt(a["top1_std"] ** 2 / a["n"] + b["top1_std"] ** 2 / b["n"])
    binomial = math.sqrt(sum(s["top1_mean"] * (1 - s["top1_mean"]) / (test_videos * s["n"]) for s in (a, b)))
    return 2 * max(seeds, binomial)


def options(parser: argparse.ArgumentParser) -> None:
    from benchmarks.harness import positive

    parser.add_argument("--processes", type=positive, default=2, help="trainings run in parallel, 1 torch thread each")


STUDY: dict[str, Any] = {"packages": ("torch", "timm", "numpy", "av", "decord"), "options": options,
                         "quick": "1 seed and 10 epochs (the same data)", "smoke": True, "work_dir": True}
"""What accuracy's and ablations' declarations share (:class:`benchmarks.harness.Benchmark`): flags and budget."""


def study(args: argparse.Namespace, sets: Sequence[str], jobs: Callable[[dict[str, Any], dict[str, Any]], list[Job]],
          group: Callable[[dict[str, Any]], tuple]) -> dict[str, Any]:
    """One run: the full budget (``--quick``/``--smoke`` changes on top), every set of ``sets`` (names of
    :data:`DATA_SETS`, optionally with :data:`FIXED_FRAMES`) made and extracted once, ``jobs(setup, data_cost)``
    trained (``--processes`` at a time, longest first, 1 torch thread each), the rows summarised per
    ``group(row)``."""
    import torch
    from tqdm import tqdm

    from benchmarks.harness import in_processes

    torch.set_num_threads(1)
    changes = BUDGET_SMOKE if args.smoke else BUDGET_QUICK if args.quick else {}
    setup = {**BUDGET_FULL, **changes}
    setups = {name: set_setup(name, BUDGET_FULL, changes) for name in sets}
    made = dict(in_processes(make_set, [(args.work, name, setups[name]) for name in sets],
                             args.processes if len(sets) > 1 else 1, _init_worker))
    files, cost, classes = ({name: made[i][k] for i, name in enumerate(sets)} for k in range(3))
    for name in sets:
        logger.info("set %s made and extracted: %s", name, cost[name])
    todo = jobs(setup, cost)
    cost_of = {"full": 4, "inserted": 4}  # a training's relative cost: the longest ones start first
    order = sorted(range(len(todo)), key=lambda i: -cost_of.get(todo[i]["tuning"], 1))
    runs: list[dict[str, Any]] = [{} for _ in todo]
    trained = in_processes(run_job, [(todo[i], files[todo[i]["set"]], str(args.work), setups[todo[i]["set"]])
                                     for i in order],
                           args.processes, _init_worker)
    for k, row in tqdm(trained, total=len(todo), desc="trainings", unit="run"):
        job = todo[order[k]]  # what the row lacks, e.g. an ablation's configuration:
        runs[order[k]] = row | {key: v for key, v in job.items() if key not in row}
        logger.info("%s: %s", row["name"], row.get("error") or f"test top-1 {row['test_top1']:.3f} "
                    f"per pair {row['test_per_pair']} ({row['seconds']:.0f} s)")
    return {"setup": setup, "setup_text": setup_text(setup), "set_setups": setups, "classes": classes, "data_cost": cost,
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
