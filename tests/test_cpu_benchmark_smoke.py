"""CPU benchmark pieces: stage-1 CLIP, the CLIPSeg stand-in, stage-2 commands, resumption, the oracle and the results table."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from postprocess_reference import ReferenceBackend

from benchmarks import cpu_benchmark
from benchmarks.clipseg_init import SEEN_CLASSES, UNSEEN_CLASSES, referred_classes, train_clipseg_init
from benchmarks.cpu_benchmark import (
    DEFAULT_KEY,
    DEFAULT_START,
    EXPERIMENTS,
    FINETUNE_LR,
    METHODS,
    QUICK,
    RECIPES,
    Benchmark,
    Outcome,
    Score,
    results_markdown,
    selectivity,
    stage2_command,
    summarise,
)
from benchmarks.mccl_oracle import load_captioned_masks, oracle_terms, run_terms
from benchmarks.stage1_clip import BENCHMARK_CLIP, train_clip
from synseg_core.checkpoint import load_model
from synseg_core.config import SynSegConfig
from synseg_core.data.benchmarks import get_dataset
from synseg_core.data.synthetic import CLASSES, write_synthetic_dataset
from synseg_core.evaluation.inference import SlidingWindow
from synseg_core.evaluation.protocols import get_protocol
from synseg_core.losses.mccl import TERMS
from synseg_core.model.synseg import create_model
from synseg_core.runtime.processing import sigmoid
from synseg_core.runtime.segmenter import Segmenter
from synseg_core.weights import load_clip_weights

METHOD = {m.key: m for m in RECIPES}


def test_stage1_clip_trains_and_loads_into_the_frozen_synseg_towers(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", 8, seed=3, progress=False)
    stats = train_clip(data / "captions.jsonl", tmp_path / "clip.safetensors", steps=2, batch_size=4, warmup=1, progress=False)
    assert stats["loss_first"] > 0
    model = create_model("tiny", seed=1, clip_config=BENCHMARK_CLIP)
    before = model.image_encoder.visual.conv1.weight.clone()
    load_clip_weights(model, tmp_path / "clip.safetensors")
    assert not model.image_encoder.visual.conv1.weight.equal(before)
    assert model.image_encoder.patch_size == 8


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A 2-step stage-1 CLIP and 8 scenes (with masks) to train on."""
    root = tmp_path_factory.mktemp("stage1")
    data = write_synthetic_dataset(root / "data", 8, seed=3, progress=False)
    train_clip(data / "captions.jsonl", root / "clip.safetensors", steps=2, batch_size=4, warmup=1, progress=False)
    return data, root / "clip.safetensors"


def test_seen_and_unseen_classes_split_the_vocabulary():
    assert set(SEEN_CLASSES) | set(UNSEEN_CLASSES) == set(CLASSES) and not set(SEEN_CLASSES) & set(UNSEEN_CLASSES)


def test_referred_classes_put_the_seen_classes_present_first_then_absent_seen_ones():
    seen = torch.tensor([1, 2, 3, 4, 5])
    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[0, :2], masks[0, 2:] = 2, 9  # 9 is not a seen class: never referred to
    masks[1] = 5
    chosen = referred_classes(masks, seen, torch.Generator().manual_seed(0))
    assert chosen.shape == (2, 4)
    assert chosen[0, 0] == 2 and chosen[1, 0] == 5
    assert set(chosen[0, 1:].tolist()) <= {1, 3, 4, 5} and set(chosen[1, 1:].tolist()) <= {1, 2, 3, 4}
    assert all(len(set(row)) == 4 for row in chosen.tolist())


def test_the_clipseg_stand_in_trains_only_film_and_decoder_and_keeps_the_stage1_towers(stage1, tmp_path):
    data, clip = stage1
    stats = train_clipseg_init(data, clip, tmp_path / "init", steps=2, batch_size=4, progress=False)
    assert stats["loss_first"] > 0
    model = load_model(tmp_path / "init")
    reference = load_clip_weights(create_model("tiny", seed=0, clip_config=BENCHMARK_CLIP), clip)
    assert torch.equal(model.image_encoder.visual.conv1.weight, reference.image_encoder.visual.conv1.weight)
    assert torch.equal(model.projector.net.weight, reference.projector.net.weight)  # CLIPSeg has no projector
    assert not torch.equal(model.decoder.film.film_mul.weight, reference.decoder.film.film_mul.weight)


def test_oracle_terms_are_the_four_finite_mccl_terms(stage1, tmp_path):
    data, clip = stage1
    train_clipseg_init(data, clip, tmp_path / "init", steps=1, batch_size=2, progress=False)
    for source in ("conditional", "visual"):
        terms = oracle_terms(data, tmp_path / "init", source, steps=2, batch_size=4)
        assert set(terms) == {"align", "cont", "back", "sep"} and all(np.isfinite(v) and v >= 0 for v in terms.values())


def test_the_oracle_reads_web_captions_whose_words_without_a_region_get_an_empty_true_mask(stage1, tmp_path):
    data, clip = stage1
    web = write_synthetic_dataset(tmp_path / "web", 24, seed=3, progress=False, caption_style="web")
    images, masks, categories, words = load_captioned_masks(web, max_categories=4)
    assert words[:len(CLASSES)] == list(CLASSES) and len(words) > len(CLASSES)  # some captions name a word with no region
    absent = categories >= len(CLASSES)
    assert absent.any() and not (masks.unsqueeze(1) == categories[:, :, None, None])[absent].any()
    train_clipseg_init(data, clip, tmp_path / "init", steps=1, batch_size=2, progress=False)
    assert all(np.isfinite(v) for v in oracle_terms(web, tmp_path / "init", "visual", steps=2, batch_size=4).values())


def test_run_terms_average_the_last_logged_steps(tmp_path):
    records = [{"step": i, "loss_align": float(i), "loss_cont": 1.0, "loss_back": 2.0, "loss_sep": 3.0} for i in range(10)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert run_terms(tmp_path, last=2) == {"align": 8.5, "cont": 1.0, "back": 2.0, "sep": 3.0}


def test_an_ablation_run_starts_from_the_clipseg_stand_in_and_zeroes_exactly_its_term(tmp_path):
    command = stage2_command(METHOD["no_sep"], 2, QUICK, tmp_path / "clip.safetensors", tmp_path / "init", tmp_path / "m.jsonl",
                             tmp_path / "run", resume=False)
    assert command[1:3] == ["-m", "synseg_core.train"]
    assert "loss.weights.sep=0" in command and "loss.name=mccl" in command and "model.overrides.fss_source=visual" in command
    assert not any(arg.startswith(("loss.weights.align", "loss.weights.cont", "loss.weights.back")) for arg in command)
    assert f"model.init={tmp_path / 'init'}" in command and set(FINETUNE_LR) <= set(command) and "train.seed=2" in command
    assert not any(arg.startswith("model.clip_weights") for arg in command)  # the stand-in holds the stage-1 towers
    assert "--resume" not in command
    assert stage2_command(METHOD["infonce"], 0, QUICK, tmp_path, tmp_path, tmp_path, tmp_path, resume=True)[-2:] == [
        "model.overrides.fss_source=visual", "--resume"]


def test_a_run_from_a_random_decoder_loads_the_stage1_clip_and_refines_its_config(tmp_path):
    command = stage2_command(METHOD["scratch_visual"], 0, QUICK, tmp_path / "clip.safetensors", tmp_path, tmp_path, tmp_path, resume=False)
    assert f"model.clip_weights={tmp_path / 'clip.safetensors'}" in command and not any(a.startswith("model.init") for a in command)
    assert not set(FINETUNE_LR) & set(command)
    clip = next(i for i, arg in enumerate(command) if arg.startswith("model.overrides={"))
    assert command.index("model.overrides.fss_source=visual") > clip  # refines the dict, does not replace it


def test_seen_and_unseen_scores_are_means_of_the_per_class_ious():
    per_class = {name: 10.0 for name in SEEN_CLASSES} | {name: 40.0 for name in UNSEEN_CLASSES}
    per_class[UNSEEN_CLASSES[0]] = None  # absent from the evaluation set: not averaged
    score = Score.from_results({"miou": 25.0, "pixel_accuracy": 60.0, "per_class_iou": per_class})
    assert (score.miou, score.seen, score.unseen, score.accuracy) == (25.0, 10.0, 40.0, 60.0)


def test_a_finished_stage2_run_is_not_trained_again(tmp_path, monkeypatch):
    model = tmp_path / "runs" / "synseg_seed0" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(cpu_benchmark.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was retrained"))
    assert Benchmark(tmp_path, QUICK).stage2(METHOD["synseg"], 0) == model


def test_an_ablation_counts_as_hurting_only_beyond_the_seed_spread():
    assert cpu_benchmark.direction(-1.0, 0.5) == "yes (removing it hurts)"
    assert cpu_benchmark.direction(-0.3, 0.5) == "not resolved (within the seed spread)"
    assert cpu_benchmark.direction(0.8, 0.5) == "no (removing it helps here)"


def test_summary_is_mean_and_sample_standard_deviation_over_seeds():
    summary = summarise({"synseg": [40.0, 42.0, 44.0], "maskclip": [30.0]})
    assert summary["synseg"] == {"mean": 42.0, "std": 2.0, "n": 3}
    assert summary["maskclip"] == {"mean": 30.0, "std": 0.0, "n": 1}


def test_results_table_shows_seen_unseen_deltas_the_paper_direction_and_the_oracle():
    def scores(*values):
        return [Score(v, v - 5, v + 5, 50.0) for v in values]

    per_seed = {DEFAULT_KEY[k]: v for k, v in {
        "synseg_visual": scores(40.0, 42.0, 44.0), "no_sep": scores(35.0, 36.0, 37.0), "no_align": scores(43.0, 43.0, 43.0),
        "maskclip": scores(30.0), "clipseg_init": scores(20.0)}.items()}
    oracle = {"oracle, visual FSS": {"align": 0.5, "cont": 0.5, "back": 0.5, "sep": 0.5},
              DEFAULT_KEY["synseg_visual"]: {"align": 0.25, "cont": 0.25, "back": 0.25, "sep": 0.25}}
    outcome = Outcome(scores=per_seed, selectivity={k: (0.75, 0.25) for k in per_seed}, synseg_models={}, oracle=oracle,
                      stages={"stage1": {"loss_first": 4.0, "loss_last": 1.0}, "clipseg_init": {"loss_first": 0.7, "loss_last": 0.1}})
    invocations = [{"started": "2026-01-01 10:00 UTC", "minutes": 20.0, "load_start": 1.5, "load_end": 2.5},
                   {"started": "2026-01-01 11:00 UTC", "minutes": 10.0, "load_start": 0.5, "load_end": 1.0}]
    context = {"command": "python -m benchmarks.cpu_benchmark", "finished": "now", "wall_minutes": 30.0, "invocations": invocations,
               "cpus": 2, "scale": cpu_benchmark.asdict(QUICK), "stages": outcome.stages, "protocol": "protocol synthetic",
               "reading": cpu_benchmark.reading(outcome)}
    text = results_markdown(outcome, context)
    assert ("| SynSeg, FSS on text-free features (fss_source=visual) | the attribute stand-in | 42.00 ± 2.00 | 37.00 ± 2.00 | 47.00 ± 2.00 | "
            "40.00, 42.00, 44.00 | 50.00 | 0.750 / 0.250 |") in text
    assert "| MaskCLIP (training-free dense CLIP) | (training-free) | 30.00 ± 0.00 |" in text
    assert "| L_sep | -6.00 (± 1.00) | -6.00 | -2.2 / -3.9 / -2.7 | yes (removing it hurts) |" in text
    assert "| L_align | +1.00 (± 0.00) | +1.00 | -0.4 / -0.7 / -0.4 | not resolved (within the seed spread) |" in text
    assert "| oracle, visual FSS | 0.500 | 0.500 | 0.500 | 0.500 | 2.000 |" in text
    assert "- SynSeg (text-free FSS) beats the attribute stand-in in unseen-class mIoU (47.00 vs 25.00, Δ +22.00)." in text
    assert "referring phrases `--referring attributes`" in text and "(web captions: CC12M-like" in text
    assert "- SynSeg (text-free FSS) scores above MaskCLIP" not in text and "- SynSeg (text-free FSS) beats MaskCLIP in mIoU" in text
    assert "1.000 where SynSeg (text-free FSS) ends (below the true masks)" in text
    assert "Wall time: 30.0 min in 2 invocation(s)" in text and "| 2026-01-01 11:00 UTC | 10.0 | 0.5 | 1.0 |" in text


class OracleBackend(ReferenceBackend):
    """Logit +5 for the class whose id is painted into the red channel (red = 10 * id), -5 elsewhere."""

    name = "oracle"

    def infer(self, pixels, text):
        painted = np.rint(pixels[:, 0] * 255 / 10).astype(int)
        return np.where(painted[:, None] == np.arange(text.shape[0])[None, :, None, None], 5.0, -5.0).astype(np.float32)


def test_selectivity_is_the_mean_score_inside_versus_outside_each_present_class(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("sky\ncat\ndog\n")
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 1
    Image.fromarray(np.stack([10 * mask, mask * 0, mask * 0], axis=-1)).save(root / "images" / "0.png")
    Image.fromarray(mask).save(root / "masks" / "0.png")
    segmenter = Segmenter(OracleBackend(), lambda words, _: np.eye(len(words), dtype=np.float32),
                          SynSegConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)), patch_size=16)
    inside, outside = selectivity(SlidingWindow(segmenter, get_protocol("synthetic")), get_dataset("folder", root), 10)
    assert inside == pytest.approx(float(sigmoid(np.float32(5.0))))
    assert outside == pytest.approx(float(sigmoid(np.float32(-5.0))))


def test_baselines_only_scores_the_training_free_rows_without_any_stage2_training(tmp_path):
    assert cpu_benchmark.main(["--quick", "--baselines-only", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "BASELINES.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "(training-free)" in line]
    assert [row.split(" (")[0] for row in rows] == ["| MaskCLIP", "| NACLIP", "| ClearCLIP"]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "clipseg_init_seed0").exists()


def test_the_full_run_trains_every_recipe_in_the_default_setting_under_its_experiments_run_names():
    rows = {m.key: m for m in METHODS}
    assert DEFAULT_START == "clipseg_attr" and DEFAULT_START in rows and "clipseg_init" not in rows
    for recipe in (m for m in RECIPES if m.trained):
        row = rows[DEFAULT_KEY[recipe.key]]
        assert row.captions == "web" and row.overrides == recipe.overrides and row.label == recipe.label
        assert row.start == (DEFAULT_START if recipe.init == cpu_benchmark.CLIPSEG else "clipseg_init")
    assert rows["no_sep_web_attr"].reference == "synseg_visual_web_attr"
    assert rows["scratch_web"].init == cpu_benchmark.RANDOM
    # The ablations experiment is the full run's rows (trained once when both share --out); so is the 8x8 row of resolution.
    assert EXPERIMENTS["ablations"].methods == tuple(rows[k] for k in ("synseg_visual_web_attr", *(f"no_{t}_web_attr" for t in TERMS)))
    assert EXPERIMENTS["resolution"].methods[0].key == "synseg_visual_web_attr"


def test_the_demo_model_is_replaced_only_by_a_better_run(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    monkeypatch.setattr(cpu_benchmark, "ASSETS", assets)
    benchmark = Benchmark(tmp_path / "out", QUICK)
    assert benchmark.installed_demo() is None  # nothing installed: any run is installed
    (assets / "demo_model").mkdir(parents=True)
    (assets / "demo_model" / "model.safetensors").write_bytes(b"installed")
    scored = []

    def evaluate(name, arguments):
        scored.append((name, arguments))
        return {"miou": 13.5, "pixel_accuracy": 40.0, "per_class_iou": {}}

    monkeypatch.setattr(benchmark, "evaluate", evaluate)
    assert benchmark.installed_demo() == 13.5
    name, arguments = scored[0]
    assert name.startswith("installed_demo_") and arguments == ["-c", str(assets / "demo_model")]
    (assets / "demo_model" / "model.safetensors").write_bytes(b"another")
    benchmark.installed_demo()
    assert scored[1][0] != name  # a changed model is scored again, not read from the old evaluation
