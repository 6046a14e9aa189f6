"""Latest-frame-wins inference thread.

The subscription callback only hands its message to `submit`, which keeps the newest one and drops
the one it replaces; a single thread runs the model on whatever is newest when it becomes free.
Nothing queues, so latency stays one model run at most however fast the camera publishes.
Settings changes go through the same thread and are applied between two frames, never during one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

Frame = TypeVar("Frame")


class LatestFrameWorker(Generic[Frame]):
    """Runs `process(frame)` on the newest submitted frame, and `apply(changes)` before it."""

    def __init__(
        self,
        process: Callable[[Frame], None],
        apply: Callable[[dict[str, Any]], None],
        on_error: Callable[[str, BaseException], None],
        name: str = "synseg-inference",
    ) -> None:
        self._process = process
        self._apply = apply
        self._on_error = on_error
        self._wake = threading.Condition()
        self._frame: Frame | None = None
        self._changes: dict[str, Any] = {}
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.submitted = 0
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, frame: Frame) -> bool:
        """Make `frame` the next to process; True when it replaced one not processed yet (a drop)."""
        with self._wake:
            dropped = self._frame is not None
            self._frame = frame
            self.submitted += 1
            self.dropped += dropped
            self._wake.notify()
        return dropped

    def request(self, changes: Mapping[str, Any]) -> None:
        """Apply `changes` before the next frame; later requests override earlier ones per key."""
        with self._wake:
            self._changes.update(changes)
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(
                    lambda: self._stopping or self._frame is not None or bool(self._changes)
                )
                if self._stopping:
                    return
                frame, self._frame = self._frame, None
                changes, self._changes = self._changes, {}
            if changes:
                self._guarded("applying settings", self._apply, changes)
            if frame is not None:
                self._guarded("processing a frame", self._process, frame)

    def _guarded(self, what: str, call: Callable[[Any], None], argument: Any) -> None:
        # One bad frame or setting must not end the thread: report it and carry on.
        try:
            call(argument)
        except Exception as error:  # noqa: BLE001 - reported, and the worker keeps running
            self._on_error(what, error)
