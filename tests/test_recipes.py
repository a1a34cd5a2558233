"""Recipes an FP8 lab describes its inputs with: 128x128 block-quantised expert weights whose
parts match, and uniform activations with a fixed amax per group."""

from __future__ import annotations

import torch

from grader import recipes


def parts(**kw: object) -> dict[str, torch.Tensor]:
    return {part: recipes.block_fp8((3, 200, 300), 11, part, scale=0.1, **kw).materialize("cpu") for part in ("weight", "scale", "original")}


def dequantised(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return w.float() * s.repeat_interleave(128, 1)[:, : w.shape[1]].repeat_interleave(128, 2)[:, :, : w.shape[2]]


def test_block_fp8_parts_match_and_dequantise_to_the_original() -> None:
    p = parts(spread=3.0, dtype="bfloat16")
    assert p["weight"].dtype == torch.float8_e4m3fn and p["weight"].shape == (3, 200, 300)
    assert p["scale"].dtype == torch.float32 and p["scale"].shape == (3, 2, 3)
    assert p["original"].dtype == torch.bfloat16
    err = (dequantised(p["weight"], p["scale"]) - p["original"].float()).norm() / p["original"].float().norm()
    assert err < 0.04  # e4m3 keeps 3 mantissa bits: about 2.6% RMS
    spread = p["scale"].max() / p["scale"].min()
    assert spread > 8  # the blocks' scales differ by up to 2**6, so a misread block is far off
    amax = p["weight"].float().abs().amax()
    assert amax == 448.0  # every block's largest value maps to e4m3's largest


def test_block_fp8_is_deterministic_and_its_options_do_what_they_say() -> None:
    a, b = parts(), parts()
    assert all(torch.equal(a[k].view(torch.uint8) if k == "weight" else a[k], b[k].view(torch.uint8) if k == "weight" else b[k]) for k in a)
    uniform = parts(uniform=True, positive=True)
    assert (uniform["original"] >= 0).all()
    assert all(torch.unique(uniform["scale"][e]).numel() == 1 for e in range(3))
    spec = recipes.block_fp8((3, 200, 300), 11, "scale")
    assert spec.dtype == "float32" and recipes.block_fp8((3, 200, 300), 11, "weight").dtype == "float8_e4m3fn"


def test_rand_pins_every_groups_amax() -> None:
    x = recipes.rand((4, 300), "bfloat16", 3, 0.5, 1.0, group=128).materialize("cpu")
    assert x.dtype == torch.bfloat16 and (x >= 0.5).all() and (x <= 1.0).all()
    groups = torch.nn.functional.pad(x.float(), (0, 84)).view(4, 3, 128)
    assert (groups.amax(dim=2) == 1.0).all()
