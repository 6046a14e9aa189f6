"""A vocabulary change while images flow, with a text encoder made slow on purpose (SlowModel in the
node's process: WORD_S per word it has not encoded before), over real DDS: masks keep coming with
the old vocabulary until the new one is encoded, then label_info and the masks switch together."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from conftest import STARTUP_TIMEOUT_S, SynsegClient, image_msg, make_rgb, start_node, values_of
from diagnostic_msgs.msg import DiagnosticStatus

from synseg_ros.testing import NodeProcess, Slowness, wait_until_ready

WORD_S = 0.25
FAILING_WORD = "unencodable"
RGB = make_rgb(24, 32)


@pytest.fixture(scope="module")
def slow(tmp_path_factory, model_dir, probe) -> Iterator[tuple[SynsegClient, NodeProcess]]:
    node = start_node(
        tmp_path_factory, model_dir, "synseg_slow_text", Slowness(word_s=WORD_S, failing_word=FAILING_WORD),
        vocabulary="[door, chair]",
    )
    try:
        wait_until_ready(probe, node, STARTUP_TIMEOUT_S)
        yield SynsegClient(probe, node.name, f"/{node.name}/camera/image"), node
    finally:
        node.stop()


def words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def yaml_list(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


def names(msg: Any) -> dict[str, int]:
    return {c.name: c.id for c in msg.classes}


def stream_until(client: SynsegClient, done: Callable[[], bool], timeout: float, what: str) -> None:
    """Publish a frame every 0.1 s (a camera) until `done`."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        client.images.publish(image_msg(RGB, "rgb8"))
        client.probe.spin_for(0.1)


def encoded_words(node: NodeProcess) -> int:
    """Words the slow text encoder has encoded so far (it logs each call)."""
    return sum(int(n) for n in re.findall(r"slow model: encoding (\d+) new words", node.log))


def showing(client: SynsegClient, expected: set[str]) -> Callable[[], bool]:
    """Whether the latest label_info names `expected`."""
    return lambda: bool(client.label_info) and set(names(client.label_info[-1])) == expected


def reset(client: SynsegClient) -> None:
    """Back to [door, chair] (encoded already), applied."""
    assert client.set("vocabulary", "[door, chair]").successful
    stream_until(client, showing(client, {"door", "chair"}), 30, "[door, chair]")


def test_masks_keep_flowing_with_the_old_vocabulary_while_the_new_one_is_encoded(slow):
    client, _ = slow
    reset(client)
    old = client.label_info[-1]
    new_words = words("switch", 20)  # 5 s of encoding
    client.segmentation.clear()
    assert client.set("vocabulary", yaml_list(new_words)).successful
    stream_until(client, showing(client, set(new_words)), 60, "the new label_info")
    switched = len(client.segmentation)
    stream_until(client, lambda: len(client.segmentation) >= switched + 3, 30, "masks after the switch")

    versions = [m.vocabulary_version for m in client.segmentation]
    new = client.label_info[-1]
    assert new.vocabulary_version == old.vocabulary_version + 1
    assert versions.count(old.vocabulary_version) >= 5, f"masks stopped during the encoding: {versions}"
    assert set(versions) == {old.vocabulary_version, new.vocabulary_version}
    first_new = versions.index(new.vocabulary_version)
    assert all(v == new.vocabulary_version for v in versions[first_new:]), f"the masks switched back: {versions}"
    # Every mask names its classes as the label_info of its version does: never the other map's ids.
    for mask in client.segmentation:
        info = old if mask.vocabulary_version == old.vocabulary_version else new
        assert names(mask) == names(info)
        assert set(np.unique(np.frombuffer(mask.labels.data, np.uint8))) <= set(names(info).values()) | {255}


def test_diagnostics_say_a_vocabulary_is_being_prepared_and_since_when(slow):
    client, _ = slow
    reset(client)
    requested = time.time()
    assert client.set("vocabulary", yaml_list(words("diag", 16))).successful  # 4 s of encoding
    client.probe.spin_for(1.5)
    status = client.status(newer_than=time.time())
    values = values_of(status)
    assert values["vocabulary_preparing"] == "true"
    encoded, total = values["vocabulary_preparing_words"].split("/")
    assert total == "16" and 0 <= int(encoded) < 16
    assert abs(float(values["vocabulary_preparing_since"]) - requested) < 1.0
    assert float(values["vocabulary_preparing_s"]) >= 1.0
    assert "preparing a vocabulary of 16 words" in status.message
    assert values["vocabulary_size"] == "2"  # still the old one in use
    stream_until(client, showing(client, set(words("diag", 16))), 60, "the new label_info")
    client.probe.spin_for(0.6)
    after = values_of(client.status(newer_than=time.time()))
    assert (after["vocabulary_preparing"], after["vocabulary_size"]) == ("false", "16")


def test_a_vocabulary_that_takes_long_to_prepare_is_a_warning(slow):
    client, _ = slow
    reset(client)
    assert client.set("vocabulary", yaml_list(words("long", 60))).successful  # 15 s of encoding
    def warned() -> bool:
        status = client.status(newer_than=time.time() - 0.1)
        return status.level == DiagnosticStatus.WARN and "preparing a vocabulary of 60 words" in status.message
    stream_until(client, warned, 30, "a WARN about the slow vocabulary")
    reset(client)


def test_a_superseded_vocabulary_is_abandoned_between_encoding_chunks(slow):
    client, node = slow
    reset(client)
    seen, before = len(client.label_info), encoded_words(node)
    assert client.set("vocabulary", yaml_list(words("huge", 400))).successful  # 100 s if encoded in full
    client.probe.spin_for(1.0)
    assert client.set("vocabulary", "[door, lamp]").successful
    stream_until(client, showing(client, {"door", "lamp"}), 60, "[door, lamp]")
    abandoned = encoded_words(node) - before - 1  # lamp is the one new word of [door, lamp]
    assert abandoned < 20, f"{abandoned} words of the superseded vocabulary were encoded"
    assert all(len(info.classes) <= 2 for info in client.label_info[seen:])
    assert client.get("vocabulary") == ["door", "lamp"]


def test_threshold_changes_apply_at_once_while_a_vocabulary_is_encoded(slow):
    client, _ = slow
    reset(client)
    try:
        assert client.set("vocabulary", yaml_list(words("thr", 40))).successful  # 10 s of encoding
        client.probe.spin_for(0.5)
        assert client.set("threshold", "1.0").successful
        stream_until(client, lambda: client.label_info[-1].threshold == 1.0, 5, "label_info with threshold 1")
        assert set(names(client.label_info[-1])) == {"door", "chair"}
        client.labels.clear()
        stream_until(client, lambda: len(client.labels) >= 2, 5, "masks with threshold 1")
        assert set(np.unique(np.frombuffer(client.labels[-1].data, np.uint8))) == {255}
    finally:
        assert client.set("threshold", "0.5").successful
    reset(client)


def test_an_encoding_error_is_reported_and_the_old_vocabulary_stays(slow):
    client, _ = slow
    reset(client)
    version = client.label_info[-1].vocabulary_version
    since = time.time()
    assert client.set("vocabulary", f"[door, {FAILING_WORD}]").successful

    def reported() -> bool:
        status = client.status(newer_than=since)
        return status.level == DiagnosticStatus.ERROR and f"the text encoder failed on '{FAILING_WORD}'" in status.message

    stream_until(client, reported, 20, "the encoding error in diagnostics")
    assert f"vocabulary version {version} stays in use" in values_of(client.status())["last_problem"]
    client.segmentation.clear()
    stream_until(client, lambda: len(client.segmentation) >= 2, 10, "masks after the error")
    assert {m.vocabulary_version for m in client.segmentation} == {version}
    assert set(names(client.label_info[-1])) == {"door", "chair"}
