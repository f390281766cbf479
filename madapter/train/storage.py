"""Where Ray Train keeps a run (``train.storage_path``), and whether every node of the cluster sees it.

``train.storage_path`` is one of:

* a local path: one machine (made absolute; nothing is checked, nothing changed from before);
* a shared filesystem path (NFS, CephFS, ...) mounted at the same place on every node;
* a URI that Ray's storage accepts (``s3://``, ``gs://``, ``file://``, any ``pyarrow.fs`` filesystem).
  It is passed to Ray untouched, and the driver reads it through the same ``pyarrow`` filesystem
  Ray uses (:func:`filesystem`): ``Path`` would fold ``s3://bucket`` into ``s3:/bucket``.

On a multi-node cluster, a path that is local to each node splits the run: rank 0 writes the
checkpoints on its own node, and a worker restarted on another node (after the first was lost)
finds none.  Ray itself notices only when rank 0 uploads its first checkpoint, an epoch in, and
never notices a node that merely reads.  :func:`check_shared_storage` finds out before any worker
starts, for real rather than from the path's spelling: the driver writes a marker with a random
token under the storage path, and a Ray task pinned to each alive node reads it back; a node that
cannot read it (a different disk, no mount, no credentials for the bucket) refuses the run.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from madapter.config import ConfigError

if TYPE_CHECKING:
    import pyarrow.fs

logger = logging.getLogger(__name__)

MARKER_DIR = ".madapter-storage-check"
"""Directory under ``train.storage_path`` that holds the (short-lived) marker files of the check."""
CHECK_TIMEOUT_S = 180.0
"""How long the check waits for every node's answer: a busy node needs seconds to start a worker
process; a node that does not answer at all is reported, not silently trusted."""
SHARED_STORAGE_HINT = (
    "on a multi-node Ray cluster set train.storage_path to a shared filesystem path mounted at the same "
    "path on every node (e.g. /mnt/nfs/madapter/ray) or to a URI Ray's storage accepts "
    "(s3://bucket/path, gs://bucket/path)"
)


def is_uri(location: str | Path) -> bool:
    """``scheme://...``: a ``pyarrow.fs`` URI (``s3://``, ``gs://``, ``file://``) rather than a plain path."""
    return "://" in str(location)


def resolve_storage(storage_path: str | Path) -> str:
    """The storage location handed to Ray: a local path made absolute, a URI exactly as given.

    A URI whose filesystem ``pyarrow`` cannot open (unknown scheme, S3/GCS support missing) is a
    one-line :class:`ConfigError` here, before Ray starts, instead of a traceback from inside Ray.
    """
    text = str(storage_path)
    if not is_uri(text):
        return str(Path(text).resolve())
    import pyarrow.fs

    try:
        pyarrow.fs.FileSystem.from_uri(text)
    except Exception as err:  # noqa: BLE001 - pyarrow raises ArrowInvalid, ValueError, OSError...
        raise ConfigError(
            f"params.yaml: train.storage_path: {text}: pyarrow (Ray's storage layer) cannot open it "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); use a local or shared path, "
            f"or an s3:// / gs:// URI with its credentials set"
        ) from None
    return text


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a path or a URI (a URI keeps its ``scheme://`` and any query-less form)."""
    if is_uri(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location, *parts))


def filesystem(location: str | Path) -> tuple[pyarrow.fs.FileSystem, str]:
    """The ``pyarrow`` filesystem and the path on it of a location, as Ray resolves it."""
    import pyarrow.fs

    text = str(location)
    if is_uri(text):
        return pyarrow.fs.FileSystem.from_uri(text)
    return pyarrow.fs.LocalFileSystem(), text


def local_dir(location: str | Path) -> Path | None:
    """The directory on this machine's filesystem a location names (a path or a ``file://`` URI);
    ``None`` for remote storage (``s3://``, ``gs://``)."""
    import pyarrow.fs

    text = str(location)
    if not is_uri(text):
        return Path(text)
    fs, path = pyarrow.fs.FileSystem.from_uri(text)
    return Path(path) if isinstance(fs, pyarrow.fs.LocalFileSystem) else None


def _driver_node_id() -> str | None:
    import ray

    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - a Ray Client driver is not on any node
        return None


def check_shared_storage(storage: str, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Refuse, before training, a storage location some alive node of the Ray cluster cannot read.

    Nothing is checked when this process's node is the cluster's only node (a local Ray: every run
    on one machine, as before).  Otherwise one task pinned to each alive node (``num_cpus=0``, so
    it runs even on a head node with no CPUs or a node busy training) reads the marker the driver
    wrote.  A node that cannot read it is a one-line :class:`ConfigError` naming the node and
    saying what to use instead; a node that does not answer within ``timeout_s`` is named too.
    Nodes that join later (autoscaling) are not checked: that is the cluster's operator's promise.
    """
    import ray

    nodes = [node for node in ray.nodes() if node.get("Alive")]
    driver = _driver_node_id()
    if not nodes or [node["NodeID"] for node in nodes] == [driver]:
        return
    token = secrets.token_hex(16)
    marker_dir = join(storage, MARKER_DIR)
    marker = join(marker_dir, f"{token}.txt")
    fs, marker_path = filesystem(marker)
    started = time.perf_counter()
    try:
        fs.create_dir(filesystem(marker_dir)[1], recursive=True)
        with fs.open_output_stream(marker_path) as out:
            out.write(token.encode())
    except Exception as err:  # noqa: BLE001 - a permission error, a missing bucket, no credentials...
        raise ConfigError(
            f"params.yaml: train.storage_path: {storage}: the driver cannot write there "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); {SHARED_STORAGE_HINT}"
        ) from None
    try:
        answers = _ask_nodes(nodes, marker, token, timeout_s)
    finally:
        try:
            fs.delete_file(marker_path)
        except Exception:  # noqa: BLE001 - a leftover marker file is harmless
            logger.debug("could not delete %s", marker, exc_info=True)
    failed = {node_id: why for node_id, (ok, why) in answers.items() if not ok}
    if failed:
        named = "; ".join(f"node {node_id[:12]} ({_node_ip(nodes, node_id)}): {why}" for node_id, why in failed.items())
        raise ConfigError(f"params.yaml: train.storage_path: {storage} is not shared by every Ray node "
                          f"({named}); {SHARED_STORAGE_HINT}")
    logger.info("train.storage_path %s: seen by all %d Ray nodes (checked in %.1fs)", storage, len(nodes),
                time.perf_counter() - started)


def _node_ip(nodes: list[dict], node_id: str) -> str:
    return next((n.get("NodeManagerAddress", "?") for n in nodes if n["NodeID"] == node_id), "?")


def _ask_nodes(nodes: list[dict], marker: str, token: str, timeout_s: float) -> dict[str, tuple[bool, str]]:
    """``{node_id: (sees the marker, why not)}``: one pinned task per node, all in flight at once."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(read_marker)
    pending = {
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
            marker, token): node["NodeID"]
        for node in nodes
    }
    answers: dict[str, tuple[bool, str]] = {}
    ready, not_ready = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    for ref in ready:
        node_id = pending[ref]
        try:
            answers[node_id] = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - the node died, or the task could not run there
            answers[node_id] = (False, f"the check task failed: {str(err).splitlines()[0] if str(err) else err!r}")
    for ref in not_ready:
        ray.cancel(ref, force=True)
        answers[pending[ref]] = (False, f"no answer within {timeout_s:.0f}s (node busy or unreachable)")
    return answers


def read_marker(marker: str, token: str) -> tuple[bool, str]:
    """On one node: does ``marker`` hold ``token``?  ``(True, "")`` or ``(False, what this node saw)``."""
    host = socket.gethostname()
    try:
        fs, path = filesystem(marker)
        with fs.open_input_stream(path) as stream:
            seen = stream.read().decode(errors="replace")
    except FileNotFoundError:
        return False, f"{marker} does not exist on {host} (pid {os.getpid()}): a node-local path"
    except Exception as err:  # noqa: BLE001 - permissions, credentials, network
        return False, f"cannot read {marker} on {host}: {str(err).splitlines()[0] if str(err) else err!r}"
    if seen != token:
        return False, f"{marker} on {host} holds other content: a different filesystem at the same path"
    return True, ""
