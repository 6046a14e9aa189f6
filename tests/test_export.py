"""ONNX export: the folder layout, export.json, the text tower without torch, atomic replacement, the CLI."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import onnx
import open_clip
import pytest
import torch

from synseg_core import Segmenter, create_model, save_model
from synseg_core.export import export_onnx, main, weights_sha256
from synseg_core.runtime.export_format import ExportError, read_export, sha256_file
from synseg_core.runtime.onnx_text import ClipTokenizer, OnnxTextEmbedder

REPOSITORY = Path(__file__).resolve().parents[1]
DEMO_MODEL = REPOSITORY / "synseg_core" / "assets" / "demo_model"


@pytest.fixture(scope="module")
def user_cache(tmp_path_factory):
    """XDG_CACHE_HOME for this module: where the CLI writes exports by default."""
    with pytest.MonkeyPatch.context() as patch:
        cache = tmp_path_factory.mktemp("xdg")
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model):
    return save_model(tiny_model, tmp_path_factory.mktemp("export") / "ckpt")


@pytest.fixture(scope="module")
def exported(checkpoint, user_cache):
    """The CLI's FP32 + int8 export of the tiny checkpoint, text tower included (the fast legacy exporter)."""
    args = [str(checkpoint), "--precision", "fp32", "int8", "--text-encoder", "--exporter", "legacy", "--quiet"]
    assert main(args) == 0
    return user_cache / "synseg" / "onnx" / sha256_file(checkpoint / "model.safetensors")[:16] / "64x64_fp32"


@pytest.fixture(scope="module")
def direct_export(tmp_path_factory, tiny_model):
    """``export_onnx`` of the in-memory model into a folder of its own."""
    out = tmp_path_factory.mktemp("direct") / "exp"
    export_onnx(tiny_model, out, exporter="legacy", check=False)
    return out


def test_cli_writes_the_graphs_the_text_tower_and_metadata_into_the_user_cache(exported, checkpoint):
    assert sorted(p.name for p in exported.iterdir()) == [
        "decoder.onnx", "export.json", "image_encoder.onnx", "postprocess.onnx", "text_encoder.onnx", "tokenizer.json",
    ]
    assert sorted(p.name for p in checkpoint.iterdir()) == ["config.json", "model.safetensors"]


def test_using_the_bundled_demo_model_leaves_the_source_tree_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    segmenter = Segmenter.from_checkpoint(DEMO_MODEL, backend="onnxruntime", exporter="legacy")
    assert segmenter.segment(np.zeros((48, 64, 3), np.uint8), ["door", "chair"]).labels.shape == (48, 64)
    assert segmenter.backend.directory.is_relative_to(tmp_path / "cache")
    status = subprocess.run(["git", "status", "--porcelain", "--ignored", str(DEMO_MODEL)], cwd=REPOSITORY,
                            capture_output=True, text=True, check=True)
    assert status.stdout == ""


def test_metadata_records_what_a_runtime_checks(exported, checkpoint, tiny_model):
    meta = read_export(exported)
    assert (meta.backbone, meta.input_size, meta.patch_size, meta.extract_layers) == ("tiny", (64, 64), 16, (1, 2, 3))
    assert (meta.opset, meta.precision, meta.exporter, meta.max_classes) == (18, "fp32", "legacy", 256)
    assert meta.preprocessing["mean"] == list(tiny_model.config.mean)
    assert meta.preprocessing["std"] == list(tiny_model.config.std)
    assert meta.weights_sha256 == weights_sha256(tiny_model)
    assert meta.source_checkpoint == sha256_file(checkpoint / "model.safetensors")
    assert meta.files["decoder"] == sha256_file(exported / "decoder.onnx")


def test_exported_graphs_were_checked_against_pytorch(exported):
    parity = read_export(exported).parity
    assert set(parity) == {"image_encoder", "decoder"}  # postprocess.onnx is checked against the reference in tests
    assert max(parity.values()) < 1e-4


def test_decoder_takes_the_vocabulary_as_an_input_with_dynamic_k(exported):
    graph = onnx.load(str(exported / "decoder.onnx")).graph
    text = next(i for i in graph.input if i.name == "text")
    dims = text.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value
    assert dims[1].dim_value == 64
    logits = graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in logits] == [True, True, False, False]


def test_graphs_use_opset_18(exported):
    model = onnx.load(str(exported / "image_encoder.onnx"))
    assert {o.domain: o.version for o in model.opset_import}[""] == 18


@pytest.mark.parametrize(
    "text", ["a photo of a cat.", "a photo of many traffic lights.", "t-shirt", "person's bag", "  two   spaces ", "7up 2x", "caf\u00e9 &amp; bar"]
)
def test_tokenizer_gives_open_clip_token_ids(exported, text):
    reference = open_clip.tokenizer.SimpleTokenizer()([text]).numpy()
    np.testing.assert_array_equal(ClipTokenizer(exported / "tokenizer.json", 77)([text]), reference)


def test_over_long_text_is_cut_with_the_end_token_last(exported):
    text = " ".join(["word"] * 100)
    np.testing.assert_array_equal(
        ClipTokenizer(exported / "tokenizer.json", 77)([text]), open_clip.tokenizer.SimpleTokenizer()([text]).numpy()
    )


def test_onnx_text_embeddings_match_the_torch_text_tower(exported, tiny_model):
    words = ["cat", "traffic light", "sky"]
    embeddings = OnnxTextEmbedder(exported)(words, "tcl")
    expected = tiny_model.text_encoder.embed_prompts(words, "tcl").numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)


def test_onnx_text_cache_encodes_only_new_words(exported, monkeypatch):
    embedder = OnnxTextEmbedder(exported)
    first = embedder(["cat", "dog"], "single")
    seen = []
    original = embedder.embed
    monkeypatch.setattr(embedder, "embed", lambda words, templates: seen.append(list(words)) or original(words, templates))
    second = embedder(["dog", "tree", "cat"], "single")
    assert seen == [["tree"]]
    np.testing.assert_array_equal(second[[2, 0]], first)


def test_a_segmenter_runs_from_the_export_folder_alone(exported, tiny_model):
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    result = Segmenter.from_export(exported).segment(image, ["cat", "dog"], class_maps=True)
    expected = Segmenter.from_model(tiny_model).segment(image, ["cat", "dog"], class_maps=True)
    np.testing.assert_allclose(result.class_maps, expected.class_maps, atol=1e-4)
    assert (result.labels == expected.labels).mean() >= 0.999


def test_reexport_replaces_the_folder_and_leaves_no_scratch(direct_export, tiny_model):
    (direct_export / "stale.txt").write_text("from the old export")
    export_onnx(tiny_model, direct_export, exporter="legacy", check=False)
    assert not (direct_export / "stale.txt").exists()
    assert sorted(p.name for p in direct_export.parent.iterdir()) == ["exp"]


def test_a_failed_export_keeps_the_previous_one(direct_export, tiny_model, monkeypatch):
    before = (direct_export / "export.json").read_text()

    def broken(*args, **kwargs):
        raise ExportError("simulated exporter failure")

    monkeypatch.setattr("synseg_core.export._export_graph", broken)
    with pytest.raises(ExportError, match="simulated"):
        export_onnx(tiny_model, direct_export)
    assert (direct_export / "export.json").read_text() == before
    assert sorted(p.name for p in direct_export.parent.iterdir()) == ["exp"]


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path, tiny_model):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a SynSeg export folder"):
        export_onnx(tiny_model, tmp_path, exporter="legacy", check=False)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_input_size_must_be_a_multiple_of_the_patch(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="multiples of the patch size 16"):
        export_onnx(tiny_model, tmp_path / "x", input_size=(64, 70))


def test_opset_below_17_is_refused(tmp_path, tiny_model):
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_onnx(tiny_model, tmp_path / "x", opset=16)


def test_export_runs_in_eval_mode_and_gives_the_caller_back_a_model_in_training_mode(tmp_path):
    model = create_model("tiny", seed=0).train()
    modes = []
    model.decoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    export_onnx(model, tmp_path / "exp", exporter="legacy", check=False)
    assert modes and not any(modes)  # the graphs were traced without dropout
    assert model.training and model.decoder.training
    assert not model.image_encoder.training  # frozen towers stay in eval by construction


def test_metadata_from_another_format_version_is_refused(exported, tmp_path):
    data = json.loads((exported / "export.json").read_text())
    data["format_version"] = 99
    (tmp_path / "export.json").write_text(json.dumps(data))
    with pytest.raises(ExportError, match="format_version 99"):
        read_export(tmp_path)


def test_cli_help_teaches_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--precision fp32 fp16 int8" in text and "tensorrt_backend" in text


def test_cli_help_prebuilds_tensorrt_only_from_an_export_tensorrt_accepts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    prebuilt = text.split("python -m synseg_core.runtime.tensorrt_backend ")[1].split()[0]  # the folder it prebuilds
    made = next(line for line in text.split("python -m synseg_core.export ") if f"--out {prebuilt}" in line).split("Then:")[0]
    assert "int8" not in made and "--precision fp16" in made
    assert "writes ONNX only" in text


def test_cli_names_a_missing_checkpoint_and_fails(tmp_path, caplog):
    assert main([str(tmp_path / "nope"), "--quiet"]) == 1
    assert "nope: no such checkpoint directory" in caplog.text


def test_cli_exports_several_precisions_from_one_trace(exported):
    fp32, int8 = read_export(exported), read_export(exported.parent / "64x64_int8")
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert int8.weights_sha256 == fp32.weights_sha256
    assert int8.files["decoder"] != fp32.files["decoder"]


def test_cli_refuses_one_out_folder_for_several_precisions(checkpoint, tmp_path, caplog):
    assert main([str(checkpoint), "--out", str(tmp_path / "x"), "--precision", "fp32", "fp16", "--quiet"]) == 1
    assert "--out names one export folder" in caplog.text


def test_weights_hash_changes_with_any_weight(tiny_model):
    other = type(tiny_model)(tiny_model.config)
    other.load_state_dict(tiny_model.state_dict())
    assert weights_sha256(other) == weights_sha256(tiny_model)
    with torch.no_grad():
        other.decoder.film.film_add.bias[0] += 1e-3
    assert weights_sha256(other) != weights_sha256(tiny_model)


@pytest.fixture(scope="module")
def dynamo_text(tmp_path_factory, tiny_model):
    """The text tower through the default (dynamo) exporter, which keeps the token axis dynamic."""
    out = tmp_path_factory.mktemp("dynamo") / "exp"
    export_onnx(tiny_model, out, text_encoder=True)
    return out


def test_the_text_tower_is_exported_with_a_dynamic_token_axis(dynamo_text):
    graph = onnx.load(str(dynamo_text / "text_encoder.onnx")).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, True, True]
    assert read_export(dynamo_text).text.trim_tokens


def test_the_legacy_exporter_keeps_the_full_context_and_says_so(exported):
    dims = onnx.load(str(exported / "text_encoder.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_value == 77 and not read_export(exported).text.trim_tokens


def test_onnx_text_embeddings_of_trimmed_tokens_equal_the_full_length_ones(dynamo_text, tiny_model, monkeypatch):
    words = ["cat", "traffic light", "a rather long name of a category with many words"]
    calls = []
    trimmed = OnnxTextEmbedder(dynamo_text)
    run = trimmed._session.run
    monkeypatch.setattr(trimmed._session, "run", lambda names, feeds: calls.append(feeds["tokens"].shape) or run(names, feeds))
    embeddings = trimmed.embed(words, "tcl")
    full = OnnxTextEmbedder(dynamo_text, trim_tokens=False).embed(words, "tcl")
    assert calls and all(shape[-1] < 77 for shape in calls)  # the tower ran on fewer positions than the context
    np.testing.assert_allclose(embeddings, full, atol=1e-5)
    np.testing.assert_allclose(embeddings, tiny_model.text_encoder.embed_prompts(words, "tcl").numpy(), atol=1e-5)


def test_torch_text_tower_on_trimmed_tokens_equals_the_full_length_one(tiny_model):
    encoder = tiny_model.text_encoder
    tokens = encoder.tokenizer(["a photo of a cat.", "a photo of many traffic lights."])
    length = int(torch.nonzero(tokens.any(dim=0)).max()) + 1
    with torch.no_grad():
        full, trimmed = encoder(tokens), encoder(tokens[:, :length])
    assert length < tokens.shape[1]
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=0)
