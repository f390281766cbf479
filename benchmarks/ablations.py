"""Ablations of the M-adapter branch on the order set: one thing changed at a time from one baseline.

The baseline is the accuracy benchmark's ``madapter`` run (same order set, budget and seeds, on
cached features of a random-init backbone): 4 evenly spaced levels, ``temporal: conv``, ``fusion:
add``, ``width: 96``, full token grids, the frozen CLS to the head, lr 3e-3 with a half-epoch
warm-up.  Each axis changes ONE thing from it, the baseline row shared by all axes.  A level subset
is a selection of the every-block extraction (:mod:`benchmarks.trainer`).

The first axes are the architecture's (levels, temporal module, fusion, width); the rest diagnose why
the branch does not learn order every time (the form of the temporal block, the token grid, the
frozen CLS input, the schedule).  Variants the package has no setting for are model edits applied
before training (:mod:`benchmarks.variants`).

    .venv/bin/python -m benchmarks.ablations [--quick] [--out benchmarks/results/ablations.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.harness import Benchmark, pyplot, save, table
from benchmarks.trainer import STUDY, study, table_end

BASELINE = "baseline (4 levels, conv, add, width 96)"
WIDTHS = (48, 96, 144)
"""Branch widths: half, the demo's, 1.5x (192 cost ~5x the baseline's time in the recipe sweep)."""


def axes(depth: int) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Per axis, ``(label, configuration)`` of every value; ``{}`` is the baseline.  A configuration is
    params overrides (dotted keys) and, for a variant the package has no setting for, an ``edit``."""
    from madapter.models.backbone import default_levels

    return {
        "levels": [("last block only", {"model.levels": [depth - 1]}),
                   (f"2 levels {default_levels(depth, 2)}", {"model.levels": default_levels(depth, 2)}),
                   (f"4 levels {default_levels(depth, 4)} (baseline)", {}),
                   (f"all {depth} blocks", {"model.levels": list(range(depth))})],
        "temporal": [("conv (baseline)", {}), ("attention", {"model.temporal": "attention"}),
                     ("attention, position init 0.02 (before)",
                      {"model.temporal": "attention", "edit": "attention_position_init_0.02"}),
                     ("none (order-blind branch)", {"model.temporal": "none"})],
        "fusion": [("add (baseline)", {}), ("concat", {"model.fusion": "concat"}), ("gated", {"model.fusion": "gated"})],
        "width": [(f"width {w}{' (baseline)' if w == 96 else ''}", {} if w == 96 else {"model.width": w}) for w in WIDTHS],
        "temporal block": [("conv + MLP, pre-norm residuals (baseline)", {}),
                           ("conv + GELU + projection", {"edit": "temporal_conv_act_proj"})],
        "grid": [("full token grid (baseline)", {}), ("pooled to 2x2 (the demo's level_pool)", {"model.level_pool": 2})],
        "frozen CLS": [("CLS to the head (baseline)", {}), ("no CLS", {"model.use_cls": False})],
        "schedule": [("lr 3e-3, warm-up 0.5 epoch, batch 8 (baseline)", {}), ("lr 1e-3", {"train.lr": 0.001}),
                     ("warm-up 2 epochs", {"train.warmup_epochs": 2.0}), ("batch 32", {"train.batch_size": 32})],
    }


def jobs(setup: dict[str, Any], data_cost: dict[str, Any]) -> list[dict[str, Any]]:
    """One job per distinct configuration and seed (the baseline once, not once per axis)."""
    configs: dict[str, dict[str, Any]] = {BASELINE: {}}
    for values in axes(data_cost["order"]["depth"]).values():
        for _, config in values:
            if config:
                configs[_key(config)] = config
    return [{"name": f"{name}/seed{seed}", "config": name, "set": "order", "tuning": "madapter", "seed": seed,
             "overrides": {k: v for k, v in config.items() if k != "edit"}, "edit": config.get("edit")}
            for name, config in configs.items() for seed in setup["seeds"]]


def _key(overrides: dict[str, Any]) -> str:
    return BASELINE if not overrides else ", ".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())


def tables(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per axis, one row per value with its configuration's summary (``None`` when every seed failed)."""
    by = {s["group"][0]: s for s in report["summary"]}
    return {axis: [{"label": label, "summary": by.get(_key(ov))} for label, ov in values]
            for axis, values in report["axes"].items()}


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """Per axis the best value, every value's difference from the baseline (mean test top-1) and every
    value's ``[mean, std]`` test top-1."""
    base = next((s for s in report["summary"] if s["group"][0] == BASELINE), None)
    out: dict[str, Any] = {"baseline_top1_mean": base["top1_mean"] if base else None,
                           "baseline_top1_std": base["top1_std"] if base else None}
    for axis, rows in tables(report).items():
        done = [r for r in rows if r["summary"]]
        if not done or not base:
            continue
        best = max(done, key=lambda r: r["summary"]["top1_mean"])
        out[axis] = {"best": best["label"], "best_top1_mean": best["summary"]["top1_mean"],
                     "minus_baseline": {r["label"]: round(r["summary"]["top1_mean"] - base["top1_mean"], 4) for r in done},
                     "top1": {r["label"]: [r["summary"]["top1_mean"], r["summary"]["top1_std"]] for r in done}}
    none = next((s for s in report["summary"] if s["group"][0] == _key({"model.temporal": "none"})), None)
    if none:
        out["temporal_none_per_pair_max"] = max(none["per_pair_mean"].values())
    return out


# ----------------------------------------------------------------------------- outputs (pure)
def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per axis: mean +- std test top-1 per value, the baseline's bar hatched."""
    plt = pyplot()
    rows = tables(report)
    columns = 4
    lines = -(-len(rows) // columns)
    fig, grid = plt.subplots(lines, columns, figsize=(4 * columns, 4.2 * lines), sharey=True, squeeze=False)
    panels = grid.flatten()
    for ax in panels[len(rows):]:
        ax.set_visible(False)
    for ax, (axis, values) in zip(panels, rows.items(), strict=False):
        means = [v["summary"]["top1_mean"] if v["summary"] else 0 for v in values]
        stds = [v["summary"]["top1_std"] if v["summary"] else 0 for v in values]
        bars = ax.bar(range(len(values)), means, yerr=stds, capsize=3, color="tab:blue")
        for bar, v in zip(bars, values, strict=True):
            if "baseline" in v["label"]:
                bar.set_hatch("//")
                bar.set_color("tab:orange")
        ax.set_xticks(range(len(values)), [v["label"].replace(" (baseline)", "*") for v in values], rotation=25,
                      ha="right", fontsize=8)
        ax.set_title(axis)
        ax.axhline(1 / len(report["classes"]), color="grey", ls=":", lw=1)
        ax.set_ylim(0, 1.05)
    for ax in grid[:, 0]:
        ax.set_ylabel("order set test top-1 (mean +- std)")
    fig.suptitle("M-adapter ablations on the order set (* = baseline, dotted = chance)")
    save(fig, path)


def markdown(report: dict[str, Any], json_path: str) -> str:
    """The docs table: one row per axis value (the baseline repeated in each axis)."""
    pairs = list(next((s["per_pair_mean"] for s in report["summary"]), {}))
    rows = []
    for axis, values in tables(report).items():
        for v in values:
            s = v["summary"]
            rows.append([axis, v["label"], "error", *("-" for _ in pairs), "-", "-"] if s is None else
                        [axis, v["label"], f"{s['top1_mean']:.3f} +- {s['top1_std']:.3f}",
                         *(f"{s['per_pair_mean'][p]:.2f}" for p in pairs), f"{s['trainable_params']:,}",
                         s["seconds_mean"]])
    head = ["axis", "value", "test top-1", *pairs, "trainable params", "s per run"]
    setup = (f"{report['setup_text']}; `madapter` on cached features of the order set; "
             "s per run = one training + test evaluation in its own process (1 thread).")
    return table_end(table(head, rows), report, setup, json_path)


# ----------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    done = study(args, ["order"], jobs, lambda r: (r["config"],))
    report = {"setup": done["setup"], "setup_text": done["setup_text"], "baseline": BASELINE,
              "axes": axes(done["data_cost"]["order"]["depth"]), "classes": done["classes"]["order"],
              "data_cost": done["data_cost"], "summary": done["summary"], "runs": done["runs"], "errors": done["errors"]}
    report["headline"] = headline(report)
    return report


BENCHMARK = Benchmark("ablations", __doc__, run, markdown, plot, minutes=(5.0, 1.0), **STUDY)

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
