"""Segment the camera topics of a recorded rosbag2 offline, without ROS installed.

    python -m synseg_ros.bag IN OUT --topic /camera/image_raw --vocabulary door chair --model CKPT

Reads IN (a rosbag2 folder, sqlite3 or mcap) with `rosbags`, and writes OUT with, under --namespace
(default /synseg; with several --topic, one namespace per input topic below it): `labels`,
`overlay`, `segmentation` and a `label_info` — the same messages the live node publishes, stamped
with the input headers and logged at the input's log times.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from synseg_core import Segmenter
from synseg_core.runtime.segmenter import list_backends
from synseg_core.text.prompts import list_template_sets
from synseg_core.visualize import overlay as overlay_image

from .image_codec import ImageDecodeError, decode_compressed, decode_image
from .labels import LabelMap, parse_vocabulary
from .outputs import MessageTypes, image_message, label_info_message, segmentation_message

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
INTERFACES = ("LabelClass", "LabelInfo", "Segmentation")  # dependencies first


def interface_folder() -> Path:
    """The package's msg/: shipped in a pip install (setup.py), in the source tree, or in the ament
    index of a colcon install."""
    here = Path(__file__).resolve().parent
    for folder in (here / "interfaces", here.parent / "msg"):
        if folder.is_dir():
            return folder
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("synseg_ros")) / "msg"


def typestore_with_interfaces() -> Typestore:
    """ROS 2 Jazzy's standard types plus this package's messages."""
    typestore = get_typestore(Stores.ROS2_JAZZY)
    folder = interface_folder()
    for name in INTERFACES:
        text = (folder / f"{name}.msg").read_text()
        typestore.register(get_types_from_msg(text, f"synseg_ros/msg/{name}"))
    return typestore


def message_types(typestore: Typestore) -> MessageTypes:
    return MessageTypes(
        Image=typestore.types[IMAGE],
        LabelClass=typestore.types["synseg_ros/msg/LabelClass"],
        LabelInfo=typestore.types["synseg_ros/msg/LabelInfo"],
        Segmentation=typestore.types["synseg_ros/msg/Segmentation"],
        pack=np.ascontiguousarray,  # rosbags keeps uint8[] fields as arrays
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m synseg_ros.bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="rosbag2 folder to read (sqlite3 or mcap)")
    parser.add_argument("output", type=Path, help="rosbag2 folder to write (must not exist)")
    parser.add_argument("--topic", action="append", required=True, help="Image or CompressedImage topic (repeatable)")
    parser.add_argument("-v", "--vocabulary", nargs="+", required=True, help="words to segment, e.g. door chair 'traffic light'")
    parser.add_argument("--model", required=True, help="SynSeg checkpoint folder")
    parser.add_argument("--backend", default="torch", choices=list_backends())
    parser.add_argument("--engine-path", default="", help="engine or ONNX file for the onnxruntime/tensorrt backends")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--prompt-templates", default="tcl", choices=list_template_sets())
    parser.add_argument("--namespace", default="/synseg", help="prefix of the output topics")
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), help="output storage (default: the input's)")
    parser.add_argument("--confidence", action="store_true", help="also write <namespace>/confidence (32FC1)")
    parser.add_argument("--no-overlay", action="store_true", help="do not write <namespace>/overlay")
    return parser.parse_args(argv)


def output_namespace(namespace: str, topic: str, topics: Sequence[str]) -> str:
    return namespace.rstrip("/") + (topic if len(topics) > 1 else "")


def input_storage(path: Path) -> str:
    return "mcap" if any(path.glob("*.mcap")) else "sqlite3"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        vocabulary = parse_vocabulary(args.vocabulary)
        if not 0.0 <= args.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {args.threshold}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    typestore = typestore_with_interfaces()
    types = message_types(typestore)
    label_map = LabelMap.create(vocabulary)
    storage = StoragePlugin.MCAP if (args.storage or input_storage(args.input)) == "mcap" else StoragePlugin.SQLITE3
    written: Counter[str] = Counter()
    skipped: Counter[str] = Counter()

    with AnyReader([args.input], default_typestore=typestore) as reader:
        connections = [c for c in reader.connections if c.topic in args.topic]
        found = {c.topic: c.msgtype for c in connections}
        problems = [f"{t}: not in the bag" for t in args.topic if t not in found]
        problems += [f"{t}: {m} is not an image" for t, m in found.items() if m not in (IMAGE, COMPRESSED)]
        if problems:
            print("error: " + "; ".join(problems), file=sys.stderr)
            return 2
        options = {"engine_path": args.engine_path} if args.engine_path else {}
        segmenter = Segmenter.from_checkpoint(
            args.model, backend=args.backend, device=args.device, template_set=args.prompt_templates, **options
        )
        outputs: dict[str, dict[str, Any]] = {}

        with Writer(args.output, version=9, storage_plugin=storage) as writer:

            def write(topic: str, name: str, msgtype: str, timestamp: int, message: Any) -> None:
                connections_of = outputs.setdefault(topic, {})
                if name not in connections_of:
                    full = f"{output_namespace(args.namespace, topic, args.topic)}/{name}"
                    connections_of[name] = writer.add_connection(full, msgtype, typestore=typestore)
                writer.write(connections_of[name], timestamp, typestore.serialize_cdr(message, msgtype))
                written[connections_of[name].topic] += 1

            for connection, timestamp, raw in reader.messages(connections=connections):
                msg = reader.deserialize(raw, connection.msgtype)
                decode = decode_compressed if connection.msgtype == COMPRESSED else decode_image
                try:
                    rgb = decode(msg)
                except ImageDecodeError as error:
                    skipped[f"{connection.topic}: {error}"] += 1
                    continue
                header = msg.header
                if connection.topic not in outputs:
                    info = label_info_message(types, header, label_map, args.threshold, args.prompt_templates)
                    write(connection.topic, "label_info", "synseg_ros/msg/LabelInfo", timestamp, info)
                result = segmenter.segment(rgb, label_map.words, args.threshold, args.prompt_templates)
                labels = image_message(types, header, label_map.encode(result.labels), label_map.encoding)
                confidence = image_message(types, header, result.confidence, "32FC1") if args.confidence else None
                write(connection.topic, "labels", IMAGE, timestamp, labels)
                if confidence is not None:
                    write(connection.topic, "confidence", IMAGE, timestamp, confidence)
                if not args.no_overlay:
                    overlay = image_message(types, header, overlay_image(rgb, result.labels, label_map.words), "rgb8")
                    write(connection.topic, "overlay", IMAGE, timestamp, overlay)
                segmentation = segmentation_message(types, header, label_map, args.threshold, labels, confidence)
                write(connection.topic, "segmentation", "synseg_ros/msg/Segmentation", timestamp, segmentation)

    for topic, count in sorted(written.items()):
        print(f"{topic}: {count} messages")
    for reason, count in sorted(skipped.items()):
        print(f"skipped {count} image(s) on {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
