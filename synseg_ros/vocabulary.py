"""Vocabulary changes prepared on a thread of their own, while masks keep flowing with the old one.

Encoding a new vocabulary's text takes seconds on a CPU (tens of seconds for a few dozen words with
a ViT-B/16 text tower). `VocabularyPreparer` encodes a requested vocabulary in chunks of a few words
through the segmenter's cache-backed `encode_vocabulary`, outside the lock the frames take, and then
hands it over as ready; the inference thread switches to it between two frames, when segmenting
with it encodes nothing. A newer request supersedes the one in progress: that one is abandoned
between two chunks (the words encoded so far stay cached).
ROS-free.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

CHUNK_WORDS = 4  # words per encoding call: how long a superseded request can hold up a newer one


@dataclass(frozen=True)
class VocabularyRequest:
    words: tuple[str, ...]
    template_set: str


@dataclass(frozen=True)
class Progress:
    """A request being prepared: when it was made (time.monotonic()), how many words are encoded."""

    request: VocabularyRequest
    since: float
    encoded: int = 0


class VocabularyPreparer:
    """Encodes the newest requested vocabulary in chunks; `on_ready(request)` once all of it is.

    `encode(words, template_set)` must be safe to call while frames are segmented (it is
    `Segmenter.encode_vocabulary`). When it raises, `on_error(request, error)` is called, unless a
    newer request superseded that one meanwhile.
    """

    def __init__(
        self,
        encode: Callable[[Sequence[str], str], Any],
        on_ready: Callable[[VocabularyRequest], None],
        on_error: Callable[[VocabularyRequest, BaseException], None],
        chunk_words: int = CHUNK_WORDS,
        name: str = "synseg-vocabulary",
    ) -> None:
        self._encode = encode
        self._on_ready = on_ready
        self._on_error = on_error
        self._chunk = chunk_words
        self._wake = threading.Condition()
        self._pending: Progress | None = None  # requested, not started yet
        self._progress: Progress | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop between two chunks; an encoding call in flight is not waited for (daemon thread)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def request(self, request: VocabularyRequest) -> None:
        """Prepare `request`, abandoning whatever is being prepared."""
        with self._wake:
            self._pending = Progress(request, time.monotonic())
            self._wake.notify()

    def progress(self) -> Progress | None:
        """The newest request not ready yet (None when there is none)."""
        with self._wake:
            return self._pending or self._progress

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._stopping or self._pending is not None)
                started, self._pending = self._pending, None
                if self._stopping or started is None:
                    return
                self._progress = started
            request = started.request
            try:
                complete = self._prepare(started)
            except Exception as error:  # noqa: BLE001 - reported; the old vocabulary stays in use
                with self._wake:
                    self._progress = None
                    superseded = self._stopping or self._pending is not None
                if not superseded:
                    self._on_error(request, error)
                continue
            with self._wake:
                self._progress = None
            if complete:
                self._on_ready(request)

    def _prepare(self, started: Progress) -> bool:
        """Encode the request chunk by chunk; False when a newer request (or stop) cut it short."""
        words, template_set = started.request.words, started.request.template_set
        for start in range(0, len(words), self._chunk):
            with self._wake:
                if self._stopping or self._pending is not None:
                    return False
            self._encode(words[start : start + self._chunk], template_set)
            with self._wake:
                self._progress = replace(started, encoded=min(start + self._chunk, len(words)))
        with self._wake:
            return not (self._stopping or self._pending is not None)
