"""The driver's side of the model: a checkpoint path or an MLflow model URI -> what the workers need.

The driver resolves the model ONCE, before Ray starts, so a wrong ``--model`` is a one-line error
(exit 2) and never a pool of actors failing one after the other.  What it hands the workers is a
:class:`ModelBundle`: the checkpoint's bytes (put once in Ray's object store, so actors on any
node can load it without a shared disk or access to the MLflow server), the evaluation protocol
and the class names.  Every actor then builds the model exactly as ``predict`` and the served
model do (:meth:`madapter.predict.VideoPredictor.from_checkpoint` with that protocol).

``models:/name@alias`` is pinned to the version the alias points at when the run starts, so all
actors score with the same model even if the alias moves while a long job runs.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madapter.config import ConfigError, Params
from madapter.data.clips import ViewProtocol
from madapter.errors import first_line
from madapter.predict import VideoPredictor, is_model_uri

logger = logging.getLogger(__name__)

_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)/?$")


@dataclass(frozen=True)
class ModelBundle:
    """Everything an actor needs to rebuild the model, independent of where the driver found it."""

    checkpoint: bytes
    """The ``checkpoint.pt`` file's bytes (trainable weights + what rebuilds the backbone)."""
    protocol: ViewProtocol
    """The views each video is scored on: ``params`` for a checkpoint, the registered settings for a model URI."""
    classes: list[str]
    description: str
    """What was loaded, for the log and the summary (``checkpoint <path>`` / ``models:/name/3``)."""


def from_checkpoint(path: Path, params: Params) -> ModelBundle:
    """A checkpoint file: loaded once on the CPU, as ``predict`` loads it (protocol from ``params``)."""
    from madapter.models.checkpoint import CheckpointError

    if not path.is_file():
        raise ConfigError(f"--model {path}: checkpoint not found; pass a checkpoint.pt or models:/<name>@<alias>")
    try:
        predictor = VideoPredictor.from_checkpoint(path, params=params, device="cpu")
    except CheckpointError as err:
        raise ConfigError(f"--model {first_line(err)}; pass a madapter checkpoint.pt or models:/<name>@<alias>") from None
    return ModelBundle(path.read_bytes(), predictor.protocol, list(predictor.classes), f"checkpoint {path}")


def pinned_uri(model: str, client, registry: str) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>`` (other URIs unchanged); unknown alias -> ConfigError."""
    match = _ALIAS_URI.match(model)
    if match is None:
        return model
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(match["name"], match["alias"]).version
    except MlflowException as err:
        raise ConfigError(f"--model {model}: {first_line(err)} (registry {registry}); "
                          "register a model first (python -m madapter register) or pass an existing alias") from None
    return f"models:/{match['name']}/{version}"


def _pyfunc_artifacts(model_dir: Path, model: str) -> dict[str, Path]:
    """The local files of the pyfunc's artifacts (``checkpoint``, ``settings``), read from its MLmodel."""
    from mlflow.models import Model

    flavor = Model.load(str(model_dir)).flavors.get("python_function", {})
    artifacts = {name: model_dir / info["path"] for name, info in flavor.get("artifacts", {}).items()}
    missing = {"checkpoint", "settings"} - set(artifacts)
    if missing:
        raise ConfigError(f"--model {model}: not a madapter model (its pyfunc has no {', '.join(sorted(missing))} "
                          "artifact); pass a model registered by python -m madapter register")
    return artifacts


def from_model_uri(model: str, params: Params) -> ModelBundle:
    """A registered (or logged) madapter pyfunc: its checkpoint and the settings it serves with."""
    import mlflow

    from madapter.models.checkpoint import read_checkpoint
    from madapter.tracking import fluent_tracking, get_client, resolve_tracking_uri

    uri = resolve_tracking_uri(params)
    pinned = pinned_uri(model, get_client(params), uri)
    with tempfile.TemporaryDirectory(prefix="madapter-model-") as tmp:
        try:
            with fluent_tracking(uri):
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=pinned, dst_path=tmp))
        except Exception as err:  # noqa: BLE001 - MlflowException, unreachable server, no such run
            raise ConfigError(f"--model {model}: cannot load the model from {uri}: {first_line(err)}") from None
        artifacts = _pyfunc_artifacts(local, model)
        settings: dict[str, Any] = json.loads(artifacts["settings"].read_text())
        checkpoint = artifacts["checkpoint"].read_bytes()
        classes = list(read_checkpoint(artifacts["checkpoint"])["classes"])
    shown = pinned if pinned == model else f"{pinned} ({model})"
    return ModelBundle(checkpoint, ViewProtocol.from_dict(settings), classes, shown)


def resolve_model(model: str, params: Params) -> ModelBundle:
    """``--model``: a checkpoint path or an MLflow model URI (``models:/name@alias``, ``runs:/id/model``)."""
    bundle = from_model_uri(model, params) if is_model_uri(model) else from_checkpoint(Path(model), params)
    logger.info("batch-predict: model %s, %d classes, protocol %s", bundle.description, len(bundle.classes),
                bundle.protocol.name)
    return bundle
