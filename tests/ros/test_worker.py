"""The inference thread always takes the newest frame and applies updates between frames."""

from __future__ import annotations

import threading
import time

from synseg_ros.worker import LatestFrameWorker


class Recorder:
    def __init__(self, seconds_per_frame: float = 0.0) -> None:
        self.events: list[tuple[str, object]] = []
        self.seconds = seconds_per_frame
        self.started = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.errors: list[str] = []

    def process(self, frame: object) -> None:
        self.started.set()
        self.release.wait(5)
        self.events.append(("frame", frame))
        if frame == "last":
            self.done.set()

    def apply(self, update: object) -> None:
        self.events.append(("update", update))

    def on_error(self, what: str, error: BaseException) -> None:
        self.errors.append(f"{what}: {error}")


def test_frames_arriving_during_a_run_are_dropped_except_the_newest():
    recorder = Recorder()
    worker = LatestFrameWorker(recorder.process, recorder.apply, recorder.on_error)
    worker.start()
    try:
        assert worker.submit("first") is False
        assert recorder.started.wait(5)
        drops = [worker.submit(f"frame {i}") for i in range(10)] + [worker.submit("last")]
        recorder.release.set()
        assert recorder.done.wait(5)
    finally:
        worker.stop()
    assert drops == [False] + [True] * 10
    assert recorder.events == [("frame", "first"), ("frame", "last")]


def test_updates_are_applied_between_frames_and_the_newest_wins():
    recorder = Recorder()
    worker = LatestFrameWorker(recorder.process, recorder.apply, recorder.on_error)
    worker.start()
    try:
        worker.submit("first")
        assert recorder.started.wait(5)
        worker.request("vocabulary v2")
        worker.request("vocabulary v3")
        worker.submit("last")
        recorder.release.set()
        assert recorder.done.wait(5)
    finally:
        worker.stop()
    assert recorder.events == [("frame", "first"), ("update", "vocabulary v3"), ("frame", "last")]


def test_an_update_is_applied_without_waiting_for_a_frame():
    applied = threading.Event()
    worker = LatestFrameWorker(lambda frame: None, lambda update: applied.set(), lambda what, error: None)
    worker.start()
    try:
        worker.request("threshold 0.3")
        assert applied.wait(5)
    finally:
        worker.stop()


def test_a_failing_frame_is_reported_and_the_thread_keeps_running():
    recorder = Recorder()

    def process(frame: object) -> None:
        if frame == "bad":
            raise RuntimeError("boom")
        recorder.process(frame)

    recorder.release.set()
    worker = LatestFrameWorker(process, recorder.apply, recorder.on_error)
    worker.start()
    try:
        worker.submit("bad")
        deadline = time.monotonic() + 5
        while not recorder.errors and time.monotonic() < deadline:
            time.sleep(0.01)
        worker.submit("last")
        assert recorder.done.wait(5)
    finally:
        worker.stop()
    assert recorder.errors == ["processing a frame: boom"]
    assert recorder.events == [("frame", "last")]


def test_stop_ends_the_thread():
    worker = LatestFrameWorker(lambda frame: None, lambda update: None, lambda what, error: None)
    worker.start()
    worker.stop()
    worker._thread.join(5)
    assert not worker._thread.is_alive()


def test_stop_does_not_wait_for_a_frame_in_flight_and_drops_what_it_raises_afterwards():
    recorder = Recorder()

    def process(frame: object) -> None:
        recorder.process(frame)
        raise RuntimeError("publisher's context is invalid")

    worker = LatestFrameWorker(process, recorder.apply, recorder.on_error)
    worker.start()
    worker.submit("long frame")
    assert recorder.started.wait(5)
    worker.stop()
    assert worker._thread.is_alive(), "stop waited for the frame"
    recorder.release.set()
    worker._thread.join(5)
    assert not worker._thread.is_alive()
    assert recorder.errors == []
