"""MCCL's four terms against a direct, slow computation of the paper's equations (3)-(7)."""
from __future__ import annotations

import math

import pytest
import torch

from synseg_core.losses.mccl import MCCLWeights, mccl_loss, total_loss

LOW, HIGH = 0.005, 0.995


def sim(a, b):
    cos = float(torch.dot(a, b) / (a.norm() * b.norm()))
    return min(max(cos, LOW), HIGH)


def reference(fg, bg, text, counts):
    """Per-image equations with plain Python loops; images averaged where each term is defined."""
    align, cont, back, sep = [], [], [], []
    for i, n in enumerate(counts):
        if n == 0:
            continue
        align.append(-sum(math.log(sim(fg[i, c], text[i, c])) for c in range(n)) / n)
        cont.append(-sum(math.log(1 - sim(fg[i, c], bg[i, c])) for c in range(n)) / n)
        if n < 2:
            continue
        pairs = [(j, k) for j in range(n) for k in range(n) if j != k]
        back.append(-sum(math.log(sim(bg[i, j], bg[i, k])) for j, k in pairs) / len(pairs))
        sep.append(-sum(math.log(1 - sim(fg[i, j], fg[i, k])) for j, k in pairs) / len(pairs))
    mean = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    return {"loss_align": mean(align), "loss_cont": mean(cont), "loss_back": mean(back), "loss_sep": mean(sep)}


def padded_batch(counts, dim=8, seed=0):
    torch.manual_seed(seed)
    b, n = len(counts), max(counts)
    fg, bg, text = (torch.randn(b, n, dim) for _ in range(3))
    mask = torch.tensor([[c < k for c in range(n)] for k in counts])
    return fg, bg, text, mask


@pytest.mark.parametrize("counts", [[3, 1, 4, 2], [2, 2], [5], [1, 1, 3]])
def test_each_term_matches_the_equations_with_variable_categories_per_image(counts):
    fg, bg, text, mask = padded_batch(counts)
    terms = mccl_loss(fg, bg, text, mask)
    expected = reference(fg, bg, text, counts)
    for name, value in expected.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_padding_content_does_not_change_the_loss():
    fg, bg, text, mask = padded_batch([3, 1, 2])
    before = mccl_loss(fg, bg, text, mask)
    for tensor in (fg, bg, text):
        tensor[~mask] = 1e3 * torch.randn_like(tensor[~mask])
    after = mccl_loss(fg, bg, text, mask)
    for name in ("loss_align", "loss_cont", "loss_back", "loss_sep"):
        assert after[name].item() == pytest.approx(before[name].item(), rel=1e-6)


def test_pair_terms_are_zero_when_no_image_has_two_categories():
    fg, bg, text, mask = padded_batch([1, 1])
    terms = mccl_loss(fg, bg, text, mask)
    assert terms["loss_back"].item() == 0.0 and terms["loss_sep"].item() == 0.0
    assert terms["loss_align"].item() > 0.0


def test_similarities_are_clipped_so_identical_features_give_a_finite_loss():
    fg = torch.ones(1, 2, 4)
    terms = mccl_loss(fg, fg.clone(), fg.clone(), torch.ones(1, 2, dtype=torch.bool))
    assert terms["loss_sep"].item() == pytest.approx(-math.log(1 - HIGH))
    assert terms["loss_align"].item() == pytest.approx(-math.log(HIGH))
    assert all(torch.isfinite(v) for v in terms.values())


def test_straight_through_clip_keeps_a_gradient_where_the_hard_clamp_has_none():
    # Two nearly identical foregrounds: cos = 4.2 / 4.21 = 0.9976, above the 0.995 clip.
    fg = (torch.ones(1, 2, 4) + 0.1 * torch.eye(4)[:2][None]).requires_grad_(True)
    other = torch.eye(4)[:2][None]
    mask = torch.ones(1, 2, dtype=torch.bool)
    soft = mccl_loss(fg, other, other, mask)["loss_sep"]
    hard = mccl_loss(fg, other, other, mask, straight_through=False)["loss_sep"]
    assert soft.item() == pytest.approx(hard.item()) == pytest.approx(-math.log(1 - HIGH))
    assert torch.autograd.grad(hard, fg)[0].abs().sum() == 0
    assert torch.autograd.grad(soft, fg)[0].abs().sum() > 0


def test_weights_scale_each_term_and_the_total_sums_the_loss_terms():
    fg, bg, text, mask = padded_batch([3, 2])
    plain = mccl_loss(fg, bg, text, mask)
    weighted = mccl_loss(fg, bg, text, mask, MCCLWeights(align=2.0, cont=0.0, back=0.5, sep=3.0))
    assert weighted["loss_align"].item() == pytest.approx(2 * plain["loss_align"].item())
    assert weighted["loss_cont"].item() == 0.0
    assert weighted["loss_sep"].item() == pytest.approx(3 * plain["loss_sep"].item())
    expected_total = sum(weighted[k].item() for k in ("loss_align", "loss_cont", "loss_back", "loss_sep"))
    assert total_loss(weighted).item() == pytest.approx(expected_total)


def test_gradients_reach_only_film_decoder_and_projector(tiny_model):
    from synseg_core import create_model

    model = create_model("tiny", seed=1).train()
    words = ["star", "ring", "floor"]
    text = model.encode_text(words)
    out = model.decode(model.encode_image(torch.randn(2, 3, 64, 64)), text)
    syn = model.synergy(out)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    total_loss(mccl_loss(syn.foreground, syn.background, text.expand(2, -1, -1), mask)).backward()
    for name, param in model.named_parameters():
        if name.startswith(("image_encoder.", "text_encoder.")):
            assert param.grad is None, name
    film = model.decoder.film
    assert film.film_mul.weight.grad is not None and film.film_mul.weight.grad.abs().sum() > 0
    assert model.projector.net.weight.grad.abs().sum() > 0
    assert model.decoder.head.weight.grad.abs().sum() > 0
