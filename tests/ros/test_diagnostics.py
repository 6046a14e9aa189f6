"""What /diagnostics says, from snapshots of the pipeline's counters."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("diagnostic_msgs", reason="ROS 2 (diagnostic_msgs) is not installed: see docs/ROS.md")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from synseg_ros.diagnostics import PipelineStats, Preparing, Snapshot, StatusReporter  # noqa: E402

SEGMENTING = Snapshot(
    received=10, lost=0, dropped=0, processed=10, bad_input=0, errors=0, input_hz=10.0, output_hz=10.0,
    stage_ms={}, node_latency_ms=None, overhead_ms=None, stamp_latency_ms=None, last_problem="",
    seconds_since_input=0.1, seconds_since_output=0.1,
)


def reporter() -> StatusReporter:
    return StatusReporter(name="/synseg: segmentation", hardware_id="torch:cpu", input_topic="/camera/image")


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_images_arriving_without_masks_for_5_s_are_a_warning():
    status = reporter().status(dataclasses.replace(SEGMENTING, output_hz=0.0, seconds_since_output=7.2), {})
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "images arrive but no mask was published for 7 s"


def test_a_vocabulary_being_prepared_is_named_with_its_progress_and_start():
    status = reporter().status(SEGMENTING, {}, Preparing(words=20, encoded=8, seconds=3.4, since_stamp=1700000000.25))
    assert status.level == DiagnosticStatus.OK
    assert status.message == "segmenting at 10.0 Hz; preparing a vocabulary of 20 words for 3 s (8 encoded)"
    assert {k: v for k, v in values(status).items() if k.startswith("vocabulary_preparing")} == {
        "vocabulary_preparing": "true",
        "vocabulary_preparing_words": "8/20",
        "vocabulary_preparing_since": "1700000000.250",
        "vocabulary_preparing_s": "3.4",
    }


def test_a_vocabulary_that_takes_longer_than_10_s_is_a_warning():
    status = reporter().status(SEGMENTING, {}, Preparing(words=1024, encoded=40, seconds=12.0, since_stamp=0.0))
    assert status.level == DiagnosticStatus.WARN
    assert "preparing a vocabulary of 1024 words for 12 s (40 encoded)" in status.message


def test_no_vocabulary_being_prepared_is_said_too():
    assert values(reporter().status(SEGMENTING, {}))["vocabulary_preparing"] == "false"


def test_frames_lost_in_dds_since_the_last_report_are_a_warning():
    first = reporter()
    first.status(SEGMENTING, {})
    status = first.status(dataclasses.replace(SEGMENTING, lost=4), {})
    assert status.level == DiagnosticStatus.WARN
    assert status.message == "4 frame(s) lost in DDS on the way to the node"


def test_frames_lost_in_dds_are_counted():
    stats = PipelineStats()
    stats.frames_lost(3)
    stats.frames_lost(2)
    assert values(reporter().status(stats.snapshot(), {}))["frames_lost"] == "5"
