"""``python -m madapter <stage>``: the one command-line entry point of the pipeline.

Every stage command is a thin shell around ONE library function (``download_dataset``,
``build_index``, ...), the same function the DVC stage, the Prefect task and the tests call.
The command only resolves the configuration: ``params.yaml`` (``--params``), optional preset
files merged over it (``--preset``) and ``-S key=value`` overrides, in that order, validated
once into :class:`madapter.config.Params` (:mod:`madapter.overrides`).  A bad value stops the
command before any work with one line naming the key and exit code 2.  A stage that fails for a
reason outside the code (no network, a full disk, a missing system tool:
:func:`madapter.errors.expected_failure_line`) ends with one ``error:`` line saying what to do and exit code 1;
``--log-level DEBUG`` adds the traceback.  :func:`stage_errors` is that rule, written once.

Stage modules are imported inside each command, so ``check-params`` and ``--help`` stay fast
and a broken optional dependency of one stage does not break the others.
"""

from __future__ import annotations

import importlib
import json
import logging
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
import yaml

from madapter.config import ConfigError, Params, demo_only_settings
from madapter.errors import expected_failure_line
from madapter.overrides import preset_set_params, resolve_params
from madapter.stage_summary import summarize
from madapter.stages import STAGES, Stage

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="madapter",
    help="M-adapter video recognition pipeline: each command runs one stage with params.yaml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="The params file (default: ./params.yaml).")]
PresetOption = Annotated[
    list[Path] | None, typer.Option("--preset", help="A preset YAML merged over --params (repeatable; later wins).")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override one key, e.g. -S train.epochs=2 (YAML value; repeatable)."),
]
ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="A checkpoint path or an MLflow model URI (models:/madapter@champion).")
]


# --------------------------------------------------------------------------- errors -> exit codes
def _error_exit(line: str, code: int) -> typer.Exit:
    """Print ``error: <line>`` on stderr and return the :class:`typer.Exit` to raise."""
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(code=code)


@contextmanager
def config_errors() -> Iterator[None]:
    """A :class:`ConfigError` ends the command with its one line and exit code 2.

    Exit 2, not 1, so a script (or DVC) can tell "the input is wrong, nothing ran" from a failure.
    """
    try:
        yield
    except ConfigError as err:
        raise _error_exit(str(err), 2) from None


def _failure_line(stage: str, params: Params, err: BaseException) -> str | None:
    """The one line for an expected failure of ``stage`` (``None``: a bug, keep the traceback)."""
    line = expected_failure_line(err)
    if line is not None and isinstance(err, OSError) and not err.filename:
        # a failed write() names no file: say at least where the stage writes
        line = f"{stage}: writing under {params.base.data_dir} or {params.base.outputs_dir}: {line}"
    return line


@contextmanager
def stage_errors(stage: str, params: Params) -> Iterator[None]:
    """The work of a command: a ConfigError is exit 2, an expected failure one line and exit 1.

    A stage may find a bad value only it can check (a path), hence ConfigError here too.  The
    traceback of an expected failure is logged at DEBUG only: the user did not cause it, so a wall
    of urllib3 frames hides the one thing they need (the URL or file, what happened, what to do).
    Anything else is a bug and keeps its traceback, which is what a developer needs.
    """
    try:
        yield
    except ConfigError as err:
        raise _error_exit(str(err), 2) from None
    except Exception as err:
        line = _failure_line(stage, params, err)
        if line is None:
            raise
        logger.debug("stage %s failed; traceback:", stage, exc_info=err)
        raise _error_exit(line, 1) from None


def _params(params_file: Path, presets: list[Path] | None, sets: list[str] | None) -> Params:
    """The command's validated params; a bad value ends it (exit 2) before any work."""
    with config_errors():
        return resolve_params(params_file, presets, sets)


# --------------------------------------------------------------------------- pipeline stages
def _stage_command(stage: Stage) -> None:
    """Register ``python -m madapter <stage>`` calling ``<module>.<function>(params)``.

    The command's last line is ``stage <name>: done in <s>: <summary>``: the result's key figures and
    where it is written (:func:`madapter.stage_summary.summarize`), never its ``repr`` (a train
    result holds every epoch).  :mod:`pipelines.console` picks that line for the terminal.
    """

    def command(
        params_file: ParamsOption = Path("params.yaml"),
        preset: PresetOption = None,
        set_: SetOption = None,
    ) -> None:
        params = _params(params_file, preset, set_)
        fn = getattr(importlib.import_module(stage.module), stage.function)
        with stage_errors(stage.name, params):
            logger.info("stage %s: start (dataset=%s)", stage.name, params.dataset.name)
            started = time.monotonic()
            result = fn(params)
            logger.info("stage %s: done in %.1fs: %s", stage.name, time.monotonic() - started,
                        summarize(stage.name, result, params))

    command.__name__ = f"{stage.name}_command"
    app.command(name=stage.name, help=stage.help)(command)


for _stage in STAGES:
    _stage_command(_stage)


# --------------------------------------------------------------------------- other commands
@app.callback()
def global_options(
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
) -> None:
    """M-adapter pipeline CLI."""
    level = getattr(logging, log_level.upper(), logging.INFO)  # an unknown level name is INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@app.command("check-params")
def check_params(
    params_file: ParamsOption = Path("params.yaml"),
    preset: PresetOption = None,
    set_: SetOption = None,
    show: Annotated[bool, typer.Option("--show", help="Print the fully resolved params as YAML.")] = False,
) -> None:
    """Validate params.yaml (plus presets and -S overrides) without running anything."""
    params = _params(params_file, preset, set_)
    if show:
        typer.echo(yaml.safe_dump(json.loads(params.model_dump_json()), sort_keys=False))
    for line in demo_only_settings(params):
        typer.echo(f"warning: {line}", err=True)
    typer.echo(
        f"{params_file}: OK (dataset={params.dataset.name}, backbone={params.model.backbone}, "
        f"tuning={params.model.tuning}, epochs={params.train.epochs}, workers={params.train.num_workers})"
    )


@app.command("preset-args")
def preset_args(
    presets: Annotated[list[Path], typer.Argument(help="Preset YAML file(s), e.g. presets/ucf101.yaml.")],
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Print a preset as ``--set-param=key=value`` arguments for ``dvc exp run``.

    Validates params.yaml + the presets first, so a broken preset never starts an experiment.
    One argument per schema field, in DVC's (Hydra's) syntax; a mapping field is one
    ``++key={...}`` argument, so file names with dots stay whole and DVC merges them as
    ``--preset`` does.
    Usage: ``python -m madapter preset-args presets/ucf101.yaml | xargs dvc exp run``.
    """
    with config_errors():
        resolve_params(params_file, presets, None)
        args = [shlex.quote(f"--set-param={arg}") for arg in preset_set_params(presets)]
    typer.echo(" ".join(args))


@app.command("predict")
def predict(
    videos: Annotated[list[Path], typer.Argument(help="Video file(s) to classify.")],
    model: ModelOption = "models:/madapter@champion",
    top_k: Annotated[int | None, typer.Option("--top-k", help="Classes to show (default register.top_k).")] = None,
    params_file: ParamsOption = Path("params.yaml"),
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Classify video files with a checkpoint or a registered model; prints one JSON line per video.

    A video that cannot be read is reported on stderr (one line) and the exit code is 1; the
    other videos are still classified.
    """
    params = _params(params_file, preset, set_)
    from madapter.predict import predict as predict_videos

    with stage_errors("predict", params):  # e.g. a checkpoint that cannot be read: one line, not a traceback
        results = predict_videos(videos, model=model, params=params, top_k=top_k or params.register.top_k)
    failed = False
    for video, result in zip(videos, results, strict=False):
        if isinstance(result, dict) and "error" in result:
            failed = True
            typer.echo(f"error: {result['error']}", err=True)
        else:
            typer.echo(json.dumps({"video": str(video), "predictions": result}, default=str))
    if failed:
        raise typer.Exit(code=1)


@app.command("batch-predict")
def batch_predict(
    output: Annotated[Path, typer.Option("--output", "-o", help="Predictions file: .parquet or .csv.")],
    split: Annotated[str | None, typer.Option("--split", help="Score an index split of the dataset (train/val/test).")] = None,
    folder: Annotated[Path | None, typer.Option("--folder", help="Score every video under this folder (recursive).")] = None,
    list_file: Annotated[Path | None, typer.Option("--list", help="Score the videos of a text file, one path per line.")] = None,
    model: ModelOption = "models:/madapter@champion",
    top_k: Annotated[int | None, typer.Option("--top-k", help="Classes per video (default register.top_k).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Videos per forward pass (default evaluate.batch_size).")] = None,
    actors: Annotated[int, typer.Option("--actors", help="Model actors (each loads the model once).")] = 1,
    use_gpu: Annotated[bool | None, typer.Option("--use-gpu/--no-gpu", help="GPU actors (default: when the Ray cluster has GPUs).")] = None,
    actor_cpus: Annotated[int | None, typer.Option("--actor-cpus", help="CPUs per CPU actor.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Classify many videos on Ray Data (CPU decoding tasks, an actor pool of models); write Parquet or CSV.

    One row per input, in input order: path, top-k labels and scores, and an error for a video
    that cannot be read (the others are still scored; exit code 0).  Uses $RAY_ADDRESS when set.
    """
    params = _params(params_file, preset, set_)
    from madapter.batch.dataflow import BatchRequest
    from madapter.batch.dataflow import batch_predict as run_batch

    request = BatchRequest(output=output, model=model, split=split, folder=folder, list_file=list_file,
                           top_k=top_k, batch_size=batch_size, actors=actors, use_gpu=use_gpu, actor_cpus=actor_cpus)
    with stage_errors("batch-predict", params):
        result = run_batch(params, request)
    typer.echo(f"{result.output}: {result.videos} rows ({result.errors} errors)")


@app.command("tune")
def tune(
    params_file: ParamsOption = Path("params.yaml"),
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Sweep the branch's hyperparameters (params 'tune' section) with Ray Tune + ASHA; write the best as a preset.

    Not a pipeline stage: every trial is a train run (one Ray worker, tune.max_epochs epochs) logged
    as a child of the sweep's MLflow run.  Interrupted (Ctrl-C: exit code 130), the same command
    resumes it.  Apply the result with ``python -m madapter preset-args <preset> | xargs dvc exp run``.
    """
    params = _params(params_file, preset, set_)
    from madapter.tune.sweep import tune_sweep

    again = f"run the same command again to resume sweep '{params.tune.name}'"
    try:
        with stage_errors("tune", params):
            result = tune_sweep(params)
    except KeyboardInterrupt:  # Ctrl-C: not a failure, the sweep resumes where it stopped
        raise _error_exit(f"interrupted; {again}", 130) from None
    counts = (f"{result.count('completed')} completed, {result.count('stopped_early')} stopped early by ASHA, "
              f"{result.count('error')} failed")
    if not result.completed:
        typer.echo(f"sweep {result.name}: interrupted with {len(result.trials)}/{params.tune.trials} trials started "
                   f"({counts}); {again}", err=True)
        raise typer.Exit(code=130)
    best = result.best
    values = " ".join(f"{k}={json.dumps(v)}" for k, v in best.config.items())
    typer.echo(f"sweep {result.name}: {len(result.trials)} trials ({counts})")
    typer.echo(f"best: trial {best.trial_id}, {params.tune.metric} {best.metric} after epoch {best.epochs}: {values}")
    typer.echo(f"preset: {result.preset}   (apply: python -m madapter preset-args {result.preset} | xargs dvc exp run)")
    typer.echo(f"MLflow: parent run {result.parent_run_id} at {result.tracking_uri}")


@app.command("serve")
def serve_model(
    model: Annotated[str | None, typer.Option("--model", help="models:/<name>@<alias> (followed), models:/<name>/<version> "
                                              "or a checkpoint.pt (default serve.model, else the champion).")] = None,
    params_file: ParamsOption = Path("params.yaml"),
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Serve a registered model (or a checkpoint) behind Ray Serve on HTTP (params 'serve' section).

    POST /predict takes one video (raw body or multipart upload), POST /predict/batch several; GET /readyz
    says when the model is warm, GET / what is served.  Following an alias, a move to a new version takes
    effect without dropping a request.  Ctrl-C stops it.
    """
    params = _params(params_file, preset, set_)
    from madapter.serving.server import block_until_interrupted, start

    with stage_errors("serve", params):
        serving = start(params, model)
    follows = f", following alias {serving.source.alias}" if serving.source.alias else ""
    typer.echo(f"serving {serving.source.uri} (version {serving.version}{follows}) at {serving.url}")
    typer.echo(f"  curl --data-binary @clip.mp4 {serving.url}/predict      (Ctrl-C stops)")
    block_until_interrupted()


# --------------------------------------------------------------------------- entry point
def main() -> None:
    """The entry point of both ``madapter`` (the console script) and ``python -m madapter``.

    One function for both, so the two end the same way on every error.  A ConfigError that
    escapes a command (none should) still ends as its one line and exit code 2, not a traceback.
    """
    try:
        app()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 - last-resort CLI output
        sys.exit(2)
