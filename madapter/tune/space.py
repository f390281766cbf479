"""The search space: ``tune.space`` as Ray Tune's ``param_space``, keyed by the params keys it sets.

The keys of a trial's config are dotted params keys (``train.lr``, ``model.width``), so the
config IS the trial's overrides (:func:`madapter.config.apply_override` takes it as it is),
Tune's progress table names the real keys, and the best preset is the config regrouped into
sections.  A space entry left empty is not searched: the params' value stays.
"""

from __future__ import annotations

from typing import Any

from madapter.config import ConfigError, Params, TuneSpaceSection

SEARCHED: dict[str, str] = {
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "width": "model.width",
    "levels": "model.levels",
    "temporal": "model.temporal",
    "fusion": "model.fusion",
}
"""``tune.space`` field -> the params key it searches."""

RANGES = {"lr": "loguniform", "weight_decay": "uniform"}
"""Fields given as ``[low, high]`` and how they are sampled; every other field is a choice."""


def describe_space(space: TuneSpaceSection) -> dict[str, str]:
    """``{"train.lr": "loguniform(0.0001, 0.01)", "model.width": "choice([64, 128])", ...}``: what
    is searched, as the parent MLflow run records it."""
    found = {}
    for field, key in SEARCHED.items():
        values = getattr(space, field)
        if values:
            kind = RANGES.get(field, "choice")
            found[key] = f"{kind}({values[0]}, {values[1]})" if field in RANGES else f"{kind}({list(values)})"
    return found


def param_space(space: TuneSpaceSection) -> dict[str, Any]:
    """Ray Tune's ``param_space`` for ``space``: a sampler per searched key."""
    from ray import tune

    samplers = {"loguniform": tune.loguniform, "uniform": tune.uniform}
    found: dict[str, Any] = {}
    for field, key in SEARCHED.items():
        values = getattr(space, field)
        if not values:
            continue
        if field in RANGES:
            found[key] = samplers[RANGES[field]](float(values[0]), float(values[1]))
        else:
            found[key] = tune.choice([list(v) if isinstance(v, list) else v for v in values])
    return found


def check_space(params: Params) -> None:
    """Refuse, before anything starts, a space that searches nothing or cannot be trained.

    ``model.levels`` decides which backbone outputs the ``features`` stage stored, so with
    ``train.source: features`` every trial must use the levels the features were computed for.
    """
    space = params.tune.space
    if not describe_space(space):
        raise ConfigError("tune.space: every entry is [], so there is nothing to search; give at least one "
                          "(e.g. tune.space.lr: [0.0001, 0.01])")
    if space.levels and params.train.source == "features":
        raise ConfigError("tune.space.levels: the cached features hold the outputs of model.levels alone, so "
                          "train.source: features cannot search them; set tune.space.levels: [] or "
                          "train.source: frames")


def plain(value: Any) -> Any:
    """A sampled value as plain YAML/JSON data (Tune may hand back numpy scalars)."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value
