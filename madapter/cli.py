"""``python -m madapter <stage>``: the one command-line entry point of the pipeline.

Every stage command is a thin shell around ONE library function (``download_dataset``,
``build_index``, ...), the same function the DVC stage, the Prefect task and the tests call.
The command only resolves the configuration: ``params.yaml`` (``--params``), optional preset
files merged over it (``--preset``) and ``-S key=value`` overrides, in that order, validated
once into :class:`madapter.config.Params`.  A bad value stops the command before any work with
one line naming the key and exit code 2.

Stage modules are imported inside each command, so ``check-params`` and ``--help`` stay fast
and a broken optional dependency of one stage does not break the others.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml

from madapter.config import ConfigError, Params, flatten_keys, load_params, read_yaml_sections

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

    Values are parsed as YAML, exactly like ``dvc exp run -S``, so the same strings work in
    both places.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-S {pair!r}: expected KEY=VALUE with a dotted key, e.g. -S train.epochs=2")
        try:
            overrides[key.strip()] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            raise ConfigError(f"-S {pair!r}: the value is not valid YAML") from None
    return overrides


def read_preset(path: Path) -> dict[str, Any]:
    """Read a preset: a partial ``params.yaml`` (same sections, only the keys it changes)."""
    return read_yaml_sections(path, "preset file not found (see presets/ for the available ones)")


def resolve_params(params_file: Path, presets: list[Path] | None, sets: list[str] | None) -> Params:
    """params.yaml, then each preset, then ``-S`` overrides; validated once (ConfigError on error)."""
    overrides: dict[str, Any] = {}
    for preset in presets or []:
        overrides.update(flatten_keys(read_preset(preset)))
    overrides.update(parse_overrides(sets))
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

    command.__name__ = f"{stage}_command"
    command.__doc__ = help_text
    app.command(name=stage, help=help_text)(command)


STAGES: tuple[tuple[str, str, str, str], ...] = (
    ("download", "madapter.data.download", "download_dataset",
     "Download (or, for 'synthetic', generate) the dataset into data/raw/<ds>."),
    ("index", "madapter.data.index", "build_index",
     "Write the train/val/test CSV index and classes.txt into data/index/<ds>."),
    ("scan", "madapter.data.scan", "scan_videos",
     "Check every indexed video decodes; write quarantine.csv and report.json."),
    ("decode", "madapter.data.decode", "decode_dataset",
     "Decode every good video to a fixed frame grid in sharded .npy files."),
    ("train", "madapter.train", "train",
     "Train the adapter with Ray Train; log to MLflow; write outputs/train."),
    ("evaluate", "madapter.evaluate", "evaluate",
     "Evaluate the trained checkpoint (clips x crops views); write metrics.json and plots."),
    ("register", "madapter.registry", "register",
     "Register the evaluated model in MLflow; promote to 'champion' if it beats the current one."),
)
"""(command, module, function, help) of every pipeline stage, in pipeline order."""

for _stage, _module, _function, _help in STAGES:
    _stage_command(_stage, _module, _function, _help)


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
    Usage: ``python -m madapter preset-args presets/ucf101.yaml | xargs dvc exp run``.
    """
    try:
        resolve_params(params_file, presets, None)
        merged: dict[str, Any] = {}
        for preset in presets:
            merged.update(flatten_keys(read_preset(preset)))
    except ConfigError as err:
        raise _config_error(err) from None
    args = []
    for key, value in merged.items():
        rendered = json.dumps(value) if not isinstance(value, str) else value
        args.append(shlex.quote(f"--set-param={key}={rendered}"))
    typer.echo(" ".join(args))


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
    failed = 0
    for video, result in zip(videos, results, strict=False):
        if isinstance(result, dict) and "error" in result:
            failed += 1
            typer.echo(f"error: {result['error']}", err=True)
            continue
        typer.echo(json.dumps({"video": str(video), "predictions": result}, default=str))
    if failed:
        raise typer.Exit(code=1)


def run() -> None:
    """Console-script / ``python -m`` entry: never show a traceback for a configuration error."""
    try:
        app()
    except ConfigError as err:  # raised outside a command (should not happen, but stays one line)
        print(f"error: {err}", file=sys.stderr)  # noqa: T201 - last-resort CLI output
        sys.exit(2)
