"""Spacetime patches and NaViT packing: exact round trips and the token-budget packer."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoetrope.patches import budget_batches, concat, pack, patchify, unpack, unpatchify


@st.composite
def latents_and_patch(draw):
    patch = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    channels = draw(st.integers(1, 5))
    count = draw(st.integers(1, 4))
    shapes = [(channels, patch[0] * draw(st.integers(1, 3)), patch[1] * draw(st.integers(1, 4)),
               patch[2] * draw(st.integers(1, 4))) for _ in range(count)]
    return shapes, patch


@settings(max_examples=60, deadline=None)
@given(latents_and_patch())
def test_patchify_unpatchify_round_trip(case):
    shapes, patch = case
    x = torch.randn(shapes[0])
    tokens = patchify(x, patch)
    grid = tuple(s // p for s, p in zip(x.shape[1:], patch))
    assert tokens.shape == (grid[0] * grid[1] * grid[2], x.shape[0] * patch[0] * patch[1] * patch[2])
    assert torch.equal(unpatchify(tokens, grid, patch), x)


@settings(max_examples=60, deadline=None)
@given(latents_and_patch())
def test_pack_unpack_round_trip(case):
    shapes, patch = case
    latents = [torch.randn(s) for s in shapes]
    packed = pack(latents, patch)
    assert packed.num_samples == len(latents)
    assert packed.sample_ids.tolist() == [i for i, n in enumerate(packed.lengths) for _ in range(n)]
    for back, x in zip(unpack(packed.tokens, packed), latents):
        assert torch.equal(back, x)


def test_patch_content_and_positions():
    # A token holds exactly the values of its (pt, ph, pw) block, in (c, pt, ph, pw) order.
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float32).reshape(2, 2, 4, 6)
    packed = pack([x], (1, 2, 3))
    i = 2  # t=0, h=1, w=0 in a (t, h, w) = (2, 2, 2) raster grid
    assert packed.positions[i].tolist() == [0, 1, 0]
    expected = x[:, 0:1, 2:4, 0:3].reshape(-1)
    assert torch.equal(packed.tokens[i], expected)


def test_unpack_other_channel_count_and_concat():
    latents = [torch.randn(3, 2, 4, 4), torch.randn(3, 1, 2, 6)]
    packed = pack(latents, (1, 2, 2))
    doubled = torch.cat([packed.tokens, -packed.tokens], dim=-1)  # e.g. learned sigma's 2C
    out = unpack(doubled, packed)
    assert out[1].shape == (6, 1, 2, 6)
    assert torch.equal(out[1][:3], latents[1]) and torch.equal(out[1][3:], -latents[1])
    both = concat([packed, packed])
    assert both.num_samples == 4 and both.sample_ids.max() == 3
    assert torch.equal(unpack(both.tokens, both)[3], latents[1])


def test_indivisible_latent_is_a_clear_error():
    with pytest.raises(ValueError, match="h=5 is not divisible by patch size 2"):
        pack([torch.randn(4, 1, 5, 4)], (1, 2, 2))


def test_budget_batches_respects_budget_and_order():
    sizes = [5, 3, 4, 8, 1, 1, 6]
    batches = list(budget_batches(sizes, max_tokens=8, num_tokens=lambda n: n))
    assert [x for b in batches for x in b] == sizes
    assert all(sum(b) <= 8 for b in batches)
    assert batches == [[5, 3], [4], [8], [1, 1, 6]]
    with pytest.raises(ValueError, match="more than the budget"):
        list(budget_batches([9], max_tokens=8, num_tokens=lambda n: n))
