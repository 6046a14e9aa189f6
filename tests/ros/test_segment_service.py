"""The one-shot `~/segment` service when the model misbehaves: it fails or takes long.

The node runs in this process, spun like `main` spins it, with its model wrapped so that queries for
some words fail or are slow; the live stream uses the node's own vocabulary and is unaffected.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import SynsegClient, image_msg, in_process_node, make_rgb, values_of
from synseg_ros.srv import Segment

SLOW_QUERY_S = 3.0


class MisbehavingModel:
    """The node's segmenter, except that a query with the word "explode" raises as a broken GPU
    backend would, and one with "slow" takes SLOW_QUERY_S longer."""

    def __init__(self, segmenter: Any) -> None:
        self._segmenter = segmenter
        self.slow_started = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._segmenter, name)

    def segment(self, rgb: Any, words: Any, *args: Any, **kwargs: Any) -> Any:
        if "explode" in words:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        if "slow" in words:
            self.slow_started.set()
            time.sleep(SLOW_QUERY_S)
        return self._segmenter.segment(rgb, words, *args, **kwargs)


@pytest.fixture(scope="module")
def service_node(model_dir, probe) -> Iterator[tuple[SynsegClient, MisbehavingModel]]:
    node, stop = in_process_node(model_dir, "synseg_service", vocabulary=["door", "chair"])
    model = node._segmenter = MisbehavingModel(node._segmenter)
    try:
        yield SynsegClient(probe, "synseg_service", "/synseg_service/camera/image"), model
    finally:
        stop()


def query(*words: str) -> Segment.Request:
    return Segment.Request(image=image_msg(make_rgb(24, 32), "rgb8"), vocabulary=list(words))


def test_a_model_error_in_a_query_is_answered_with_the_reason_and_masks_keep_coming(service_node):
    client, _ = service_node
    response = client.call_segment(query("explode"))
    assert not response.success
    assert response.message == "segmentation failed: RuntimeError: CUDA error: an illegal memory access was encountered"
    out = client.send(image_msg(make_rgb(24, 32, seed=1), "rgb8"))
    assert (out.labels.width, out.labels.height) == (32, 24)
    assert [c.name for c in out.segmentation.classes] == ["door", "chair"]
    assert client.call_segment(query("cat")).success


def test_a_model_error_in_a_query_is_counted_in_diagnostics(service_node):
    client, _ = service_node
    errors = int(values_of(client.status(newer_than=time.time()))["errors"])
    assert not client.call_segment(query("explode")).success
    values = values_of(client.status(newer_than=time.time()))
    assert int(values["errors"]) == errors + 1
    assert values["last_problem"] == "the segment service: CUDA error: an illegal memory access was encountered"


def test_a_long_query_holds_up_neither_parameter_changes_nor_diagnostics(service_node):
    client, model = service_node
    client.probe.spin_until(client.segment_service.service_is_ready, 20, "the segment service")
    pending = client.segment_service.call_async(query("slow"))
    client.probe.spin_until(model.slow_started.is_set, 20, "the slow query to start")
    try:
        assert client.set("overlay_alpha", "0.3").successful
        assert client.status(newer_than=time.time()) is not None
        assert not pending.done(), "the parameter change or diagnostics waited for the query"
        assert client._call(pending, timeout=30).success
    finally:
        assert client.set("overlay_alpha", "0.5").successful
