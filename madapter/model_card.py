"""The model card of a registered version: what a person picking a model in the MLflow registry reads.

Markdown, short, in the usual model-card sections (intended use, model, data, training, evaluation,
limits).  The register stage sets it as the version's description and logs it as ``MODEL_CARD.md``
in the logged model's directory (:mod:`madapter.registry`).  Everything on it is read from what the
stages produced -- the checkpoint's model, the training run's params and metrics, evaluate's
``metrics.json`` and the data lineage (:mod:`madapter.lineage`) -- never restated by hand, so the card
cannot drift from the model it describes.  Rendering is pure (:func:`render_card`): unit-testable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from madapter.config import Params
from madapter.lineage import DataLineage

CARD_FILE = "MODEL_CARD.md"
MAX_DESCRIPTION = 5000
"""MLflow's ``model_versions.description`` is ``String(5000)`` (PostgreSQL enforces it)."""
MAX_CLASSES_SHOWN = 30
"""More class names than this are cut (Kinetics has 700): the full list is the run's ``label_map.json``."""
RANDOM_INIT_SENTENCE = "This model demonstrates the pipeline, not transfer learning"
"""Said plainly on every card of a random-init backbone: its accuracy is learned from this data set alone."""
_RUN_METRIC = re.compile(r"^(?P<split>train|val|test)_(?P<protocol>\d+x\d+x\d+)_(?P<metric>top1|top5|mean_class_acc)$")
"""Evaluate's metrics in the training run (``<split>_<protocol>_<metric>``): one set per protocol evaluated."""


@dataclass(frozen=True)
class ModelFacts:
    """The model as its checkpoint rebuilds it."""

    backbone: str
    weights: str
    """One phrase: random init (seed), a weights file (name, sha256), or timm pretrained weights."""
    random_init: bool
    tuning: str
    levels: list[int]
    fusion: str
    temporal: str
    width: int
    trainable: int
    backbone_params: int

    @property
    def backbone_state(self) -> str:
        """``tuning: full`` trains the backbone too; every other mode keeps it frozen."""
        return "fine-tuned" if self.tuning == "full" else "frozen"


@dataclass(frozen=True)
class Recipe:
    """How the run trained: from its MLflow params (what it really used), else the register params."""

    epochs_done: int | None
    epochs: int | None
    lr: str
    batch_size: str
    workers: str
    source: str


@dataclass(frozen=True)
class EvalRow:
    split: str
    protocol: str
    top1: float
    top5: float
    mean_class_acc: float
    videos: int | None
    gate: bool
    """The protocol of ``metrics.json``: the one the registry gate compares."""


def model_facts(model, registered_weights_sha256: str | None) -> ModelFacts:
    """Facts of a rebuilt :class:`~madapter.models.classifier.VideoClassifier` (``registered_weights_sha256``:
    the sha256 of the backbone weights the registered model carries, when it carries any)."""
    from madapter.models.build import count_parameters

    counts = count_parameters(model)
    cfg = model.config
    digest = str(model.backbone.weights_digest or "")
    return ModelFacts(
        backbone=model.backbone.name,
        weights=_weights_phrase(digest, cfg, registered_weights_sha256),
        random_init=digest.startswith("random-init"),
        tuning=model.tuning,
        levels=list(model.backbone.level_indices),
        fusion=cfg.fusion,
        temporal=cfg.temporal,
        width=cfg.width,
        trainable=counts["trainable"],
        backbone_params=counts["backbone"],
    )


def _weights_phrase(digest: str, cfg, registered_sha256: str | None) -> str:
    if digest.startswith("random-init"):
        return f"random init (seed {cfg.init_seed}), no pretrained weights"
    if digest.startswith("sha256:"):
        return f"weights file `{cfg.weights_file.name if cfg.weights_file else '?'}` (sha256 `{digest[7:]}`)"
    phrase = f"timm pretrained weights `{digest.removeprefix('timm:')}`"
    if registered_sha256:
        phrase += f"; the registered copy's sha256 is `{registered_sha256}`"
    return phrase


def recipe(run: dict[str, Any], run_params: dict[str, str], params: Params) -> Recipe:
    """``run``: train's ``run.json``; ``run_params``: the training run's MLflow params (``train.lr`` ...)."""
    def value(key: str, default: Any) -> str:
        return str(run_params.get(f"train.{key}", default))

    cfg = params.train
    return Recipe(run.get("epochs_done"), run.get("epochs"), value("lr", cfg.lr), value("batch_size", cfg.batch_size),
                  value("num_workers", cfg.num_workers), value("source", cfg.source))


def evaluation_rows(evaluation: dict[str, Any], run_metrics: dict[str, float]) -> list[EvalRow]:
    """The gate's protocol (``metrics.json``) first, then every other protocol evaluate logged into the run.

    The number of videos is ``metrics.json``'s for its split (evaluate scores every video of a split,
    whatever the protocol); ``None`` for a split it does not describe.
    """
    rows = [EvalRow(evaluation["split"], evaluation["protocol"], evaluation["top1"], evaluation["top5"],
                    evaluation["mean_class_acc"], evaluation.get("num_videos"), gate=True)]
    found: dict[tuple[str, str], dict[str, float]] = {}
    for key, number in run_metrics.items():
        if (match := _RUN_METRIC.match(key)) is not None:
            found.setdefault((match["split"], match["protocol"]), {})[match["metric"]] = number
    for (split, protocol), numbers in sorted(found.items()):
        if (split, protocol) == (rows[0].split, rows[0].protocol) or len(numbers) < 3:
            continue
        videos = rows[0].videos if split == rows[0].split else None
        rows.append(EvalRow(split, protocol, numbers["top1"], numbers["top5"], numbers["mean_class_acc"], videos,
                            gate=False))
    return rows


def render_card(name: str, version: str, model: ModelFacts, trained: Recipe, rows: list[EvalRow],
                data: DataLineage, top_k: int, incomplete: str | None = None) -> str:
    """The card's markdown."""
    sections = [
        f"# {name} version {version}",
        f"Video action classifier: `{model.tuning}` tuning of a {model.backbone_state} `{model.backbone}` image "
        f"backbone, trained on `{data.dataset}`.",
        "## Intended use",
        *_intended_use(model, data, rows[0], top_k),
        "## Model",
        _model_lines(model),
        "## Data",
        _data_lines(data),
        "## Training",
        _training_line(trained),
        "## Evaluation",
        _evaluation_table(rows),
        "## Limits",
        _limits(model, data, rows[0], incomplete),
    ]
    return "\n\n".join(sections) + "\n"


def as_description(card: str, limit: int = MAX_DESCRIPTION) -> str:
    """The card as a version description: whole when it fits MLflow's column, else cut at a line with a
    pointer to the whole card in the model's directory."""
    if len(card) <= limit:
        return card
    note = f"\n\n(cut here: the whole card is `{CARD_FILE}` in the model's artifacts)\n"
    return card[: card.rfind("\n", 0, limit - len(note))] + note


def _intended_use(model: ModelFacts, data: DataLineage, gate: EvalRow, top_k: int) -> list[str]:
    lines = [
        f"Classifies a short video into one of the {len(data.classes)} classes of `{data.dataset}`: "
        f"{_class_list(data.classes)}.",
        f"Input: one video per row, as a file path (`video`) or its bytes (`video_bytes`); output: the top-{top_k} "
        f"labels with their scores, or a one-line `error` for a video that cannot be read.  Each video is scored "
        f"as in the evaluation: protocol `{gate.protocol}` (frames x clips x crops).",
    ]
    if model.random_init:
        lines.append(f"**{RANDOM_INIT_SENTENCE}**: its backbone's weights are random, so everything it knows "
                     f"was learned from the {data.videos.get('train', 0)} training videos of `{data.dataset}`.")
    return lines


def _class_list(classes: list[str]) -> str:
    shown = ", ".join(f"`{c}`" for c in classes[:MAX_CLASSES_SHOWN])
    more = len(classes) - MAX_CLASSES_SHOWN
    return f"{shown} and {more} more (the run's `label_map.json`)" if more > 0 else shown


def _model_lines(model: ModelFacts) -> str:
    levels = ", ".join(str(i) for i in model.levels)
    return "\n".join([
        f"- Backbone: `{model.backbone}`, {model.backbone_state}; {model.weights}; {model.backbone_params:,} parameters",
        f"- Branch: `{model.tuning}` on blocks {levels}; fusion `{model.fusion}`, temporal `{model.temporal}`, "
        f"width {model.width}; {model.trainable:,} trainable parameters",
    ])


def _data_lines(data: DataLineage) -> str:
    counts = " / ".join(f"{n:,} {split}" for split, n in data.videos.items())
    lines = [
        f"- Dataset `{data.dataset}`: {counts} videos, {len(data.classes)} classes",
        f"- Source: {data.origin}",
        f"- Data hash: `{data.digest}`: {data.digest_of}",
    ]
    if data.dvc_hashes:
        lines.append("- Every data directory the train stage read (dvc.lock):")
        lines += [f"  - `{path}`: `{md5}`" for path, md5 in sorted(data.dvc_hashes.items())]
    return "\n".join(lines)


def _training_line(trained: Recipe) -> str:
    epochs = f"{trained.epochs_done}/{trained.epochs}" if trained.epochs is not None else "?"
    return (f"{epochs} epochs, lr {trained.lr}, batch {trained.batch_size} per worker x {trained.workers} worker(s), "
            f"on `train.source: {trained.source}`"
            + (" (the backbone's outputs cached once, the branch trained on them)" if trained.source == "features"
               else ""))


def _evaluation_table(rows: list[EvalRow]) -> str:
    lines = ["| split | protocol | videos | top-1 | top-5 | mean class acc |", "|---|---|---|---|---|---|"]
    for r in rows:
        protocol = f"{r.protocol} (registry gate)" if r.gate else r.protocol
        videos = str(r.videos) if r.videos is not None else "-"
        lines.append(f"| {r.split} | {protocol} | {videos} | {r.top1:.3f} | {r.top5:.3f} | {r.mean_class_acc:.3f} |")
    return "\n".join(lines)


def _limits(model: ModelFacts, data: DataLineage, gate: EvalRow, incomplete: str | None) -> str:
    lines = [f"- A closed set: any other action is still given one of these {len(data.classes)} labels."]
    if gate.videos:
        error = math.sqrt(max(gate.top1 * (1 - gate.top1), 0.0) / gate.videos)
        lines.append(f"- Measured on {gate.videos} {gate.split} videos: top-1 {gate.top1:.3f} +/- {error:.3f} "
                     "(one standard error).")
    if data.dataset == "synthetic":
        lines.append("- Synthetic videos (moving shapes generated by madapter), not recordings of people: the "
                     "numbers say nothing about real video.")
    if model.random_init:
        lines.append("- Random-init backbone: no transfer from pretraining is shown here; use pretrained weights "
                     "(`model.pretrained` or `model.weights_file`) for that.")
    if incomplete:
        lines.append(f"- Incomplete training run ({incomplete}): never promoted to champion.")
    return "\n".join(lines)
