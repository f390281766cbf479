"""Training on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: 3 nodes on this machine).

Two scenarios on one cluster (head without CPUs + 2 worker nodes of 1 CPU), a real MLflow server
and the real synthetic data, through the train stage's own entry point (``train(params)``, which
connects to ``RAY_ADDRESS``):

1. a 2-worker run, its storage given as a ``file://`` URI (passed to Ray untouched, read back
   through pyarrow), puts one worker on each node; the node of rank 0 is removed mid-run (after
   epoch 2 was reported), a replacement node joins, and the run resumes from its last registered
   checkpoint and finishes, one worker on each node again, with every epoch in MLflow exactly once;
2. a ``train.storage_path`` that one node does not share (that node sees an empty tmpfs there)
   is refused before training, in one line that says what to use instead.

One run carries both the spread and the recovery: a Ray Train run costs about a minute of CPU here,
and the recovery asserts everything a run that is never disturbed would (completion, placement,
the MLflow run, the checkpoints read back through the URI).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from madapter.config import ConfigError
from madapter.train.driver import train
from madapter.train.epoch_metrics import epoch_values
from madapter.train.identity import ray_run_name
from madapter.train.loop import WORKER_NODES_TAG
from madapter.train.state import latest_checkpoint_dir, read_meta
from madapter.train.storage import join
from tests.common.synthetic_data import make_params
from tests.multinode.conftest import (
    NODE_STORE_BYTES,
    add_node,
    start_isolated_node,
    stop_isolated_node,
    wait_for,
    worker_node_ids,
)

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

RUN_S = 600.0
"""Deadline for one training run, restarts included (normally 30-60 s; the machine is shared)."""
SLOW_STEPS = {"batch_size": 1}
"""12 optimiser steps per rank and epoch instead of 3: epochs long enough that the watcher sees
rank 0 between epoch 2's report and the end of the run, even on a busy machine."""


def _runs(uri: str, run_name: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("madapter-tests")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")


def _metric_steps(uri: str, run_id: str, keys: list[str]) -> dict[str, list[int]]:
    client = MlflowClient(uri)
    return {key: sorted(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def _placement(tag: str) -> dict[str, list[int]]:
    """``ray.worker_nodes`` (``<node id> (<ip>): ranks 0,1; ...``) as ``{node id: ranks}``."""
    nodes = {}
    for entry in tag.split("; "):
        node, ranks = entry.split(": ranks ")
        nodes[node.split(" ")[0]] = [int(r) for r in ranks.split(",")]
    return nodes


def _status(run_dir: Path, rank: int) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "workers" / f"rank-{rank}.json").read_text())
    except (OSError, ValueError):  # not written yet, or replaced while we read
        return None


def _committed(run_dir: Path) -> str:
    """Ray's checkpoint-manager snapshot (what it restores from after a failure), or ``""``."""
    try:
        return (run_dir / "checkpoint_manager_snapshot.json").read_text()
    except OSError:
        return ""


def _remove_rank0_node_mid_run(cluster, run_dir: Path, epochs: int, training: threading.Thread) -> dict[str, Any]:
    """Once Ray has committed epoch 1's checkpoint, remove rank 0's node at the first sight of rank 0
    having reported epoch 2 (``checkpointed``: the moment an epoch logged by the worker itself would
    not be registered yet), or failing that while it trains the last epoch; then add a replacement.

    Returns rank 0's status at the removal plus what Ray had committed then."""
    removed: dict[str, Any] = {}

    def moment() -> bool:
        if not training.is_alive():
            pytest.fail("training ended before rank 0's node could be removed mid-run")
        status, committed = _status(run_dir, 0), _committed(run_dir)
        if not status or "epoch-0001" not in committed or not status.get("epoch"):
            return False
        reported_2 = status["epoch"] == 2 and status["state"] == "checkpointed"
        in_last = status["epoch"] == epochs and status["state"] == "training"
        if reported_2 or in_last:
            removed.update(status, committed_then=[e for e in range(1, epochs + 1) if f"epoch-{e:04d}" in committed])
            return True
        return False

    wait_for(moment, "rank 0 to report epoch 2 after Ray committed epoch 1", timeout=RUN_S, interval=0.01)
    (node,) = [n for n in cluster.worker_nodes if n.node_id == removed["node_id"]]
    cluster.remove_node(node)
    removed["replacement"] = add_node(cluster, num_cpus=1, object_store_memory=NODE_STORE_BYTES).node_id
    logger.info("removed node %s of rank 0 at %s; replacement %s", removed["node_id"][:12], removed,
                removed["replacement"][:12])
    return removed


def test_losing_a_workers_node_resumes_from_the_last_checkpoint_and_logs_every_epoch_once(
    cluster, data_dir: Path, mlflow_server: str, tmp_path: Path
) -> None:
    epochs = 3
    storage = f"file://{tmp_path / 'ray'}"
    params = make_params(data_dir, tmp_path / "lost-node", mlflow_server,
                         train={"epochs": epochs, "max_failures": 2, "storage_path": storage, **SLOW_STEPS})
    assert params.train.storage_path == storage  # the URI is kept as written, not folded by Path
    ray_name = ray_run_name(params)
    run_dir = tmp_path / "ray" / ray_name  # file:// storage: the status files are on this filesystem
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = train(params)
        except BaseException as err:  # noqa: BLE001 - reported by the test thread below
            outcome["error"] = err

    started = time.perf_counter()
    training = threading.Thread(target=fit, name="train", daemon=True)
    training.start()
    removed = _remove_rank0_node_mid_run(cluster, run_dir, epochs, training)
    training.join(RUN_S)
    assert not training.is_alive(), f"training did not finish within {RUN_S:.0f}s of losing a node"
    logger.info("lost-node run took %.1fs", time.perf_counter() - started)
    assert "error" not in outcome, f"training failed after the node was lost: {outcome.get('error')}"
    result = outcome["result"]

    assert result.completed and result.epochs_done == epochs
    assert [h["epoch"] for h in result.history] == list(range(1, epochs + 1))
    after = _status(run_dir, 0)
    assert after["state"] == "done" and after["pid"] != removed["pid"]
    assert after["node_id"] != removed["node_id"]  # a new rank 0, on a surviving or the new node
    # resumed from a checkpoint Ray had committed, not from scratch
    assert after["resumed_after_epoch"] >= max(removed["committed_then"]) >= 1, (after, removed)

    (run,) = _runs(mlflow_server, params.train.run_name)  # one MLflow run, continued
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    placement = _placement(run.data.tags[WORKER_NODES_TAG])  # the attempt that finished
    assert removed["node_id"] not in placement and removed["replacement"] in placement, (placement, removed)
    assert set(placement) == worker_node_ids(cluster), placement  # the two worker nodes, not the head
    assert sorted(placement.values()) == [[0], [1]]  # one rank on each
    nodes = [_status(run_dir, rank)["node_id"] for rank in (0, 1)]
    assert placement == {nodes[0]: [0], nodes[1]: [1]}
    keys = list(epoch_values(result.history[0]))
    steps = _metric_steps(mlflow_server, result.run_id, keys)
    assert steps == {key: list(range(1, epochs + 1)) for key in keys}, (steps, removed)  # every epoch, once
    # the run's checkpoints are found through the same pyarrow filesystem Ray wrote them with
    latest = latest_checkpoint_dir(join(storage, ray_name))
    assert latest == f"{storage}/{ray_name}/epoch-{epochs:04d}"
    assert read_meta(latest) == {"epoch": epochs, "run_id": result.run_id}


@pytest.fixture
def isolated_storage(cluster, tmp_path: Path):
    """A storage directory every node sees except one more node, started for this test, which sees an
    empty tmpfs there; yields ``(directory, that node's id)``."""
    import ray

    from madapter.ray_runtime import worker_runtime_env

    if not ray.is_initialized():  # this test alone: connect to RAY_ADDRESS as train() would
        ray.init(runtime_env=worker_runtime_env())
    hidden = tmp_path / "node-local-ray"
    hidden.mkdir()
    proc, node_id = start_isolated_node(cluster, hidden, tmp_path / "isolated-node.log")
    try:
        yield hidden, node_id
    finally:
        stop_isolated_node(proc, node_id)


def test_storage_that_one_node_does_not_share_is_refused_before_training(
    cluster, isolated_storage, data_dir: Path, mlflow_server: str, tmp_path: Path
) -> None:
    storage, isolated = isolated_storage
    params = make_params(data_dir, tmp_path / "node-local", mlflow_server,
                         train={"epochs": 1, "storage_path": str(storage)})
    with pytest.raises(ConfigError) as err:
        train(params)
    line = str(err.value)
    assert "\n" not in line, line
    assert line.startswith(f"params.yaml: train.storage_path: {storage} is not shared by every Ray node"), line
    assert f"node {isolated[:12]}" in line and "does not exist" in line, line  # the node that cannot see it
    assert "shared filesystem path mounted at the same path on every node" in line and "s3://" in line, line
    assert "gs://" in line
    assert not any(f"node {node_id[:12]}" in line for node_id in worker_node_ids(cluster))  # they share it
    # refused before training: no MLflow run, no checkpoint, and the marker is cleaned up
    assert _runs(mlflow_server, params.train.run_name) == []
    assert not list(storage.rglob("epoch-*")) and not list(storage.rglob("*.txt"))
