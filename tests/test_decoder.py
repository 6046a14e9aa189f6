"""The decoder's fast paths compute exactly what CLIPSeg's modules compute, with the same parameters."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from synseg_core import create_model
from synseg_core.model import decoder as decoder_module
from synseg_core.model.decoder import DecoderLayer, PatchHead


def torch_layer(dropout: float = 0.1) -> nn.TransformerEncoderLayer:
    """The layer CLIPSeg's decoder is made of (and ours was, before fused attention)."""
    return nn.TransformerEncoderLayer(16, 2, 48, dropout=dropout, batch_first=True)


def test_decoder_layer_has_the_parameters_and_initialisation_of_torch_transformer_encoder_layer():
    torch.manual_seed(3)
    reference = torch_layer()
    torch.manual_seed(3)
    ours = DecoderLayer(16, 2, 48, dropout=0.1)
    assert list(ours.state_dict()) == list(reference.state_dict())  # checkpoints and CLIPSeg weights load
    for name, value in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name  # a seeded model draws the same weights


def test_decoder_layer_gives_the_outputs_of_torch_transformer_encoder_layer_in_eval():
    reference = torch_layer().eval()
    ours = DecoderLayer(16, 2, 48, dropout=0.1).eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(3, 37, 16)
    with torch.no_grad():  # the reference then takes torch's fused encoder-layer fast path
        torch.testing.assert_close(ours(x), reference(x), atol=1e-5, rtol=1e-5)


def test_decoder_layer_trains_like_torch_transformer_encoder_layer():
    reference = torch_layer(dropout=0.0).train()
    ours = DecoderLayer(16, 2, 48, dropout=0.0).train()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 21, 16, requires_grad=True)
    target = torch.randn(2, 21, 16)
    (ours(x) - target).square().sum().backward()
    ours_input_grad, x.grad = x.grad, None
    (reference(x) - target).square().sum().backward()
    torch.testing.assert_close(ours_input_grad, x.grad, atol=1e-5, rtol=1e-5)
    reference_params = dict(reference.named_parameters())
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, reference_params[name].grad, atol=1e-5, rtol=1e-5, msg=name)


def test_decoder_layer_applies_dropout_only_in_training():
    layer = DecoderLayer(16, 2, 48, dropout=0.5)
    x = torch.randn(2, 21, 16)
    layer.train()
    assert not torch.allclose(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))


def test_feed_forward_in_token_chunks_equals_one_pass(monkeypatch):
    layer = DecoderLayer(16, 2, 48, dropout=0.1).eval()
    x = torch.randn(3, 37, 16)  # 111 tokens: 11 chunks of 10 and a remainder
    monkeypatch.setattr(decoder_module, "FFN_CHUNK_TOKENS", 10)
    with torch.no_grad():
        chunked = layer.feed_forward(x)
        whole = layer.linear2(F.relu(layer.linear1(x)))
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=1e-6)


def test_patch_head_is_the_transposed_convolution_with_kernel_equal_to_stride():
    convolution = nn.ConvTranspose2d(16, 1, 8, stride=8)
    head = PatchHead(16, 8)
    head.load_state_dict(convolution.state_dict())  # same parameters, same names
    tokens = torch.randn(5, 3 * 4, 16)  # a 3 x 4 patch grid, row by row
    expected = convolution(tokens.transpose(1, 2).reshape(5, 16, 3, 4))[:, 0]
    with torch.no_grad():
        torch.testing.assert_close(head(tokens, (3, 4)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("refined", [False, True], ids=["rd64-uni", "refined"])
def test_decoding_several_categories_at_once_equals_decoding_each_alone(refined):
    model = create_model("tiny", seed=0, cond_layer=1, refined_head=refined)
    text = F.normalize(torch.randn(4, model.text_dim), dim=-1)
    with torch.no_grad():
        features = model.encode_image(torch.randn(2, 3, 64, 64))
        together = model.decode(features, text)
        alone = [model.decode(features, text[k : k + 1]) for k in range(4)]
    torch.testing.assert_close(together.logits, torch.cat([a.logits for a in alone], dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.conditional, torch.cat([a.conditional for a in alone], dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.visual, alone[0].visual)


def test_layers_before_film_run_once_per_image_not_once_per_category():
    model = create_model("tiny", seed=0, cond_layer=1)
    seen = []
    model.decoder.layers[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    model.decoder.layers[1].register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64), F.normalize(torch.randn(5, model.text_dim), dim=-1))
    assert seen == [(2, 17, 16), (2 * 5, 17, 16)]  # text-free layer: B rows; after FiLM: B * K


def export_decoder(model, path, grid=(4, 4)):
    """The decoder graph alone (FiLM + decoder for one patch grid), exported by the dynamo exporter."""
    import warnings

    class DecoderGraph(nn.Module):
        def forward(self, *inputs):
            *activations, text = inputs
            return model.decoder(activations, grid, text).logits

    batch, classes = torch.export.Dim("batch"), torch.export.Dim("classes")
    activations = [torch.randn(2, 17, 96) for _ in range(3)]
    text = torch.randn(2, 3, model.text_dim)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            DecoderGraph(), (*activations, text), str(path), dynamo=True, opset_version=18, verbose=False,
            dynamic_shapes=(({0: batch},) * 3 + ({0: batch, 1: classes},),),
        )


@pytest.mark.parametrize("contrib", [False, True], ids=["standard-onnx", "onnxruntime-attention"])
def test_exported_decoder_gives_the_eager_logits_in_onnxruntime(tmp_path, contrib):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = create_model("tiny", seed=0)
    path = tmp_path / "decoder.onnx"
    if contrib:
        with decoder_module.onnx_runtime_attention():
            export_decoder(model, path)
    else:
        export_decoder(model, path)
    ops = {(node.domain, node.op_type) for node in onnx.load(str(path)).graph.node}
    assert (("com.microsoft", "MultiHeadAttention") in ops) == contrib
    assert (("", "Softmax") in ops) != contrib  # the standard graph spells attention out
    activations = [torch.randn(1, 17, 96) for _ in range(3)]
    text = torch.randn(1, 5, model.text_dim)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = dict(zip([i.name for i in session.get_inputs()], [t.numpy() for t in (*activations, text)], strict=True))
    with torch.no_grad():
        expected = model.decoder(activations, (4, 4), text).logits
    torch.testing.assert_close(torch.from_numpy(session.run(None, feeds)[0]), expected, atol=1e-5, rtol=1e-5)
