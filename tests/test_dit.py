"""DiT over packed sequences: packing invariance, paper presets, conditioning, overfitting."""

import dataclasses

import pytest
import torch

import torch.nn.functional as F

from zoetrope import attention as attn_mod
from zoetrope.attention import (apply_rope, attention, group_order, make_layout, packed_attention,
                                resolve_backend, rope_angles)
from zoetrope.config import DIT_PRESETS, PRESET_INPUTS, DiTConfig, dit_preset
from zoetrope import dit as dit_mod
from zoetrope.dit import DiT, count_params, forward_flops
from zoetrope.errors import UserError
from zoetrope.patches import pack, unpack

# Table 4 of Peebles and Xie: (params in millions, GFLOPs at 256x256).
PAPER = {
    "DiT-S/2": (33, 6.06), "DiT-S/4": (33, 1.41), "DiT-S/8": (33, 0.36),
    "DiT-B/2": (130, 23.01), "DiT-B/4": (130, 5.56), "DiT-B/8": (130, 1.42),
    "DiT-L/2": (458, 80.71), "DiT-L/4": (458, 19.70), "DiT-L/8": (458, 5.01),
    "DiT-XL/2": (675, 118.64), "DiT-XL/4": (675, 29.05), "DiT-XL/8": (675, 7.39),
}


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace the zero init with random weights so outputs actually depend on everything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def tiny(**kw) -> DiT:
    return randomize(DiT(DiTConfig(in_channels=3, dim=48, depth=2, num_heads=4, text_dim=16, **kw)))


LATENT_SHAPES = [(3, 2, 4, 6), (3, 1, 2, 2), (3, 3, 6, 4)]


def test_packed_batch_equals_each_sample_alone():
    torch.manual_seed(0)
    model = tiny().eval()
    latents = [torch.randn(s) for s in LATENT_SHAPES]
    t = torch.tensor([0.1, 0.5, 0.9])
    text = torch.randn(3, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    packed = pack(latents, (1, 2, 2))
    together = unpack(model(packed, t, text, mask), packed)
    for i, x in enumerate(latents):
        single = pack([x], (1, 2, 2))
        n = int(mask[i].sum())
        alone = unpack(model(single, t[i:i + 1], text[i:i + 1, :n]), single)[0]
        torch.testing.assert_close(together[i], alone, atol=1e-5, rtol=1e-5)


def per_sample_reference(q, k, v, lengths, text_k=None, text_v=None, text_mask=None):
    """Each sample's attention alone with fp32 SDPA: (N, heads, Dh)."""
    outs, start = [], 0
    for i, n in enumerate(lengths):
        qi = q[start:start + n].transpose(0, 1)[None]
        if text_k is None:
            ki, vi = (x[start:start + n].transpose(0, 1)[None] for x in (k, v))
        else:
            keep = text_mask[i]
            ki, vi = (x[i, keep].transpose(0, 1)[None] for x in (text_k, text_v))
        outs.append(F.scaled_dot_product_attention(qi, ki, vi)[0].transpose(0, 1))
        start += n
    return torch.cat(outs)


@pytest.mark.parametrize("lengths, runs", [([6, 6, 4, 4, 1], 3), ([6, 4, 6, 1, 4], 5)])
def test_packed_attention_in_any_order(lengths, runs):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(sum(lengths), 2, 8, generator=g) for _ in range(3))
    layout = make_layout(lengths)
    assert len(layout.runs) == runs  # each run of equal lengths is one dense call
    torch.testing.assert_close(packed_attention(q, k, v, layout), per_sample_reference(q, k, v, lengths))
    tk, tv = (torch.randn(len(lengths), 5, 2, 8, generator=g) for _ in range(2))
    tmask = torch.arange(5)[None] < torch.tensor([5, 2, 3, 1, 4])[:, None]
    torch.testing.assert_close(packed_attention(q, tk, tv, layout, tmask),
                               per_sample_reference(q, None, None, lengths, tk, tv, tmask))


def test_short_low_precision_cpu_attention_matches_fp32_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 2, 20, 16, generator=g) for _ in range(3))
    mask = torch.rand(3, 1, 1, 20, generator=g) > 0.3
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert k.shape[-2] <= attn_mod.CPU_MATMUL_MAX_KEYS  # the explicit-matmul path
    assert attn_mod.use_cpu_matmuls(q.bfloat16(), k) and not attn_mod.use_cpu_matmuls(q, k)
    out = attn_mod._dense_attention(*(x.bfloat16() for x in (q, k, v)), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=3e-2, rtol=3e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # fp32 inputs under autocast: bf16 math
        out = attn_mod._dense_attention(q, k, v, mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, atol=3e-2, rtol=3e-2)
    exact = attn_mod._dense_attention(q, k, v, mask)  # fp32 outside autocast: SDPA itself
    torch.testing.assert_close(exact, reference, atol=0, rtol=0)


# Token counts 12, 1, 18, 12, 1, 18 interleaved; the two 12-token samples differ in shape.
INTERLEAVED = [(3, 2, 4, 6), (3, 1, 2, 2), (3, 3, 6, 4), (3, 3, 4, 4), (3, 1, 2, 2), (3, 3, 6, 4)]


def test_any_sample_order_equals_each_sample_alone_and_attention_sees_one_run_per_size(monkeypatch):
    torch.manual_seed(0)
    model = tiny(pos_embed="rope+abs").eval()
    latents = [torch.randn(s) for s in INTERLEAVED]
    packed = pack(latents, (1, 2, 2))
    t = torch.linspace(0.1, 0.9, len(latents))[packed.sample_ids]  # per token, clean first frame
    t = torch.where(packed.positions[:, 0] == 0, torch.zeros_like(t), t)
    text = torch.randn(len(latents), 5, 16)
    mask = torch.arange(5)[None] < torch.tensor([5, 1, 3, 2, 4, 5])[:, None]
    runs = []
    real = dit_mod.packed_attention
    monkeypatch.setattr(dit_mod, "packed_attention", lambda *a: runs.append(a[3].runs) or real(*a))
    with torch.no_grad():
        together = unpack(model(packed, t, text, mask), packed)
    # every self- and cross-attention call: one dense run per token count, no gather
    assert runs and all(r == [(2, 12), (2, 1), (2, 18)] for r in runs), runs
    monkeypatch.undo()
    for i, x in enumerate(latents):
        single = pack([x], (1, 2, 2))
        n = int(mask[i].sum())
        with torch.no_grad():
            alone = unpack(model(single, t[packed.sample_ids == i], text[i:i + 1, :n]), single)[0]
        torch.testing.assert_close(together[i], alone, atol=1e-5, rtol=1e-5)


def test_grouping_is_a_pure_reordering():
    # The interleaved batch runs as the same batch packed in grouped order, to the bit.
    torch.manual_seed(0)
    model = tiny().eval()
    latents = [torch.randn(s) for s in INTERLEAVED]
    order = group_order([x[0].numel() // 4 for x in latents])
    assert order == [0, 3, 1, 4, 2, 5] and group_order([12, 12, 1]) is None
    t, text = torch.rand(len(latents)), torch.randn(len(latents), 3, 16)
    with torch.no_grad():
        mixed = unpack(model(pack(latents, (1, 2, 2)), t, text), pack(latents, (1, 2, 2)))
        grouped = pack([latents[i] for i in order], (1, 2, 2))
        sorted_out = unpack(model(grouped, t[order], text[order]), grouped)
    for j, i in enumerate(order):
        torch.testing.assert_close(mixed[i], sorted_out[j], atol=0, rtol=0)


def test_attention_is_chosen_at_construction(tmp_path):
    config = DiTConfig(in_channels=3, dim=32, depth=2, num_heads=2, text_dim=8)
    with pytest.raises(UserError, match="unknown attention backend 'flash9'; valid: auto, sdpa, flex"):
        DiT(config, attention="flash9")
    sdpa, flex = DiT(config, attention="sdpa"), DiT(config, attention="flex")
    assert DiT(config).attention == "auto" and sdpa.attention == "sdpa"
    assert {b.attn.backend for b in flex.blocks} == {"flex"}  # per instance, not per class
    assert {b.attn.backend for b in sdpa.blocks} == {"sdpa"}
    assert not hasattr(DiT, "set_attention_backend")
    sdpa.save_pretrained(tmp_path / "dit")
    loaded = DiT.from_pretrained(tmp_path / "dit", attention="flex")
    assert loaded.attention == "flex" and {b.attn.backend for b in loaded.blocks} == {"flex"}
    assert "attention" not in (tmp_path / "dit" / "config.json").read_text()  # a machine choice
    assert resolve_backend("auto", torch.zeros(1)) == "sdpa"  # CPU, and no compile: dense SDPA


def test_per_token_timesteps_clean_first_frame():
    model = tiny().eval()
    latents = [torch.randn(s) for s in LATENT_SHAPES]
    packed = pack(latents, (1, 2, 2))
    text, mask = torch.randn(3, 4, 16), torch.ones(3, 4, dtype=torch.bool)
    # First latent frame of every sample clean (t = 0), the rest at the sample's noise level.
    t = torch.tensor([0.3, 0.6, 0.9])[packed.sample_ids]
    t = torch.where(packed.positions[:, 0] == 0, torch.zeros_like(t), t)
    together = unpack(model(packed, t, text, mask), packed)
    for i, x in enumerate(latents):
        single = pack([x], (1, 2, 2))
        ti = t[packed.sample_ids == i]
        torch.testing.assert_close(together[i], unpack(model(single, ti, text[i:i + 1]), single)[0],
                                   atol=1e-5, rtol=1e-5)
    # ... and a clean frame really changes the prediction compared with a uniform t.
    uniform = unpack(model(packed, torch.tensor([0.3, 0.6, 0.9]), text, mask), packed)
    assert not torch.allclose(uniform[0], together[0], atol=1e-3)


def test_text_changes_the_output_and_masked_tokens_do_not():
    model = tiny().eval()
    packed = pack([torch.randn(3, 1, 4, 4)], (1, 2, 2))
    t = torch.tensor([0.5])
    text = torch.randn(1, 3, 16)
    mask = torch.tensor([[True, True, False]])
    base = model(packed, t, text, mask)
    padded = text.clone()
    padded[0, 2] = 100.0  # a masked token must not matter
    torch.testing.assert_close(model(packed, t, padded, mask), base)
    other = text.clone()
    other[0, 0] += 1.0
    assert not torch.allclose(model(packed, t, other, mask), base, atol=1e-4)


def test_zero_init_outputs_zero():
    model = DiT(DiTConfig(in_channels=3, dim=32, depth=1, num_heads=2, text_dim=8))
    packed = pack([torch.randn(3, 1, 2, 2)], (1, 2, 2))
    out = model(packed, torch.tensor([0.5]), torch.randn(1, 2, 8))
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_presets_match_table_4(name):
    params_m, gflops = PAPER[name]
    config = dit_preset(name)
    with torch.device("meta"):
        params = count_params(DiT(config))
    assert round(params / 1e6) == pytest.approx(params_m, abs=1)
    measured = forward_flops(config, PRESET_INPUTS[name]) / 1e9
    # The paper rounds to 2 decimals and its counter (fvcore) also counts a few norm ops.
    assert measured == pytest.approx(gflops, rel=1e-3, abs=0.006)


def test_class_conditional_learned_sigma_image_model():
    config = DiTConfig(in_channels=4, patch_size=(1, 2, 2), dim=32, depth=2, num_heads=2,
                       num_classes=10, learn_sigma=True, pos_embed="sincos", qk_norm=False)
    model = randomize(DiT(config)).eval()
    packed = pack([torch.randn(4, 1, 8, 8), torch.randn(4, 1, 4, 6)], (1, 2, 2))
    labels = torch.tensor([3, 10])  # 10 = the null class
    out = unpack(model(packed, torch.tensor([0.2, 0.7]), labels=labels), packed)
    assert out[0].shape == (8, 1, 8, 8) and out[1].shape == (8, 1, 4, 6)
    changed = unpack(model(packed, torch.tensor([0.2, 0.7]), labels=torch.tensor([4, 10])), packed)
    assert not torch.allclose(changed[0], out[0]) and torch.allclose(changed[1], out[1], atol=1e-6)


def test_rope_scores_depend_on_relative_position_only():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 24), torch.randn(1, 1, 24)

    def score(pq, pk):
        cq, sq = rope_angles(torch.tensor([pq]), 24)
        ck, sk = rope_angles(torch.tensor([pk]), 24)
        return (apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum()

    base = score([1, 2, 3], [0, 5, 1])
    torch.testing.assert_close(score([4, 7, 9], [3, 10, 7]), base)  # shifted by (3, 5, 6)
    assert not torch.allclose(score([1, 2, 3], [0, 5, 2]), base)


@pytest.mark.parametrize("pos_embed", ["rope", "rope+abs"])
def test_absolute_positions_only_with_rope_plus_abs(pos_embed):
    # RoPE alone sees only relative positions: moving every token by the same offset changes
    # nothing. "rope+abs" also adds a 3D sin-cos, so the model can tell frame 0 from frame 3.
    torch.manual_seed(0)
    model = tiny(pos_embed=pos_embed).eval()
    packed = pack([torch.randn(3, 2, 4, 6)], (1, 2, 2))
    moved = dataclasses.replace(packed, positions=packed.positions + torch.tensor([3, 1, 2]))
    t, text = torch.tensor([0.5]), torch.randn(1, 2, 16)
    with torch.no_grad():
        a, b = model(packed, t, text), model(moved, t, text)
    if pos_embed == "rope":
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    else:
        assert (a - b).abs().max() > 1e-2


def test_flex_attention_matches_sdpa_reference():
    pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 40, 2, 16).unbind(0)
    ids = torch.tensor([0] * 15 + [1] * 5 + [2] * 20)
    ref = attention(q, k, v, ids, ids, backend="sdpa")
    try:
        flex = attention(q, k, v, ids, ids, backend="flex")
    except Exception as e:  # flex on CPU needs a working inductor toolchain
        pytest.skip(f"flex attention unavailable here: {e}")
    torch.testing.assert_close(flex, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_flex_matches_cpu_reference():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 300, 4, 32).unbind(0)
    ids = torch.tensor([0] * 100 + [1] * 37 + [2] * 163)
    ref = attention(q, k, v, ids, ids, backend="sdpa")
    out = attention(q.cuda(), k.cuda(), v.cuda(), ids.cuda(), ids.cuda(), backend="flex")
    torch.testing.assert_close(out.cpu(), ref, atol=2e-3, rtol=2e-3)


def test_save_load_round_trip(tmp_path):
    model = tiny().eval()
    model.save_pretrained(tmp_path / "dit")
    loaded = DiT.from_pretrained(tmp_path / "dit")
    packed = pack([torch.randn(3, 2, 4, 4)], (1, 2, 2))
    args = (packed, torch.tensor([0.4]), torch.randn(1, 3, 16))
    torch.testing.assert_close(loaded(*args), model(*args), rtol=0, atol=0)


def test_tiny_dit_overfits_one_packed_batch():
    torch.manual_seed(0)
    model = DiT(DiTConfig(in_channels=3, dim=64, depth=2, num_heads=4, text_dim=16))
    latents = [torch.randn(s) for s in LATENT_SHAPES]
    packed = pack(latents, (1, 2, 2))
    text, mask = torch.randn(3, 4, 16), torch.ones(3, 4, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(packed.tokens.shape, generator=g)
    t = torch.tensor([0.3, 0.5, 0.7])
    x_t = (1 - t[packed.sample_ids, None]) * packed.tokens + t[packed.sample_ids, None] * noise
    target = noise - packed.tokens  # rectified-flow velocity
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = (model(packed.with_tokens(x_t), t, text, mask) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_unknown_preset_lists_known():
    with pytest.raises(ValueError, match="known presets: DiT-S/2"):
        dit_preset("DiT-XXL/2")
    assert "sora-3B" in DIT_PRESETS
