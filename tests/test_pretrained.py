"""``python -m synseg_core.pretrained``: fetch through a local Hub, convert files on disk, refuse bad input.

The Hub is a plain HTTP server on 127.0.0.1 that this test starts: it serves a tiny random CLIPSeg saved
with ``save_pretrained`` under the Hub's URL layout (``/<org>/<repo>/resolve/<revision>/<file>``, HEAD and
GET, Content-Length, ETag, X-Repo-Commit, Range), and ``HF_ENDPOINT`` points at it, so ``fetch`` runs its
real network code. Nothing here touches the internet.
"""
from __future__ import annotations

import errno
import hashlib
import http.server
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from synseg_core import create_model
from synseg_core.checkpoint import load_model
from synseg_core.pretrained import main
from synseg_core.runtime.segmenter import Segmenter

pytest.importorskip("transformers", reason="the served CLIPSeg is written by transformers' save_pretrained")

REPO = "tiny-org/clipseg-tiny"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub(http.server.ThreadingHTTPServer):
    """Files of one repository at one commit; ``cuts[name]`` lists byte limits: each GET of that file takes the
    next one and drops the connection after that many bytes."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.files = files
        self.cuts: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, file, Range header)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class HubHandler(http.server.BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _file(self) -> tuple[str, bytes] | None:
        prefix = f"/{REPO}/resolve/"
        if not self.path.startswith(prefix):
            self.send_error_code(404, "RepoNotFound")
            return None
        revision, _, name = self.path[len(prefix):].partition("/")
        if revision not in ("main", COMMIT) or name not in self.server.files:
            self.send_error_code(404, "EntryNotFound")
            return None
        return name, self.server.files[name]

    def send_error_code(self, status: int, code: str) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _headers(self, name: str, data: bytes, status: int, length: int, start: int = 0) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')  # the Hub's ETag of an LFS file
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        found = self._file()
        self.server.requests.append(("HEAD", self.path, None))
        if found:
            self._headers(found[0], found[1], 200, len(found[1]))

    def do_GET(self) -> None:  # noqa: N802
        found = self._file()
        header = self.headers.get("Range")
        self.server.requests.append(("GET", self.path, header))
        if not found:
            return
        name, data = found
        start = int(header.removeprefix("bytes=").split("-")[0]) if header else 0
        self._headers(name, data, 206 if start else 200, len(data) - start, start)
        body = data[start:]
        limits = self.server.cuts.get(name)
        if limits:
            self.wfile.write(body[: limits.pop(0)])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # a dropped connection mid-file
            self.close_connection = True
            return
        self.wfile.write(body)


def tiny_clipseg_folder(folder: Path) -> Path:
    from test_clipseg_parity import reference_clipseg, reference_processor

    reference_clipseg(refined=False).save_pretrained(folder)
    reference_processor(folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def served_files(tmp_path_factory) -> dict[str, bytes]:
    folder = tiny_clipseg_folder(tmp_path_factory.mktemp("served"))
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def hub(served_files, tmp_path, monkeypatch):
    from huggingface_hub import constants

    server = FakeHub(dict(served_files))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the user asked: this one command may download
    yield server
    server.shutdown()
    server.server_close()


def fetch(out: Path, *extra: str) -> int:
    return main(["fetch", REPO, "--out", str(out), *extra])


def test_fetch_writes_a_checkpoint_that_records_commit_and_file_hashes(hub, served_files, tmp_path):
    assert fetch(tmp_path / "model") == 0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["source"]["repository"] == REPO and config["source"]["revision"] == COMMIT
    weights = served_files["model.safetensors"]
    assert config["source"]["files"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert (config["prompt_set"], config["text_embedding"], config["image_size"]) == ("verbatim", "raw", 352)
    result = Segmenter.from_checkpoint(tmp_path / "model").segment(np.zeros((40, 50, 3), np.uint8), ["door", "chair"])
    assert result.labels.shape == (40, 50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub-cache", "model"]  # no staging folder left


# huggingface_hub writes in chunks of DOWNLOAD_CHUNK_SIZE (10 MiB); the served weights are ~15 MB.
CUT = 11_000_000


def test_a_repository_with_only_pytorch_model_bin_is_fetched_and_read_without_unpickling_code(hub, tmp_path):
    import io

    from safetensors.torch import load as load_safetensors

    state = load_safetensors(hub.files.pop("model.safetensors"))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    hub.files["pytorch_model.bin"] = buffer.getvalue()
    assert fetch(tmp_path / "model") == 0
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert "pytorch_model.bin" in config["source"]["files"] and "model.safetensors" not in config["source"]["files"]


def test_a_download_cut_once_resumes_within_the_same_fetch(hub, tmp_path):
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    hub.cuts["model.safetensors"] = [CUT]
    assert fetch(tmp_path / "model") == 0
    gets = [r for r in hub.requests if r[0] == "GET" and r[1].endswith("model.safetensors")]
    assert [r[2] for r in gets] == [None, f"bytes={DOWNLOAD_CHUNK_SIZE}-"]
    assert load_model(tmp_path / "model") is not None


def test_an_interrupted_fetch_fails_cleanly_and_the_next_fetch_resumes(hub, tmp_path, caplog):
    hub.cuts["model.safetensors"] = [CUT] + [100_000] * 5  # one more cut than huggingface_hub retries within a call
    assert fetch(tmp_path / "model") == 2
    assert "interrupted" in caplog.text and "run the same command again" in caplog.text
    assert not (tmp_path / "model").exists()
    partial = next((tmp_path / "hub-cache").rglob("model.safetensors.incomplete"))
    kept = partial.stat().st_size
    assert 0 < kept < CUT
    hub.requests.clear()
    assert fetch(tmp_path / "model") == 0
    ranges = [r[2] for r in hub.requests if r[0] == "GET" and r[1].endswith("model.safetensors")]
    assert ranges == [f"bytes={kept}-"]
    assert load_model(tmp_path / "model") is not None


def test_fetch_of_a_repository_that_does_not_exist_says_so(hub, tmp_path, caplog):
    assert main(["fetch", "tiny-org/no-such-model", "--out", str(tmp_path / "model")]) == 2
    assert "no such repository" in caplog.text
    assert not (tmp_path / "model").exists()


def test_fetch_with_the_server_down_names_the_network(hub, tmp_path, caplog, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert fetch(tmp_path / "model") == 2
    assert "cannot reach" in caplog.text and "run the same command again" in caplog.text
    assert not (tmp_path / "model").exists()


def test_fetch_in_offline_mode_downloads_nothing_and_says_how_to_allow_it(hub, tmp_path, caplog, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert fetch(tmp_path / "model") == 2
    assert "HF_HUB_OFFLINE=0" in caplog.text and hub.requests == []


def test_an_existing_output_folder_is_refused_before_downloading_unless_forced(hub, tmp_path, caplog):
    out = tmp_path / "model"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert fetch(out) == 2
    assert "--force" in caplog.text and hub.requests == [] and (out / "mine.txt").read_text() == "keep"
    assert fetch(out, "--force") == 0
    assert not (out / "mine.txt").exists() and (out / "model.safetensors").is_file()


def test_a_full_disk_while_writing_leaves_the_previous_checkpoint_intact(hub, tmp_path, caplog, monkeypatch):
    out = tmp_path / "model"
    assert fetch(out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", no_space)  # imported where save_model uses it
    assert fetch(out, "--force") == 2
    assert "no space left" in caplog.text
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub-cache", "model"]


# ---------------------------------------------------------------- convert: files the user has

def test_convert_of_a_huggingface_weights_file_uses_the_config_beside_it(served_files, tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    for name, data in served_files.items():
        (folder / name).write_bytes(data)
    assert main(["convert", "--clipseg", str(folder / "model.safetensors"), "--out", str(tmp_path / "model")]) == 0
    assert load_model(tmp_path / "model").config.reduce_dim == 16


def original_layout_files(tmp_path: Path, reduce_dim: int = 16, clip_width: int = 96) -> tuple[Path, Path]:
    """An open_clip state dict and an rd-style decoder file (the original CLIPSeg repository's key names)."""
    from open_clip.model import CLIP

    from synseg_core.config import TINY_CLIP

    source = create_model("tiny", seed=4, reduce_dim=reduce_dim)
    decoder = {}
    for key, value in source.state_dict().items():
        if key.startswith("decoder.film."):
            decoder[key.removeprefix("decoder.film.")] = value
        elif key.startswith("decoder.reduces."):
            decoder[key.removeprefix("decoder.")] = value
        elif key.startswith("decoder.layers."):
            decoder["blocks." + key.removeprefix("decoder.layers.")] = value
        elif key.startswith("decoder.head."):
            decoder["trans_conv." + key.removeprefix("decoder.head.")] = value
    torch.save(decoder, tmp_path / "rd-uni.pth")
    vision = {**TINY_CLIP["vision_cfg"], "width": clip_width}
    torch.manual_seed(5)
    clip = CLIP(**{**TINY_CLIP, "vision_cfg": vision})
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(tmp_path / "clip.safetensors"))
    return tmp_path / "rd-uni.pth", tmp_path / "clip.safetensors"


def convert_original(tmp_path: Path, decoder: Path, clip: Path) -> int:
    return main(["convert", "--clipseg", str(decoder), "--clip", str(clip), "--preset", "tiny", "--out", str(tmp_path / "model")])


def test_convert_of_original_clipseg_files_keeps_clipseg_settings(tmp_path):
    decoder, clip = original_layout_files(tmp_path)
    assert convert_original(tmp_path, decoder, clip) == 0
    model = load_model(tmp_path / "model")
    assert (model.config.prompt_set, model.config.text_embedding, model.config.image_size) == ("verbatim", "raw", 352)
    torch.testing.assert_close(model.decoder.film.film_mul.weight, torch.load(decoder, weights_only=True)["film_mul.weight"])


def test_a_clipseg_decoder_with_another_reduce_dim_is_refused(tmp_path, caplog):
    decoder, clip = original_layout_files(tmp_path, reduce_dim=8)
    assert convert_original(tmp_path, decoder, clip) == 2
    assert "reduce_dim 8" in caplog.text and not (tmp_path / "model").exists()


def test_a_clip_of_another_width_is_refused(tmp_path, caplog):
    decoder, clip = original_layout_files(tmp_path, clip_width=128)
    assert convert_original(tmp_path, decoder, clip) == 2
    assert "width 128" in caplog.text and not (tmp_path / "model").exists()


def test_an_original_decoder_without_its_clip_asks_for_it(tmp_path, caplog):
    decoder, _ = original_layout_files(tmp_path)
    assert main(["convert", "--clipseg", str(decoder), "--out", str(tmp_path / "model")]) == 2
    assert "add --clip ViT-B-16.pt" in caplog.text and not (tmp_path / "model").exists()


@pytest.mark.parametrize("content", [b"not a weights file at all", None], ids=["garbage-bytes", "foreign-state-dict"])
def test_a_file_of_neither_layout_is_named_as_such(tmp_path, caplog, content):
    path = tmp_path / "weights.bin"
    path.write_bytes(content) if content else torch.save({"backbone.fc.weight": torch.zeros(2, 2)}, path)
    assert main(["convert", "--clipseg", str(path), "--out", str(tmp_path / "model")]) == 2
    assert ("not a readable weights file" if content else "neither a CLIPSeg nor a CLIP checkpoint") in caplog.text
    assert not (tmp_path / "model").exists()


def test_list_names_the_published_sources_with_licence_and_size(capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for expected in ("CIDAS/clipseg-rd64-refined", "CIDAS/clipseg-rd64", "Apache-2.0", "603 MB"):
        assert expected in listing


def test_training_starts_from_a_converted_clipseg_and_keeps_its_conditioning(served_files, tmp_path):
    from synseg_core.data.synthetic import write_synthetic_dataset
    from synseg_core.training import load_config, train
    from synseg_core.training.config import CONFIG_DIR

    folder = tmp_path / "hf"
    folder.mkdir()
    for name, data in served_files.items():
        (folder / name).write_bytes(data)
    assert main(["convert", "--clipseg", str(folder), "--out", str(tmp_path / "clipseg")]) == 0
    scenes = write_synthetic_dataset(tmp_path / "scenes", num=4, seed=0, size=64, progress=False)
    config = load_config(CONFIG_DIR / "tiny.yaml", [f"data.train={scenes / 'captions.jsonl'}", f"model.init={tmp_path / 'clipseg'}",
                                                    "train.steps=1", "train.batch_size=2", "train.progress=false"])
    train(config, tmp_path / "run")
    trained = load_model(tmp_path / "run" / "model")
    assert (trained.config.text_embedding, trained.config.prompt_set) == ("raw", "verbatim")
    start = load_model(tmp_path / "clipseg")
    torch.testing.assert_close(trained.text_encoder.token_embedding.weight, start.text_encoder.token_embedding.weight)
