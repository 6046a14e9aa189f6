"""PAMR: colour-guided mask refinement snaps a blurry mask onto an image edge."""
import torch

from synseg_core.pamr import PAMR, pamr, pamr_affinity


def edge_image(width=16, edge=8):
    """``[1, 3, 12, width]``: black left of column ``edge``, white from it on."""
    image = torch.zeros(1, 3, 12, width)
    image[..., edge:] = 1.0
    return image


def blurry_masks(width=16, centre=5.5, softness=3.0):
    """Foreground/background scores ``[1, 2, 12, width]`` with a soft transition at the wrong place."""
    x = torch.arange(width, dtype=torch.float32)
    foreground = torch.sigmoid((x - centre) / softness).expand(12, width)
    return torch.stack([1 - foreground, foreground]).unsqueeze(0)


def test_refinement_snaps_a_blurry_mask_to_the_colour_edge():
    masks = blurry_masks()
    before = masks.argmax(1)[0, 0]
    assert before.tolist() != [0] * 8 + [1] * 8  # columns 6 and 7 start on the wrong side
    refined = pamr(edge_image(), masks)
    assert refined.argmax(1)[0, 0].tolist() == [0] * 8 + [1] * 8
    foreground = refined[0, 1]
    assert foreground[:, :8].max() - foreground[:, :8].min() < 0.01  # flat on each side of the edge ...
    assert foreground[:, 8:].max() - foreground[:, 8:].min() < 0.01
    assert foreground[:, 8].mean() - foreground[:, 7].mean() > 0.4  # ... with the jump at the edge


def test_masks_are_resized_to_the_image():
    refined = pamr(edge_image(), torch.rand(1, 3, 3, 4), iterations=1)
    assert refined.shape == (1, 3, 12, 16)


def test_constant_masks_stay_constant():
    refined = pamr(torch.rand(2, 3, 10, 10), torch.full((2, 4, 10, 10), 0.25))
    assert torch.allclose(refined, torch.full_like(refined, 0.25), atol=1e-6)


def test_affinity_weights_are_a_distribution_over_neighbours():
    weights = pamr_affinity(torch.rand(1, 3, 9, 9), dilations=(1, 2))
    assert weights.shape == (1, 16, 9, 9)
    assert torch.allclose(weights.sum(1), torch.ones(1, 9, 9), atol=1e-6)


def test_module_applies_the_same_refinement_with_tcl_settings():
    image, masks = edge_image(), blurry_masks()
    assert torch.equal(PAMR()(image, masks), pamr(image, masks, iterations=10, dilations=(1, 2, 4, 8, 12, 24)))
