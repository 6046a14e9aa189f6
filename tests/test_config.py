"""SynSegConfig: every field is type-checked, with a message naming the field, the type and the value."""
from __future__ import annotations

import dataclasses
import json

import pytest

from synseg_core.checkpoint import CheckpointError, load_config
from synseg_core.config import SynSegConfig, get_config


def test_a_string_for_an_int_field_names_field_type_and_value():
    with pytest.raises(ValueError, match=r"config field 'reduce_dim' must be int, got 'sixteen' \(str\)"):
        SynSegConfig.from_dict({"reduce_dim": "sixteen"})


def test_config_json_with_a_wrong_type_is_refused_naming_the_file_and_the_field(tmp_path, tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({**config, "reduce_dim": "sixteen"}))
    with pytest.raises(CheckpointError, match=r"config\.json: not a valid SynSeg config: config field 'reduce_dim' must be int"):
        load_config(checkpoint)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("quick_gelu", 1, "bool"),
    ("image_size", 224.0, "int"),
    ("threshold", "0.5", "float"),
    ("extract_layers", [1, "two"], r"tuple\[int, \.\.\.\]"),
    ("mean", [0.5, 0.5], r"tuple\[float, float, float\]"),
    ("clip_config", ["embed_dim", 64], r"dict\[str, Any\] \| None"),
    ("clip_model", None, "str"),
])
def test_each_kind_of_field_is_checked(field, value, expected):
    with pytest.raises(ValueError, match=rf"config field '{field}' must be {expected}, got"):
        SynSegConfig.from_dict({field: value})


def test_json_values_of_the_right_type_are_accepted():
    config = SynSegConfig.from_dict({"decoder_dropout": 0, "extract_layers": [1, 2, 3], "mean": [0, 0.5, 1], "clip_config": None})
    assert config.decoder_dropout == 0 and config.extract_layers == (1, 2, 3) and config.mean == (0.0, 0.5, 1.0)


def test_every_preset_passes_the_type_checks_and_round_trips_through_json():
    for name in ("tiny", "vit-b-16", "vit-b-16-openai"):
        config = get_config(name)
        assert SynSegConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_fields_added_to_the_dataclass_are_checked_too():
    @dataclasses.dataclass
    class Extended(SynSegConfig):
        text_condition: str | None = None

    with pytest.raises(ValueError, match=r"config field 'text_condition' must be str \| None, got 3 \(int\)"):
        Extended(text_condition=3)  # type: ignore[arg-type]
