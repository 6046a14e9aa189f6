"""Caption training data: JSONL manifests, img2dataset tar shards (files, pipes, URLs), skipping, batching, exact resume."""
import functools
import http.server
import io
import json
import shlex
import tarfile
import threading
import time
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from synseg_core.data.captions import (
    CaptionLoader,
    CaptionSample,
    JsonlCaptions,
    ResizeToTensor,
    ShardError,
    TarCaptions,
    build_category_index,
    collate_captions,
    expand_braces,
    expand_shards,
    load_caption_dataset,
)
from synseg_core.text.categories import CategoryExtractor
from synseg_core.training.data import build_loader

RULES = CategoryExtractor(backend="rules")


def jpeg_bytes(color=(200, 30, 30), size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_manifest(tmp_path, entries, name="captions.jsonl"):
    """entries: (image name or None, record dict); images are written as small jpgs."""
    (tmp_path / "images").mkdir(exist_ok=True)
    lines = []
    for image, record in entries:
        if image is not None:
            (tmp_path / "images" / image).write_bytes(jpeg_bytes())
        lines.append(record if isinstance(record, str) else json.dumps(record))
    manifest = tmp_path / name
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def good_manifest(tmp_path, n):
    return write_manifest(tmp_path, [(f"{i}.jpg", {"image": f"images/{i}.jpg", "caption": f"a dog number {i}"})
                                     for i in range(n)])


def write_shard(path, samples):
    """samples: (key, {extension: bytes}) in img2dataset's member order."""
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for extension, data in files.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_jsonl_yields_resized_image_caption_and_extracted_categories(tmp_path):
    manifest = write_manifest(tmp_path, [("a.jpg", {"image": "images/a.jpg", "caption": "a dog catches a frisbee"})])
    [sample] = list(JsonlCaptions(manifest, transform=ResizeToTensor(32), extractor=RULES))
    assert sample.image.shape == (3, 32, 32) and sample.image.dtype == torch.float32
    assert sample.image[0].mean().item() == pytest.approx(200 / 255, abs=0.03)
    assert sample.caption == "a dog catches a frisbee"
    assert sample.categories == ["dog", "frisbee"]
    assert sample.key == "captions.jsonl:1"


def test_jsonl_categories_field_bypasses_extraction(tmp_path):
    record = {"image": "images/a.jpg", "caption": "whatever words", "categories": ["zebra", "zebra", "sky"]}
    manifest = write_manifest(tmp_path, [("a.jpg", record)])
    [sample] = list(JsonlCaptions(manifest, extractor=RULES))
    assert sample.categories == ["zebra", "sky"]


def test_bad_records_are_skipped_and_counted_by_reason(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    manifest = write_manifest(tmp_path, [
        ("ok1.jpg", {"image": "images/ok1.jpg", "caption": "a cat on a mat"}),
        (None, {"image": "images/absent.jpg", "caption": "a cat"}),
        (None, {"image": "images/corrupt.jpg", "caption": "a cat"}),
        ("e.jpg", {"image": "images/e.jpg", "caption": "   "}),
        ("n.jpg", {"image": "images/n.jpg", "caption": "very very beautiful"}),
        (None, "{this is not json"),
        ("ok2.jpg", {"image": "images/ok2.jpg", "caption": "a bird in a tree"}),
    ])
    dataset = JsonlCaptions(manifest, extractor=RULES, shuffle=False)
    assert [s.categories for s in dataset] == [["cat", "mat"], ["bird", "tree"]]
    assert dataset.stats.samples == 2
    assert dataset.stats.skipped == Counter(missing_image=1, corrupt_image=1, empty_caption=1, no_category=1,
                                            bad_record=1)


def test_a_skip_warning_names_the_manifest_line_and_the_image(tmp_path, caplog):
    manifest = write_manifest(tmp_path, [
        ("ok.jpg", {"image": "images/ok.jpg", "caption": "a cat on a mat"}),
        (None, {"image": "images/absent.jpg", "caption": "a cat"}),
    ])
    list(JsonlCaptions(manifest, extractor=RULES, shuffle=False))
    assert f"skipping 'captions.jsonl:2' (missing_image, image {tmp_path / 'images' / 'absent.jpg'})" in caplog.text


def test_empty_manifest_is_an_error_naming_the_file(tmp_path):
    manifest = tmp_path / "empty.jsonl"
    manifest.write_text("\n\n")
    with pytest.raises(ValueError, match="empty.jsonl"):
        JsonlCaptions(manifest)


def test_manifest_without_any_usable_sample_is_an_error_naming_the_file(tmp_path):
    manifest = write_manifest(tmp_path, [(None, {"image": "images/absent.jpg", "caption": "a cat"})], "bad.jsonl")
    with pytest.raises(RuntimeError, match="bad.jsonl"):
        list(JsonlCaptions(manifest, extractor=RULES))


def test_shuffle_is_a_function_of_seed_and_epoch(tmp_path):
    manifest = good_manifest(tmp_path, 12)

    def keys(seed, epoch):
        dataset = JsonlCaptions(manifest, transform=ResizeToTensor(8), extractor=RULES, seed=seed)
        dataset.set_epoch(epoch)
        return [s.key for s in dataset]

    assert keys(0, 0) == keys(0, 0)
    assert keys(0, 0) != keys(0, 1)
    assert keys(0, 0) != keys(1, 0)
    assert sorted(keys(0, 1)) == sorted(f"captions.jsonl:{i}" for i in range(1, 13))


def test_tar_shards_read_img2dataset_members_with_json_categories(tmp_path):
    write_shard(tmp_path / "000.tar", [
        ("000000", {"jpg": jpeg_bytes(), "txt": b"a dog on the grass", "json": b'{"url": "x"}'}),
        ("000001", {"jpg": jpeg_bytes(), "txt": b"no extraction here", "json": b'{"categories": ["kite"]}'}),
    ])
    write_shard(tmp_path / "001.tar", [("000002", {"jpg": jpeg_bytes(), "txt": b"a red car"})])
    dataset = TarCaptions(str(tmp_path / "{000..001}.tar"), extractor=RULES, shuffle=False)
    samples = list(dataset)
    assert [s.key for s in samples] == ["000.tar/000000", "000.tar/000001", "001.tar/000002"]
    assert [s.categories for s in samples] == [["dog", "grass"], ["kite"], ["car"]]
    assert samples[0].image.shape == (3, 224, 224)


def test_tar_sample_without_image_is_counted_as_missing(tmp_path):
    write_shard(tmp_path / "a.tar", [("k0", {"txt": b"a dog"}), ("k1", {"jpg": jpeg_bytes(), "txt": b"a cat"})])
    dataset = TarCaptions(tmp_path / "a.tar", extractor=RULES, shuffle=False)
    assert [s.categories for s in dataset] == [["cat"]]
    assert dataset.stats.skipped == Counter(missing_image=1)


def test_truncated_shard_is_counted_and_the_next_shard_still_read(tmp_path):
    write_shard(tmp_path / "full.tar", [(f"k{i}", {"jpg": jpeg_bytes(), "txt": b"a dog"}) for i in range(3)])
    data = (tmp_path / "full.tar").read_bytes()
    (tmp_path / "a_cut.tar").write_bytes(data[:1200])
    dataset = TarCaptions([tmp_path / "a_cut.tar", tmp_path / "full.tar"], extractor=RULES, shuffle=False)
    assert len(list(dataset)) == 3
    assert dataset.stats.skipped["bad_shard"] == 1


def test_brace_patterns_expand_with_zero_padding_and_lists():
    assert expand_braces("s/{008..011}.tar") == ["s/008.tar", "s/009.tar", "s/010.tar", "s/011.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]


def test_shard_pattern_matching_nothing_is_an_error_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_shards(str(tmp_path / "nothing-here" / "*.tar"))


def test_load_caption_dataset_picks_the_reader_from_the_source(tmp_path):
    manifest = good_manifest(tmp_path, 1)
    write_shard(tmp_path / "a.tar", [("k", {"jpg": jpeg_bytes(), "txt": b"a dog"})])
    assert isinstance(load_caption_dataset(manifest), JsonlCaptions)
    assert isinstance(load_caption_dataset(str(tmp_path / "*.tar")), TarCaptions)


def test_category_index_pads_per_image_lists_over_the_batch_vocabulary():
    vocab, index, mask = build_category_index([["dog", "cat"], ["cat"], ["bird", "dog", "sky"]])
    assert vocab == ["dog", "cat", "bird", "sky"]
    assert index.tolist() == [[0, 1, 0], [1, 0, 0], [2, 0, 3]]
    assert mask.tolist() == [[True, True, False], [True, False, False], [True, True, True]]


def test_collate_stacks_images_and_indexes_categories():
    samples = [CaptionSample(torch.full((3, 4, 4), float(i)), f"c{i}", cats, f"k{i}", position=i + 1)
               for i, cats in enumerate([["dog"], ["cat", "dog"]])]
    batch = collate_captions(samples)
    assert batch.images.shape == (2, 3, 4, 4)
    assert batch.images[1].max().item() == 1.0
    assert batch.vocab == ["dog", "cat"]
    assert batch.category_index.tolist() == [[0, 0], [1, 0]]
    assert batch.category_mask.tolist() == [[True, False], [True, True]]
    assert batch.position == 2


def test_collate_rejects_images_of_different_sizes():
    samples = [CaptionSample(torch.zeros(3, 4, 4), "a", ["a"], "k0"), CaptionSample(torch.zeros(3, 5, 4), "b", ["b"], "k1")]
    with pytest.raises(ValueError, match="fixed size"):
        collate_captions(samples)


def _keys(batches):
    return [k for b in batches for k in b.keys]


def uneven_shards(tmp_path):
    """5 shards of 1-6 samples, some without an image; returns the glob and the number of good samples."""
    good = 0
    for shard, sizes in enumerate([3, 1, 6, 2, 5]):
        samples = []
        for i in range(sizes):
            files = {"txt": b"a dog"} if (shard + i) % 4 == 3 else {"jpg": jpeg_bytes(), "txt": b"a dog"}
            good += "jpg" in files
            samples.append((f"s{shard}-{i}", files))
        write_shard(tmp_path / f"{shard:03d}.tar", samples)
    return str(tmp_path / "*.tar"), good


def piped(folder):
    """The shards of ``uneven_shards`` as one brace pattern of ``pipe:cat`` commands."""
    return f"pipe:cat {shlex.quote(str(folder))}/{{000..004}}.tar"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def shard_server(tmp_path):
    """A localhost HTTP server thread serving ``tmp_path``; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def train_load(source, num_workers=0):
    """One epoch of the training loader: (member key, caption) per sample, and the images [N, 3, 8, 8]."""
    loader = build_loader(source, image_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, batch_size=2, num_workers=num_workers,
                          seed=3, max_categories=8, category_backend="rules")
    batches = list(loader)
    samples = [(key.rsplit("/", 1)[-1], caption) for b in batches for key, caption in zip(b.keys, b.captions, strict=True)]
    return samples, torch.cat([b.images for b in batches])


@pytest.mark.parametrize("kind", ["pipe", "http"])
def test_remote_shards_train_load_the_same_samples_as_the_local_files(tmp_path, shard_server, kind):
    local, total = uneven_shards(tmp_path)
    remote = piped(tmp_path) if kind == "pipe" else f"{shard_server}/{{000..004}}.tar"
    samples, images = train_load(local, num_workers=2)
    remote_samples, remote_images = train_load(remote, num_workers=2)
    assert len(samples) == total
    assert remote_samples == samples
    assert torch.equal(remote_images, images)


@pytest.mark.parametrize("kind, reason", [
    ("pipe", r"'pipe:cat .*absent\.tar': the command exited with status 1: cat: .*absent\.tar"),
    ("http", r"absent\.tar' is unreachable: HTTP 404"),
])
def test_a_remote_shard_that_cannot_be_fetched_is_an_error_naming_it_and_the_reason(tmp_path, shard_server, kind, reason):
    shard = f"pipe:cat {tmp_path}/absent.tar" if kind == "pipe" else f"{shard_server}/absent.tar"
    with pytest.raises(ShardError, match=reason):
        list(TarCaptions(shard, extractor=RULES))


def test_a_truncated_piped_shard_is_counted_like_a_truncated_file(tmp_path):
    write_shard(tmp_path / "full.tar", [(f"k{i}", {"jpg": jpeg_bytes(), "txt": b"a dog"}) for i in range(3)])
    dataset = TarCaptions([f"pipe:head -c 1200 {tmp_path}/full.tar", tmp_path / "full.tar"], extractor=RULES, shuffle=False)
    assert len(list(dataset)) == 3
    assert dataset.stats.skipped["bad_shard"] == 1


def test_a_reader_that_stops_early_ends_the_pipe_command(tmp_path):
    write_shard(tmp_path / "a.tar", [(f"k{i}", {"jpg": jpeg_bytes(), "txt": b"a dog"}) for i in range(2)])
    finished = tmp_path / "finished"
    samples = iter(TarCaptions(f"pipe:cat {tmp_path}/a.tar; sleep 1; touch {finished}", extractor=RULES, shuffle=False))
    next(samples)  # arrives before the command ends
    samples.close()
    time.sleep(2)
    assert not finished.exists()


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("source", ["jsonl", "tar", "pipe"])
def test_loader_resumes_exactly_mid_epoch(tmp_path, source, num_workers):
    if source == "jsonl":
        data, total = good_manifest(tmp_path, 11), 11
    else:
        data, total = uneven_shards(tmp_path)
        data = piped(tmp_path) if source == "pipe" else data

    def make_loader():
        dataset = load_caption_dataset(data, transform=ResizeToTensor(8), extractor=RULES, seed=3)
        if source != "jsonl":
            dataset.shuffle_buffer = 3
        return CaptionLoader(dataset, batch_size=2, num_workers=num_workers)

    reference = make_loader()
    reference.set_epoch(1)
    expected = _keys(reference)

    first = make_loader()
    first.set_epoch(1)
    iterator = iter(first)
    seen = _keys([next(iterator), next(iterator), next(iterator)])
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores

    resumed = make_loader()
    resumed.load_state_dict(state)
    rest = _keys(resumed)
    assert seen + rest == expected
    assert len(set(expected)) == len(expected) == total
    assert resumed.epoch == 2


def test_loader_gathers_skip_counts_from_workers(tmp_path):
    entries = [(f"{i}.jpg", {"image": f"images/{i}.jpg", "caption": "a dog"}) for i in range(4)]
    entries += [(None, {"image": "images/absent.jpg", "caption": "a dog"})] * 2 + [(None, "not json")]
    entries += [(f"z{i}.jpg", {"image": f"images/z{i}.jpg", "caption": "a cat"}) for i in range(4)]
    manifest = write_manifest(tmp_path, entries)
    loader = CaptionLoader(JsonlCaptions(manifest, transform=ResizeToTensor(8), extractor=RULES, shuffle=False),
                           batch_size=2, num_workers=2)
    assert len(_keys(loader)) == 8
    assert loader.stats.samples == 8
    assert loader.stats.skipped == Counter(missing_image=2, bad_record=1)


@pytest.mark.parametrize("source", ["jsonl", "tar"])
def test_ranks_and_workers_read_disjoint_shares_covering_every_record(tmp_path, source):
    data, total = (good_manifest(tmp_path, 11), 11) if source == "jsonl" else uneven_shards(tmp_path)
    keys = []
    for rank in range(2):
        dataset = load_caption_dataset(data, transform=ResizeToTensor(8), extractor=RULES, rank=rank, world_size=2)
        keys += _keys(CaptionLoader(dataset, batch_size=2, num_workers=2))
    assert len(keys) == len(set(keys)) == total


def test_resume_with_other_worker_count_is_refused(tmp_path):
    manifest = good_manifest(tmp_path, 4)
    loader = CaptionLoader(JsonlCaptions(manifest, extractor=RULES), batch_size=2)
    next(iter(loader))
    state = loader.state_dict()
    other = CaptionLoader(JsonlCaptions(manifest, extractor=RULES), batch_size=2, num_workers=2)
    with pytest.raises(ValueError, match="num_workers"):
        other.load_state_dict(state)


def test_resize_to_tensor_accepts_numpy_and_normalises():
    image = np.full((5, 7, 3), 255, dtype=np.uint8)
    x = ResizeToTensor(4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(image)
    assert x.shape == (3, 4, 4)
    assert torch.allclose(x, torch.full((3, 4, 4), 2.0))
