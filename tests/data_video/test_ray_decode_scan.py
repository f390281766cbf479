"""Scan and decode on a real 2-node Ray cluster write the same bytes as a local run, and spread.

Why: with ``RAY_ADDRESS`` set the two data stages run their per-video work as Ray tasks over the
cluster (:mod:`madapter.data.store.ray_pool`), and DVC hashes what they write: a run on the
cluster must give the very bytes a local run gives, or switching between them re-runs decode and
everything after it.  The cluster is ``ray.cluster_utils.Cluster`` with two nodes of one CPU each
(real raylets and worker processes on this machine), started once for the module.  A hung probe
(a FIFO: opening it blocks forever) must be cancelled -- its CPU given back -- and quarantined; a
probe that segfaults must cost only its worker and be recorded as it is locally.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from madapter.config import Params
from madapter.data.acquire.synthetic import generate_synthetic
from madapter.data.index.schema import SPLITS, read_classes, read_index
from madapter.data.store import ray_pool
from madapter.data.store.quarantine import read_quarantine
from madapter.data.store.scan import probe_all, probe_all_on_ray
from madapter.paths import StagePaths

from .conftest import index_from_lists, make_params, write_index
from .crashing_probe import CRASH_NAME, crash_or_probe
from .test_deterministic_outputs import _add_awkward_videos, _run_scan_then_decode

pytestmark = pytest.mark.integration

STALLED = "bad/stalled.mp4"
TIMEOUT_S = 6.0  # a good probe takes well under a second; generous for a busy 2-core machine


@pytest.fixture(scope="module")
def two_node_ray() -> Iterator[str]:
    """Two Ray nodes of 1 CPU each on 127.0.0.1; yields the address to put in ``RAY_ADDRESS``."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # a Ray left connected by an earlier test would be used instead of this cluster
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 100 * 2**20, "include_dashboard": False})
    cluster.add_node(num_cpus=1, object_store_memory=100 * 2**20)
    cluster.wait_for_nodes()
    try:
        yield cluster.address
    finally:
        ray.shutdown()  # the stages connected this process; later tests must not find it connected
        cluster.shutdown()


@pytest.fixture
def on_ray(two_node_ray: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``RAY_ADDRESS`` set for this test only (the stages read it)."""
    monkeypatch.setenv("RAY_ADDRESS", two_node_ray)
    return two_node_ray


def _nodes_in_log(caplog: pytest.LogCaptureFixture, stage: str) -> tuple[int, int]:
    """``(tasks, nodes)`` from the stage's ``<stage> on Ray: N task(s) on K node(s)`` line."""
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{stage} on Ray: ")]
    assert len(lines) == 1, f"no single '{stage} on Ray' summary in the log: {lines}"
    match = re.search(r"(\d+) task\(s\) on (\d+) node\(s\)", lines[0])
    assert match, lines[0]
    return int(match[1]), int(match[2])


def _wait_for_free_cpus(expected: float) -> None:
    """Every CPU free again (a hung task that was not cancelled would hold one forever)."""
    import ray

    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) < expected:
        assert time.monotonic() < deadline, f"CPUs still taken: {ray.available_resources()}"
        time.sleep(0.5)


def _dataset(root: Path) -> Params:
    """The synthetic set plus the awkward videos of the determinism test and a stalled FIFO
    (indexed, created later: a FIFO cannot be copied)."""
    params = make_params(root, scan={"workers": 1, "timeout_s": TIMEOUT_S}, decode={"workers": 1})
    paths = StagePaths.from_params(params)
    generate_synthetic(paths.raw, params.dataset.synthetic, params.base.seed)
    index_from_lists(paths.raw, paths.index)
    _add_awkward_videos(paths.raw, paths.index)
    rows = {split: [(r.path, r.label) for r in read_index(paths.index, split)] for split in SPLITS}
    rows["train"].append((STALLED, 0))
    write_index(paths.index, rows, read_classes(paths.index))
    return params


def test_scan_and_decode_on_ray_write_the_local_bytes_over_both_nodes(
    tmp_path: Path, two_node_ray: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    local = _dataset(tmp_path / "local")
    shutil.copytree(tmp_path / "local", tmp_path / "on ray")
    on_ray = make_params(tmp_path / "on ray", scan={"workers": 1, "timeout_s": TIMEOUT_S}, decode={"workers": 1})
    for params in (local, on_ray):
        os.mkfifo(StagePaths.from_params(params).raw / STALLED)  # opening it blocks: a hung network mount

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    expected = _run_scan_then_decode(local)
    assert not [r for r in caplog.records if " on Ray" in r.getMessage()]  # locally, Ray is not involved

    monkeypatch.setenv("RAY_ADDRESS", two_node_ray)
    got = _run_scan_then_decode(on_ray)

    assert got == expected  # quarantine.csv, report.json, every shard, the manifests, store.json
    quarantine = read_quarantine(StagePaths.from_params(on_ray).scan)
    assert "scan.timeout_s" in quarantine[STALLED] and len(quarantine) == 4
    scan_tasks, scan_nodes = _nodes_in_log(caplog, "scan")
    decode_tasks, decode_nodes = _nodes_in_log(caplog, "decode")
    assert scan_tasks == 17 and scan_nodes == 2  # 12 synthetic + 4 awkward + the FIFO, on both nodes
    assert decode_tasks >= 4 and decode_nodes == 2
    _wait_for_free_cpus(2)  # the hung probe's task was cancelled: its worker is gone, its CPU free


def test_a_segfaulting_probe_costs_one_worker_and_reads_as_locally(
    tmp_path: Path, on_ray: str, caplog: pytest.LogCaptureFixture,
) -> None:
    params = make_params(tmp_path)
    paths = StagePaths.from_params(params)
    generate_synthetic(paths.raw, params.dataset.synthetic, params.base.seed)
    shutil.copy(paths.raw / "grow/grow_000.mp4", paths.raw / CRASH_NAME)  # a good file: only the probe crashes
    rels = ["grow/grow_000.mp4", CRASH_NAME, "shrink/shrink_000.mp4", "grow/grow_001.mp4"]
    jobs = [(os.fsdecode(paths.raw / rel), rel) for rel in rels]

    locally = probe_all(jobs, 1, TIMEOUT_S, 4, probe=crash_or_probe)
    cluster = ray_pool.connect(params, "scan", 1)
    tally = ray_pool.NodeTally()
    on_ray = probe_all_on_ray(jobs, cluster.cpus, TIMEOUT_S, 4, tally, probe=crash_or_probe)

    assert on_ray == locally
    assert [r.kind for r in on_ray] == ["ok", "crashed", "ok", "ok"]  # the probes after the crash went on
    assert sum(tally.tasks.values()) == 4
    assert any("crashed its worker (WorkerCrashedError" in r.getMessage() for r in caplog.records)
    assert any("crashed its worker (exit code -11)" in r.getMessage() for r in caplog.records)
    _wait_for_free_cpus(2)


def test_ordered_map_keeps_at_most_a_window_of_tasks_in_flight(on_ray: str, tmp_path: Path) -> None:
    """Decode's memory bound: results come in order while the source is read only a window ahead."""
    ray_pool.connect(make_params(tmp_path), "decode", 1)
    pulled: list[int] = []

    def items() -> Iterator[int]:
        for i in range(12):
            pulled.append(i)
            yield i

    results = ray_pool.ordered_map(abs, (-i for i in items()), 3, ray_pool.NodeTally())
    first = next(results)
    assert len(pulled) <= 4  # the window (3) plus the one submitted before the first result came back
    assert [first, *results] == list(range(12))
