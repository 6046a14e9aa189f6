"""What the node reports on /diagnostics: rates, drops, bad input, and where the time goes.

`PipelineStats` is fed from the subscription callback and the inference thread (hence the lock) and
read by the diagnostics timer, which turns a snapshot into one diagnostic_msgs/DiagnosticStatus.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue


class RateMeter:
    """Events per second over the last `window_s` seconds."""

    def __init__(self, window_s: float, start: float) -> None:
        self._window = window_s
        self._start = start
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._forget(now)

    def rate(self, now: float) -> float:
        self._forget(now)
        return len(self._times) / max(min(self._window, now - self._start), 1e-3)

    def _forget(self, now: float) -> None:
        while self._times and self._times[0] <= now - self._window:
            self._times.popleft()


@dataclass
class Snapshot:
    """Counters and figures at one moment; latencies are medians in milliseconds."""

    received: int
    lost: int
    dropped: int
    processed: int
    bad_input: int
    errors: int
    input_hz: float
    output_hz: float
    stage_ms: dict[str, float]
    node_latency_ms: float | None
    overhead_ms: float | None
    stamp_latency_ms: float | None
    last_problem: str
    seconds_since_input: float | None
    seconds_since_output: float | None


@dataclass(frozen=True)
class Preparing:
    """A vocabulary being encoded while the old one stays in use."""

    words: int
    encoded: int
    seconds: float  # since it was requested
    since_stamp: float  # the same moment on the node's clock, seconds


class PipelineStats:
    """Thread-safe counters and recent timings of the segmentation pipeline."""

    def __init__(self, window_s: float = 5.0, samples: int = 100) -> None:
        now = time.monotonic()
        self._lock = threading.Lock()
        self._input = RateMeter(window_s, now)
        self._output = RateMeter(window_s, now)
        self._samples = samples
        self._stages: dict[str, deque[float]] = {}  # stage name -> recent seconds, in pipeline order
        self._node_latency: deque[float] = deque(maxlen=samples)
        self._overhead: deque[float] = deque(maxlen=samples)
        self._stamp_latency: deque[float] = deque(maxlen=samples)
        self._last_input: float | None = None
        self._last_output: float | None = None
        self.received = self.lost = self.dropped = self.processed = self.bad_input = self.errors = 0
        self.last_problem = ""

    def frame_received(self, dropped_one: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self.received += 1
            self.dropped += dropped_one
            self._input.tick(now)
            self._last_input = now

    def frames_lost(self, count: int) -> None:
        """Frames that DDS announced but did not deliver whole (best effort: a fragment was lost)."""
        with self._lock:
            self.lost += count

    def frame_published(
        self,
        stage_seconds: Mapping[str, float],
        model_s: float,
        node_latency_s: float,
        stamp_latency_s: float | None,
    ) -> None:
        """One frame out: its stage times, the model call's share, receive -> publish, stamp -> publish."""
        now = time.monotonic()
        with self._lock:
            self.processed += 1
            self._output.tick(now)
            self._last_output = now
            for stage, seconds in stage_seconds.items():
                self._stages.setdefault(stage, deque(maxlen=self._samples)).append(seconds)
            self._node_latency.append(node_latency_s)
            self._overhead.append(node_latency_s - model_s)
            if stamp_latency_s is not None:
                self._stamp_latency.append(stamp_latency_s)

    def input_rejected(self, reason: str) -> None:
        with self._lock:
            self.bad_input += 1
            self.last_problem = reason

    def failed(self, reason: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_problem = reason

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        with self._lock:
            return Snapshot(
                received=self.received,
                lost=self.lost,
                dropped=self.dropped,
                processed=self.processed,
                bad_input=self.bad_input,
                errors=self.errors,
                input_hz=self._input.rate(now),
                output_hz=self._output.rate(now),
                stage_ms={s: _median_ms(v) for s, v in self._stages.items()},
                node_latency_ms=_median_ms(self._node_latency) if self._node_latency else None,
                overhead_ms=_median_ms(self._overhead) if self._overhead else None,
                stamp_latency_ms=_median_ms(self._stamp_latency) if self._stamp_latency else None,
                last_problem=self.last_problem,
                seconds_since_input=None if self._last_input is None else now - self._last_input,
                seconds_since_output=None if self._last_output is None else now - self._last_output,
            )


def _median_ms(seconds: deque[float]) -> float:
    return 1000.0 * statistics.median(seconds)


@dataclass
class StatusReporter:
    """Turns snapshots into DiagnosticStatus; the level reflects what changed since the last one."""

    name: str
    hardware_id: str
    input_topic: str
    stale_after_s: float = 5.0
    slow_vocabulary_s: float = 10.0  # WARN when a new vocabulary takes longer than this to prepare
    _previous: Snapshot | None = field(default=None, init=False)

    def status(self, snap: Snapshot, info: Mapping[str, str], preparing: Preparing | None = None) -> DiagnosticStatus:
        before = self._previous
        self._previous = snap
        new_errors = snap.errors - (before.errors if before else 0)
        new_bad = snap.bad_input - (before.bad_input if before else 0)
        new_lost = snap.lost - (before.lost if before else 0)
        if new_errors:
            level, message = DiagnosticStatus.ERROR, f"{new_errors} failure(s): {snap.last_problem}"
        elif new_bad:
            level, message = DiagnosticStatus.WARN, f"{new_bad} bad image(s): {snap.last_problem}"
        elif new_lost:
            level, message = DiagnosticStatus.WARN, f"{new_lost} frame(s) lost in DDS on the way to the node"
        elif snap.seconds_since_input is None:
            level, message = DiagnosticStatus.WARN, f"waiting for images on {self.input_topic}"
        elif snap.seconds_since_input > self.stale_after_s:
            level = DiagnosticStatus.WARN
            message = f"no image on {self.input_topic} for {snap.seconds_since_input:.0f} s"
        elif snap.seconds_since_output is not None and snap.seconds_since_output > self.stale_after_s:
            # images arrive (the branch above) but no mask went out: the model is stuck or too slow
            level = DiagnosticStatus.WARN
            message = f"images arrive but no mask was published for {snap.seconds_since_output:.0f} s"
        else:
            level, message = DiagnosticStatus.OK, f"segmenting at {snap.output_hz:.1f} Hz"
        if preparing is not None:
            message += (
                f"; preparing a vocabulary of {preparing.words} words for {preparing.seconds:.0f} s "
                f"({preparing.encoded} encoded)"
            )
            if preparing.seconds > self.slow_vocabulary_s and level == DiagnosticStatus.OK:
                level = DiagnosticStatus.WARN
        values = {
            "input_rate_hz": f"{snap.input_hz:.2f}",
            "output_rate_hz": f"{snap.output_hz:.2f}",
            "frames_received": str(snap.received),
            "frames_lost": str(snap.lost),
            "frames_processed": str(snap.processed),
            "frames_dropped": str(snap.dropped),
            "bad_input": str(snap.bad_input),
            "errors": str(snap.errors),
            "last_problem": snap.last_problem,
            **{f"latency_{s}_ms": f"{ms:.2f}" for s, ms in snap.stage_ms.items()},
            "latency_receive_to_publish_ms": _format_ms(snap.node_latency_ms),
            # receive -> publish outside the model call: waiting, converting, encoding, sending
            "latency_node_overhead_ms": _format_ms(snap.overhead_ms),
            "latency_stamp_to_publish_ms": _format_ms(snap.stamp_latency_ms),
            "vocabulary_preparing": "true" if preparing else "false",
            "vocabulary_preparing_words": f"{preparing.encoded}/{preparing.words}" if preparing else "",
            "vocabulary_preparing_since": f"{preparing.since_stamp:.3f}" if preparing else "",
            "vocabulary_preparing_s": f"{preparing.seconds:.1f}" if preparing else "",
            **info,
        }
        return DiagnosticStatus(
            level=level,
            name=self.name,
            message=message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )


def _format_ms(ms: float | None) -> str:
    return "" if ms is None else f"{ms:.2f}"
