"""`cpu_benchmark --experiment NAME`: parsing, and what each experiment trains."""
from pathlib import Path

import pytest

from benchmarks.cpu_benchmark import EXPERIMENTS, FINETUNE_LR, QUICK, build_parser, stage2_command


def test_experiment_option_accepts_every_named_experiment():
    for name in EXPERIMENTS:
        assert build_parser().parse_args(["--experiment", name]).experiment == name
    assert build_parser().parse_args([]).experiment is None


def test_unknown_experiment_is_a_usage_error():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--experiment", "nope"])


def test_captions_experiment_crosses_both_caption_styles_with_both_fss_sources():
    methods = EXPERIMENTS["captions"].methods
    cells = {(m.captions, any("fss_source=visual" in o for o in m.overrides)) for m in methods}
    assert cells == {("exhaustive", False), ("exhaustive", True), ("web", False), ("web", True)}


def test_method_keys_are_unique_across_experiments_unless_the_training_is_the_same():
    seen = {}
    for experiment in EXPERIMENTS.values():
        for method in (*experiment.methods, *experiment.sweep):
            assert seen.setdefault(method.key, (method.overrides, method.captions, method.steps)) == \
                (method.overrides, method.captions, method.steps)


def test_optimisation_sweep_runs_five_times_the_steps_with_its_own_learning_rate():
    method = EXPERIMENTS["optimisation"].sweep[1]
    command = stage2_command(method, 0, QUICK, Path("clip"), Path("init"), Path("m.jsonl"), Path("run"), resume=False)
    assert f"train.steps={5 * QUICK.stage2_steps}" in command and "train.keep_checkpoints=5" in command
    assert command.index("optim.lr=0.0003") > command.index(FINETUNE_LR[0])  # the later override wins
