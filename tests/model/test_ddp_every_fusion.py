"""Every parameter of the branch is used in every forward (issue 19, point 5).

Training wraps the branch in DDP with ``find_unused_parameters=False``: one parameter that gets
no gradient (the first level's ``concat``/``gated`` combiner, which has no previous output to
combine with) makes the second step fail with "Expected to have finished reduction in the prior
iteration".  Two real gloo processes train every fusion x temporal x ``use_cls`` combination for
three steps, in one spawn.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from madapter.models.backbone import LevelInfo
from madapter.models.build import build_model
from madapter.models.checkpoint import load_checkpoint, save_checkpoint
from madapter.models.madapter import Fusion, MAdapterBranch
from tests.common.ranks import run_ranks

from .conftest import clip, tiny_cfg

FUSIONS = ("add", "concat", "gated")
TEMPORALS = ("conv", "attention", "none")
COMBOS = [(f, t, cls) for f in FUSIONS for t in TEMPORALS for cls in (True, False)]
LEVELS = [LevelInfo(2, 8), LevelInfo(5, 12), LevelInfo(8, 20)]
GRIDS = [6, 3, 4]  # shrink (average pool), then grow (bilinear): both resampling paths
FRAMES, BATCH, WIDTH, CLS_DIM, CLASSES, STEPS = 4, 2, 16, 12, 3, 3


def _batch(rank: int, step: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Different data on each rank, so the gradients must really be averaged."""
    g = torch.Generator().manual_seed(1000 * rank + step)
    levels = [torch.randn(BATCH, FRAMES, s, s, lvl.channels, generator=g) for lvl, s in zip(LEVELS, GRIDS, strict=True)]
    pooled = torch.randn(BATCH, FRAMES, CLS_DIM, generator=g)
    return levels, pooled, torch.randint(0, CLASSES, (BATCH,), generator=g)


def _train_one(rank: int, world: int, fusion: str, temporal: str, use_cls: bool) -> dict:
    torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's
    branch = MAdapterBranch(LEVELS, CLASSES, width=WIDTH, fusion=fusion, temporal=temporal, num_frames=FRAMES,
                            use_cls=use_cls, cls_dim=CLS_DIM)
    ddp = DistributedDataParallel(branch, find_unused_parameters=False)
    init = {n: p.detach().clone() for n, p in branch.named_parameters()}
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
    for step in range(STEPS):
        levels, pooled, labels = _batch(rank, step)
        loss = torch.nn.functional.cross_entropy(ddp(levels, pooled), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    flat = torch.cat([p.detach().flatten() for p in branch.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    return {
        "max_rank_diff": max(float((g - flat).abs().max()) for g in gathered),
        "unchanged": sorted(n for n, p in branch.named_parameters() if torch.equal(p.detach(), init[n])),
        "num_params": len(init),
    }


def _train_every_combo(rank: int, world: int) -> dict:
    """One rank's outcome for every combination (an error is reported per combination by the test)."""
    results = {}
    for combo in COMBOS:
        try:
            results[combo] = _train_one(rank, world, *combo)
        except Exception as err:  # noqa: BLE001 - reported per combination by the test
            results[combo] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}",
                              "trace": traceback.format_exc(limit=3)}
    return results


@pytest.mark.timeout(180)
def test_ddp_trains_every_fusion_and_temporal_kind_without_unused_parameters() -> None:
    world = 2
    per_rank = run_ranks(_train_every_combo, world)
    failed = {combo: per_rank[rank][combo]["error"][:90] for combo in COMBOS for rank in range(world)
              if "error" in per_rank[rank][combo]}
    assert not failed, f"DDP failed for {len(failed)} combinations: {failed}"
    for combo in COMBOS:
        for rank in range(world):
            res = per_rank[rank][combo]
            assert res["max_rank_diff"] == 0.0, f"{combo}: parameters differ across ranks"
            assert res["unchanged"] == [], f"{combo}: parameters never updated: {res['unchanged']}"


def test_first_level_has_no_combiner_and_later_levels_need_the_previous_output() -> None:
    for kind in ("concat", "gated"):
        branch = MAdapterBranch(LEVELS, CLASSES, width=WIDTH, fusion=kind, num_frames=FRAMES, cls_dim=CLS_DIM)
        first, second = branch.adapters[0].fusion, branch.adapters[1].fusion
        assert not any(name.startswith(("mix.", "gate.")) for name, _ in first.named_parameters())
        assert any(name.startswith(("mix.", "gate.")) for name, _ in second.named_parameters())
        x = torch.randn(1, FRAMES, 3, 3, LEVELS[1].channels)
        with pytest.raises(ValueError, match="previous"):
            second(x, None)
    lone = Fusion(8, WIDTH, "add", first=True)
    with pytest.raises(ValueError, match="first"):
        lone(torch.randn(1, 2, 3, 3, 8), torch.randn(1, 2, 3, 3, WIDTH))


@pytest.mark.parametrize("fusion", ["concat", "gated"])
def test_checkpoint_with_the_old_unused_first_level_combiner_still_loads(tmp_path: Path, fusion: str) -> None:
    """Checkpoints written before the fix hold ``adapter.adapters.0.fusion.{mix,gate}.*``: dropped on load."""
    model = build_model(tiny_cfg(fusion=fusion), num_classes=3).eval()  # width 64
    path = save_checkpoint(tmp_path / "ckpt.pt", model, ["a", "b", "c"])
    ckpt = torch.load(path, weights_only=True)
    layer = "mix" if fusion == "concat" else "gate"
    ckpt["trainable_state_dict"][f"adapter.adapters.0.fusion.{layer}.weight"] = torch.randn(64, 128)
    ckpt["trainable_state_dict"][f"adapter.adapters.0.fusion.{layer}.bias"] = torch.randn(64)
    torch.save(ckpt, path)

    restored, _ = load_checkpoint(path)
    restored.eval()
    x = clip(frames=4)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))

    ckpt["trainable_state_dict"]["adapter.adapters.1.fusion.extra.weight"] = torch.randn(2)  # anything else: refused
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="1 unknown"):
        load_checkpoint(path)
