"""The appearance-only synthetic set (``dataset.synthetic.task: appearance``): deterministic, and its
classes are told apart by how things look while motion and direction carry no class information.

Why it matters: the accuracy benchmark uses it as the control where frame order is useless, so a
class-dependent motion (or a look that does not depend on the class) would make the control lie.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from madapter.config import ConfigError, SyntheticSection, params_from_dict
from madapter.data.acquire.synthetic import (
    APPEARANCE_CLASSES,
    CATALOGUE,
    appearance_draw,
    generate_synthetic,
    render_appearance_video,
)

SMALL = SyntheticSection(task="appearance", classes=2, videos_per_class=3, num_frames=4, size=32)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_parameters_write_the_same_bytes(tmp_path: Path) -> None:
    first = _digests(generate_synthetic(tmp_path / "a", SMALL, seed=3))
    second = _digests(generate_synthetic(tmp_path / "b", SMALL, seed=3))
    assert first == second
    assert (tmp_path / "a" / "classes.txt").read_text().split() == ["ell_red", "tee_green"]
    assert any(name.startswith("tee_green/") for name in first)


def test_another_seed_gives_other_videos() -> None:
    a = render_appearance_video(0, 0, SMALL, seed=0)
    assert np.array_equal(a, render_appearance_video(0, 0, SMALL, seed=0))
    assert not np.array_equal(a, render_appearance_video(0, 0, SMALL, seed=1))


def test_colour_family_is_an_order_free_class_cue() -> None:
    """The object's (most saturated) pixels are dominated by the class's colour channel, whatever the motion."""
    cfg = SyntheticSection(task="appearance", classes=12, videos_per_class=3, num_frames=6, size=32)
    for class_index in (0, 5, 10):  # ell in red, blue, green
        channel = APPEARANCE_CLASSES[class_index][2]
        for video in range(6):
            frames = render_appearance_video(class_index, video, cfg, seed=0).astype(float)
            pixels = frames.reshape(-1, 3)
            vivid = pixels[(pixels.max(1) - pixels.min(1)).argsort()[-20:]]
            assert vivid.mean(0).argmax() == channel, (class_index, video)


def test_motion_and_direction_do_not_depend_on_the_class() -> None:
    """Every class draws its motions from the same six and plays them both ways."""
    cfg = SyntheticSection(task="appearance", classes=4, videos_per_class=40, num_frames=4, size=32)
    for class_index in range(4):
        draws = [appearance_draw(class_index, v, cfg, seed=0)[2:] for v in range(40)]
        assert len({pair for pair, _ in draws}) >= 5
        assert 0.2 <= np.mean([backwards for _, backwards in draws]) <= 0.8
        assert all(0 <= pair < len(CATALOGUE) // 2 for pair, _ in draws)


def test_unknown_task_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"dataset\.synthetic\.task.*'order', 'textured' or 'appearance'") as err:
        params_from_dict({"dataset": {"synthetic": {"task": "colour"}}}, "params.yaml")
    assert "\n" not in str(err.value)
