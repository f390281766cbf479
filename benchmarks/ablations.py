"""Ablations of the M-adapter branch on two order-dependent sets: one thing changed at a time from one baseline.

The baseline is the accuracy benchmark's ``madapter`` run (same budget and seeds, on cached features
of a random-init backbone): 4 evenly spaced levels, ``temporal: conv``, ``fusion: add``, ``width:
96``, full token grids, the frozen CLS to the head, the benchmark's schedule.  Each axis changes ONE
thing from it, the baseline row shared by all axes.  A level subset is a selection of the
every-block extraction (:mod:`benchmarks.trainer`).  Every configuration runs on the order set and
on the textured set (the same reversal pairs over busy 96-px scenes, :data:`benchmarks.trainer.DATA_SETS`),
so a finding that holds on one generator only shows as such.

The first axes are the architecture's (levels, temporal module, fusion, width); the rest diagnose why
the branch did not learn order every time (the form of the temporal block, the token grid, the
frozen CLS input, the schedule, frame sampling, init).  Variants the package has no setting for are
model edits applied before training (:mod:`benchmarks.variants`); frame sampling is a second
extraction of each set (:data:`benchmarks.trainer.FIXED_FRAMES`).

    .venv/bin/python -m benchmarks.ablations [--quick] [--out benchmarks/results/ablations.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.harness import Benchmark, pyplot, save, table
from benchmarks.trainer import FIXED_FRAMES, STUDY, setup_text, study, table_end

SETS = ("order", "textured")
"""The order-dependent sets every configuration trains on."""
SEEDS = 3
"""How many of the budget's seeds each configuration trains with (the accuracy benchmark takes all 5):
21 configurations x 2 sets x 3 seeds is 126 trainings, about 20 minutes on 2 cores."""
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
                     ("attention + relative position bias",
                      {"model.temporal": "attention", "edit": "attention_relative_bias"}),
                     ("none (order-blind branch)", {"model.temporal": "none"})],
        "fusion": [("add (baseline)", {}), ("concat", {"model.fusion": "concat"}), ("gated", {"model.fusion": "gated"})],
        "width": [(f"width {w}{' (baseline)' if w == 96 else ''}", {} if w == 96 else {"model.width": w}) for w in WIDTHS],
        "temporal block": [("conv + MLP, pre-norm residuals (baseline)", {}),
                           ("conv + GELU + projection", {"edit": "temporal_conv_act_proj"})],
        "grid": [("full token grid (baseline)", {}), ("pooled to 2x2 (the demo's, before)", {"model.level_pool": 2})],
        "frozen CLS": [("CLS to the head (baseline)", {}), ("no CLS", {"model.use_cls": False})],
        "schedule": [("lr 1e-3, warm-up 2 epochs, batch 8 (baseline)", {}),
                     ("lr 3e-3, warm-up 0.5 epoch (before)", {"train.lr": 0.003, "train.warmup_epochs": 0.5}),
                     ("lr 3e-3", {"train.lr": 0.003}), ("warm-up 0.5 epoch", {"train.warmup_epochs": 0.5}),
                     ("batch 32", {"train.batch_size": 32})],
        "frame sampling": [("T of 8 stored frames, jittered per view (baseline)", {}),
                           ("the same T frames (segment centres) in every view", {"set": "fixed"})],
        "init": [("trunc-normal 0.02 linears, timm's (baseline)", {}),
                 ("PyTorch's default init", {"edit": "pytorch_default_init"})],
    }


def jobs(setup: dict[str, Any], data_cost: dict[str, Any]) -> list[dict[str, Any]]:
    """One job per set, distinct configuration and seed (the baseline once, not once per axis); a
    configuration's ``"set": "fixed"`` trains on that set's :data:`~benchmarks.trainer.FIXED_FRAMES` extraction."""
    configs: dict[str, dict[str, Any]] = {BASELINE: {}}
    for values in axes(data_cost[SETS[0]]["depth"]).values():
        for _, config in values:
            if config:
                configs[_key(config)] = config
    return [{"name": f"{data}/{name}/seed{seed}", "config": name, "base_set": data, "tuning": "madapter", "seed": seed,
             "set": data + FIXED_FRAMES if config.get("set") == "fixed" else data,
             "overrides": {k: v for k, v in config.items() if k not in ("edit", "set")}, "edit": config.get("edit")}
            for data in SETS for name, config in configs.items() for seed in setup["seeds"][:SEEDS]]


def _key(overrides: dict[str, Any]) -> str:
    return BASELINE if not overrides else ", ".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items())


def tables(report: dict[str, Any], data: str) -> dict[str, list[dict[str, Any]]]:
    """Per axis, one row per value with its configuration's summary on set ``data`` (``None`` when every
    seed failed)."""
    by = {s["group"][1]: s for s in report["summary"] if s["group"][0] == data}
    return {axis: [{"label": label, "summary": by.get(_key(ov))} for label, ov in values]
            for axis, values in report["axes"].items()}


def headline(report: dict[str, Any], data: str) -> dict[str, Any]:
    """On set ``data``: per axis the best value, every value's difference from the baseline (mean test
    top-1) and every value's ``[mean, std]`` test top-1."""
    summary = [s for s in report["summary"] if s["group"][0] == data]
    base = next((s for s in summary if s["group"][1] == BASELINE), None)
    out: dict[str, Any] = {"baseline_top1_mean": base["top1_mean"] if base else None,
                           "baseline_top1_std": base["top1_std"] if base else None}
    for axis, rows in tables(report, data).items():
        done = [r for r in rows if r["summary"]]
        if not done or not base:
            continue
        best = max(done, key=lambda r: r["summary"]["top1_mean"])
        out[axis] = {"best": best["label"], "best_top1_mean": best["summary"]["top1_mean"],
                     "minus_baseline": {r["label"]: round(r["summary"]["top1_mean"] - base["top1_mean"], 4) for r in done},
                     "top1": {r["label"]: [r["summary"]["top1_mean"], r["summary"]["top1_std"]] for r in done}}
    none = next((s for s in summary if s["group"][1] == _key({"model.temporal": "none"})), None)
    if none:
        out["temporal_none_per_pair_max"] = max(none["per_pair_mean"].values())
    return out


# ----------------------------------------------------------------------------- outputs (pure)
def plot(report: dict[str, Any], path: Path) -> None:
    """One panel per axis: mean +- std test top-1 per value, one bar per set, the baseline's bars hatched."""
    plt = pyplot()
    sets = report["sets"]
    per_set = {data: tables(report, data) for data in sets}
    axes_ = list(report["axes"])
    columns = 5
    lines = -(-len(axes_) // columns)
    fig, grid = plt.subplots(lines, columns, figsize=(3.6 * columns, 4.2 * lines), sharey=True, squeeze=False)
    panels = grid.flatten()
    for ax in panels[len(axes_):]:
        ax.set_visible(False)
    width = 0.8 / len(sets)
    for ax, axis in zip(panels, axes_, strict=False):
        for k, data in enumerate(sets):
            values = per_set[data][axis]
            xs = [i + (k - (len(sets) - 1) / 2) * width for i in range(len(values))]
            bars = ax.bar(xs, [v["summary"]["top1_mean"] if v["summary"] else 0 for v in values], width,
                          yerr=[v["summary"]["top1_std"] if v["summary"] else 0 for v in values], capsize=2,
                          color=f"C{k}", label=f"{data} set")
            for bar, v in zip(bars, values, strict=True):
                if "baseline" in v["label"]:
                    bar.set_hatch("//")
        labels = [v["label"].replace(" (baseline)", "*") for v in per_set[sets[0]][axis]]
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=7)
        ax.set_title(axis)
        ax.axhline(1 / len(report["classes"]), color="grey", ls=":", lw=1)
        ax.set_ylim(0, 1.05)
    panels[0].legend(fontsize=7, loc="lower left")
    for ax in grid[:, 0]:
        ax.set_ylabel("test top-1 (mean +- std over seeds)")
    fig.suptitle("M-adapter ablations on two order-dependent sets (* and hatched = baseline, dotted = chance)")
    save(fig, path)


def markdown(report: dict[str, Any], json_path: str) -> str:
    """The docs table: one row per axis value (the baseline repeated in each axis), one column per set."""
    sets = report["sets"]
    per_set = {data: tables(report, data) for data in sets}
    rows = []
    for axis, values in per_set[sets[0]].items():
        for i, v in enumerate(values):
            cells = [per_set[data][axis][i]["summary"] for data in sets]
            top1 = [f"{c['top1_mean']:.3f} +- {c['top1_std']:.3f}" if c else "error" for c in cells]
            done = next((c for c in cells if c), None)
            rows.append([axis, v["label"], *top1, f"{done['trainable_params']:,}" if done else "-",
                         " / ".join(str(c["seconds_mean"]) if c else "-" for c in cells)])
    head = ["axis", "value", *(f"{data} set top-1" for data in sets), "trainable params (order set)",
            f"s per run ({' / '.join(sets)})"]
    textured = report["set_setups"].get("textured", {})
    seeds = sorted({row["seed"] for row in report["runs"]})  # the ablations train the budget's first SEEDS
    setup = (f"{setup_text({**report['setup'], 'seeds': seeds})}; `madapter` on cached features. The textured set: the same classes over busy "
             f"scenes, {textured.get('source_frames')} frames at {textured.get('size')} px. "
             "s per run = one training + test evaluation in its own process (1 thread).")
    return table_end(table(head, rows), report, setup, json_path)


# ----------------------------------------------------------------------------- the run
def run(args: argparse.Namespace) -> dict[str, Any]:
    done = study(args, [*SETS, *(data + FIXED_FRAMES for data in SETS)], jobs, lambda r: (r["base_set"], r["config"]))
    report = {"setup": done["setup"], "setup_text": done["setup_text"], "set_setups": done["set_setups"],
              "sets": list(SETS), "baseline": BASELINE, "axes": axes(done["data_cost"][SETS[0]]["depth"]),
              "classes": done["classes"][SETS[0]], "data_cost": done["data_cost"], "summary": done["summary"],
              "runs": done["runs"], "errors": done["errors"]}
    report["headline"] = {data: headline(report, data) for data in SETS}
    return report


BENCHMARK = Benchmark("ablations", __doc__, run, markdown, plot, minutes=(20.0, 4.0), **STUDY)

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
