"""``python -m infra.gpu_check`` (``make gpu-check``): the checks in order, one PASS/FAIL line each, the exit code."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import infra.gpu_check
from infra.gpu_check.common import BUDGET_S, REPO, Context, logger
from infra.gpu_check.device import cuda_unavailable_line
from infra.gpu_check.features import check_evaluate_features, check_features, check_train_features
from infra.gpu_check.frames import (
    check_batch_predict,
    check_cuda,
    check_evaluate,
    check_memory,
    check_nccl,
    check_pipeline,
    check_predict,
    check_ray_serve,
    check_serve,
)

CHECKS: tuple[tuple[str, Callable[[Context], str], str | None], ...] = (
    ("cuda", check_cuda, None),
    ("memory", check_memory, "cuda"),
    ("pipeline", check_pipeline, "cuda"),
    ("evaluate", check_evaluate, "pipeline"),
    ("predict", check_predict, "pipeline"),
    ("serve", check_serve, "predict"),
    ("ray_serve", check_ray_serve, "predict"),
    ("batch_predict", check_batch_predict, "predict"),
    ("nccl", check_nccl, "pipeline"),
    ("features", check_features, "pipeline"),
    ("train_features", check_train_features, "features"),
    ("evaluate_features", check_evaluate_features, "train_features"),
)
"""(name, function, the check it needs to have passed), in the order they run."""


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
    parser = argparse.ArgumentParser(prog="python -m infra.gpu_check", description=infra.gpu_check.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
