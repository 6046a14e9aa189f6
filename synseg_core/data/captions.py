"""Image-caption training data: JSONL manifests and img2dataset webdataset shards.

Two sources, one sample type (``CaptionSample``: image tensor, caption, categories):

- ``JsonlCaptions``: a manifest with one object per line,
  ``{"image": "<path relative to the manifest>", "caption": "<text>"}`` and optionally
  ``"categories": ["dog", "frisbee"]``, which bypasses noun extraction.
- ``TarCaptions``: tar shards as img2dataset writes them (``<key>.jpg`` + ``<key>.txt``,
  optional ``<key>.json`` whose ``"categories"`` also bypasses extraction), streamed with
  the standard library; shards given as paths, globs or brace patterns
  (``"cc12m/{00000..01242}.tar"``), http(s) URLs or ``pipe:COMMAND`` (the command's stdout,
  e.g. ``"pipe:aws s3 cp s3://bucket/{00000..01242}.tar -"``).

Bad records (missing or corrupt image, empty caption, no usable noun, malformed line,
unreadable shard) are skipped and counted, never raised; a shard that cannot be fetched at all
(failing pipe command, unreachable URL) raises ``ShardError``. Order is a pure function of
``(seed, epoch, num_workers, world_size)``. With ``rank``/``world_size`` (distributed
training) every (rank, worker) pair reads its own share: each record goes to exactly one.
``CaptionLoader`` batches a source through a torch ``DataLoader`` and keeps the position
of every worker so that training resumes exactly mid-epoch from ``state_dict()``.
"""
from __future__ import annotations

import contextlib
import glob
import http.client
import io
import itertools
import json
import logging
import os
import posixpath
import re
import signal
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from synseg_core.text.categories import CategoryExtractor

logger = logging.getLogger(__name__)

# Why a record was skipped; the keys of CaptionStats.skipped.
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
EMPTY_CAPTION = "empty_caption"
NO_CATEGORY = "no_category"
BAD_RECORD = "bad_record"
BAD_SHARD = "bad_shard"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
PIPE = "pipe:"
URL_SCHEMES = ("http://", "https://")
URL_TIMEOUT_S = 60.0  # a stalled server fails the shard instead of hanging training


class ShardError(RuntimeError):
    """A remote shard that cannot be fetched at all: its pipe command failed or its URL is unreachable."""


@dataclass
class CaptionSample:
    """One training pair.

    image: the transform's output (``float [3, H, W]`` with ``ResizeToTensor``).
    categories: the category words of the image, deduplicated, in caption order.
    worker, position: the worker stream it came from and how many records of that stream
        have been consumed including this one (for exact resume).
    skipped: reason -> count of bad records skipped since the worker's previous sample.
    """

    image: Any
    caption: str
    categories: list[str]
    key: str
    worker: int = 0
    position: int = 0
    skipped: Counter = field(default_factory=Counter)


@dataclass
class CaptionStats:
    """Counts of yielded samples and of skipped records by reason."""

    samples: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def __str__(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"{self.samples} samples, {self.total_skipped} skipped ({reasons})"


class ResizeToTensor:
    """RGB ``PIL.Image`` or ``uint8 [H, W, 3]`` array -> ``float [3, size, size]`` in [0, 1], then
    ``(x - mean) / std`` when both are given. Bicubic; the aspect ratio is not kept (paper: 224 x 224)."""

    def __init__(self, size: int = 224, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        self.size = size
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image | np.ndarray) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255.0)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x


class _Record(NamedTuple):
    """A raw record before decoding; ``problem`` is set when it is already known to be bad."""

    key: str
    image: bytes | Path | None
    caption: Any
    categories: Any = None
    problem: str | None = None


class CaptionStream(torch.utils.data.IterableDataset):
    """Shared machinery of the caption sources: sharding over ranks and DataLoader workers,
    seeded order, resume offsets, decoding, skipping and counting.

    Worker ``w`` of ``W`` on rank ``r`` of ``R`` reads share ``r * W + w`` of ``R * W``;
    subclasses provide ``_records(share, num_shares, start)``.
    """

    source: str

    def __init__(self, transform: Callable[[Image.Image], Any] | None = None,
                 extractor: Callable[[str], list[str]] | None = None, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.rank, self.world_size = rank, world_size
        self.transform = transform if transform is not None else ResizeToTensor()
        self.extractor = extractor if extractor is not None else CategoryExtractor()
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        # Set by CaptionLoader to resume: records to skip per worker stream, and which stream
        # DataLoader worker 0 reads (the DataLoader always asks worker 0 first).
        self.start_positions: list[int] | None = None
        self.first_stream = 0
        self.stats = CaptionStats()  # of this process only; CaptionLoader gathers the workers' counts

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[CaptionSample]:
        info = torch.utils.data.get_worker_info()
        num_workers = 1 if info is None else info.num_workers
        worker = 0 if info is None else (info.id + self.first_stream) % num_workers
        start = self.start_positions[worker] if self.start_positions else 0
        share, num_shares = self.rank * num_workers + worker, self.world_size * num_workers
        this_pass = CaptionStats()
        pending: Counter = Counter()
        for position, record in enumerate(self._records(share, num_shares, start), start + 1):
            sample, problem = self._decode(record)
            if sample is None:
                pending[problem] += 1
                this_pass.skipped[problem] += 1
                self.stats.skipped[problem] += 1
                if self.stats.skipped[problem] == 1:
                    image = f", image {record.image}" if isinstance(record.image, Path) else ""  # a shard key names its image
                    logger.warning("%s: skipping %r (%s%s); later ones of this kind are counted silently",
                                   self.source, record.key, problem, image)
                continue
            sample.worker, sample.position, sample.skipped = worker, position, pending
            pending = Counter()
            this_pass.samples += 1
            self.stats.samples += 1
            yield sample
        # In a worker, a share can be legitimately empty; CaptionLoader checks the whole epoch instead.
        if info is None and start == 0 and this_pass.samples == 0:
            raise RuntimeError(f"no usable samples in {self.source}: {this_pass}")

    @abstractmethod
    def _records(self, share: int, num_shares: int, start: int) -> Iterator[_Record]:
        """The records of one share of the epoch, from its ``start``-th on."""

    def _rng(self, *extra: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, *extra])

    def _decode(self, record: _Record) -> tuple[CaptionSample | None, str | None]:
        if record.problem is not None:
            return None, record.problem
        if not isinstance(record.caption, str) or not record.caption.strip():
            return None, EMPTY_CAPTION
        caption = record.caption.strip()
        categories = record.categories
        if categories is None:
            categories = self.extractor(caption)
        elif not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            return None, BAD_RECORD
        categories = list(dict.fromkeys(c.strip() for c in categories if c.strip()))
        if not categories:
            return None, NO_CATEGORY
        if record.image is None:
            return None, MISSING_IMAGE
        try:
            source = record.image if isinstance(record.image, Path) else io.BytesIO(record.image)
            with Image.open(source) as im:
                image = im.convert("RGB")
        except FileNotFoundError:
            return None, MISSING_IMAGE
        except (OSError, ValueError, Image.DecompressionBombError):
            return None, CORRUPT_IMAGE
        return CaptionSample(self.transform(image), caption, categories, record.key), None


class JsonlCaptions(CaptionStream):
    """Captions from a JSONL manifest; image paths are relative to the manifest's folder.

    Only line offsets are kept in memory, so manifests of millions of lines are fine.
    Share ``s`` of ``S`` reads every S-th record of the epoch's (seeded) permutation.
    """

    def __init__(self, manifest: str | Path, transform: Callable[[Image.Image], Any] | None = None,
                 extractor: Callable[[str], list[str]] | None = None, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        super().__init__(transform, extractor, shuffle, seed, rank, world_size)
        self.manifest = Path(manifest)
        self.source = str(self.manifest)
        if not self.manifest.is_file():
            raise FileNotFoundError(f"caption manifest {self.manifest} does not exist")
        self.offsets = self._line_offsets(self.manifest)  # one per record, bad records included
        if len(self.offsets) == 0:
            raise ValueError(f"caption manifest {self.manifest} is empty (expected one JSON object per line)")

    @staticmethod
    def _line_offsets(path: Path) -> np.ndarray:
        offsets, position = [], 0
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    offsets.append(position)
                position += len(line)
        return np.asarray(offsets, dtype=np.int64)

    def _records(self, share: int, num_shares: int, start: int) -> Iterator[_Record]:
        order = self._rng().permutation(len(self.offsets)) if self.shuffle else np.arange(len(self.offsets))
        with self.manifest.open("rb") as f:
            for line_index in order[share::num_shares][start:]:
                f.seek(self.offsets[line_index])
                yield self._parse(f.readline(), int(line_index))

    def _parse(self, line: bytes, line_index: int) -> _Record:
        key = f"{self.manifest.name}:{line_index + 1}"
        try:
            entry = json.loads(line)
        except ValueError:
            return _Record(key, None, None, problem=BAD_RECORD)
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            return _Record(key, None, None, problem=BAD_RECORD)
        return _Record(key, self.manifest.parent / entry["image"], entry.get("caption"), entry.get("categories"))


class TarCaptions(CaptionStream):
    """Captions streamed from img2dataset / webdataset tar shards.

    Share ``s`` of ``S`` reads every S-th shard of the epoch's (seeded) shard order, so use at
    least as many shards as ranks x workers. With ``shuffle`` the samples also pass through a
    seeded shuffle buffer of ``shuffle_buffer`` records per share. Shards are local files, http(s)
    URLs or ``pipe:COMMAND`` (see ``expand_shards``), all read as forward-only streams: a resume
    reads its share again up to its position, without decoding what it skips.
    """

    def __init__(self, shards: str | Path | Sequence[str | Path], transform: Callable[[Image.Image], Any] | None = None,
                 extractor: Callable[[str], list[str]] | None = None, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle_buffer: int = 1000):
        super().__init__(transform, extractor, shuffle, seed, rank, world_size)
        self.shards = expand_shards(shards)
        self.source = f"{len(self.shards)} shards ({self.shards[0]} ...)"
        self.shuffle_buffer = shuffle_buffer

    def _records(self, share: int, num_shares: int, start: int) -> Iterator[_Record]:
        shards = [self.shards[i] for i in self._rng().permutation(len(self.shards))] if self.shuffle else self.shards
        mine = shards[share::num_shares]
        if not mine:
            logger.warning("share %d has no shard: %d shards for %d ranks x workers", share, len(self.shards),
                           num_shares)
        groups: Iterable[_Record] = itertools.chain.from_iterable(_tar_records(s) for s in mine)
        if self.shuffle:
            groups = _buffered_shuffle(groups, self.shuffle_buffer, self._rng(share + 1))
        # Skipped records are read but not decoded, so a resume costs I/O only.
        return itertools.islice(groups, start, None)


def expand_shards(shards: str | Path | Sequence[str | Path]) -> list[str]:
    """Paths, globs and brace patterns (``{000..099}``, ``{a,b}``) -> existing shard files, in order.

    http(s) URLs and ``pipe:`` commands are brace-expanded only: whether they can be read shows when
    they are read (checking would fetch every shard up front).
    """
    patterns = [shards] if isinstance(shards, (str, Path)) else list(shards)
    found: list[str] = []
    for pattern in patterns:
        for expanded in expand_braces(str(pattern)):
            if expanded.startswith((PIPE, *URL_SCHEMES)):
                found.append(expanded)
            elif glob.has_magic(expanded):
                matches = sorted(glob.glob(expanded))
                if not matches:
                    raise FileNotFoundError(f"no shard matches {expanded!r}")
                found += matches
            elif not Path(expanded).is_file():
                raise FileNotFoundError(f"shard {expanded} does not exist")
            else:
                found.append(expanded)
    if not found:
        raise ValueError(f"no shards given in {shards!r}")
    return found


_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``"a{1..3}b"`` -> ``["a1b", "a2b", "a3b"]``; zero padding of the first bound is kept; ``{x,y}`` lists."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        low, high = numeric.groups()
        choices = [str(i).zfill(len(low)) for i in range(int(low), int(high) + 1)]
    else:
        choices = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [expanded for choice in choices for expanded in expand_braces(head + choice + tail)]


def _shard_name(shard: str) -> str:
    """A shard's name in sample keys: the file name of a path or URL, the whole text of a ``pipe:``."""
    if shard.startswith(PIPE):
        return shard
    if shard.startswith(URL_SCHEMES):
        return posixpath.basename(urllib.parse.urlparse(shard).path)
    return Path(shard).name


@contextlib.contextmanager
def _open_shard(shard: str) -> Iterator[IO[bytes]]:
    """A shard's bytes as a forward-only stream: a local file, an http(s) response or a ``pipe:`` command's stdout."""
    if shard.startswith(PIPE):
        with _command_output(shard) as stdout:
            yield stdout
    elif shard.startswith(URL_SCHEMES):
        try:
            response = urllib.request.urlopen(shard, timeout=URL_TIMEOUT_S)
        except urllib.error.HTTPError as e:
            raise ShardError(f"shard {shard!r} is unreachable: HTTP {e.code} {e.reason}") from e
        except (OSError, ValueError) as e:  # refused, unknown host, timeout, malformed URL
            raise ShardError(f"shard {shard!r} is unreachable: {getattr(e, 'reason', e)}") from e
        with response:
            yield response
    else:
        with open(shard, "rb") as file:
            yield file


@contextlib.contextmanager
def _command_output(shard: str) -> Iterator[IO[bytes]]:
    """The stdout of a ``pipe:`` shard's command. A non-zero exit raises ``ShardError`` with the end of the
    command's stderr, also when the tar reader failed first (the command is then the cause)."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a chatty command cannot block on it
        # Unbuffered: a read returns what the command has written so far instead of waiting for a full buffer.
        # A session of its own, so that stopping early can kill the shell and everything it started.
        process = subprocess.Popen(shard[len(PIPE):], shell=True, stdout=subprocess.PIPE, stderr=stderr, bufsize=0,
                                   start_new_session=True)
        stdout = process.stdout
        assert stdout is not None
        failure: Exception | None = None
        try:
            try:
                yield stdout
            except Exception as error:
                failure = error
            # Reading to the end (the tar padding, or the rest after a reader error) lets the command
            # finish instead of dying of SIGPIPE, so its exit status is its own.
            while stdout.read(1 << 16):
                pass
            if process.wait() != 0:
                stderr.seek(0)
                message = stderr.read()[-2000:].decode(errors="replace").strip()
                raise ShardError(f"shard {shard!r}: the command exited with status {process.returncode}"
                                 + (f": {message}" if message else "")) from failure
        finally:
            if process.poll() is None:  # the reader stopped early (or was interrupted): nobody reads the rest
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            stdout.close()
        if failure is not None:
            raise failure


def _tar_records(shard: str) -> Iterator[_Record]:
    """The records of one shard: consecutive members sharing a key (the name up to the first dot)."""
    name = _shard_name(shard)
    key, files = None, {}
    try:
        with _open_shard(shard) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, member_name = posixpath.split(member.name)
                stem, _, extension = member_name.partition(".")
                member_key = posixpath.join(directory, stem)
                if member_key != key and key is not None:
                    yield _group_to_record(f"{name}/{key}", files)
                    files = {}
                key = member_key
                files[extension.lower()] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError, http.client.HTTPException) as e:  # HTTPException: a cut-off download
        logger.warning("%s: unreadable from here on (%s)", shard, e)
        yield _Record(name, None, None, problem=BAD_SHARD)
        return
    if key is not None:
        yield _group_to_record(f"{name}/{key}", files)


def _group_to_record(key: str, files: dict[str, bytes]) -> _Record:
    image = next((files[e] for e in IMAGE_EXTENSIONS if e in files), None)
    try:
        caption = files["txt"].decode("utf-8") if "txt" in files else None
        meta = json.loads(files["json"]) if "json" in files else {}
    except ValueError:
        return _Record(key, None, None, problem=BAD_RECORD)
    categories = meta.get("categories") if isinstance(meta, dict) else None
    return _Record(key, image, caption, categories)


def _buffered_shuffle(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """Approximate shuffle of a stream through a buffer of ``size`` items."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        yield buffer[j]
        buffer[j] = item
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


def load_caption_dataset(source: str | Path | Sequence[str | Path], **kwargs: Any) -> CaptionStream:
    """A ``.jsonl`` manifest -> ``JsonlCaptions``; anything else (tar paths, globs, brace patterns,
    a list of them) -> ``TarCaptions``. ``kwargs`` go to the class."""
    if isinstance(source, (str, Path)) and str(source).endswith(".jsonl"):
        return JsonlCaptions(source, **kwargs)
    return TarCaptions(source, **kwargs)


# --- batches ---------------------------------------------------------------------------------------

class CategoryIndex(NamedTuple):
    """Per-image category lists over one batch-level vocabulary (each word is encoded once).

    vocab: ``[V]`` unique categories in order of first appearance.
    index: ``int64 [B, Nmax]`` positions in ``vocab``; 0 in padded slots.
    mask: ``bool [B, Nmax]``, True for real entries.
    """

    vocab: list[str]
    index: torch.Tensor
    mask: torch.Tensor


def build_category_index(categories: Sequence[Sequence[str]]) -> CategoryIndex:
    vocab = list(dict.fromkeys(c for cats in categories for c in cats))
    position = {c: i for i, c in enumerate(vocab)}
    width = max((len(cats) for cats in categories), default=0)
    index = torch.zeros(len(categories), width, dtype=torch.long)
    mask = torch.zeros(len(categories), width, dtype=torch.bool)
    for row, cats in enumerate(categories):
        index[row, : len(cats)] = torch.tensor([position[c] for c in cats], dtype=torch.long)
        mask[row, : len(cats)] = True
    return CategoryIndex(vocab, index, mask)


@dataclass
class CaptionBatch:
    """A collated batch.

    images: ``float [B, 3, H, W]``.
    categories: per image, its category words.
    vocab, category_index ``int64 [B, Nmax]``, category_mask ``bool [B, Nmax]``: see ``CategoryIndex``.
    worker, position, skipped: bookkeeping read by ``CaptionLoader``.
    """

    images: torch.Tensor
    captions: list[str]
    categories: list[list[str]]
    vocab: list[str]
    category_index: torch.Tensor
    category_mask: torch.Tensor
    keys: list[str]
    worker: int = 0
    position: int = 0
    skipped: Counter = field(default_factory=Counter)


def collate_captions(samples: Sequence[CaptionSample]) -> CaptionBatch:
    shapes = {tuple(s.image.shape) for s in samples}
    if len(shapes) > 1:
        raise ValueError(f"images of one batch differ in shape {sorted(shapes)}; use a transform with a fixed size")
    categories = [list(s.categories) for s in samples]
    vocab, index, mask = build_category_index(categories)
    skipped: Counter = Counter()
    for s in samples:
        skipped.update(s.skipped)
    return CaptionBatch(
        images=torch.stack([s.image for s in samples]), captions=[s.caption for s in samples],
        categories=categories, vocab=vocab, category_index=index, category_mask=mask,
        keys=[s.key for s in samples], worker=samples[-1].worker, position=samples[-1].position, skipped=skipped)


class CaptionLoader:
    """Batches of a ``CaptionStream`` through a torch ``DataLoader``, resumable mid-epoch.

    ``for batch in loader`` runs (the rest of) one epoch; after a complete pass the epoch
    advances. Leaving the loop early and iterating again continues where it stopped, and
    ``state_dict()`` saved at any point restores exactly the batches not yet seen, in the
    same order (same seed, batch size, ``num_workers`` and world size required). This works because the
    DataLoader takes batches from its workers in a fixed cycle: the state is each worker
    stream's position and the stream whose turn is next. ``stats`` gathers the skip counters
    of all workers (records skipped after a worker's last sample of an epoch are not seen).
    """

    def __init__(self, dataset: CaptionStream, batch_size: int, num_workers: int = 0, drop_last: bool = False,
                 **dataloader_kwargs: Any):
        if dataloader_kwargs.get("persistent_workers"):
            raise ValueError("persistent_workers would keep stale resume positions in the workers; leave it off")
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.drop_last = drop_last
        self.dataloader_kwargs = dataloader_kwargs
        self.epoch = 0
        self.positions: list[int] | None = None  # per worker stream, records consumed so far this epoch
        self.next_stream = 0  # the stream the DataLoader takes the next batch from
        self.stats = CaptionStats()

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.positions, self.next_stream = epoch, None, 0

    def __iter__(self) -> Iterator[CaptionBatch]:
        resuming = self.positions is not None
        positions = self.positions if resuming else [0] * max(1, self.num_workers)
        self.positions = positions
        self.dataset.set_epoch(self.epoch)
        self.dataset.start_positions = list(positions)  # copied into the workers when they start
        self.dataset.first_stream = self.next_stream
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=self.batch_size, num_workers=self.num_workers, drop_last=self.drop_last,
            collate_fn=collate_captions, **self.dataloader_kwargs)
        batches = 0
        for batch in loader:
            positions[batch.worker] = batch.position
            self.next_stream = (batch.worker + 1) % len(positions)
            self.stats.samples += len(batch.keys)
            self.stats.skipped.update(batch.skipped)
            batches += 1
            yield batch
        if batches == 0 and not resuming:
            raise RuntimeError(f"no usable samples in {self.dataset.source} in epoch {self.epoch}: {self.stats}")
        self.set_epoch(self.epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "num_workers": self.num_workers, "world_size": self.dataset.world_size,
                "seed": self.dataset.seed,
                "positions": None if self.positions is None else list(self.positions),
                "next_stream": self.next_stream,
                "samples": self.stats.samples, "skipped": dict(self.stats.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = (state["num_workers"], state["world_size"])
        if state["positions"] is not None and saved != (self.num_workers, self.dataset.world_size):
            raise ValueError(f"resuming mid-epoch needs the same num_workers and world_size: saved {saved}, "
                             f"now {(self.num_workers, self.dataset.world_size)}")
        if state["seed"] != self.dataset.seed:
            raise ValueError(f"resuming needs the same seed: saved {state['seed']}, now {self.dataset.seed}")
        self.epoch = state["epoch"]
        self.positions = None if state["positions"] is None else list(state["positions"])
        self.next_stream = state["next_stream"]
        self.stats = CaptionStats(state["samples"], Counter(state["skipped"]))
