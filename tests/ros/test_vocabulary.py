"""A new vocabulary is encoded in chunks on its own thread; a newer request abandons an older one."""

from __future__ import annotations

import threading

from synseg_ros.vocabulary import VocabularyPreparer, VocabularyRequest


class Encoder:
    """Records each encoding call; calls wait for `release` once `hold` is cleared."""

    def __init__(self, fail_on: str = "") -> None:
        self.calls: list[tuple[tuple[str, ...], str]] = []
        self.fail_on = fail_on
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def __call__(self, words, template_set):
        self.calls.append((tuple(words), template_set))
        self.entered.set()
        assert self.release.wait(5)
        if self.fail_on in words:
            raise RuntimeError(f"cannot encode {self.fail_on}")


class Outcomes:
    def __init__(self) -> None:
        self.ready: list[VocabularyRequest] = []
        self.errors: list[tuple[VocabularyRequest, str]] = []
        self.event = threading.Event()

    def on_ready(self, request: VocabularyRequest) -> None:
        self.ready.append(request)
        self.event.set()

    def on_error(self, request: VocabularyRequest, error: BaseException) -> None:
        self.errors.append((request, str(error)))
        self.event.set()


def preparer(encoder: Encoder, outcomes: Outcomes) -> VocabularyPreparer:
    prep = VocabularyPreparer(encoder, outcomes.on_ready, outcomes.on_error, chunk_words=2)
    prep.start()
    return prep


def words(n: int) -> tuple[str, ...]:
    return tuple(f"word{i}" for i in range(n))


def test_a_request_is_encoded_in_chunks_then_reported_ready():
    encoder, outcomes = Encoder(), Outcomes()
    prep = preparer(encoder, outcomes)
    request = VocabularyRequest(words(5), "tcl")
    prep.request(request)
    assert outcomes.event.wait(5)
    prep.stop()
    assert encoder.calls == [(("word0", "word1"), "tcl"), (("word2", "word3"), "tcl"), (("word4",), "tcl")]
    assert outcomes.ready == [request] and prep.progress() is None


def test_a_newer_request_abandons_the_one_in_progress_between_two_chunks():
    encoder, outcomes = Encoder(), Outcomes()
    prep = preparer(encoder, outcomes)
    encoder.release.clear()
    prep.request(VocabularyRequest(words(100), "tcl"))
    assert encoder.entered.wait(5)
    newer = VocabularyRequest(("door", "chair"), "tcl")
    prep.request(newer)
    assert prep.progress().request == newer
    encoder.release.set()
    assert outcomes.event.wait(5)
    prep.stop()
    assert encoder.calls == [(("word0", "word1"), "tcl"), (("door", "chair"), "tcl")]
    assert outcomes.ready == [newer]


def test_progress_tells_what_is_prepared_since_when_and_how_far():
    encoder, outcomes = Encoder(), Outcomes()
    prep = preparer(encoder, outcomes)
    encoder.release.clear()
    request = VocabularyRequest(words(6), "tcl")
    prep.request(request)
    assert encoder.entered.wait(5)
    first = prep.progress()
    assert (first.request, first.encoded) == (request, 0)
    encoder.entered.clear()
    encoder.release.set()
    encoder.release.clear()
    assert encoder.entered.wait(5)
    second = prep.progress()
    assert (second.encoded, second.since) == (2, first.since)
    encoder.release.set()
    assert outcomes.event.wait(5)
    prep.stop()


def test_an_encoding_error_is_reported_with_its_request_and_nothing_is_ready():
    encoder, outcomes = Encoder(fail_on="word3"), Outcomes()
    prep = preparer(encoder, outcomes)
    request = VocabularyRequest(words(6), "tcl")
    prep.request(request)
    assert outcomes.event.wait(5)
    prep.stop()
    assert outcomes.errors == [(request, "cannot encode word3")]
    assert outcomes.ready == [] and prep.progress() is None


def test_stop_abandons_the_request_in_progress():
    encoder, outcomes = Encoder(), Outcomes()
    prep = preparer(encoder, outcomes)
    encoder.release.clear()
    prep.request(VocabularyRequest(words(10), "tcl"))
    assert encoder.entered.wait(5)
    prep.stop()
    encoder.release.set()
    prep._thread.join(5)
    assert not prep._thread.is_alive()
    assert len(encoder.calls) == 1 and outcomes.ready == outcomes.errors == []
