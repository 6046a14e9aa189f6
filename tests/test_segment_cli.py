"""`python -m synseg_core.segment`: files a person can open, and bad input that never stops the batch."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from synseg_core import save_model
from synseg_core.segment import main


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_writes_labels_overlay_and_json_per_image(tmp_path, images, tiny_checkpoint):
    out = tmp_path / "out"
    code = main([*map(str, images), "--vocabulary", "door, chair", "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--threshold", "0"])
    assert code == 0
    labels = cv2.imread(str(out / "a_labels.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (40, 60) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    overlay = cv2.imread(str(out / "b_overlay.png"))
    assert overlay.shape[0] >= 40 and overlay.shape[1] > 60  # image + legend panel (taller when the legend is)
    info = json.loads((out / "a_labels.json").read_text())
    assert info["labels"] == {"0": "door", "1": "chair"} and info["unlabeled"] == 255


def test_a_bad_image_is_reported_and_the_others_still_processed(tmp_path, images, tiny_checkpoint, caplog):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    code = main([str(corrupt), str(images[0]), str(tmp_path / "missing.jpg"), "-v", "door", "-c", str(tiny_checkpoint), "-o", str(out)])
    assert code == 1
    assert (out / "a_labels.png").is_file()
    assert "corrupt.png: not a readable image" in caplog.text and "missing.jpg: no such file" in caplog.text


def test_a_directory_given_as_image_is_named_a_directory(tmp_path, images, tiny_checkpoint, caplog):
    folder = tmp_path / "scenes"
    folder.mkdir()
    code = main([str(folder), str(images[0]), "-v", "door", "-c", str(tiny_checkpoint), "-o", str(tmp_path / "out")])
    assert code == 1
    assert f"{folder}: is a directory, not an image file" in caplog.text and "no such file" not in caplog.text


def test_empty_vocabulary_exits_with_a_message(images, tmp_path, caplog):
    assert main([str(images[0]), "--vocabulary", " , ", "--out", str(tmp_path / "o")]) == 2
    assert "bad --vocabulary" in caplog.text


def test_broken_checkpoint_exits_with_a_message(images, tmp_path, caplog):
    assert main([str(images[0]), "-v", "door", "-c", str(tmp_path / "nothing"), "-o", str(tmp_path / "o")]) == 2
    assert "no such checkpoint directory" in caplog.text


def test_checkpoint_naming_an_unknown_backbone_exits_with_a_message(images, tmp_path, tiny_model, caplog):
    checkpoint = save_model(tiny_model, tmp_path / "ckpt")
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, "clip_model": "ViT-Nope-99", "clip_config": None}))
    out = tmp_path / "o"
    assert main([str(images[0]), "-v", "door", "-c", str(checkpoint), "-o", str(out)]) == 2
    assert "cannot load the model" in caplog.text and "unknown CLIP backbone 'ViT-Nope-99'" in caplog.text
    assert not out.exists()  # nothing is written for a model that did not load


def test_help_teaches_with_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--vocabulary 'door,chair,floor'" in capsys.readouterr().out


def test_help_states_the_input_size_rule_without_a_fixed_patch_size(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a multiple of the model's patch size" in text and "multiple of 16" not in text


def test_export_with_checkpoint_is_refused_with_the_reason(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--export", str(tmp_path), "--checkpoint", str(tmp_path), "-v", "door"])
    assert "--export runs the export folder alone" in capsys.readouterr().err
