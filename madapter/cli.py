"""``python -m madapter <stage>``: the one command-line entry point of the pipeline.

Every stage command is a thin shell around ONE library function (``download_dataset``,
``build_index``, ...), the same function the DVC stage, the Prefect task and the tests call.
The command only resolves the configuration: ``params.yaml`` (``--params``), optional preset
files merged over it (``--preset``) and ``-S key=value`` overrides, in that order, validated
once into :class:`madapter.config.Params`.  A bad value stops the command before any work with
one line naming the key and exit code 2.  A stage that fails for a reason outside the code (no
network, a full disk, a missing system tool: :func:`madapter.errors.describe`) ends with one
``error:`` line saying what to do and exit code 1; ``--log-level DEBUG`` adds the traceback.

Stage modules are imported inside each command, so ``check-params`` and ``--help`` stay fast
and a broken optional dependency of one stage does not break the others.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml

from madapter.config import (
    ConfigError,
    Params,
    flatten_keys,
    leaf_of,
    load_params,
    merge_value,
    read_yaml_sections,
)
from madapter.errors import describe
from madapter.stages import STAGES

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="madapter",
    help="M-adapter video recognition pipeline: each command runs one stage with params.yaml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")

ParamsOption = Annotated[
    Path, typer.Option("--params", "-p", help="The params file (default: ./params.yaml).")
]
PresetOption = Annotated[
    list[Path] | None,
    typer.Option("--preset", help="A preset YAML merged over --params (repeatable; later wins)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-S", help="Override one key, e.g. -S train.epochs=2 (YAML value; repeatable)."),
]


# --------------------------------------------------------------------------- configuration
def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["train.epochs=2", "model.levels=[3,7]"]`` into ``{"train.epochs": 2, ...}``.

    Values are parsed as YAML.  Keys are split only as deep as the schema has sections and
    fields (:func:`madapter.config.split_key`), so ``download.checksums.UCF101.rar=<sha256>`` sets
    one entry of the ``download.checksums`` mapping, and a mapping value
    (``download.checksums={UCF101.rar: <sha256>}``) merges into it, as ``dvc exp run -S`` does.
    ``dvc exp run -S`` itself reads Hydra's syntax, not YAML: ``preset-args`` prints that.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"-S {pair!r}: expected KEY=VALUE with a dotted key, e.g. -S train.epochs=2")
        leaf = leaf_of(key)
        if leaf is not None and leaf[0] != key and not leaf[1]:
            raise ConfigError(f"-S {pair!r}: {leaf[0]} is one value, not a mapping; set it whole: -S {leaf[0]}=...")
        try:
            overrides[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise ConfigError(f"-S {pair!r}: the value is not valid YAML") from None
    return overrides


def read_preset(path: Path) -> dict[str, Any]:
    """Read a preset: a partial ``params.yaml`` (same sections, only the keys it changes)."""
    return read_yaml_sections(path, "preset file not found (see presets/ for the available ones)")


def resolve_params(params_file: Path, presets: list[Path] | None, sets: list[str] | None) -> Params:
    """params.yaml, then each preset, then ``-S`` overrides; validated once (ConfigError on error).

    Applied as an ordered list, not one dict, so when two presets both set a mapping
    (``download.checksums``) the entries of both count, as they do through ``dvc exp run``.
    """
    overrides: list[tuple[str, Any]] = []
    for preset in presets or []:
        overrides.extend(flatten_keys(read_preset(preset)).items())
    overrides.extend(parse_overrides(sets).items())
    return load_params(params_file, overrides=overrides)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _run(stage: str, params: Params, fn: Callable[[Params], T]) -> T:
    logger.info("stage %s: start (dataset=%s)", stage, params.dataset.name)
    result = fn(params)
    logger.info("stage %s: done -> %s", stage, result)
    return result


def _config_error(err: ConfigError) -> typer.Exit:
    """Print the one-line configuration error and return the exit code 2 to raise."""
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=2)


def _failure_line(stage: str, params: Params, err: BaseException) -> str | None:
    """The one line for an expected failure of ``stage`` (``None``: a bug, keep the traceback)."""
    line = describe(err)
    if line is not None and isinstance(err, OSError) and not err.filename:
        # a failed write() names no file: say at least where the stage writes
        line = f"{stage}: writing under {params.base.data_dir} or {params.base.outputs_dir}: {line}"
    return line


def _stage_failed(stage: str, params: Params, err: Exception) -> typer.Exit | None:
    """Print ``error: <one line>`` for an expected failure and return exit code 1 to raise.

    The traceback is logged at DEBUG only: the user did not cause the failure, so a wall of
    urllib3 frames hides the one thing they need (the URL or file, what happened, what to do).
    """
    line = _failure_line(stage, params, err)
    if line is None:
        return None
    logger.debug("stage %s failed; traceback:", stage, exc_info=err)
    typer.echo(f"error: {line}", err=True)
    return typer.Exit(code=1)


def _stage_command(stage: str, module: str, function: str, help_text: str) -> None:
    """Register ``python -m madapter <stage>`` calling ``<module>.<function>(params)``."""

    def command(
        params_file: ParamsOption = Path("params.yaml"),
        preset: PresetOption = None,
        set_: SetOption = None,
    ) -> None:
        try:
            params = resolve_params(params_file, preset, set_)
        except ConfigError as err:
            raise _config_error(err) from None
        import importlib

        fn = getattr(importlib.import_module(module), function)
        try:
            _run(stage, params, fn)
        except ConfigError as err:  # a stage may find a bad value only it can check (e.g. a path)
            raise _config_error(err) from None
        except Exception as err:
            exit_ = _stage_failed(stage, params, err)
            if exit_ is None:
                raise  # a bug: the traceback is what a developer needs
            raise exit_ from None

    command.__name__ = f"{stage}_command"
    command.__doc__ = help_text
    app.command(name=stage, help=help_text)(command)


for _stage in STAGES:
    _stage_command(_stage.name, _stage.module, _stage.function, _stage.help)


# --------------------------------------------------------------------------- other commands
@app.callback()
def main(
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
) -> None:
    """M-adapter pipeline CLI."""
    _setup_logging(log_level)


@app.command("check-params")
def check_params(
    params_file: ParamsOption = Path("params.yaml"),
    preset: PresetOption = None,
    set_: SetOption = None,
    show: Annotated[bool, typer.Option("--show", help="Print the fully resolved params as YAML.")] = False,
) -> None:
    """Validate params.yaml (plus presets and -S overrides) without running anything."""
    try:
        params = resolve_params(params_file, preset, set_)
    except ConfigError as err:
        raise _config_error(err) from None
    if show:
        typer.echo(yaml.safe_dump(json.loads(params.model_dump_json()), sort_keys=False))
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
    try:
        resolve_params(params_file, presets, None)
        merged: dict[str, Any] = {}
        for preset in presets:
            for key, value in flatten_keys(read_preset(preset)).items():
                merged[key] = merge_value(merged.get(key), value)
        args = [shlex.quote(f"--set-param={dvc_set_param(key, value)}") for key, value in merged.items()]
    except ConfigError as err:
        raise _config_error(err) from None
    typer.echo(" ".join(args))


# --------------------------------------------------------------------------- dvc exp run -S syntax
# ``dvc exp run -S`` parses each override with Hydra's grammar (dvc/utils/hydra.py), not YAML:
# strings must be quoted (``a,b`` would be a sweep, ``1.0`` a float), mapping keys cannot be quoted
# (so ``: , = ( ) [ ] { }``, spaces and backslashes in them are backslash-escaped), and ``${`` is an
# OmegaConf interpolation unless escaped.
_HYDRA_KEY_SPECIAL = re.compile(r"([\\()\[\]{}:=, \t])")


_HYDRA_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_\-./]*")
"""Strings Hydra reads back as the same string without quotes (``ucf101``, ``vit_b16.openai``)."""
_HYDRA_WORDS = {"null", "true", "false", "inf", "nan"}


def _hydra_string(text: str) -> str:
    """A Hydra string: bare when that is unambiguous, else single-quoted with backslashes that
    precede a quote (or the end) doubled.  Bare keeps ``preset-args`` output readable."""
    if _HYDRA_PLAIN.fullmatch(text) and text.lower() not in _HYDRA_WORDS:
        return text
    body = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    body = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, body)
    return "'" + body.replace("${", "\\${") + "'"


def _hydra_key(key: Any) -> str:
    """A mapping key as Hydra reads it unquoted: its special characters backslash-escaped."""
    return _HYDRA_KEY_SPECIAL.sub(r"\\\1", str(key))


def _hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar (what ``dvc exp run -S`` reads)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _hydra_string(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_hydra_key(k)}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"{value!r}: a {type(value).__name__} value cannot be passed to dvc exp run -S")


def _same(parsed: Any, value: Any) -> bool:
    """Whether Hydra read back exactly ``value`` (types included: ``'1'`` is not ``1``)."""
    if isinstance(value, str):
        return isinstance(parsed, str) and parsed.replace("\\${", "${") == value
    if isinstance(value, dict):
        return (
            isinstance(parsed, dict)
            and [(type(k), k) for k in parsed] == [(type(k), k) for k in value]
            and all(_same(parsed[k], value[k]) for k in value)
        )
    if isinstance(value, list | tuple):
        return isinstance(parsed, list) and len(parsed) == len(value) and all(map(_same, parsed, value))
    if isinstance(value, float) and math.isnan(value):
        return isinstance(parsed, float) and math.isnan(parsed)
    return type(parsed) is type(value) and parsed == value


def dvc_set_param(key: str, value: Any) -> str:
    """``key=value`` for ``dvc exp run --set-param``, checked by parsing it back with DVC's parser.

    A mapping is written ``++key={...}``: Hydra merges it into the mapping in params.yaml and the
    ``++`` lets it add entries params.yaml does not have yet (``--preset`` merges the same way).
    A value Hydra cannot express (a mapping key like ``10`` that it would read as a number, a
    quote in a key, a line break that ``xargs`` would split) is a ConfigError naming the key.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    text = f"{'++' if isinstance(value, dict) else ''}{key}={_hydra_value(value)}"
    try:
        parsed = OverridesParser.create().parse_overrides([text])[0]
        ok = parsed.key_or_group == key and _same(parsed.value(), value)
    except Exception:  # noqa: BLE001 - any parse failure means DVC would reject it too
        ok = False
    if not ok or "\n" in text:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise ConfigError(
            f"{key}: {shown} cannot be written as a 'dvc exp run -S' argument; "
            f"set it in params.yaml instead (or use --preset with python -m madapter)"
        )
    return text


@app.command("predict")
def predict(
    videos: Annotated[list[Path], typer.Argument(help="Video file(s) to classify.")],
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="A checkpoint path or an MLflow model URI (models:/madapter@champion)."),
    ] = "models:/madapter@champion",
    top_k: Annotated[int | None, typer.Option("--top-k", help="Classes to show (default register.top_k).")] = None,
    params_file: ParamsOption = Path("params.yaml"),
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Classify video files with a checkpoint or a registered model; prints one JSON line per video.

    A video that cannot be read is reported on stderr (one line) and the exit code is 1; the
    other videos are still classified.
    """
    try:
        params = resolve_params(params_file, preset, set_)
    except ConfigError as err:
        raise _config_error(err) from None
    from madapter.predict import predict as predict_videos

    try:
        results = predict_videos(videos, model=model, params=params, top_k=top_k or params.register.top_k)
    except ConfigError as err:
        raise _config_error(err) from None
    except Exception as err:  # e.g. a checkpoint that cannot be read: one line, not a traceback
        exit_ = _stage_failed("predict", params, err)
        if exit_ is None:
            raise
        raise exit_ from None
    failed = 0
    for video, result in zip(videos, results, strict=False):
        if isinstance(result, dict) and "error" in result:
            failed += 1
            typer.echo(f"error: {result['error']}", err=True)
            continue
        typer.echo(json.dumps({"video": str(video), "predictions": result}, default=str))
    if failed:
        raise typer.Exit(code=1)


@app.command("batch-predict")
def batch_predict(
    output: Annotated[Path, typer.Option("--output", "-o", help="Predictions file: .parquet or .csv.")],
    split: Annotated[str | None, typer.Option("--split", help="Score an index split of the dataset (train/val/test).")] = None,
    folder: Annotated[Path | None, typer.Option("--folder", help="Score every video under this folder (recursive).")] = None,
    list_file: Annotated[Path | None, typer.Option("--list", help="Score the videos of a text file, one path per line.")] = None,
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="A checkpoint path or an MLflow model URI (models:/madapter@champion)."),
    ] = "models:/madapter@champion",
    top_k: Annotated[int | None, typer.Option("--top-k", help="Classes per video (default register.top_k).")] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Videos per forward pass (default evaluate.batch_size).")
    ] = None,
    actors: Annotated[int, typer.Option("--actors", help="Model actors (each loads the model once).")] = 1,
    use_gpu: Annotated[
        bool | None, typer.Option("--use-gpu/--no-gpu", help="GPU actors (default: when the Ray cluster has GPUs).")
    ] = None,
    actor_cpus: Annotated[int | None, typer.Option("--actor-cpus", help="CPUs per CPU actor.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
    preset: PresetOption = None,
    set_: SetOption = None,
) -> None:
    """Classify many videos on Ray Data (CPU decoding tasks, an actor pool of models); write Parquet or CSV.

    One row per input, in input order: path, top-k labels and scores, and an error for a video
    that cannot be read (the others are still scored; exit code 0).  Uses $RAY_ADDRESS when set.
    """
    try:
        params = resolve_params(params_file, preset, set_)
    except ConfigError as err:
        raise _config_error(err) from None
    from madapter.batch.pipeline import BatchRequest
    from madapter.batch.pipeline import batch_predict as run_batch

    request = BatchRequest(output=output, model=model, split=split, folder=folder, list_file=list_file,
                           top_k=top_k, batch_size=batch_size, actors=actors, use_gpu=use_gpu, actor_cpus=actor_cpus)
    try:
        result = run_batch(params, request)
    except ConfigError as err:
        raise _config_error(err) from None
    except Exception as err:
        exit_ = _stage_failed("batch-predict", params, err)
        if exit_ is None:
            raise
        raise exit_ from None
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
    try:
        params = resolve_params(params_file, preset, set_)
    except ConfigError as err:
        raise _config_error(err) from None
    from madapter.tune.sweep import tune_sweep

    again = f"run the same command again to resume sweep '{params.tune.name}'"
    try:
        result = tune_sweep(params)
    except ConfigError as err:
        raise _config_error(err) from None
    except KeyboardInterrupt:
        typer.echo(f"error: interrupted; {again}", err=True)
        raise typer.Exit(code=130) from None
    except Exception as err:
        exit_ = _stage_failed("tune", params, err)
        if exit_ is None:
            raise
        raise exit_ from None
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


def run() -> None:
    """Console-script / ``python -m`` entry: never show a traceback for a configuration error."""
    try:
        app()
    except ConfigError as err:  # raised outside a command (should not happen, but stays one line)
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 - last-resort CLI output
        sys.exit(2)
