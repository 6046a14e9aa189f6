"""Latest-frame-wins inference thread.

The subscription callback only hands its message to `submit`, which keeps the newest one and drops
the one it replaces; a single thread runs the model on whatever is newest when it becomes free.
Nothing queues, so latency stays one model run at most however fast the camera publishes.
Settings changes go through the same thread and are applied between two frames, never during one.
`stop` does not wait for a model call in flight (it cannot be interrupted and may take seconds):
the thread is a daemon, ends after that call, and what it reports then is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Frame = TypeVar("Frame")
Update = TypeVar("Update")


class LatestFrameWorker(Generic[Frame, Update]):
    """Runs `process(frame)` on the newest submitted frame, and `apply(update)` between frames."""

    def __init__(
        self,
        process: Callable[[Frame], None],
        apply: Callable[[Update], None],
        on_error: Callable[[str, BaseException], None],
        name: str = "synseg-inference",
    ) -> None:
        self._process = process
        self._apply = apply
        self._on_error = on_error
        self._wake = threading.Condition()
        self._frame: Frame | None = None
        self._update: Update | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()

    def submit(self, frame: Frame) -> bool:
        """Make `frame` the next to process; True when it replaced one not processed yet (a drop)."""
        with self._wake:
            dropped = self._frame is not None
            self._frame = frame
            self._wake.notify()
        return dropped

    def request(self, update: Update) -> None:
        """Apply `update` before the next frame; a newer request replaces one not applied yet."""
        with self._wake:
            self._update = update
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(
                    lambda: self._stopping or self._frame is not None or self._update is not None
                )
                if self._stopping:
                    return
                frame, self._frame = self._frame, None
                update, self._update = self._update, None
            if update is not None:
                self._guarded("applying settings", self._apply, update)
            if frame is not None:
                self._guarded("processing a frame", self._process, frame)

    def _guarded(self, what: str, call: Callable[[Any], None], argument: Any) -> None:
        # One bad frame or setting must not end the thread: report it and carry on.
        try:
            call(argument)
        except Exception as error:  # noqa: BLE001 - reported, and the worker keeps running
            if not self._stopping:  # after stop, publishing fails because the node is going away
                self._on_error(what, error)
