"""The pre-trained image model (PIM): any timm model with ``forward_intermediates``.

The backbone is a plain timm model wrapped so that it returns, per frame, the feature maps of
the requested levels (as ``NCHW`` grids, prefix tokens removed) and the model's own pooled
final feature (the CLS token for ViTs, global average for CNNs).  Whether it is *frozen* is
decided by the classifier that owns it (see :mod:`madapter.models.classifier`); this module
only builds it and loads its weights.

Weights come from (a) timm's pretrained tag when online, (b) a local file (safetensors, a
``.pth``/``.bin`` read with ``weights_only=True``, or a TorchScript archive such as OpenAI's
original CLIP ``.pt`` files, see :func:`read_state_dict`), or (c) a seeded random init for the
offline demo.  A file that does not fit the architecture fails with one clear line, and a file
that fits logs how many tensors matched -- silently unloaded weights are the classic cause of
"cannot reproduce" reports.  BatchNorm's ``num_batches_tracked`` counters are the one thing a
file may lack (TF ports and older torchvision files have none): the model keeps its own.
"""

from __future__ import annotations

import logging
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from madapter.errors import first_line
from madapter.fileio import file_digest

logger = logging.getLogger(__name__)

DEFAULT_NUM_LEVELS = 4


class WeightsError(ValueError):
    """A weights file that cannot be used with the requested architecture."""


@dataclass(frozen=True)
class LevelInfo:
    """What one tapped level looks like: its block index and channel count."""

    index: int
    channels: int


def default_levels(depth: int, num_levels: int = DEFAULT_NUM_LEVELS) -> list[int]:
    """``num_levels`` evenly spaced block indices over ``depth`` blocks, the last one included.

    ViT-B (12 blocks) -> ``[2, 5, 8, 11]``; a ResNet (5 feature stages) -> ``[0, 2, 3, 4]``.
    """
    n = min(num_levels, depth)
    return sorted({depth - 1 - round(i * depth / n) for i in range(n)})


def resolve_levels(levels: list[int] | None, depth: int) -> list[int]:
    """Normalise user level indices (negative allowed) and check them against ``depth``."""
    if levels is None:
        return default_levels(depth)
    resolved = []
    for idx in levels:
        if not -depth <= idx < depth:
            raise ValueError(f"model.levels: block index {idx} is out of range for a backbone with {depth} levels")
        resolved.append(idx % depth)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"model.levels: duplicate block indices in {levels}")
    return sorted(resolved)


OPTIONAL_SUFFIX = "num_batches_tracked"
"""The one kind of state-dict entry a weights file may lack: BatchNorm's step counter (used only
when ``momentum=None``; ``load_state_dict`` itself tolerates its absence).  The model keeps its own."""

CONVERT_HINT = "torch.save(torch.jit.load(f, map_location='cpu').state_dict(), 'weights.pth')"


def _first_line(err: Exception) -> str:
    return f"{type(err).__name__}: {first_line(err)}" if str(err).strip() else type(err).__name__


def is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a zip whose top folder holds
    ``constants.pkl`` or ``code/``.  A ``torch.save`` zip has neither."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.partition("/")[2] == "constants.pkl" or n.partition("/")[2].startswith("code/") for n in names)


def read_torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of a TorchScript archive (e.g. OpenAI's original CLIP ``.pt`` files).

    Why this is acceptable where ``torch.load(weights_only=False)`` is not: ``torch.jit.load``
    unpickles the archive with TorchScript's own restricted unpickler (tensors, primitive values
    and TorchScript-compiled classes only -- it imports and calls no Python object named in the
    file) and compiles its ``code/`` as TorchScript, not Python.  None of the archive's methods is
    run here: only its parameters and buffers are read, then it is discarded.  (It is still a large
    C++ parser, less hardened than safetensors: for files of unknown origin, convert them once.)
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit is deprecated": we only read tensors
            module = torch.jit.load(str(path), map_location="cpu")
        return dict(module.state_dict())
    except Exception as err:  # noqa: BLE001 - any loader error becomes one clear line
        raise WeightsError(
            f"model.weights_file: {path} is a TorchScript archive that could not be loaded ({_first_line(err)}); "
            f"convert it to a state dict where it loads: {CONVERT_HINT}"
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a weights file safely: safetensors, torch pickle with ``weights_only=True``, or a
    TorchScript archive through ``torch.jit.load`` (see :func:`read_torchscript_state_dict`)."""
    if not path.is_file():
        raise WeightsError(f"model.weights_file: {path} does not exist")
    if path.suffix != ".safetensors" and is_torchscript_archive(path):
        state = read_torchscript_state_dict(path)
    else:
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any reader error becomes one clear line
            raise WeightsError(f"model.weights_file: {path} could not be read ({_first_line(err)})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise WeightsError(f"model.weights_file: {path} holds a {type(state).__name__}, not a state dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def load_weights_file(model: nn.Module, path: Path) -> dict[str, int]:
    """Load a local weights file into a timm model; return matched/missing/unexpected/kept counts.

    The model's own timm ``checkpoint_filter_fn`` (if its family has one) is applied first, so
    an original checkpoint (e.g. a CLIP/OpenAI ViT) is remapped and position embeddings are
    resampled to the chosen image size exactly as ``pretrained=True`` would.  Classifier-head
    tensors are ignored (the backbone is built with ``num_classes=0``).  Every parameter and
    persistent buffer must be in the file, except BatchNorm's ``num_batches_tracked`` counters:
    those the file lacks keep the model's value (``kept``).
    """
    state = read_state_dict(path)
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as err:  # noqa: BLE001
            raise WeightsError(
                f"model.weights_file: {path} does not fit backbone {type(model).__name__} "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
            ) from None
    own = model.state_dict()
    classifier = str(getattr(model, "pretrained_cfg", {}).get("classifier") or "head")  # timm names its head
    head_names = {f"{name}.{kind}" for name in (classifier, "head", "fc", "head.fc") for kind in ("weight", "bias")}
    unexpected = [k for k in state if k not in own and k not in head_names]
    required = [k for k in own if k.rpartition(".")[2] != OPTIONAL_SUFFIX]
    missing = [k for k in required if k not in state]
    kept = [k for k in own if k not in state and k not in missing]
    wrong_shape = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong_shape:
        k = wrong_shape[0]
        raise WeightsError(
            f"model.weights_file: {path} does not fit the backbone: {len(wrong_shape)} tensors have other shapes "
            f"(e.g. {k}: file {list(state[k].shape)} vs model {list(own[k].shape)}); check model.backbone"
        )
    if missing:
        raise WeightsError(
            f"model.weights_file: {path} does not fit the backbone: {len(missing)} of {len(required)} tensors are "
            f"missing (e.g. {missing[0]}); check model.backbone"
        )
    model.load_state_dict({k: state[k] if k in state else own[k] for k in own}, strict=True)
    matched = len(own) - len(kept)
    counts = {"matched": matched, "missing": 0, "unexpected": len(unexpected), "kept": len(kept)}
    logger.info(
        "loaded backbone weights from %s: matched=%d missing=0 unexpected=%d%s",
        path,
        matched,
        len(unexpected),
        f" kept={len(kept)} {OPTIONAL_SUFFIX} from the model" if kept else "",
    )
    if unexpected:
        logger.warning("weights file %s has %d tensors the backbone does not use (e.g. %s)", path, len(unexpected), unexpected[0])
    return counts


class Backbone(nn.Module):
    """A timm image model that returns multi-level feature grids and its pooled final feature.

    Args:
        name: timm model name (``vit_base_patch16_clip_224.openai``, ``resnet50``, ...).
        levels: block indices to tap (``None``: 4 evenly spaced, last included).
        img_size: input resolution for models that accept it (ViTs); ``None`` keeps the default.
        pretrained: load timm's pretrained weights (needs a model hub; not available offline).
        weights_file: local weights file; takes precedence over ``pretrained``.
        init_seed: seed of the random init, so a random-init backbone rebuilds bit-identically
            from a checkpoint (only the branch is stored there).
    """

    def __init__(
        self,
        name: str,
        levels: list[int] | None = None,
        img_size: int | None = None,
        pretrained: bool = False,
        weights_file: Path | None = None,
        init_seed: int = 0,
    ) -> None:
        super().__init__()
        self.name = name
        kwargs: dict = {"num_classes": 0}
        if img_size is not None and name.startswith(("vit", "eva", "deit", "beit", "flexivit")):
            kwargs["img_size"] = img_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            try:
                self.model = timm.create_model(name, pretrained=pretrained and weights_file is None, **kwargs)
            except RuntimeError as err:
                if "Unknown model" in str(err):
                    raise ValueError(f"model.backbone: unknown timm model '{name}' (see timm.list_models())") from None
                raise
        if not hasattr(self.model, "forward_intermediates"):
            raise ValueError(f"model.backbone: timm model '{name}' has no forward_intermediates; pick another")

        if weights_file is not None:
            load_weights_file(self.model, Path(weights_file))
            self.weights_digest = f"sha256:{file_digest(Path(weights_file))}"  # streamed: gigabytes
        elif pretrained:
            tag = getattr(self.model, "pretrained_cfg", {}).get("tag") or "default"
            self.weights_digest = f"timm:{name}.{tag}"
        else:
            logger.warning(
                "backbone %s uses RANDOM weights (seed %d): fine for the offline demo and tests, "
                "meaningless for real accuracy -- set model.pretrained or model.weights_file",
                name,
                init_seed,
            )
            self.weights_digest = f"random-init:seed={init_seed}"

        self.depth = len(self.model.feature_info)
        self.level_indices = resolve_levels(levels, self.depth)
        self.levels = [LevelInfo(i, int(self.model.feature_info[i]["num_chs"])) for i in self.level_indices]
        self.num_features = int(self.model.num_features)

        patch_embed = getattr(self.model, "patch_embed", None)
        self.token_grid: tuple[int, int] | None = (
            tuple(patch_embed.grid_size) if patch_embed is not None and hasattr(patch_embed, "grid_size") else None
        )
        """ViT-style models: the patch grid their NLC token outputs fold into; ``None`` for CNNs."""

        data_cfg = timm.data.resolve_model_data_config(self.model)
        size = img_size or data_cfg["input_size"][-1]
        self.data_config = {
            "mean": tuple(float(v) for v in data_cfg["mean"]),
            "std": tuple(float(v) for v in data_cfg["std"]),
            "input_size": (3, int(size), int(size)),
        }

    def no_weight_decay(self) -> set[str]:
        """The timm model's own no-decay names (position embeddings, class tokens), for ``full`` tuning."""
        own = getattr(self.model, "no_weight_decay", None)
        return {f"model.{name}" for name in own()} if callable(own) else set()

    def forward(self, x: torch.Tensor, with_levels: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``x`` [N,3,H,W] -> (channels-last level grids [N,H_l,W_l,C_l], pooled final feature [N,D]).

        Channels-last is what the branch's LayerNorm/Linear consume: for ViTs it is a free view
        of the token sequence (no NCHW round trip), for CNNs a permuted view of the feature map.
        """
        if not with_levels:
            final = self.model.forward_features(x)
            return [], self.model.forward_head(final, pre_logits=True)
        if self.token_grid is not None:
            final, tokens = self.model.forward_intermediates(x, indices=self.level_indices, output_fmt="NLC")
            levels = [t.unflatten(1, self.token_grid) for t in tokens]
        else:
            final, maps = self.model.forward_intermediates(x, indices=self.level_indices, output_fmt="NCHW")
            levels = [m.permute(0, 2, 3, 1) for m in maps]
        return levels, self.model.forward_head(final, pre_logits=True)
