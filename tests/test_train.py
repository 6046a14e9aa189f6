"""Training: config resolution, the run directory, checkpoints, determinism and bad input (tiny model, CPU)."""
from __future__ import annotations

import io
import json
import logging
import math
import shutil
import tarfile
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from synseg_core import load_model
from synseg_core.checkpoint import read_safetensors
from synseg_core.data.synthetic import write_synthetic_dataset
from synseg_core.model.synseg import create_model
from synseg_core.text.prompts import EmbeddingCache
from synseg_core.train import main
from synseg_core.training import ConfigError, load_config, train
from synseg_core.training.config import CONFIG_DIR
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


def test_existing_run_is_not_overwritten_without_resume(run, caplog):
    assert main(["--config", str(TINY), f"data.train={run}/unused.jsonl", "--out", str(run)]) == 2
    assert "already holds a trained run" in caplog.text and "--resume" in caplog.text


def test_resume_without_config_reads_the_run_config(tmp_path, run):
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["--out", str(copy), "--resume", "train.steps=5"]) == 0
    assert (copy / "checkpoints" / "latest").read_text().strip() == "step_000005"


# --- bad input --------------------------------------------------------------------------------------

def test_bad_samples_are_skipped_counted_and_named(tmp_path, scenes, caplog):
    data = tmp_path / "data"
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
    with caplog.at_level(logging.WARNING):
        train(quick_config(data / "captions.jsonl", "train.steps=5", "train.log_every=5"), tmp_path / "run")
    final = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["bad_samples"] == 4
    for reason in ("missing_image", "corrupt_image", "empty_caption", "no_category"):
        assert reason in caplog.text
    assert "captions.jsonl:13" in caplog.text  # the first bad line is named


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
