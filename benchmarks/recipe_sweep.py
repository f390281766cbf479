"""The demo recipe's evidence: test top-1 of the M-adapter head on cached features, per recipe.

Why a script and not ``python -m madapter tune``: a sweep that picks the *defaults* needs the
test split, whole training runs and per-pair accuracy, cheaply enough for many configurations on
2 cores.  It trains the very head the pipeline trains, in one process, without Ray, through the
loop of :mod:`benchmarks.trainer`; ``make demo`` then confirms the chosen recipe.  The features
come from a store extracted with ``model.level_pool: null``, so each recipe pools the full grids
itself (the level pooling is swept too).

    python -m madapter features --params P.yaml          # with model.level_pool: null
    python -m benchmarks.recipe_sweep --params P.yaml --out benchmarks/results/recipe_sweep.json

``--recipes`` takes a JSON list of overrides (dotted keys of params.yaml; ``name`` labels the row);
``features.train_views: n`` below the stored count trains on the first ``n`` stored views.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import command_line, git_state, table
from benchmarks.trainer import fit, per_pair, scores
from madapter.config import Params, apply_override, load_params, params_from_dict
from madapter.data.features.dataset import FeatureDataset, collate_features, level_infos
from madapter.data.features.feature_store import FeatureStore
from madapter.models.classifier import pool_level_grids
from madapter.models.headless import FeatureClassifier, build_feature_classifier
from madapter.paths import StagePaths

logger = logging.getLogger("recipe_sweep")

CHOSEN: dict[str, Any] = {"model.width": 96, "model.level_pool": 2, "train.lr": 3e-3, "train.epochs": 60,
                          "train.label_smoothing": 0.1}
"""The recipe params.yaml ships (the demo's)."""

DEFAULT_RECIPES: list[dict[str, Any]] = [
    {"name": "previous demo defaults", "model.width": 192, "model.level_pool": None, "train.lr": 1e-3,
     "train.epochs": 4, "train.label_smoothing": 0.0},
    {"name": "chosen (params.yaml)", **CHOSEN},
    {"name": "chosen, seed 1", **CHOSEN, "base.seed": 1},
    {"name": "chosen, seed 2", **CHOSEN, "base.seed": 2},
    {"name": "no label smoothing", **CHOSEN, "train.label_smoothing": 0.0},
    {"name": "lr 1e-3", **CHOSEN, "train.lr": 1e-3},
    {"name": "40 epochs", **CHOSEN, "train.epochs": 40},
    {"name": "temporal attention", **CHOSEN, "model.temporal": "attention"},
    {"name": "temporal none (order-blind branch)", **CHOSEN, "model.temporal": "none"},
    {"name": "full 4x4 grids (no level_pool)", **CHOSEN, "model.level_pool": None},
    {"name": "width 192", **CHOSEN, "model.width": 192},
]
"""Around the chosen recipe, one change at a time (the first row is what the demo used before)."""

Batch = tuple[tuple[list[torch.Tensor], torch.Tensor], torch.Tensor]


def load_split(store: FeatureStore, train: bool) -> list[Batch]:
    """Every stored view of a split as whole-split tensors: one entry per training view, else one."""
    dataset = FeatureDataset(store, train=train, view=0 if train else None)
    if not train:
        (levels, pooled), labels = collate_features([dataset[i] for i in range(len(dataset))])
        return [((levels, pooled), labels)]  # [N, V, ...]: averaged over views like evaluate does
    views = []
    for view in range(store.views):
        dataset.set_epoch(view)
        views.append(collate_features([dataset[i] for i in range(len(dataset))]))
    return views


def recipe_params(base: dict[str, Any], recipe: dict[str, Any]) -> Params:
    data = copy.deepcopy(base)
    for key, value in recipe.items():
        if "." in key:
            apply_override(data, key, value)
    return params_from_dict(data, "recipe")


def _stacked(split: Batch, level_pool: int | None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """A split's ``[N, V, ...]`` features with the level grids pooled to ``level_pool``."""
    (levels, pooled), _ = split
    n, views = pooled.shape[:2]
    grids = pool_level_grids([lv.flatten(0, 1) for lv in levels], level_pool)
    return [g.unflatten(0, (n, views)) for g in grids], pooled


def train_recipe(params: Params, store: FeatureStore, train_views: list[Batch]) -> tuple[FeatureClassifier, list[float]]:
    """Train one recipe's head with the benchmarks' shared loop (:func:`trainer.fit`); returns it and the
    training accuracy of every epoch."""
    torch.manual_seed(params.base.seed)
    classes = len(store.classes)
    model = build_feature_classifier(params.model, level_infos(store), store.pooled_dim, classes, {})
    stored = train_views[: params.features.train_views]  # fewer stored views: the first ones, as extracted
    levels = [torch.stack([view[0][0][k] for view in stored], 1) for k in range(len(stored[0][0][0]))]
    pooled = torch.stack([view[0][1] for view in stored], 1)
    inputs = _stacked(((levels, pooled), stored[0][1]), params.model.level_pool)
    global_batch = params.train.batch_size * params.train.num_workers  # what one optimiser step sees in the pipeline
    history = fit(model, params.train, params.base.seed, inputs, stored[0][1], global_batch)
    return model, history


def markdown(report: dict[str, Any], json_path: Path) -> str:
    """The docs table: one row per recipe, test top-1 overall and per reversal pair."""
    pairs = list(report["results"][0]["test_per_pair"])
    rows = [[row["recipe"].get("name", json.dumps(row["recipe"])), f"{row['val_top1']:.3f}",
             f"**{row['test_top1']:.3f}**", *(f"{row['test_per_pair'][p]:.2f}" for p in pairs),
             f"{row['train_acc_last']:.2f}", f"{row['seconds']:.0f}"] for row in report["results"]]
    data = report["data"]
    lines = [*table(["recipe", "val top-1", "test top-1", *pairs, "last train acc", "s"], rows), "",
             f"{data['train']} / {data['val']} / {data['test']} train / val / test videos, "
             f"{data['train_views']} stored training views; from `{json_path}`, commit "
             f"`{(report['commit'] or '?')[:10]}`{' (uncommitted edits)' if report['dirty'] else ''}, "
             f"`{report['command']}`."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True, help="params of the extracted features (level_pool: null)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recipe_sweep.json"))
    parser.add_argument("--recipes", type=str, default=None, help="JSON list of override dicts (default: DEFAULT_RECIPES)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    if params.model.level_pool is not None:
        parser.error(f"{args.params}: model.level_pool must be null (the sweep pools the full grids itself)")
    root = StagePaths.from_params(params).features
    stores = {split: FeatureStore(root, split) for split in ("train", "val", "test")}
    train_views = load_split(stores["train"], train=True)
    evaluation = {split: load_split(stores[split], train=False)[0] for split in ("val", "test")}
    base = params.model_dump(mode="json")
    recipes = json.loads(args.recipes) if args.recipes else DEFAULT_RECIPES
    results = []
    for recipe in recipes:
        p = recipe_params(base, recipe)
        started = time.perf_counter()
        model, history = train_recipe(p, stores["train"], train_views)
        row: dict[str, Any] = {"recipe": recipe, "train_acc_last": history[-1], "train_acc": history,
                               "seconds": round(time.perf_counter() - started, 1)}
        hits = {split: scores(model, _stacked(data, p.model.level_pool)).argmax(1) == data[1]
                for split, data in evaluation.items()}  # softmax averaged over the views, as evaluate does
        row.update({f"{split}_top1": round(float(hit.float().mean()), 4) for split, hit in hits.items()})
        row["test_per_pair"] = per_pair(hits["test"], evaluation["test"][1], stores["test"].classes)
        logger.info("%s: val %.3f test %.3f (%.0f s)", recipe.get("name", recipe), row["val_top1"], row["test_top1"], row["seconds"])
        results.append(row)
    report = {
        "benchmark": "recipe_sweep",
        "command": command_line(),
        **git_state(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": args.threads},
        "data": {split: len(store) for split, store in stores.items()} | {"train_views": stores["train"].views,
                                                                          "classes": stores["train"].classes},
        "base_params": {k: base[k] for k in ("model", "train", "features")},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report, args.out))
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
