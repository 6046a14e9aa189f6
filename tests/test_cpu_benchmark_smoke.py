"""CPU benchmark pieces: stage-1 CLIP fits SynSeg's towers, stage-2 commands, resumption and the results table."""
import numpy as np
import pytest
from PIL import Image

from benchmarks import cpu_benchmark
from benchmarks.cpu_benchmark import METHODS, QUICK, Benchmark, Outcome, results_markdown, selectivity, stage2_command, summarise
from benchmarks.stage1_clip import BENCHMARK_CLIP, train_clip
from synseg_core.config import SynSegConfig
from synseg_core.data.benchmarks import get_dataset
from synseg_core.data.synthetic import write_synthetic_dataset
from synseg_core.evaluation.inference import SlidingWindow
from synseg_core.evaluation.protocols import get_protocol
from synseg_core.model.synseg import create_model
from synseg_core.runtime.backend import Backend
from synseg_core.runtime.processing import sigmoid
from synseg_core.runtime.segmenter import Segmenter
from synseg_core.weights import load_clip_weights

METHOD = {m.key: m for m in METHODS}


def test_stage1_clip_trains_and_loads_into_the_frozen_synseg_towers(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", 8, seed=3, progress=False)
    stats = train_clip(data / "captions.jsonl", tmp_path / "clip.safetensors", steps=2, batch_size=4, warmup=1, progress=False)
    assert stats["loss_first"] > 0
    model = create_model("tiny", seed=1, clip_config=BENCHMARK_CLIP)
    before = model.image_encoder.visual.conv1.weight.clone()
    load_clip_weights(model, tmp_path / "clip.safetensors")
    assert not model.image_encoder.visual.conv1.weight.equal(before)
    assert model.image_encoder.patch_size == 8


def test_an_ablation_run_zeroes_exactly_its_term_and_uses_the_frozen_stage1_clip(tmp_path):
    command = stage2_command(METHOD["no_sep"], 2, QUICK, tmp_path / "clip.safetensors", tmp_path / "m.jsonl", tmp_path / "run", resume=False)
    assert command[1:3] == ["-m", "synseg_core.train"]
    assert "loss.weights.sep=0" in command and "loss.name=mccl" in command
    assert not any(arg.startswith(("loss.weights.align", "loss.weights.cont", "loss.weights.back")) for arg in command)
    assert f"model.clip_weights={tmp_path / 'clip.safetensors'}" in command and "train.seed=2" in command
    assert "--resume" not in command
    assert stage2_command(METHOD["infonce"], 0, QUICK, tmp_path, tmp_path, tmp_path, resume=True)[-2:] == ["loss.name=single_infonce", "--resume"]


def test_the_text_free_fss_variant_adds_its_option_to_the_benchmark_clip_config(tmp_path):
    command = stage2_command(METHOD["synseg_visual"], 0, QUICK, tmp_path, tmp_path, tmp_path, resume=False)
    clip = next(i for i, arg in enumerate(command) if arg.startswith("model.overrides={"))
    assert command.index("model.overrides.fss_source=visual") > clip  # refines the dict, does not replace it


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


def test_results_table_shows_deltas_and_the_paper_direction():
    per_seed = {"synseg": [40.0, 42.0, 44.0], "no_sep": [35.0, 36.0, 37.0], "no_align": [43.0, 43.0, 43.0], "maskclip": [30.0]}
    summary = summarise(per_seed)
    outcome = Outcome(mious=per_seed, accuracy={k: 50.0 for k in per_seed}, selectivity={k: (0.75, 0.25) for k in per_seed},
                      synseg_models={}, stage1={"loss_first": 4.0, "loss_last": 1.0})
    invocations = [{"started": "2026-01-01 10:00 UTC", "minutes": 20.0, "load_start": 1.5, "load_end": 2.5},
                   {"started": "2026-01-01 11:00 UTC", "minutes": 10.0, "load_start": 0.5, "load_end": 1.0}]
    context = {"command": "python -m benchmarks.cpu_benchmark", "finished": "now", "wall_minutes": 30.0, "invocations": invocations,
               "cpus": 2, "scale": cpu_benchmark.asdict(QUICK),
               "stage1": outcome.stage1, "protocol": "protocol synthetic", "reading": cpu_benchmark.reading(summary)}
    text = results_markdown(summary, outcome, context)
    assert "| SynSeg (MCCL + FSS) | 42.00 ± 2.00 | 3 | 40.00, 42.00, 44.00 | 50.00 |  | 0.750 / 0.250 |" in text
    assert "| SynSeg w/o L_sep | 36.00 ± 1.00 | 3 | 35.00, 36.00, 37.00 | 50.00 | -6.00 | 0.750 / 0.250 |" in text
    assert "| L_sep | -6.00 (± 1.00) | -2.2 / -3.9 / -2.7 | yes (removing it hurts) |" in text
    assert "| L_align | +1.00 (± 0.00) | -0.4 / -0.7 / -0.4 | not resolved (within the seed spread) |" in text
    assert "- SynSeg beats the training-free MaskCLIP baseline (42.00 vs 30.00, Δ +12.00)." in text
    assert "Wall time: 30.0 min in 2 invocation(s)" in text and "| 2026-01-01 11:00 UTC | 10.0 | 0.5 | 1.0 |" in text


class OracleBackend(Backend):
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
