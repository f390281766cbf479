"""Accuracy where frame order matters and where it doesn't: the four tuning modes, same budget, several seeds.

Two synthetic sets made by the real data stages (``dataset.synthetic.task``):

* ``order``: reversal pairs (``move_right`` video *i* is ``move_left`` video *i* played backwards),
  so a model that ignores frame order cannot beat 0.5 on a pair;
* ``appearance``: the class is the object's shape x colour family, its motion and direction are
  random, so frame order carries no class information (the control).

On each, ``madapter``, ``inserted``, ``full`` and ``linear`` (``model.tuning``) train with the SAME
budget: the same training clips (``features.train_views`` stored views per video, view ``epoch % V``
in epoch ``epoch``), epochs, batch, AdamW learning rate and warm-up + cosine schedule, from a
random-init backbone (``model.init_seed`` 0; the seeds change the trainable part's init and the
shuffling).  The frozen modes train on the features stage's cached outputs (computed once per set
and shared by every seed and both modes), ``inserted``/``full`` on the clips through the backbone
(:mod:`trainer`).  Everything runs in-process, 2 trainings at a time, 1 torch thread each.

    .venv/bin/python benchmarks/accuracy.py [--quick] [--out benchmarks/results/accuracy.json]
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import provenance, write_outputs  # benchmarks/provenance.py
from trainer import (
    BUDGET_FULL,
    BUDGET_QUICK,
    BUDGET_SMOKE,
    PACKAGES,
    choose_setup,
    make_sets,
    parse_args,
    run_jobs,
    setup_text,
    summarise,
)

logger = logging.getLogger("benchmarks.accuracy")

NAME = "accuracy"
MODES = ("madapter", "inserted", "full", "linear")
SETS = ("order", "appearance")
ORDER_BLIND = ("linear", "full")
"""Modes whose head averages the frame features over time before classifying: blind to frame order."""

def jobs(setup: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": f"{task}/{mode}/seed{seed}", "set": task, "tuning": mode, "seed": seed}
            for task in SETS for mode in MODES for seed in setup["seeds"]]


# ----------------------------------------------------------------------------- verdicts
def chance_tolerance(test_per_pair: int, seeds: int) -> float:
    """Two binomial standard errors of a per-pair accuracy of 0.5 averaged over the seeds' runs."""
    return round(2 * math.sqrt(0.25 / max(1, test_per_pair * seeds)), 3)


def difference_margin(a: dict[str, Any], b: dict[str, Any], test_videos: int) -> float:
    """How far apart two modes' mean top-1 must be to call one better: two standard errors of the
    difference, from the seeds' spread or, if larger, from the binomial noise of the test videos."""
    seeds = math.sqrt(a["top1_std"] ** 2 / a["n"] + b["top1_std"] ** 2 / b["n"])
    binomial = math.sqrt(sum(s["top1_mean"] * (1 - s["top1_mean"]) / (test_videos * s["n"]) for s in (a, b)))
    return 2 * max(seeds, binomial)


def verdicts(summary: list[dict[str, Any]], test_per_pair: int, seeds: int, test_videos: int) -> dict[str, Any]:
    """What the docs state, computed here: does the order set separate the modes; madapter vs full per set."""
    by = {(s["group"][0], s["group"][1]): s for s in summary}
    tol = chance_tolerance(test_per_pair, seeds)
    out: dict[str, Any] = {"chance_per_pair": 0.5, "chance_tolerance": tol}
    blind_ok = all(v <= 0.5 + tol for m in ORDER_BLIND if ("order", m) in by for v in by[("order", m)]["per_pair_mean"].values())
    mad = by.get(("order", "madapter"))
    above = [p for p, v in (mad["per_pair_mean"].items() if mad else []) if v > 0.5 + tol]
    out["order_blind_at_chance"] = blind_ok
    out["madapter_pairs_above_chance"] = len(above)
    out["pairs"] = len(mad["per_pair_mean"]) if mad else 0
    out["order_set_separates_modes"] = bool(blind_ok and mad and len(above) > out["pairs"] / 2)
    for task in SETS:
        a, b = by.get((task, "madapter")), by.get((task, "full"))
        if not (a and b):
            continue
        diff = a["top1_mean"] - b["top1_mean"]
        margin = difference_margin(a, b, test_videos)
        verdict = "madapter better" if diff > margin else "full better" if diff < -margin else "no clear difference"
        out[f"{task}_madapter_minus_full"] = round(diff, 4)
        out[f"{task}_margin"] = round(margin, 4)
        out[f"{task}_verdict"] = verdict
    return out


# ----------------------------------------------------------------------------- outputs (pure)
def _summary(report: dict[str, Any], task: str, mode: str) -> dict[str, Any] | None:
    return next((s for s in report["summary"] if s["group"] == [task, mode]), None)


def plot(report: dict[str, Any], path: Path) -> None:
    """Left: mean +- std test top-1 per mode on both sets; right: per reversal pair on the order set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    for k, task in enumerate(SETS):
        rows = [_summary(report, task, m) for m in MODES]
        xs = [i + (k - 0.5) * width for i in range(len(MODES))]
        left.bar(xs, [r["top1_mean"] if r else 0 for r in rows], width, yerr=[r["top1_std"] if r else 0 for r in rows],
                 capsize=3, label=f"{task} set")
    left.axhline(1 / len(report["classes"]["order"]), color="grey", ls=":", lw=1, label="chance (1/classes)")
    left.set_xticks(range(len(MODES)), MODES)
    left.set_ylabel("test top-1 (mean +- std over seeds)")
    left.set_ylim(0, 1.05)
    left.legend(fontsize=8)
    pairs = list((_summary(report, "order", MODES[0]) or {"per_pair_mean": {}})["per_pair_mean"])
    width = 0.8 / len(MODES)
    for k, mode in enumerate(MODES):
        row = _summary(report, "order", mode)
        if row:
            right.bar([i + (k - 1.5) * width for i in range(len(pairs))], [row["per_pair_mean"][p] for p in pairs],
                      width, label=mode)
    right.axhline(0.5, color="black", ls="--", lw=1, label="order-blind ceiling 0.5")
    right.set_xticks(range(len(pairs)), pairs, fontsize=8)
    right.set_ylabel("order set: top-1 per reversal pair")
    right.set_ylim(0, 1.05)
    right.legend(fontsize=8)
    fig.suptitle("Accuracy by tuning mode, same budget (random-init backbone)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict[str, Any], json_path: str) -> str:
    """The docs table: per mode, both sets' top-1, the order set's per-pair accuracy, parameters and time."""
    pairs = list((_summary(report, "order", "madapter") or {"per_pair_mean": {}})["per_pair_mean"])
    head = ["mode", "order set top-1", "appearance set top-1", *(f"{p} (order)" for p in pairs),
            "trainable params", "s per run (order / appearance)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for mode in MODES:
        o, a = _summary(report, "order", mode), _summary(report, "appearance", mode)
        cell = lambda r: f"{r['top1_mean']:.3f} +- {r['top1_std']:.3f}" if r else "error"  # noqa: E731
        row = [f"`{mode}`", cell(o), cell(a), *(f"{o['per_pair_mean'][p]:.2f}" if o else "-" for p in pairs),
               f"{(o or a or {}).get('trainable_params', 0):,}",
               f"{o['seconds_mean'] if o else '-'} / {a['seconds_mean'] if a else '-'}"]
        lines.append("| " + " | ".join(row) + " |")
    for row in report["runs"]:
        if "error" in row:
            lines.append(f"\nError in {row['name']}: {row['error']}")
    lines += ["", f"Setup: {report['setup_text']}. Features extracted once per set (s): "
              + ", ".join(f"{t} {c['total_s']}" for t, c in report["data_cost"].items())
              + "; s per run = one training + test evaluation in its own process (1 thread).",
              "", f"From `{json_path}`, command `{report['command']}`."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    started, load_start = time.perf_counter(), os.getloadavg()
    args = parse_args(NAME, __doc__.splitlines()[0], argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    setup = choose_setup(BUDGET_FULL, BUDGET_QUICK, BUDGET_SMOKE, args)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-accuracy-"))
    try:
        files, cost, classes = make_sets(work, SETS, setup, args.processes)
        runs = run_jobs(jobs(setup), files, work, setup, args.processes)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarise(runs, lambda r: (r["set"], r["tuning"]))
    test_per_pair = 2 * cost["order"]["test_videos"] // setup["classes"]
    report: dict[str, Any] = {
        "benchmark": NAME, "setup": setup, "setup_text": setup_text(setup), "modes": list(MODES), "sets": list(SETS),
        "classes": classes, "data_cost": cost, "test_videos_per_pair": test_per_pair,
        "summary": summary, "headline": verdicts(summary, test_per_pair, len(setup["seeds"]), cost["order"]["test_videos"]), "runs": runs,
        "errors": [r["name"] for r in runs if "error" in r],
    }
    report["headline"]["seconds_per_run"] = {m: round(statistics.fmean(
        [s["seconds_mean"] for s in summary if s["group"][1] == m]), 1) for m in MODES
        if any(s["group"][1] == m for s in summary)}
    report.update(provenance(load_start, PACKAGES, quick=args.quick, started=started))
    write_outputs(report, args.out.resolve(), plot, markdown)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
