"""Register stage: log the evaluated model as an MLflow pyfunc and gate promotion to ``champion``.

The pyfunc (:class:`VideoClassifierPyfunc`) takes a DataFrame with a ``video`` column (file
paths) and/or a ``video_bytes`` column (raw file contents, base64 in JSON requests) and returns
top-k labels with scores per row; a row that cannot be decoded gets an ``error`` instead of
failing the whole request.  Paths are refused unless the loader allows a directory
(``model_config={"allow_paths_under": ...}`` or ``$MADAPTER_ALLOW_PATHS_UNDER``): served, a path is
a file on the server that any client could name.  It carries its own copy of the ``madapter`` package
(``code_paths``), so ``mlflow models serve -m models:/<name>@champion --env-manager local``
works from any directory.

Promotion gate: every registered version is tagged with its metric, protocol, dataset and split.
A new version takes alias ``champion`` only when it beats the current champion's metric on the
SAME protocol, dataset and split (by more than ``register.min_improvement``); otherwise it gets
alias ``challenger`` and the reason is recorded as a tag on the version and on the run.

Incomplete runs are never champion: a version whose training run was stopped by
``train.max_epochs_per_run``, failed, or is not ``FINISHED`` in MLflow is still registered (so it
can be inspected and served on purpose) but tagged ``incomplete=true`` with ``incomplete_reason``,
and gets ``challenger`` at most (:func:`madapter.run_status.incomplete_reason`).  Registering
never changes the training run's status: logging the model into a KILLED run leaves it KILLED.

A registered version explains itself: its description is the model card (:mod:`madapter.model_card`),
also logged as ``MODEL_CARD.md`` in the logged model's directory (beside ``MLmodel``); the training
run gets the data it trained on as its dataset input (:mod:`madapter.lineage`); the model carries an
input example (one real video's bytes, :mod:`madapter.input_example`) and typed ``predict``.

"Models from code": the pyfunc is logged as the file :data:`MODEL_CODE` (MLflow runs it on load and
it calls ``mlflow.models.set_model``), not as a CloudPickle of a :class:`VideoClassifierPyfunc`
object, which MLflow warns about (unpickling runs arbitrary code, and a pickle breaks when the class
moves).  Versions registered before keep loading: their pickle names
``madapter.registry.VideoClassifierPyfunc``, which stays here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd

from madapter.config import ConfigError, Params
from madapter.fileio import write_json_atomic
from madapter.paths import StagePaths
from madapter.run_status import incomplete_reason

if TYPE_CHECKING:
    from madapter.lineage import DataLineage
    from madapter.model_card import ModelFacts

logger = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
DEVICE_ENV = "MADAPTER_DEVICE"
"""Device of a served model (auto | cpu | cuda) when the loader passes no ``model_config``."""
ALLOW_PATHS_ENV = "MADAPTER_ALLOW_PATHS_UNDER"
"""The directory under which a served pyfunc may open ``video`` paths (``model_config["allow_paths_under"]``
wins); unset, paths are refused: behind ``mlflow models serve`` any client could name any file."""
COMPARABLE_TAGS = ("protocol", "dataset", "split")
WEIGHTS_ARTIFACT = "backbone_weights"
"""The registered model's copy of the backbone weights (``register.backbone_weights: artifact``)."""
MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
"""The file MLflow logs as the pyfunc's code ("models from code") and runs when it loads a version."""
WEIGHTS_SHA_KEY = "backbone_weights_sha256"
"""Its sha256, in the settings artifact: checked when the model is loaded (a truncated copy must not
load as a silently different backbone)."""


def verify_backbone_weights(path: Path, sha256: str | None) -> None:
    """One line when the registered weights are not the bytes that were registered."""
    from madapter.fileio import file_digest

    if sha256 is None or file_digest(path) != sha256:
        raise ConfigError(f"{path}: the registered model's backbone weights do not match the sha256 recorded at "
                          "registration; re-register the model (python -m madapter register)")


class VideoClassifierPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: video paths or bytes -> top-k labels and scores (see module docstring)."""

    def load_context(self, context) -> None:
        from madapter.data.clips import ViewProtocol
        from madapter.predict import VideoPredictor

        settings = json.loads(Path(context.artifacts["settings"]).read_text())
        self.top_k = int(settings.pop("top_k"))
        weights_sha256 = settings.pop(WEIGHTS_SHA_KEY, None)
        weights = context.artifacts.get(WEIGHTS_ARTIFACT)
        if weights is not None:
            verify_backbone_weights(Path(weights), weights_sha256)
        # Where it runs is the server's business, not the model's: load_model(model_config={"device": ...})
        # (what `madapter predict` passes from evaluate.device), else $MADAPTER_DEVICE (for
        # `mlflow models serve`), else auto (cuda when the serving machine has one).
        device = (context.model_config or {}).get("device") or os.environ.get(DEVICE_ENV, "auto")
        self.predictor = VideoPredictor.from_checkpoint(
            context.artifacts["checkpoint"], ViewProtocol.from_dict(settings), device=device, backbone_weights=weights
        )
        allowed = (context.model_config or {}).get("allow_paths_under") or os.environ.get(ALLOW_PATHS_ENV)
        self.paths_root = Path(allowed).resolve() if allowed else None

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Typed: MLflow reads the input type hint (a DataFrame: validated against the logged signature,
        the columns being optional) and warns about a ``predict`` without one."""
        from madapter.predict import error_line
        from madapter.request_checks import allowed_path

        k = int((params or {}).get("top_k") or self.top_k)
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows = []
        for _, row in frame.iterrows():
            video = row.get("video")
            data = row.get("video_bytes")
            name = str(video) if isinstance(video, str) and video else "<bytes>"
            try:
                if isinstance(data, bytes | bytearray) and data:
                    top = self.predictor.predict_bytes(bytes(data), k)
                elif isinstance(video, str) and video:
                    top = self.predictor.predict_path(allowed_path(video, getattr(self, "paths_root", None)), k)
                else:
                    raise ValueError("row has neither a 'video' path nor 'video_bytes'")
                rows.append({"video": name, "labels": [t["label"] for t in top],
                             "scores": [t["score"] for t in top], "error": ""})
            except Exception as err:  # noqa: BLE001 - one bad video must not fail the batch
                rows.append({"video": name, "labels": [], "scores": [], "error": error_line(name, err)})
        return pd.DataFrame(rows, columns=["video", "labels", "scores", "error"])


def model_signature(top_k: int):
    """Input: optional ``video`` (string) / ``video_bytes`` (binary); output: labels, scores, error."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "video", required=False), ColSpec("binary", "video_bytes", required=False)])
    outputs = Schema([
        ColSpec("string", "video"),
        ColSpec(Array("string"), "labels"),
        ColSpec(Array("double"), "scores"),
        ColSpec("string", "error"),
    ])
    return ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("top_k", "long", top_k)]))


@dataclass
class RegisterResult:
    model_name: str
    version: str
    alias: str
    promoted: bool
    reason: str
    metric: str
    value: float
    champion_before: str | None
    champion_value_before: float | None
    run_id: str
    model_uri: str
    protocol: str
    dataset: str
    complete: bool = True
    """False when the training run was budget-stopped, failed or not FINISHED (then ``reason`` says why)."""
    run_status: str = ""


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def decide(
    candidate: dict[str, str],
    champion: dict[str, str] | None,
    metric: str,
    min_improvement: float,
    incomplete: str | None = None,
) -> GateDecision:
    """The champion/challenger rule on version tags (pure: unit-tested without a registry).

    ``incomplete`` (why the training run is not complete, see :func:`madapter.run_status.incomplete_reason`)
    vetoes promotion before any metric is compared: a half-trained model can score well on a
    small test split and must still not replace the champion, even when there is none yet.
    """
    if incomplete:
        return GateDecision(False, f"not eligible for champion: {incomplete}")
    value = float(candidate[metric])
    if champion is None:
        return GateDecision(True, f"no champion yet; {metric}={value:.4f}")
    for key in COMPARABLE_TAGS:
        if champion.get(key) != candidate.get(key):
            return GateDecision(
                False,
                f"not comparable: champion {key} is {champion.get(key)!r}, this model's is {candidate.get(key)!r}",
            )
    if metric not in champion:
        return GateDecision(True, f"champion has no {metric} recorded; {metric}={value:.4f}")
    best = float(champion[metric])
    if math.isfinite(value) and value > best + min_improvement:
        return GateDecision(True, f"{metric} {value:.4f} beats champion {best:.4f} (+{value - best:.4f})")
    return GateDecision(
        False, f"{metric} {value:.4f} does not beat champion {best:.4f} by more than {min_improvement:g}"
    )


def _current_champion(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


@contextlib.contextmanager
def _logging_into_run(client, run_id: str) -> Iterator[None]:
    """Make ``run_id`` MLflow's active run (what ``log_model`` logs into), then restore its status.

    ``mlflow.start_run(run_id=...)`` sets an existing run RUNNING, and leaving its ``with`` block
    ends it FINISHED (``ActiveRun.__exit__`` in mlflow/tracking/fluent.py, MLflow 3.x), so
    registering a budget-stopped (KILLED) or FAILED training run would make it look complete.
    ``log_model`` has no run argument in the pyfunc API, so the run is activated and then ended
    with the status and end time it had, whatever happens inside.
    """
    before = client.get_run(run_id).info
    mlflow.start_run(run_id=run_id)
    try:
        yield
    finally:
        mlflow.end_run(status=before.status)
        if before.end_time:  # end_run stamps "now": keep the training run's own duration
            client.set_terminated(run_id, status=before.status, end_time=before.end_time)


def _training_run(client, run_id: str, run_file: Path):
    """The MLflow run ``run.json`` names (its status and tags decide eligibility), or a one-line error."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise ConfigError(
            f"{run_file}: MLflow run {run_id} is not in {client.tracking_uri}; set mlflow.tracking_uri "
            "to the store the train stage used, or re-run train"
        ) from None


def _read_json(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: not found; run the {stage} stage first (python -m madapter {stage})")
    return json.loads(path.read_text())


def register(params: Params) -> RegisterResult:
    """Log + register the evaluated checkpoint with its card and data lineage; set ``champion`` or
    ``challenger``; write registration.json."""
    from madapter.lineage import data_lineage
    from madapter.tracking import get_client

    paths = StagePaths.from_params(params)
    run = _read_json(paths.train / "run.json", "train")
    evaluation = _read_json(paths.evaluate / "metrics.json", "evaluate")
    metric = _checked_metric(params, evaluation, paths.evaluate / "metrics.json")
    name, run_id = params.register.model_name, run["run_id"]
    client = get_client(params)
    training_run = _training_run(client, run_id, paths.train / "run.json")
    run_status = training_run.info.status
    incomplete = incomplete_reason(run, run_status, dict(training_run.data.tags))
    version_tags = _version_tags(metric, evaluation, run, run_status, incomplete)
    lineage = data_lineage(params, _train_source(training_run, params), evaluation["checkpoint_md5"])
    logged = _log_pyfunc(params, client, run_id, paths.train / "checkpoint.pt", evaluation, lineage)
    version = logged.version
    _publish_card(client, name, logged, _card(params, logged, run, training_run, evaluation, lineage, incomplete))
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    champion = _current_champion(client, name)
    champion_tags = dict(champion.tags) if champion is not None else None
    decision = decide(version_tags, champion_tags, metric, params.register.min_improvement, incomplete)
    if incomplete is not None:
        logger.warning("%s version %s is from an incomplete training run: %s", name, version, incomplete)
    alias = _record_decision(client, name, version, run_id, decision)
    result = RegisterResult(
        model_name=name,
        version=version,
        alias=alias,
        promoted=decision.promote,
        reason=decision.reason,
        metric=metric,
        value=float(evaluation[metric]),
        champion_before=champion.version if champion is not None else None,
        champion_value_before=float(champion_tags[metric]) if champion_tags and metric in champion_tags else None,
        run_id=run_id,
        model_uri=f"models:/{name}/{version}",
        protocol=evaluation["protocol"],
        dataset=evaluation["dataset"],
        complete=incomplete is None,
        run_status=run_status,
    )
    write_json_atomic(paths.register / "registration.json", asdict(result))
    return result


def _train_source(training_run, params: Params) -> str:
    """What the run trained on (``frames`` / ``features``) as it logged it; these params' when it logged nothing."""
    return training_run.data.params.get("train.source") or training_run.data.tags.get("train_source") \
        or params.train.source


def _card(params: Params, logged: LoggedPyfunc, run: dict[str, Any], training_run, evaluation: dict[str, Any],
          lineage: DataLineage, incomplete: str | None) -> str:
    """The version's model card, from the logged model's facts, the run, the evaluation and the lineage."""
    from madapter.model_card import evaluation_rows, recipe, render_card

    rows = evaluation_rows(evaluation, dict(training_run.data.metrics))
    trained = recipe(run, dict(training_run.data.params), params)
    return render_card(params.register.model_name, logged.version, logged.facts, trained, rows, lineage,
                       params.register.top_k, incomplete)


def _publish_card(client, name: str, logged: LoggedPyfunc, card: str) -> None:
    """The card as the version's description (the registry UI renders it) and as ``MODEL_CARD.md`` in the
    logged model's directory (beside ``MLmodel``: downloaded with the model, shown on its artifacts page)."""
    from madapter.model_card import CARD_FILE, as_description

    client.update_model_version(name, logged.version, description=as_description(card))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CARD_FILE
        path.write_text(card, encoding="utf-8")
        client.log_model_artifact(logged.model_id, str(path))


def _checked_metric(params: Params, evaluation: dict[str, Any], metrics_file: Path) -> str:
    """``register.metric``, once it is known to be a number in the evaluation's ``metrics.json``."""
    metric = params.register.metric
    if metric not in evaluation or not isinstance(evaluation[metric], int | float):
        raise ConfigError(
            f"params.yaml: register.metric: {metric!r} is not a number in {metrics_file} "
            f"(choose one of top1, top5, mean_class_acc)"
        )
    return metric


def _version_tags(metric: str, evaluation: dict[str, Any], run: dict[str, Any], run_status: str,
                  incomplete: str | None) -> dict[str, str]:
    """What a version is tagged with: the gate's metric, what it was measured on, the run's state."""
    tags = {
        "metric": metric,
        metric: f"{float(evaluation[metric]):.6f}",
        "protocol": evaluation["protocol"],
        "dataset": evaluation["dataset"],
        "split": evaluation["split"],
        "top1": f"{evaluation['top1']:.6f}",
        "top5": f"{evaluation['top5']:.6f}",
        "mean_class_acc": f"{evaluation['mean_class_acc']:.6f}",
        "checkpoint_md5": evaluation["checkpoint_md5"],
        "run_status": run_status,
        "incomplete": str(incomplete is not None).lower(),
    }
    if incomplete is not None:
        tags["incomplete_reason"] = incomplete
    if run.get("epochs_done") is not None and run.get("epochs") is not None:
        tags["epochs"] = f"{run['epochs_done']}/{run['epochs']}"
    return tags


def backbone_weights_file(model, tmp: Path) -> Path | None:
    """The file of backbone weights a registered model carries: the ``model.weights_file`` it was built
    from (its sha256 is the checkpoint's identity), or the hub weights exported to safetensors;
    ``None`` for a random-init backbone, which rebuilds from its seed anywhere."""
    cfg = model.config
    if cfg.weights_file is not None:
        return Path(cfg.weights_file)
    if not cfg.pretrained:
        return None
    from safetensors.torch import save_file

    path = tmp / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in model.backbone.model.state_dict().items()}, str(path))
    return path


def _serving_settings(params: Params, model, evaluation: dict[str, Any]) -> dict[str, Any]:
    """The view protocol the model was evaluated with, plus ``top_k``: what the pyfunc serves with."""
    from madapter.data.clips import ViewProtocol

    settings = ViewProtocol.from_params(params, model.data_config).to_dict()
    settings.update(num_frames=evaluation["frames"], clips=evaluation["clips"], crops=evaluation["crops"])
    settings["top_k"] = params.register.top_k
    return settings


@dataclass(frozen=True)
class LoggedPyfunc:
    """A pyfunc logged and registered: its version, its MLflow logged-model id, what its card says of it."""

    version: str
    model_id: str
    facts: ModelFacts
    """What the card says of the model the checkpoint rebuilds."""


def register_checkpoint(params: Params, checkpoint: Path, evaluation: dict[str, Any], alias: str | None = CHAMPION,
                        run_name: str | None = None) -> str:
    """Register a checkpoint made outside the pipeline (a model from elsewhere, a test's, a benchmark's)
    as the register stage logs it, in a finished run of its own, with no gate, card or lineage: the new
    version gets ``alias`` (none when ``None``).  ``evaluation`` is the view protocol it is served
    with (``frames``, ``clips``, ``crops``, ``split``).  Returns the version."""
    from madapter.tracking import ensure_experiment, get_client

    client = get_client(params)
    run = client.create_run(ensure_experiment(client, params), run_name=run_name)
    version = _log_pyfunc(params, client, run.info.run_id, checkpoint, evaluation).version
    client.set_terminated(run.info.run_id, status="FINISHED")
    if alias is not None:
        client.set_registered_model_alias(params.register.model_name, alias, version)
    return version


def _log_pyfunc(params: Params, client, run_id: str, checkpoint: Path, evaluation: dict[str, Any],
                lineage: DataLineage | None = None) -> LoggedPyfunc:
    """Log the pyfunc (models from code: checkpoint, settings, its own ``madapter`` copy, an input example)
    into the training run and register it as a new version of ``register.model_name``; with ``lineage``
    also the run's dataset input."""
    import madapter
    from madapter.data.clips import ViewProtocol
    from madapter.fileio import file_digest
    from madapter.input_example import input_example
    from madapter.lineage import log_dataset_input
    from madapter.model_card import model_facts
    from madapter.models.checkpoint import load_checkpoint
    from madapter.predict import VideoPredictor
    from madapter.tracking import fluent_tracking, resolve_tracking_uri

    model, ckpt = load_checkpoint(checkpoint, map_location="cpu")
    settings = _serving_settings(params, model, evaluation)
    example = input_example(params, evaluation.get("split", "test"),
                            VideoPredictor(model, ckpt["classes"], ViewProtocol.from_dict(settings)))
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"checkpoint": str(checkpoint)}
        weights = backbone_weights_file(model, Path(tmp)) if params.register.backbone_weights == "artifact" else None
        if weights is not None:
            artifacts[WEIGHTS_ARTIFACT] = str(weights)
            settings[WEIGHTS_SHA_KEY] = file_digest(weights)
        settings_file = Path(tmp) / "settings.json"
        settings_file.write_text(json.dumps(settings, indent=2))
        artifacts["settings"] = str(settings_file)
        with fluent_tracking(resolve_tracking_uri(params)), _logging_into_run(client, run_id):
            if lineage is not None:
                log_dataset_input(lineage)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_CODE),
                artifacts=artifacts,
                code_paths=[str(Path(madapter.__file__).parent)],
                signature=model_signature(params.register.top_k),
                input_example=example,
                # the keys a loader may set (load_model(model_config=...)); MLflow ignores any other.
                # Empty: $MADAPTER_DEVICE / $MADAPTER_ALLOW_PATHS_UNDER, else auto / paths refused.
                model_config={"device": "", "allow_paths_under": ""},
                pip_requirements=_pip_requirements(),
                registered_model_name=params.register.model_name,
            )
    return LoggedPyfunc(str(info.registered_model_version), info.model_id,
                        model_facts(model, settings.get(WEIGHTS_SHA_KEY)))


def _record_decision(client, name: str, version: str, run_id: str, decision: GateDecision) -> str:
    """Point ``champion`` or ``challenger`` at the version; tag the decision on version and run."""
    alias = CHAMPION if decision.promote else CHALLENGER
    client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "decision", alias)
    client.set_model_version_tag(name, version, "decision_reason", decision.reason)
    client.set_tag(run_id, "registry.version", version)
    client.set_tag(run_id, "registry.decision", f"{alias}: {decision.reason}")
    logger.info("%s version %s -> %s (%s)", name, version, alias, decision.reason)
    return alias


def _pip_requirements() -> list[str]:
    """Pinned from the running environment (explicit: MLflow's inference would import and run the model)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for package in ("torch", "torchvision", "timm", "decord", "av", "numpy", "pandas", "pydantic", "pyyaml", "mlflow"):
        try:
            reqs.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return reqs
