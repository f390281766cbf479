"""What one extraction actor does: build the views of a few videos and run the frozen backbone on them.

:class:`BackboneExtractor` is the callable class the features stage hands to Ray Data's
``map_batches``: Ray builds it once per actor (the backbone is loaded once, not per batch) and
calls it with work items, each a run of consecutive videos of one split.  For every video it
builds exactly the views the frames path would see:

- ``train``: view ``v`` is ``ClipDataset(store, train=True, seed=base.seed)`` item ``i`` at
  ``set_epoch(v)`` -- the temporal jitter and random crop of training epoch ``v``;
- ``val`` / ``test``: the evaluation protocol's ``clips x crops`` views of the SOURCE video
  (:func:`madapter.data.clips.load_video_views`), in the order it returns them;

runs ``model.extract`` on them (``no_grad``; ``model.half_precision`` on CUDA) in batches of
``features.batch_size`` clips and returns numpy arrays in the stored dtype, one row per view:
exactly what ``extract`` gives, so level grids are already pooled when ``model.level_pool`` is set
(the model pools them, so the model rebuilt for predict and serving sees the same grids).  The stored
values do not depend on how items are batched: each clip goes through the backbone on its own
(``model.backbone_chunk`` whole clips per call) and the work items are cut by the driver, not by Ray.

Every row also says where and in what precision the actor ran the backbone (:data:`DEVICE_COLUMN`,
:data:`PRECISION_COLUMN`): the driver records them in ``features.json`` (``computed_on``), because
the cache key only says what was ASKED for.  An actor asked for a GPU (``features.use_gpu``) that
torch cannot see refuses in one line instead of running on the CPU under a key that says GPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madapter.config import Params, params_from_dict
from madapter.errors import StageError
from madapter.models.precision import backbone_precision

logger = logging.getLogger(__name__)

TRAIN = "train"
DEVICE_COLUMN = "backbone_device"
PRECISION_COLUMN = "backbone_precision"
"""Per-row columns of an actor's output: the device type (``cpu``/``cuda``) and the precision
(``fp32``/``bf16``/``fp16``) the backbone computed the row in."""


def no_cuda_line(where: str) -> str:
    """The one-line refusal of ``features.use_gpu: true`` where torch sees no CUDA (``where``: "on this
    machine", "in this Ray actor"), with the GPU torch cannot use named when there is one."""
    from madapter.gpu_diagnosis import cuda_refusal

    return cuda_refusal("features.use_gpu: true", where,
                        "set features.use_gpu: false, or run where torch can use a GPU")


def extraction_device(use_gpu: bool) -> torch.device:
    """``cuda`` for ``features.use_gpu`` (a :class:`StageError` line if torch cannot use it), else ``cpu``.

    Never a silent fallback: the features would be computed on the CPU in fp32 while the cache key
    says GPU (and half precision), and every run trained on them would inherit the mismatch.
    """
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise StageError(no_cuda_line("in this Ray actor"))
    return torch.device("cuda")


@dataclass(frozen=True)
class VideoJob:
    """One video to extract: its store/index path, label, and for evaluation views its source file."""

    path: str
    label: int
    label_name: str
    source: str = ""
    """Absolute path of the source video (evaluation splits); empty for ``train`` (read from the frame store)."""
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Plan:
    """Every video of every split in the order they are stored, and the views each split stores per video."""

    frames: str
    """Absolute path of the frame store."""
    jobs: dict[str, list[VideoJob]] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)

    @property
    def total_views(self) -> int:
        return sum(len(jobs) * self.views[split] for split, jobs in self.jobs.items())


def build_frozen_model(params: Params, num_classes: int, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The model of ``params.model`` in eval mode on ``device`` (its backbone is what ``extract`` runs)."""
    from madapter.models.build import build_model

    return build_model(params.model, max(1, num_classes)).eval().to(device)


class BackboneExtractor:
    """Ray Data callable class: work items ``{split, first, count}`` -> one row per view with the features.

    ``augment_train=False`` makes every training view the centred clip and centre crop, as validation
    takes it: the stage never does that, the frame-sampling ablation in ``benchmarks/`` does.
    """

    def __init__(self, params: dict[str, Any], plan: Plan, num_classes: int, threads: int,
                 augment_train: bool = True) -> None:
        torch.set_num_threads(max(1, threads))
        self.params = params_from_dict(params, "features")
        self.plan = plan
        cfg = self.params.features
        self.device = extraction_device(cfg.use_gpu)
        self.model = build_frozen_model(self.params, num_classes, self.device)
        # what model.extract computes in here (model.half_precision applies on CUDA only): reported per row
        self.precision = backbone_precision(self.model.half_precision, self.device)
        self.dtype = torch.float16 if cfg.dtype == "float16" else torch.float32
        self._train = self._train_clips(augment_train) if plan.jobs.get(TRAIN) else None
        from madapter.data.clips import ViewProtocol

        self.protocol = ViewProtocol.from_params(self.params, self.model.data_config)

    def _train_clips(self, augment: bool):
        from madapter.data.clips import ClipDataset
        from madapter.data.store.frame_store import FrameStore

        dc = self.model.data_config
        return ClipDataset(FrameStore(Path(self.plan.frames), TRAIN), num_frames=self.params.model.num_frames,
                           train=augment, mean=dc["mean"], std=dc["std"], crop_size=int(dc["input_size"][-1]),
                           seed=self.params.base.seed)

    def views(self, split: str, index: int) -> torch.Tensor:
        """``[V, T, 3, S, S]`` normalised views of video ``index`` of ``split`` (see the module docstring)."""
        if split == TRAIN:
            clips = []
            for view in range(self.plan.views[TRAIN]):
                self._train.set_epoch(view)
                clips.append(self._train[index][0])
            return torch.stack(clips)
        from madapter.data.clips import load_video_views

        job = self.plan.jobs[split][index]
        return load_video_views(Path(job.source), self.protocol, job.start, job.end, self.params.decode.backend).tensor

    def features(self, clips: torch.Tensor) -> tuple[list[np.ndarray], np.ndarray]:
        """Backbone outputs of ``clips`` ``[N, T, 3, S, S]``: per-level ``[N, T, h, w, C]`` and pooled ``[N, T, D]``."""
        levels: list[list[np.ndarray]] = []
        pooled: list[np.ndarray] = []
        for chunk in clips.split(self.params.features.batch_size):
            out = self.model.extract(chunk.to(self.device))
            levels.append([g.to(self.dtype).cpu().numpy() for g in out.levels])
            pooled.append(out.pooled.to(self.dtype).cpu().numpy())
        per_level = [np.concatenate(parts) for parts in zip(*levels, strict=True)]
        return per_level, np.concatenate(pooled)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys: list[tuple[str, int, int]] = []
        clips: list[torch.Tensor] = []
        for split, first, count in zip(batch["split"], batch["first"], batch["count"], strict=True):
            for index in range(int(first), int(first) + int(count)):
                views = self.views(str(split), index)
                clips.append(views)
                keys.extend((str(split), index, v) for v in range(len(views)))
        levels, pooled = self.features(torch.cat(clips))
        out = {"split": np.array([k[0] for k in keys]), "video": np.array([k[1] for k in keys], dtype=np.int64),
               "view": np.array([k[2] for k in keys], dtype=np.int64), "pooled": pooled,
               DEVICE_COLUMN: np.array([self.device.type] * len(keys)),
               PRECISION_COLUMN: np.array([self.precision] * len(keys))}
        out.update({f"level{k}": arr for k, arr in enumerate(levels)})
        return out
