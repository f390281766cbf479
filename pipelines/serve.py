"""Serve the deployments of ``prefect.yaml`` from one local process (``python -m pipelines.serve``).

``prefect.yaml`` is the one definition of the deployments (names, entrypoints, parameters,
schedules); this module reads it and hands the same definitions to :func:`prefect.serve`, so
the local ``serve`` and a Prefect server with a work pool (``prefect deploy --all``) run exactly
the same deployments.  Runs execute in subprocesses of this process, from this checkout.

Without ``PREFECT_API_URL`` the deployments live on a local Prefect API server that this process
starts in its own process group and stops when serving ends (Ctrl-C or SIGTERM), see
:mod:`pipelines.prefect_server`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule

from pipelines.dvc_stages import REPO_ROOT
from pipelines.prefect_server import local_prefect_api

logger = logging.getLogger(__name__)

PREFECT_YAML = REPO_ROOT / "prefect.yaml"


def read_deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The ``deployments:`` list of ``prefect.yaml`` (raises ValueError naming the file if absent)."""
    data = yaml.safe_load(path.read_text()) or {}
    specs = data.get("deployments") or []
    if not specs:
        raise ValueError(f"{path}: no 'deployments:' defined")
    return specs


def load_flow(entrypoint: str) -> Flow:
    """``pipelines/flows.py:madapter_pipeline`` -> the flow object (imported as a module of this repo)."""
    file_part, _, attr = entrypoint.partition(":")
    module = file_part.removesuffix(".py").replace("/", ".")
    obj = getattr(importlib.import_module(module), attr)
    if not isinstance(obj, Flow):
        raise TypeError(f"{entrypoint}: is not a Prefect flow")
    return obj


def to_schedules(specs: list[dict[str, Any]] | None) -> list[Schedule]:
    """``prefect.yaml`` schedule entries (cron or interval) -> Prefect schedule objects."""
    schedules: list[Schedule] = []
    for spec in specs or []:
        active = spec.get("active", True)
        if "cron" in spec:
            schedules.append(Cron(spec["cron"], timezone=spec.get("timezone"), active=active))
        elif "interval" in spec:
            schedules.append(Interval(spec["interval"], timezone=spec.get("timezone"), active=active))
        else:
            raise ValueError(f"schedule {spec!r}: only 'cron' and 'interval' schedules are supported here")
    return schedules


def build_deployments(path: Path = PREFECT_YAML, names: list[str] | None = None) -> list[RunnerDeployment]:
    """One :class:`RunnerDeployment` per ``prefect.yaml`` entry (optionally only ``names``)."""
    deployments = []
    for spec in read_deployment_specs(path):
        if names and spec["name"] not in names:
            continue
        flow = load_flow(spec["entrypoint"])
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters") or {},
                schedules=to_schedules(spec.get("schedules")),
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    return deployments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="serve only these deployment names")
    parser.add_argument("--limit", type=int, default=1, help="concurrent flow runs (default 1: 2-core box)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    os.chdir(REPO_ROOT)  # entrypoints (pipelines/flows.py:...) and DVC are relative to the checkout
    deployments = build_deployments(names=args.only)
    logger.info("serving %s", ", ".join(f"{d.flow_name}/{d.name}" for d in deployments))
    with local_prefect_api():  # prefect.serve returns on Ctrl-C; SIGTERM exits through here too
        serve(*deployments, limit=args.limit, pause_on_shutdown=False)


if __name__ == "__main__":
    main()
