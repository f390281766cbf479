"""The recipe sweep's summary over seeds: a recipe is called better or worse than the baseline only
beyond the noise of its seeds and its test videos."""

from __future__ import annotations

from benchmarks.recipe_sweep import seed_summary


def test_groups_are_compared_with_the_baseline_beyond_the_noise_margin() -> None:
    groups = {"before": [0.955, 1.0, 1.0, 0.909, 0.909], "chosen": [0.864, 1.0, 0.955, 0.909, 0.955],
              "broken": [0.5, 0.55, 0.45], "one seed": [1.0]}
    rows = {row[0]: row for row in seed_summary(groups, "before", test_videos=22)}
    assert set(rows) == {"before (5 seeds)", "chosen (5 seeds)", "broken (3 seeds)"}  # one seed: no spread
    assert rows["before (5 seeds)"][1:] == ["0.955 +- 0.046", "0.909", "-"]
    assert rows["chosen (5 seeds)"][3].startswith("-0.018 (") and rows["chosen (5 seeds)"][3].endswith("no clear difference")
    assert rows["broken (3 seeds)"][3].endswith(": worse")
    assert [len(row) for row in seed_summary(groups, None, 22)] == [3, 3, 3]  # no baseline: no comparison column
