"""The single-category InfoNCE baseline loss: caption retrieval by the foreground synergy feature."""
from __future__ import annotations

import math

import pytest
import torch

from synseg_core.losses.infonce import single_infonce_loss


def test_loss_is_the_cross_entropy_of_cosine_logits_over_temperature():
    foreground = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    captions = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    terms = single_infonce_loss(foreground, captions, torch.tensor([0, 1]), temperature=0.5)
    c = 1 / math.sqrt(2)
    row0 = -math.log(math.exp(1 / 0.5) / (math.exp(1 / 0.5) + math.exp(c / 0.5)))
    row1 = -math.log(math.exp(c / 0.5) / (math.exp(0.0) + math.exp(c / 0.5)))
    assert float(terms["loss_infonce"]) == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert float(terms["sim_positive"]) == pytest.approx((1 + c) / 2, rel=1e-6)
    assert float(terms["acc_infonce"]) == 1.0


def test_padding_captions_are_ignored():
    foreground = torch.randn(3, 8)
    captions = torch.randn(3, 8)
    targets = torch.arange(3)
    plain = single_infonce_loss(foreground, captions, targets)
    padded = single_infonce_loss(foreground, torch.cat([captions, torch.randn(2, 8)]), targets,
                                 valid=torch.tensor([True, True, True, False, False]))
    assert float(padded["loss_infonce"]) == pytest.approx(float(plain["loss_infonce"]), rel=1e-6)


def test_targets_may_point_into_captions_gathered_from_other_ranks():
    captions = torch.eye(4)
    foreground = captions[2:] * 5  # this rank holds images 2 and 3 of the global batch
    terms = single_infonce_loss(foreground, captions, torch.tensor([2, 3]), temperature=0.1)
    assert float(terms["acc_infonce"]) == 1.0
    assert float(terms["loss_infonce"]) < 1e-3


def test_gradient_flows_to_the_foreground_features():
    foreground = torch.randn(4, 8, requires_grad=True)
    captions = torch.randn(4, 8)
    single_infonce_loss(foreground, captions, torch.arange(4))["loss_infonce"].backward()
    assert foreground.grad is not None and float(foreground.grad.abs().sum()) > 0
