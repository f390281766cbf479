"""``python -m madapter serve``: start (or join) Ray, run the application, say where it listens.

Joins ``$RAY_ADDRESS`` when set (a cluster: the proxy then runs on the head node), otherwise starts a
small local Ray with enough CPUs for one decoding and one model replica.  The CLI blocks until Ctrl-C
(:func:`block_until_interrupted`), then shuts the application down.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from madapter.config import Params
from madapter.serving.models import ModelSource

logger = logging.getLogger(__name__)

APP_NAME = "madapter"
SERVE_OBJECT_STORE_MB = 256
"""Decoded views pass through the object store: a few MB per video, a few requests at a time."""


@dataclass(frozen=True)
class Serving:
    """A running application: where it listens and what it serves."""

    url: str
    source: ModelSource
    version: str


def start(params: Params, model: str | None = None) -> Serving:
    """Run the application (non-blocking) and wait until it answers ``/readyz``; raises ConfigError for
    a model that cannot be resolved (no such alias, no such checkpoint) before starting anything."""
    import ray
    from ray import serve

    from madapter.ray_runtime import start_ray
    from madapter.serving.app import build_app

    source = ModelSource.from_params(params, model)
    version = source.current()  # fails in one line when the alias or model does not exist
    cfg = params.serve
    start_ray(params, cpus_needed=cfg.decode_replicas + cfg.model_replicas, object_store_mb=SERVE_OBJECT_STORE_MB)
    # Serve's INFO lines (every replica start, every call, every access) go to Ray's log files
    # (/tmp/ray/session_latest/logs/serve/), not to the terminal: it shows warnings and errors.
    quiet = {"log_level": "WARNING", "enable_access_log": False}
    serve.start(http_options={"host": cfg.host, "port": cfg.port}, logging_config=quiet)
    serve.run(build_app(params, source), name=APP_NAME, route_prefix="/", blocking=False, logging_config=quiet)
    url = f"http://{cfg.host}:{cfg.port}"
    _wait_ready(url)
    logger.info("serving %s (version %s) at %s on Ray %s", source.uri, version, url, ray.get_runtime_context().gcs_address)
    return Serving(url, source, version)


def _wait_ready(url: str, timeout_s: float = 300.0) -> None:
    """Poll ``/readyz`` until the model has answered its warm-up clip."""
    import requests

    deadline = time.monotonic() + timeout_s
    reason = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = requests.get(f"{url}/readyz", timeout=30)
            if answer.status_code == 200:
                return
            reason = answer.json().get("reason", answer.text)
        except requests.RequestException as err:
            reason = type(err).__name__
        time.sleep(1.0)
    raise RuntimeError(f"{url}/readyz: not ready after {timeout_s:.0f}s ({reason})")


def stop() -> None:
    from ray import serve

    serve.shutdown()  # the application, its replicas, the proxy and the controller


def block_until_interrupted() -> None:
    """Keep the application up until Ctrl-C (or SIGTERM), then shut it down."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        logger.info("stopping the application")
    finally:
        stop()
