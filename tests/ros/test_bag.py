"""Offline: segment the camera topics of a recorded rosbag2 into a bag of label topics."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import fresh_environment
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from synseg_ros.bag import main, typestore_with_interfaces
from synseg_ros.testing import REPO

TYPESTORE = typestore_with_interfaces()
T = TYPESTORE.types
START_NS = 1_700_000_000_000_000_000


def header(index: int, frame_id: str = "cam"):
    stamp = T["builtin_interfaces/msg/Time"](sec=1_700_000_000 + index, nanosec=5)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def raw_image(index: int, encoding: str, rgb: np.ndarray):
    array = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    data = np.ascontiguousarray(array).reshape(-1)
    return T["sensor_msgs/msg/Image"](
        header=header(index), height=rgb.shape[0], width=rgb.shape[1], encoding=encoding,
        is_bigendian=0, step=rgb.shape[1] * 3, data=data,
    )


def compressed_image(index: int, rgb: np.ndarray):
    _, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return T["sensor_msgs/msg/CompressedImage"](header=header(index, "front"), format="png", data=data.reshape(-1))


def record(path: Path, storage: StoragePlugin, messages: list[tuple[str, str, object]]) -> None:
    """Write (topic, msgtype, message) at one message per 100 ms."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for index, (topic, msgtype, message) in enumerate(messages):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(connections[topic], START_NS + index * 100_000_000, TYPESTORE.serialize_cdr(message, msgtype))


def read(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(log time, message)] of a bag."""
    topics: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([path], default_typestore=TYPESTORE) as reader:
        for connection, timestamp, raw in reader.messages():
            topics.setdefault(connection.topic, []).append((timestamp, reader.deserialize(raw, connection.msgtype)))
    return topics


RGB = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP])
def test_a_camera_topic_becomes_labels_overlay_segmentation_and_label_info(tmp_path, model_dir, storage, capsys):
    bad = raw_image(2, "rgb8", RGB)
    bad.encoding = "nv12"
    record(
        tmp_path / "in",
        storage,
        [
            ("/camera/image_raw", "sensor_msgs/msg/Image", raw_image(0, "rgb8", RGB)),
            ("/chatter", "std_msgs/msg/String", T["std_msgs/msg/String"](data="not an image")),
            ("/camera/image_raw", "sensor_msgs/msg/Image", raw_image(1, "bgr8", RGB)),
            ("/camera/image_raw", "sensor_msgs/msg/Image", bad),
        ],
    )
    code = main([
        str(tmp_path / "in"), str(tmp_path / "out"), "--topic", "/camera/image_raw",
        "--vocabulary", "door", "chair", "--model", str(model_dir),
    ])
    assert code == 0
    assert "skipped 1 image(s) on /camera/image_raw: unsupported encoding 'nv12'" in capsys.readouterr().err
    assert any((tmp_path / "out").glob("*.mcap" if storage == StoragePlugin.MCAP else "*.db3"))

    topics = read(tmp_path / "out")
    assert {t: len(m) for t, m in topics.items()} == {
        "/synseg/label_info": 1, "/synseg/labels": 2, "/synseg/overlay": 2, "/synseg/segmentation": 2,
    }
    info = topics["/synseg/label_info"][0][1]
    assert [(c.id, c.name) for c in info.classes] == [(0, "door"), (1, "chair")]
    assert [t for t, _ in topics["/synseg/labels"]] == [START_NS, START_NS + 200_000_000]
    first, second = (m for _, m in topics["/synseg/labels"])
    assert (first.encoding, first.height, first.width) == ("mono8", 30, 40)
    assert (first.header.stamp.sec, first.header.frame_id) == (1_700_000_000, "cam")
    assert second.header.stamp.sec == 1_700_000_001
    # bgr8 and rgb8 of the same picture are the same picture.
    np.testing.assert_array_equal(first.data, second.data)
    assert set(np.unique(first.data)) <= {0, 1, 255}
    overlay = topics["/synseg/overlay"][0][1]
    assert (overlay.encoding, overlay.height, overlay.width) == ("rgb8", 30, 40)
    segmentation = topics["/synseg/segmentation"][0][1]
    np.testing.assert_array_equal(segmentation.labels.data, first.data)
    assert (segmentation.vocabulary_version, segmentation.confidence.width) == (1, 0)


def test_several_topics_get_a_namespace_each_and_compressed_images_are_read(tmp_path, model_dir):
    record(
        tmp_path / "in",
        StoragePlugin.SQLITE3,
        [
            ("/left/image", "sensor_msgs/msg/Image", raw_image(0, "rgb8", RGB)),
            ("/front/image/compressed", "sensor_msgs/msg/CompressedImage", compressed_image(1, RGB)),
        ],
    )
    code = main([
        str(tmp_path / "in"), str(tmp_path / "out"), "--topic", "/left/image", "--topic", "/front/image/compressed",
        "-v", "tree", "--model", str(model_dir), "--confidence", "--no-overlay", "--storage", "mcap",
    ])
    assert code == 0
    topics = read(tmp_path / "out")
    assert sorted(topics) == [
        "/synseg/front/image/compressed/confidence", "/synseg/front/image/compressed/label_info",
        "/synseg/front/image/compressed/labels", "/synseg/front/image/compressed/segmentation",
        "/synseg/left/image/confidence", "/synseg/left/image/label_info",
        "/synseg/left/image/labels", "/synseg/left/image/segmentation",
    ]
    labels = topics["/synseg/front/image/compressed/labels"][0][1]
    assert (labels.header.frame_id, labels.width, labels.height) == ("front", 40, 30)
    confidence = topics["/synseg/left/image/confidence"][0][1]
    assert confidence.encoding == "32FC1"
    assert topics["/synseg/left/image/segmentation"][0][1].confidence.width == 40


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        (["--topic", "/missing"], "/missing: not in the bag"),
        (["--topic", "/chatter"], "/chatter: std_msgs/msg/String is not an image"),
        (["--topic", "/camera", "--threshold", "1.5"], "threshold must be in [0, 1]"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(tmp_path, model_dir, capsys, arguments, reason):
    record(tmp_path / "in", StoragePlugin.SQLITE3, [("/chatter", "std_msgs/msg/String", T["std_msgs/msg/String"](data="x"))])
    code = main([str(tmp_path / "in"), str(tmp_path / "out"), "--vocabulary", "door", "--model", str(model_dir), *arguments])
    assert code == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_pip_installed_bag_tool_finds_the_messages_without_the_source_tree(tmp_path):
    source = tmp_path / "source"  # what the wheel is built from, outside the repository
    source.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for name in ("msg", "synseg_ros"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source), "-w", str(tmp_path)],
        check=True, capture_output=True, timeout=120,
    )
    site = tmp_path / "site"  # a pure wheel installs by unpacking it
    (wheel,) = tmp_path.glob("synseg-*.whl")
    zipfile.ZipFile(wheel).extractall(site)
    shutil.rmtree(source)

    script = (
        "from synseg_ros import bag\n"
        "print(bag.interface_folder())\n"
        "print(bag.typestore_with_interfaces().types['synseg_ros/msg/Segmentation'].__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env={**fresh_environment(), "PYTHONPATH": str(site)},
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == [str(site / "synseg_ros" / "interfaces"), "synseg_ros__msg__Segmentation"]
