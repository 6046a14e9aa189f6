"""`cpu_benchmark --experiment NAME`: parsing, and what each experiment trains."""
from pathlib import Path

import pytest

from benchmarks.cpu_benchmark import EXPERIMENTS, FINETUNE_LR, QUICK, STARTS, Benchmark, build_parser, references, stage2_command


def test_experiment_option_accepts_every_named_experiment():
    for name in EXPERIMENTS:
        assert build_parser().parse_args(["--experiment", name]).experiment == name
    assert build_parser().parse_args([]).experiment is None


def test_unknown_experiment_is_a_usage_error():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--experiment", "nope"])


def test_seeds_option_replaces_the_scales_seeds_and_rejects_what_is_not_a_seed_list(capsys):
    assert build_parser().parse_args(["--seeds", "0"]).seeds == (0,)
    assert build_parser().parse_args(["--seeds", "2,0,2"]).seeds == (2, 0)
    assert build_parser().parse_args([]).seeds is None  # the scale's own
    for bad in ("a", "0,-1", ""):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--seeds", bad])
    assert "comma-separated" in capsys.readouterr().err


def test_captions_experiment_crosses_both_caption_styles_with_both_fss_sources():
    methods = EXPERIMENTS["captions"].methods
    cells = {(m.captions, any("fss_source=visual" in o for o in m.overrides)) for m in methods}
    assert cells == {("exhaustive", False), ("exhaustive", True), ("web", False), ("web", True)}


def test_method_keys_are_unique_across_experiments_unless_the_training_is_the_same():
    seen = {}
    for experiment in EXPERIMENTS.values():
        for method in (*experiment.methods, *experiment.sweep):
            training = (method.overrides, method.captions, method.steps, method.start)
            assert seen.setdefault(method.key, training) == training


def test_optimisation_sweep_runs_five_times_the_steps_with_its_own_learning_rate():
    method = EXPERIMENTS["optimisation"].sweep[1]
    command = stage2_command(method, 0, QUICK, Path("clip"), Path("init"), Path("m.jsonl"), Path("run"), resume=False)
    assert f"train.steps={5 * QUICK.stage2_steps}" in command and "train.keep_checkpoints=5" in command
    assert command.index("optim.lr=0.0003") > command.index(FINETUNE_LR[0])  # the later override wins


def test_start_experiments_fine_tune_their_own_stand_ins_on_their_own_clip(tmp_path):
    benchmark = Benchmark(tmp_path, QUICK)
    assert [s.key for s in EXPERIMENTS["attributes"].starts] == ["clipseg_attr"]
    assert [s.key for s in EXPERIMENTS["resolution"].starts] == ["clipseg_attr", "clipseg_attr_p4"]  # 8x8 next to 16x16
    assert STARTS["clipseg_attr_p4"].patch == 4 and STARTS["clipseg_attr"].referring == "attributes"
    assert benchmark.clip_weights(4) != benchmark.clip_weights(8) == benchmark.clip
    method = EXPERIMENTS["resolution"].methods[1]
    init = benchmark.clipseg(0, method.start)
    assert init.parent.name == "clipseg_attr_p4_seed0" and benchmark.clipseg(0).parent.name == "clipseg_init_seed0"
    command = stage2_command(method, 0, QUICK, benchmark.clip, init, tmp_path / "m.jsonl", tmp_path / "run", resume=False)
    assert f"model.init={init}" in command


def test_each_start_brings_its_own_reference_rows_and_maskclip_on_its_clip():
    rows = {m.key: m for m in references([STARTS["clipseg_init"], STARTS["clipseg_attr"], STARTS["clipseg_attr_p4"]])}
    assert set(rows) == {"clipseg_init", "clipseg_attr", "clipseg_attr_p4", "maskclip", "maskclip_p4"}
    assert not any(m.trained for m in rows.values())
    assert rows["maskclip_p4"].start == "clipseg_attr_p4"  # scored on that stand-in's (patch-4) CLIP towers


def test_resolution_experiment_runs_end_to_end_at_smoke_size(tmp_path):
    """The whole chain of a start experiment: a patch-4 stage-1 CLIP, the attribute stand-in on it, stage 2, references."""
    from benchmarks import cpu_benchmark

    assert cpu_benchmark.main(["--quick", "--experiment", "resolution", "--out", str(tmp_path), "--jobs", "1", "--threads", "1"]) == 0
    section = (tmp_path / "RESULTS.md").read_text()
    assert "<!-- experiment:resolution:start -->" in section
    for label in (STARTS["clipseg_attr_p4"].label, "MaskCLIP (training-free dense CLIP), patch 4", "from the 16x16 attribute stand-in"):
        assert label in section
    assert (tmp_path / "clipseg_attr_p4_seed0" / "model").is_dir() and (tmp_path / "stage1_p4" / "clip.safetensors").is_file()
    assert (tmp_path / "data" / "phrasecut" / "objects.jsonl").is_file()


def test_ablations_run_in_the_default_setting_against_its_full_mccl():
    experiment = EXPERIMENTS["ablations"]
    full, *ablations = experiment.methods
    same = EXPERIMENTS["attributes"].methods[1]  # trained once, shared (so is the full run's row: test_cpu_benchmark_smoke)
    assert full.key == same.key == "synseg_visual_web_attr" and (full.overrides, full.start, full.captions) == (same.overrides, same.start, same.captions)
    assert [m.removes for m in ablations] == ["align", "cont", "back", "sep"]
    assert all(m.reference == full.key and m.start == full.start and m.captions == "web" for m in ablations)
    assert all(f"loss.weights.{m.removes}=0" in m.overrides for m in ablations)


def test_an_ablation_experiment_section_shows_the_deltas_next_to_the_paper(tmp_path):
    from benchmarks.cpu_benchmark import ExperimentOutcome, Score, experiment_markdown

    experiment = EXPERIMENTS["ablations"]
    rows = {m.key: m for m in (*references(experiment.starts), *experiment.methods)}
    scores = {key: [Score(10.0 + seed, 20.0, 2.0 + seed, 50.0) for seed in range(3)] for key in rows}
    scores["no_sep_web_attr"] = [Score(5.0 + 0.1 * seed, 9.0, 1.0, 40.0) for seed in range(3)]
    outcome = ExperimentOutcome(scores=scores, methods=rows, best=None, traces={}, run_dirs={})
    text = experiment_markdown(experiment, outcome, {"command": "c", "minutes": 1.0, "invocations": 1, "finished": "now",
                                                     "scale": {"train_scenes": 1, "stage2_steps": 1, "stage2_batch": 1}})
    assert "| L_sep | -5.90 (± 0.10) | -2.00 | -2.2 / -3.9 / -2.7 | yes (removing it hurts) |" in text
    assert "| L_align | +0.00" in text


def test_the_quoted_command_hides_this_machines_paths(tmp_path):
    from benchmarks.cpu_benchmark import command_line

    assert command_line(["--out", str(tmp_path), "--seeds", "0"]) == "python -m benchmarks.cpu_benchmark --out OUT --seeds 0"
    assert command_line(["--out", "bench_out"]) == "python -m benchmarks.cpu_benchmark --out bench_out"
