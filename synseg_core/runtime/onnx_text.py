"""The text tower without PyTorch: the CLIP tokenizer (``tokenizers``) + ``text_encoder.onnx``, cached.

``OnnxTextEmbedder`` is a ``Segmenter`` text embedder, ``(words, template set) -> [K, T]``, that gives the same
prompt-ensemble embeddings as ``TextEncoder.encode``; a word is encoded once per template set and then
served from memory, so a vocabulary change costs only its new words.
"""
from __future__ import annotations

import html
import json
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synseg_core.runtime.export_format import EMBEDDINGS, FILE_NAMES, TEXT_ENCODER, TOKENIZER, TOKENS, ExportError, read_export
from synseg_core.runtime.onnx_backend import create_session, select_providers

#: prompts per text-encoder call; bounds memory for long vocabularies x 80-template sets
PROMPTS_PER_CALL = 512


def clean_text(text: str) -> str:
    """open_clip's 'lower' cleaning: fix text (ftfy when installed, else NFC), unescape html, collapse spaces, lower."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text))
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """texts -> tokens [N, context_length] int64: start token, BPE ids, end token, zero padding.

    Over-long texts are cut to ``context_length`` with the end token kept last, as open_clip does.
    """

    def __init__(self, path: Path, context_length: int) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ImportError("the ONNX text path needs the tokenizers package: pip install tokenizers") from exc
        try:
            data = json.loads(Path(path).read_text())
            special = data.pop("synseg")
            self._tokenizer = Tokenizer.from_str(json.dumps(data))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise ExportError(f"{path}: not a readable SynSeg tokenizer ({exc}); re-export with --text-encoder") from exc
        self.sot = int(special["sot_token_id"])
        self.eot = int(special["eot_token_id"])
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch([clean_text(t) for t in texts], add_special_tokens=False)
        tokens = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, encoding in zip(tokens, encodings, strict=True):
            ids = [self.sot, *encoding.ids, self.eot][: self.context_length]
            ids[-1] = self.eot
            row[: len(ids)] = ids
        return tokens


class OnnxTextEmbedder:
    """(words, template set) -> L2-normalised prompt-ensemble embeddings [K, T] float32, via ONNX Runtime.

    Each call runs the tower only up to the longest prompt's end token when the export allows it
    (``TextExport.trim_tokens``): CLIP prompts end after a dozen of the 77 positions, and a causal tower pooled at
    the end token gives the same embeddings. ``trim_tokens=False`` runs every position (for comparisons).
    """

    def __init__(
        self,
        directory: str | Path,
        device: str = "cpu",
        providers: list[Any] | None = None,
        threads: int | None = None,
        max_entries: int = 100_000,
        trim_tokens: bool = True,
    ) -> None:
        directory = Path(directory)
        meta = read_export(directory)
        if meta.text is None or TEXT_ENCODER not in meta.files:
            raise ExportError(
                f"{directory}: exported without the text tower; re-export with --text-encoder, "
                "or use Segmenter.from_checkpoint (PyTorch text tower)"
            )
        self.templates = meta.text.templates
        self.trim_tokens = meta.text.trim_tokens and trim_tokens
        self.tokenizer = ClipTokenizer(directory / FILE_NAMES[TOKENIZER], meta.text.context_length)
        chosen, _, _ = select_providers(device, providers)
        self._session = create_session(directory / FILE_NAMES[TEXT_ENCODER], chosen, threads)
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def embed(self, words: Sequence[str], template_set: str) -> np.ndarray:
        """Embeddings [K, T] computed now, without the cache."""
        if template_set not in self.templates:
            raise ValueError(f"unknown prompt template set {template_set!r}; this export has {sorted(self.templates)}")
        patterns = self.templates[template_set]
        step = max(1, PROMPTS_PER_CALL // len(patterns))
        chunks = []
        for start in range(0, len(words), step):
            chunk = words[start : start + step]
            tokens = self.tokenizer([p.replace("{}", w) for w in chunk for p in patterns])
            if self.trim_tokens:  # up to the longest prompt's end token (the last non-padding column)
                tokens = tokens[:, : int(np.flatnonzero(tokens.any(axis=0))[-1]) + 1]
            feeds = {TOKENS: tokens.reshape(len(chunk), len(patterns), -1)}
            chunks.append(self._session.run([EMBEDDINGS], feeds)[0])
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def __call__(self, words: Sequence[str], template_set: str) -> np.ndarray:
        with self._lock:
            missing = [w for w in dict.fromkeys(words) if (template_set, w) not in self._cache]
        if missing:
            fresh = self.embed(missing, template_set)
            with self._lock:
                for word, embedding in zip(missing, fresh, strict=True):
                    self._cache[(template_set, word)] = embedding
                while len(self._cache) > self.max_entries:
                    self._cache.popitem(last=False)
        with self._lock:
            rows = []
            for word in words:
                self._cache.move_to_end((template_set, word))
                rows.append(self._cache[(template_set, word)])
        return np.stack(rows)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
