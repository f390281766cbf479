"""Params that shape the evaluation protocol and training jitter: what the presets name is what runs."""

from __future__ import annotations

import pytest

from madapter.config import ConfigError, load_params
from madapter.overrides import resolve_params
from tests.common.processes import REPO

PRESETS = sorted((REPO / "presets").glob("*.yaml"))


def test_a_stored_grid_no_longer_than_the_clip_is_refused_naming_both_keys() -> None:
    with pytest.raises(ConfigError) as err:
        load_params(REPO / "params.yaml", {"decode.frames_per_video": 8, "model.num_frames": 8})
    message = str(err.value)
    assert "\n" not in message
    assert "decode.frames_per_video (8)" in message and "model.num_frames (8)" in message


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_every_preset_leaves_room_for_temporal_jitter_and_runs_the_gpu_precision_switches(preset) -> None:
    params = resolve_params(REPO / "params.yaml", [preset], None)
    assert params.decode.frames_per_video >= 2 * params.model.num_frames
    if params.train.use_gpu:
        assert params.model.half_precision and params.train.amp == "bf16"
        assert params.evaluate.device == "auto"
    # the protocol its comment names (frames x clips x crops) is the one the params run
    named = [line for line in preset.read_text().splitlines() if "protocol" in line.lower() and "x" in line]
    expected = f"{params.model.num_frames}x{params.evaluate.clips}x{params.evaluate.crops}"
    assert named and all(expected in line for line in named if any(ch.isdigit() for ch in line)), named
