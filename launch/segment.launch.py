"""Start the synseg node.

    ros2 launch synseg_ros segment.launch.py image:=/camera/color/image_raw model_path:=/models/synseg
    ros2 launch synseg_ros segment.launch.py vocabulary:="[door, chair]" backend:=onnxruntime namespace:=front

Every parameter is in the params file (default: this package's config/synseg.yaml); the arguments
below override the few that are changed most often. `camera_info` and `image/compressed` are
remapped beside the image topic, as image_transport names them.

The node's process loads the Fast DDS profile `dds_profile` (default: $FASTRTPS_DEFAULT_PROFILES_FILE
when set, else this package's config/fastdds_large_images.xml), without which best-effort camera
frames of ~1 MB are lost on the way. The camera driver's process needs it too: see docs/ROS.md.
"""

from __future__ import annotations

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchContext, LaunchDescription

ARGUMENTS = {
    "image": ("/camera/image_raw", "camera image topic (sensor_msgs/Image)"),
    "params_file": (None, "parameters YAML file"),
    "dds_profile": (None, "Fast DDS XML profile of the node's process; empty = Fast DDS's defaults"),
    "namespace": ("", "namespace of the node and its topics"),
    "model_path": ("", "SynSeg checkpoint folder; empty = the params file's"),
    "backend": ("", "torch, onnxruntime or tensorrt; empty = the params file's"),
    "vocabulary": ("", 'words to segment, e.g. "[door, chair]"; empty = the params file\'s'),
    "log_level": ("info", "debug, info, warn, error or fatal"),
}


def sibling(topic: str, name: str) -> str:
    """`/cam/image_raw` -> `/cam/<name>`: where image_transport puts camera_info."""
    return topic.rsplit("/", 1)[0] + "/" + name if "/" in topic else name


def synseg_node(context: LaunchContext) -> list[Node]:
    def value(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides: dict[str, object] = {name: value(name) for name in ("model_path", "backend") if value(name)}
    if value("vocabulary"):
        overrides["vocabulary"] = yaml.safe_load(value("vocabulary"))  # "[door, chair]" -> a list, as ros2 param set
    image = value("image")
    profile = value("dds_profile")
    # Fast DDS 2 (Humble, Jazzy) reads the first name, Fast DDS 3 (Kilted and later) the second.
    dds_env = {"FASTRTPS_DEFAULT_PROFILES_FILE": profile, "FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else {}
    return [
        Node(
            package="synseg_ros",
            executable="synseg",
            name="synseg",
            namespace=value("namespace"),
            parameters=[value("params_file"), overrides],
            remappings=[
                ("image", image),
                ("image/compressed", image + "/compressed"),
                ("camera_info", sibling(image, "camera_info")),
            ],
            arguments=["--ros-args", "--log-level", value("log_level")],
            additional_env=dds_env,
            output="screen",
        )
    ]


def generate_launch_description() -> LaunchDescription:
    config = os.path.join(get_package_share_directory("synseg_ros"), "config")
    package_defaults = {
        "params_file": os.path.join(config, "synseg.yaml"),
        "dds_profile": os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", os.path.join(config, "fastdds_large_images.xml")),
    }
    declared = [
        DeclareLaunchArgument(name, default_value=default if default is not None else package_defaults[name], description=text)
        for name, (default, text) in ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=synseg_node)])
