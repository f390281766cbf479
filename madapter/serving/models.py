"""Which model the server answers with: a checkpoint, a fixed registry version, or the version an alias names.

:class:`ModelSource` is picklable (every replica gets a copy) and knows how to ask the registry which
version the alias names now (:meth:`ModelSource.current`) and how to load a version as a
:class:`~madapter.predict.VideoPredictor` on a device.  Versions are addressed by key (the registry's
version number, or ``checkpoint``), so a request decoded for one version is classified by that same
version even while the alias moves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madapter.config import ConfigError, Params
from madapter.errors import first_line

CHECKPOINT_KEY = "checkpoint"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class ModelSource:
    """``models:/<name>@<alias>`` (followed), ``models:/<name>/<version>`` (fixed) or a checkpoint file."""

    uri: str
    tracking_uri: str
    params: Params
    """For a checkpoint: the evaluation protocol (``evaluate:``) it is served with, as ``predict`` does."""

    @classmethod
    def from_params(cls, params: Params, model: str | None = None) -> ModelSource:
        from madapter.tracking import resolve_tracking_uri

        uri = model or params.serve.model or f"models:/{params.register.model_name}@champion"
        source = cls(uri, resolve_tracking_uri(params), params)
        if source.is_checkpoint and not Path(uri).is_file():
            raise ConfigError(f"{uri}: checkpoint not found (serve.model: a checkpoint.pt or models:/<name>@<alias>)")
        if not source.is_checkpoint and _MODEL_URI.match(uri) is None:
            raise ConfigError(f"serve.model: {uri!r} is neither a checkpoint file nor models:/<name>@<alias> or "
                              "models:/<name>/<version>")
        return source

    @property
    def is_checkpoint(self) -> bool:
        return not self.uri.startswith("models:/")

    @property
    def name(self) -> str | None:
        return None if self.is_checkpoint else _MODEL_URI.match(self.uri)["name"]

    @property
    def alias(self) -> str | None:
        return None if self.is_checkpoint else _MODEL_URI.match(self.uri)["alias"]

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)

    def current(self) -> str:
        """The version key to answer with now: the alias's version, the fixed version, or ``checkpoint``."""
        if self.is_checkpoint:
            return CHECKPOINT_KEY
        match = _MODEL_URI.match(self.uri)
        if match["version"]:
            return match["version"]
        try:
            return str(self._client().get_model_version_by_alias(match["name"], match["alias"]).version)
        except Exception as err:  # noqa: BLE001 - MlflowException (no such alias/model), unreachable server
            raise ConfigError(f"{self.uri}: no version to serve in {self.tracking_uri}: {first_line(err)}") from None

    def load(self, key: str, device: str):
        """The :class:`~madapter.predict.VideoPredictor` of version ``key`` on ``device`` (auto | cpu | cuda)."""
        from madapter.predict import VideoPredictor

        if key == CHECKPOINT_KEY:
            return VideoPredictor.from_checkpoint(self.uri, params=self.params, device=device)
        import mlflow.pyfunc

        from madapter.tracking import fluent_tracking

        with fluent_tracking(self.tracking_uri):
            pyfunc = mlflow.pyfunc.load_model(f"models:/{self.name}/{key}", model_config={"device": device})
        return pyfunc.unwrap_python_model().predictor

    def describe(self, key: str) -> dict[str, Any]:
        """What ``GET /`` says of version ``key``: the model, its version and alias, and its card."""
        info: dict[str, Any] = {"model": self.uri, "version": key, "alias": self.alias}
        if not self.is_checkpoint:
            try:
                info["card"] = self._client().get_model_version(self.name, key).description or ""
            except Exception as err:  # noqa: BLE001 - the card is information, not a reason to fail
                info["card"] = f"(the registry did not answer: {first_line(err)})"
        return info
