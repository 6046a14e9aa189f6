"""Training: config resolution, the run directory, checkpoints, determinism and bad input (tiny model, CPU)."""
from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from synseg_core import load_model
from synseg_core.checkpoint import CheckpointError, read_safetensors
from synseg_core.data.synthetic import write_synthetic_dataset
from synseg_core.model.synseg import create_model
from synseg_core.text.prompts import EmbeddingCache
from synseg_core.train import main
from synseg_core.training import ConfigError, load_config, train, trainer
from synseg_core.training.config import CONFIG_DIR
from synseg_core.training.state import find_resumable, list_checkpoints, read_checkpoint
from synseg_core.training.trainer import category_embeddings, lr_factor

TINY = CONFIG_DIR / "tiny.yaml"
QUICK = ["train.steps=4", "train.batch_size=4", "train.log_every=2", "train.ckpt_every=2", "train.progress=false",
         "optim.warmup_steps=1"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("scenes"), num=12, seed=0, size=64, progress=False)


def quick_config(manifest: Path, *extra: str):
    return load_config(TINY, [f"data.train={manifest}", *QUICK, *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory, scenes) -> Path:
    """One finished 4-step MCCL run, shared read-only by the tests below."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    train(quick_config(scenes / "captions.jsonl"), run_dir)
    return run_dir


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return read_safetensors(model_dir / "model.safetensors")


# --- configuration ---------------------------------------------------------------------------------

def test_dotted_overrides_are_parsed_as_yaml_values():
    config = load_config(TINY, ["train.steps=7", "loss.weights.sep=0", "data.train=a b.jsonl", "model.overrides={decoder_dropout: 0}"])
    assert config.train.steps == 7
    assert config.loss.weights == {"align": 1.0, "cont": 1.0, "back": 1.0, "sep": 0.0}
    assert config.data.train == "a b.jsonl"
    assert config.model.overrides == {"decoder_dropout": 0}


def test_unknown_key_is_rejected_with_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown config keys \['train.stepz'\].*'steps'"):
        load_config(TINY, ["train.stepz=3"])


def test_wrongly_typed_value_names_the_key():
    with pytest.raises(ConfigError, match="train.batch_size: expected int, got 'many'"):
        load_config(TINY, ["train.batch_size=many"])


def test_base_file_is_inherited_and_overridden(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {TINY}\ntrain:\n  steps: 9\n")
    config = load_config(child)
    assert (config.train.steps, config.train.batch_size, config.model.preset) == (9, 16, "tiny")


def test_every_packaged_config_resolves():
    names = sorted(path.name for path in CONFIG_DIR.glob("*.yaml"))
    assert "tiny.yaml" in names and "synseg_vitb16_cc12m.yaml" in names
    for name in names:
        load_config(CONFIG_DIR / name)


def test_print_config_shows_the_resolved_values(capsys):
    assert main(["--config", str(TINY), "train.steps=3", "--out", "somewhere", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["steps"] == 3 and printed["out"] == "somewhere"


def test_learning_rate_warms_up_linearly_then_decays_to_min_lr():
    config = load_config(TINY, ["train.steps=100", "optim.warmup_steps=10", "optim.lr=1e-3", "optim.min_lr=1e-4"])
    assert lr_factor(0, config) == pytest.approx(0.1)
    assert lr_factor(9, config) == pytest.approx(1.0)
    assert lr_factor(55, config) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, config) == pytest.approx(0.1)


def test_a_words_training_embedding_does_not_depend_on_the_words_beside_it():
    model = create_model("tiny", seed=0)
    alone = category_embeddings(model, EmbeddingCache(), ["star"], "tcl")
    among = category_embeddings(model, EmbeddingCache(), ["grass", "brick wall", "star", "sky"], "tcl")
    assert torch.equal(among[2], alone[0])


# --- the run directory ------------------------------------------------------------------------------

def test_run_dir_holds_config_metrics_tensorboard_checkpoints_and_model(run):
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl", "model", "tb"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000004"
    assert sorted(p.name for p in (run / "checkpoints" / "step_000004").iterdir()) == [
        "config.json", "model.safetensors", "optimizer.pt", "train_config.yaml", "trainer_state.json"]
    assert yaml.safe_load((run / "config.yaml").read_text())["out"] == str(run)


def test_metrics_record_every_loss_term_at_each_log_step(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    for record in records:
        assert {"loss", "loss_align", "loss_cont", "loss_back", "loss_sep", "lr", "images_per_s", "bad_samples"} <= set(record)
        assert record["loss"] == pytest.approx(sum(record[f"loss_{t}"] for t in ("align", "cont", "back", "sep")))
    assert records[-1]["images_seen"] == 16


def test_checkpoints_are_pruned_to_keep_checkpoints(run):
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000002", "step_000004"]


def test_final_model_loads_and_only_trainable_parts_changed(run):
    trained = weights(run / "model")
    initial = create_model("tiny", seed=0).state_dict()
    changed = sorted({name.split(".")[0] for name in trained if not torch.equal(trained[name], initial[name])})
    assert changed == ["decoder", "projector"]
    assert load_model(run / "model").config.image_size == 64


def test_training_is_deterministic_with_a_seed(tmp_path, scenes, run):
    train(quick_config(scenes / "captions.jsonl"), tmp_path / "again")
    first, second = weights(run / "model"), weights(tmp_path / "again" / "model")
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_resume_falls_back_past_an_unreadable_checkpoint(tmp_path, run, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    newest = copy / "checkpoints" / "step_000004" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    shutil.rmtree(copy / "model")
    with caplog.at_level(logging.INFO, logger="synseg.train"):
        train(load_config(copy / "config.yaml"), copy, resume=True)
    assert "cannot resume from" in caplog.text and "step_000004" in caplog.text
    assert "resuming from" in caplog.text and "(step 2)" in caplog.text
    resumed, straight = weights(copy / "model"), weights(run / "model")
    assert all(torch.equal(resumed[name], straight[name]) for name in straight)


def test_resume_takes_the_newest_checkpoint_even_when_latest_still_names_an_older_one(tmp_path, run):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "latest").write_text("step_000002\n")  # killed between the rename and the pointer update
    assert find_resumable(copy).directory.name == "step_000004"


def test_resume_passes_over_a_checkpoint_missing_one_of_its_files(tmp_path, run, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "checkpoints" / "step_000004" / "config.json").unlink()
    assert find_resumable(copy).directory.name == "step_000002"
    assert "cannot resume from" in caplog.text and "step_000004" in caplog.text and "config.json" in caplog.text


def crash_replacing(target: str, content: str | None = None):
    """An os.replace that raises, as a kill would stop it, when moving onto ``target`` (with ``content``, if given)."""
    real = os.replace

    def replace(source, destination):
        if Path(destination).name == target and (content is None or Path(source).read_text() == content):
            raise OSError(f"simulated crash while publishing {destination}")
        real(source, destination)

    return replace


@pytest.mark.parametrize("crash, resumed_step", [
    (crash_replacing("step_000004"), 2),  # the step directory is never renamed into place
    (crash_replacing("latest", "step_000004\n"), 4),  # renamed, but latest still names step_000002
], ids=["step_directory_rename", "latest_pointer_update"])
def test_a_crash_while_publishing_a_checkpoint_loses_nothing_but_its_steps(tmp_path, scenes, run, monkeypatch, caplog,
                                                                           crash, resumed_step):
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        train(quick_config(scenes / "captions.jsonl"), tmp_path / "run")
    monkeypatch.undo()
    for checkpoint in list_checkpoints(tmp_path / "run"):
        read_checkpoint(checkpoint)  # every published checkpoint is whole
    with caplog.at_level(logging.INFO, logger="synseg.train"):
        train(load_config(tmp_path / "run" / "config.yaml"), tmp_path / "run", resume=True)
    assert f"(step {resumed_step})" in caplog.text
    resumed, straight = weights(tmp_path / "run" / "model"), weights(run / "model")
    assert all(torch.equal(resumed[name], straight[name]) for name in straight)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["latest", "step_000002", "step_000004"]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "step_000004\n"


def test_resume_drops_a_metrics_line_cut_off_by_a_kill(tmp_path, run, caplog):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    with (copy / "metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 5, "epoch": 1, "lr": 0.0')  # the process died mid-write
    train(load_config(copy / "config.yaml"), copy, resume=True)
    assert f"{copy / 'metrics.jsonl'}:3: dropping an unreadable metrics record" in caplog.text
    assert [json.loads(line)["step"] for line in (copy / "metrics.jsonl").read_text().splitlines()] == [2, 4]


def test_resume_removes_the_temporary_files_of_interrupted_atomic_writes(tmp_path, run):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    left = [copy / "checkpoints" / ".latest.k1ll3d.tmp", copy / ".metrics.jsonl.k1ll3d.tmp"]
    for path in left:
        path.write_text("half")
    train(load_config(copy / "config.yaml"), copy, resume=True)
    assert not any(path.exists() for path in left)


def test_existing_run_is_not_overwritten_without_resume(run, caplog):
    assert main(["--config", str(TINY), f"data.train={run}/unused.jsonl", "--out", str(run)]) == 2
    assert "already holds a trained run" in caplog.text and "--resume" in caplog.text


def test_resume_without_config_reads_the_run_config(tmp_path, run):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["--out", str(copy), "--resume", "train.steps=5"]) == 0
    assert (copy / "checkpoints" / "latest").read_text().strip() == "step_000005"


# --- bad input --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_data_run(tmp_path_factory, scenes) -> tuple[Path, str]:
    """A 5-step run on the scenes plus four bad records (manifest lines 13-16): (run dir, its log)."""
    data = tmp_path_factory.mktemp("bad") / "data"
    shutil.copytree(scenes, data)
    (data / "images" / "corrupt.png").write_bytes(b"not an image")
    Image.new("RGB", (64, 64)).save(data / "images" / "plain.png")
    bad = [
        {"image": "images/missing.png", "caption": "a red star on the grass"},
        {"image": "images/corrupt.png", "caption": "a red star on the grass"},
        {"image": "images/plain.png", "caption": "   "},
        {"image": "images/plain.png", "caption": "the left and the right of it"},
    ]
    with (data / "captions.jsonl").open("a") as manifest:
        manifest.writelines(json.dumps(entry) + "\n" for entry in bad)
    log, handler, root = io.StringIO(), logging.StreamHandler(), logging.getLogger()
    handler.setStream(log)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        train(quick_config(data / "captions.jsonl", "train.steps=5", "train.log_every=5"), data.parent / "run")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return data.parent / "run", log.getvalue()


def test_bad_samples_are_skipped_counted_and_named(bad_data_run):
    run_dir, log = bad_data_run
    final = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["bad_samples"] == 4
    for reason in ("missing_image", "corrupt_image", "empty_caption", "no_category"):
        assert reason in log
    assert f"'captions.jsonl:13' (missing_image, image {run_dir.parent / 'data' / 'images' / 'missing.png'})" in log


def test_training_ends_with_the_skipped_samples_by_reason(bad_data_run):
    summary = [line for line in bad_data_run[1].splitlines() if "over the whole run" in line]
    assert summary == ["training data over the whole run (all ranks): "
                       "20 samples, 4 skipped (corrupt_image 1, empty_caption 1, missing_image 1, no_category 1)"]


def test_empty_manifest_fails_with_a_message_naming_it(tmp_path, caplog):
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["--config", str(TINY), f"data.train={tmp_path / 'empty.jsonl'}", "--out", str(tmp_path / "run"), *QUICK]) == 1
    assert f"{tmp_path / 'empty.jsonl'} is empty" in caplog.text


def test_manifest_without_usable_samples_fails_with_a_message(tmp_path, caplog):
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "nowhere.png", "caption": "a dog"}) + "\n")
    assert main(["--config", str(TINY), f"data.train={tmp_path / 'bad.jsonl'}", "--out", str(tmp_path / "run"), *QUICK]) == 1
    assert "no usable samples" in caplog.text and "bad.jsonl" in caplog.text


def test_missing_data_setting_explains_what_to_set(tmp_path, caplog):
    assert main(["--config", str(TINY), "--out", str(tmp_path / "run"), *QUICK]) == 1
    assert "set data.train" in caplog.text


def write_shards(scenes: Path, out: Path, shards: int, corrupt: str | None = None) -> str:
    """The scenes as img2dataset-style tar shards (key.png, key.txt, key.json); ``corrupt`` names a key whose image is garbage."""
    out.mkdir()
    entries = [json.loads(line) for line in (scenes / "captions.jsonl").read_text().splitlines()]
    for index in range(shards):
        with tarfile.open(out / f"{index:03d}.tar", "w") as tar:
            for number, entry in enumerate(entries[index::shards]):
                key = f"{index:03d}{number:03d}"
                image = b"garbage" if key == corrupt else (scenes / entry["image"]).read_bytes()
                files = {"png": image, "txt": entry["caption"].encode(), "json": json.dumps({"categories": entry["categories"]}).encode()}
                for extension, data in files.items():
                    info = tarfile.TarInfo(f"{key}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(out / f"{{000..{shards - 1:03d}}}.tar")


def test_shards_train_and_a_corrupt_sample_inside_one_is_skipped_and_named(tmp_path, scenes, caplog):
    pattern = write_shards(scenes, tmp_path / "shards", shards=2, corrupt="001002")
    with caplog.at_level(logging.WARNING):
        train(quick_config(pattern, "train.steps=3", "train.log_every=3"), tmp_path / "run")
    final = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["images_seen"] == 11 and final["bad_samples"] == 1  # one epoch: 4 + 4 + the 3 good images left
    assert "001.tar/001002" in caplog.text and "corrupt_image" in caplog.text


def test_missing_shard_fails_with_a_message_naming_it(tmp_path, scenes, caplog):
    pattern = write_shards(scenes, tmp_path / "shards", shards=2)
    (tmp_path / "shards" / "001.tar").unlink()
    assert main(["--config", str(TINY), f"data.train={pattern}", "--out", str(tmp_path / "run"), *QUICK]) == 1
    assert f"shard {tmp_path / 'shards' / '001.tar'} does not exist" in caplog.text


def test_too_few_shards_for_the_data_workers_is_explained(tmp_path, scenes, caplog):
    pattern = write_shards(scenes, tmp_path / "shards", shards=1)
    assert main(["--config", str(TINY), f"data.train={pattern}", "data.num_workers=2", "--out", str(tmp_path / "run"), *QUICK]) == 1
    assert "1 shards cannot feed 1 rank(s) x 2 data worker(s)" in caplog.text


def test_extra_stop_words_are_never_training_categories(tmp_path, scenes, monkeypatch):
    records = [json.loads(line) for line in (scenes / "captions.jsonl").read_text().splitlines()]
    assert any("floor" in record["categories"] for record in records)
    (tmp_path / "captions.jsonl").write_text("".join(  # no "categories" field: the extractor reads the captions
        json.dumps({"image": str(scenes / r["image"]), "caption": r["caption"]}) + "\n" for r in records))
    trained_on: set[str] = set()

    def recording(model, cache, words, template_set):
        trained_on.update(words)
        return category_embeddings(model, cache, words, template_set)

    monkeypatch.setattr(trainer, "category_embeddings", recording)
    train(quick_config(tmp_path / "captions.jsonl", "train.steps=3", "data.extra_stop_words=[floor]"), tmp_path / "run")
    assert trained_on and "floor" not in trained_on
    assert "star" in trained_on or "ring" in trained_on


# --- optimisation and progress ----------------------------------------------------------------------

def test_gradient_clipping_bounds_the_gradient_the_optimiser_sees_and_logs_the_norm_before(tmp_path, scenes, monkeypatch):
    seen = []
    step = torch.optim.AdamW.step

    def recording_step(optimizer, *args, **kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        seen.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    for clip in (0.0, 1e-3):  # the first step's gradient is the same with and without clipping
        train(quick_config(scenes / "captions.jsonl", "train.steps=1", "train.log_every=1", f"train.grad_clip={clip}"),
              tmp_path / f"clip{clip}")
    unclipped, clipped = seen
    logged = [json.loads((tmp_path / f"clip{clip}" / "metrics.jsonl").read_text())["grad_norm"] for clip in (0.0, 1e-3)]
    assert unclipped > 10 * 1e-3
    assert clipped == pytest.approx(1e-3, rel=1e-4)
    assert logged == pytest.approx([unclipped, unclipped], rel=1e-6)


def test_progress_bar_shows_the_loss_terms_and_images_per_second(tmp_path, scenes, capsys):
    train(quick_config(scenes / "captions.jsonl", "train.steps=1", "train.progress=true"), tmp_path / "run")
    shown = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    for field in ("loss=", "align=", "cont=", "back=", "sep=", "img/s="):
        assert field in shown
    assert "1/1" in shown


# --- the baseline objective --------------------------------------------------------------------------

def test_single_infonce_baseline_trains_and_logs_its_terms(tmp_path, scenes):
    train(quick_config(scenes / "captions.jsonl", "loss.name=single_infonce"), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss_infonce", "sim_positive", "acc_infonce"} <= set(record)
    assert "loss_align" not in record
    assert record["loss"] == pytest.approx(record["loss_infonce"])


def test_a_run_started_from_a_checkpoint_applies_the_model_overrides(tmp_path, scenes, run):
    train(quick_config(scenes / "captions.jsonl", f"model.init={run / 'model'}", "model.overrides.fss_source=visual"), tmp_path / "run")
    assert load_model(run / "model").config.fss_source == "conditional"
    assert load_model(tmp_path / "run" / "model").config.fss_source == "visual"



def test_training_logs_caption_categories_and_the_most_frequent_ones_at_the_start(tmp_path, scenes, caplog):
    captions = [json.loads(line) for line in (scenes / "captions.jsonl").read_text().splitlines()]
    with caplog.at_level(logging.INFO, logger="synseg.train"):
        train(quick_config(scenes / "captions.jsonl", "train.steps=1", "train.ckpt_every=1"), tmp_path / "run")
    shown = [r.getMessage() for r in caplog.records if r.getMessage().startswith("categories of ")]
    expected = {f"categories of {c['caption']!r}: {c['categories']}": c["categories"] for c in captions}
    assert len(shown) == 4 and set(shown) <= set(expected)  # the first batch's 4 captions, each with its categories
    counts = Counter(word for message in shown for word in expected[message])
    frequent = [r.getMessage() for r in caplog.records if r.getMessage().startswith("most frequent categories in the first 4 captions")]
    assert len(frequent) == 1 and f"(of {len(counts)} distinct)" in frequent[0]
    assert all(f"{word} {count}" in frequent[0] for word, count in counts.items())


# A CLIP of one's own, shaped unlike the tiny preset's (8-px patches, 32 text tokens), as benchmarks/stage1_clip.py writes it.
OWN_CLIP = {
    "embed_dim": 64, "quick_gelu": False,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 96, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
}


def own_clip_file(path: Path, metadata: dict[str, str] | None) -> dict[str, torch.Tensor]:
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    torch.manual_seed(1)
    state = {k: v.contiguous() for k, v in CLIP(**OWN_CLIP).state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    return state


def test_clip_weights_of_another_shape_build_the_towers_from_the_files_metadata(tmp_path):
    path = tmp_path / "own_clip.safetensors"
    state = own_clip_file(path, {"config": json.dumps(OWN_CLIP)})
    model = trainer.build_model(load_config(TINY, [f"model.clip_weights={path}"]), seed=0)
    assert model.config.clip_config == OWN_CLIP and model.patch_size == 8
    torch.testing.assert_close(model.state_dict()["image_encoder.visual.conv1.weight"], state["visual.conv1.weight"])


def test_clip_weights_of_another_shape_without_metadata_name_the_override_to_set(tmp_path):
    path = tmp_path / "own_clip.safetensors"
    own_clip_file(path, None)
    with pytest.raises(CheckpointError, match=r'wrong shape.*model\.overrides=\{"clip_config": \{"embed_dim"'):
        trainer.build_model(load_config(TINY, [f"model.clip_weights={path}"]), seed=0)


def test_an_explicit_clip_config_that_does_not_fit_is_told_the_one_in_the_file(tmp_path):
    path = tmp_path / "own_clip.safetensors"
    own_clip_file(path, {"config": json.dumps(OWN_CLIP)})
    tiny_clip = json.dumps({"clip_config": create_model("tiny").config.clip_config})
    with pytest.raises(CheckpointError, match=r'describes its CLIP in its metadata: set model\.overrides=\{"clip_config": \{"embed_dim": 64'):
        trainer.build_model(load_config(TINY, [f"model.clip_weights={path}", f"model.overrides={tiny_clip}"]), seed=0)
