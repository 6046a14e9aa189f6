"""The node's parameters: one typed `Settings` object, their ROS descriptors, and their validation.

Every parameter is declared once from `PARAMETERS` (type, default, description, range or choices,
dynamic or read-only). `validated_changes` is what the set-parameters callback runs: it returns the
new `Settings` or a reason to reject, so a bad value never reaches the inference thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from synseg_core.runtime.segmenter import MAX_VOCABULARY, list_backends
from synseg_core.text.prompts import list_template_sets

from .labels import parse_vocabulary

BACKENDS = tuple(list_backends())
PROMPT_TEMPLATE_SETS = tuple(list_template_sets())
RELIABILITIES = ("best_effort", "reliable")
TRANSPORTS = ("raw", "compressed")


@dataclass(frozen=True)
class Settings:
    """Typed values of all parameters (see PARAMETERS for what each means)."""

    vocabulary: tuple[str, ...] = ("person", "chair", "table", "door")
    threshold: float = 0.5
    prompt_templates: str = "tcl"
    max_vocabulary_size: int = MAX_VOCABULARY
    backend: str = "torch"
    model_path: str = ""
    engine_path: str = ""
    device: str = "cpu"
    precision: str = "fp32"
    input_size: int = 0
    publish_confidence: bool = True
    publish_overlay: bool = True
    overlay_alpha: float = 0.5
    publish_segmentation: bool = True
    image_reliability: str = "best_effort"
    input_transport: str = "raw"
    use_camera_info: bool = False
    diagnostics_period: float = 1.0

    def validate(self) -> Settings:
        """Return self with the vocabulary cleaned, or raise ValueError with the reason."""
        for name, choices in (
            ("backend", BACKENDS),
            ("prompt_templates", PROMPT_TEMPLATE_SETS),
            ("image_reliability", RELIABILITIES),
            ("input_transport", TRANSPORTS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got '{getattr(self, name)}'")
        if not self.model_path:
            raise ValueError("model_path is empty: set it to a SynSeg checkpoint folder")
        if self.backend == "tensorrt" and not self.engine_path:
            raise ValueError("backend tensorrt needs engine_path")
        return dataclasses.replace(
            self, vocabulary=parse_vocabulary(self.vocabulary, self.max_vocabulary_size)
        )


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    description: str
    dynamic: bool = False
    choices: tuple[str, ...] = ()
    range: tuple[float, float] | None = None


PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec(
        "vocabulary",
        "Words to segment, e.g. [door, chair]. A new list is encoded while masks keep coming with the "
        "old one, then both switch between two frames (label_info tells which is in use); a word that "
        "stays keeps its id, new words take the lowest free ids. No empty, repeated or over-long words.",
        dynamic=True,
    ),
    ParameterSpec(
        "threshold",
        "Pixels whose best word score is below this are unlabeled (255, or 65535 for 16UC1).",
        dynamic=True,
        range=(0.0, 1.0),
    ),
    ParameterSpec(
        "prompt_templates",
        "Template set that turns each word into text prompts.",
        dynamic=True,
        choices=PROMPT_TEMPLATE_SETS,
    ),
    ParameterSpec(
        "max_vocabulary_size",
        "Most words the vocabulary may hold. Above 254 words label images switch to 16UC1.",
        range=(1, MAX_VOCABULARY),
    ),
    ParameterSpec("backend", "Inference backend.", choices=BACKENDS),
    ParameterSpec("model_path", "SynSeg checkpoint folder (config.json + model.safetensors)."),
    ParameterSpec("engine_path", "TensorRT engine file (backend tensorrt) or ONNX model (onnxruntime)."),
    ParameterSpec("device", "Torch device for the model and text encoder: cpu, cuda, cuda:1, ..."),
    ParameterSpec("precision", "Inference precision the backend accepts: fp32, fp16 (GPU), bf16, ..."),
    ParameterSpec(
        "input_size",
        "Side of the square model input in pixels; 0 = the checkpoint's own size.",
        range=(0, 4096),
    ),
    ParameterSpec(
        "publish_confidence",
        "Publish ~/confidence (32FC1). When false, ~/segmentation carries an empty (0x0) confidence image.",
        dynamic=True,
    ),
    ParameterSpec(
        "publish_overlay",
        "Publish ~/overlay (rgb8); it is only computed while someone subscribes.",
        dynamic=True,
    ),
    ParameterSpec("overlay_alpha", "Opacity of the word colours in ~/overlay.", dynamic=True, range=(0.0, 1.0)),
    ParameterSpec("publish_segmentation", "Publish ~/segmentation (synseg_ros/Segmentation).", dynamic=True),
    ParameterSpec(
        "image_reliability",
        "QoS reliability of the image subscription. best_effort matches every camera; reliable "
        "only matches reliable publishers.",
        choices=RELIABILITIES,
    ),
    ParameterSpec(
        "input_transport",
        "raw: subscribe to `image` (sensor_msgs/Image); compressed: to `image/compressed` "
        "(sensor_msgs/CompressedImage).",
        choices=TRANSPORTS,
    ),
    ParameterSpec(
        "use_camera_info",
        "Subscribe to `camera_info` and republish the latest one on ~/camera_info with each mask's "
        "header, so the mask can be used like a camera image.",
    ),
    ParameterSpec("diagnostics_period", "Seconds between /diagnostics messages.", range=(0.1, 60.0)),
)


def _descriptor(spec: ParameterSpec, default: Any) -> ParameterDescriptor:
    description = spec.description
    if spec.choices:
        description += f" One of: {', '.join(spec.choices)}."
    descriptor = ParameterDescriptor(
        name=spec.name,
        description=description,
        read_only=not spec.dynamic,
        # Any type reaches the vocabulary check, so `ros2 param set ... "[]"` (a BOOL_ARRAY to
        # rclpy) is answered with "must not be empty" instead of a type error, and an empty list in
        # a params file does not turn the parameter into a BYTE_ARRAY (rclpy#912).
        dynamic_typing=spec.name == "vocabulary",
    )
    if spec.range is not None:
        low, high = spec.range
        if isinstance(default, int) and not isinstance(default, bool):
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        else:
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
            ]
    return descriptor


def declare(node: Node) -> Settings:
    """Declare every parameter on `node` and return the validated settings (ValueError if bad)."""
    defaults = Settings()
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        default = getattr(defaults, spec.name)
        if isinstance(default, tuple):
            default = list(default)
        parameter = node.declare_parameter(spec.name, default, _descriptor(spec, default))
        values[spec.name] = parameter.value
    return _settings(defaults, values)


def validated_changes(current: Settings, parameters: Iterable[Parameter]) -> Settings:
    """The settings after `parameters` are set; ValueError with the reason if any is bad."""
    return _settings(current, {p.name: p.value for p in parameters})


def _settings(base: Settings, values: Mapping[str, Any]) -> Settings:
    typed = {name: _typed(name, value, getattr(base, name)) for name, value in values.items()}
    return dataclasses.replace(base, **typed).validate()


def _typed(name: str, value: Any, like: Any) -> Any:
    if name == "vocabulary":
        return value  # parsed, with its own reasons, by Settings.validate
    if isinstance(like, bool) or isinstance(like, str):
        if not isinstance(value, type(like)):
            raise ValueError(f"{name} must be a {type(like).__name__}, got {value!r}")
        return value
    if isinstance(like, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(like, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{name} must be a {type(like).__name__}, got {value!r}")
