"""The `synseg` node: camera frames in, label masks for the current vocabulary out.

Composition only: `settings` declares and checks parameters, `worker` runs the model on the newest
frame in its own thread, `vocabulary` encodes a new vocabulary on another while masks keep flowing,
`image_codec` converts images, `labels` keeps ids stable, `outputs` builds the messages,
`diagnostics` reports. Run with `ros2 run synseg_ros synseg` or
`python -m synseg_ros.node --ros-args -p model_path:=<checkpoint>`.
"""

from __future__ import annotations

import array
import copy
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import QoSMessageLostInfo, SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import HIDDEN_NODE_PREFIX, Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from synseg_core import Segmenter
from synseg_core.visualize import overlay as overlay_image

from .diagnostics import PipelineStats, Preparing, StatusReporter
from .image_codec import ImageDecodeError, decode_compressed, decode_image
from .labels import LabelMap, parse_vocabulary
from .msg import LabelClass, LabelInfo, Segmentation
from .outputs import MessageTypes, image_message, label_info_message, segmentation_message
from .settings import Settings, declare, validated_changes
from .srv import Segment
from .vocabulary import VocabularyPreparer, VocabularyRequest
from .worker import LatestFrameWorker

try:  # the standard label map message, where vision_msgs is installed (not on PyPI)
    from vision_msgs.msg import LabelInfo as VisionLabelInfo
    from vision_msgs.msg import VisionClass
except ImportError:
    VisionLabelInfo = VisionClass = None

# Reliable so every consumer can subscribe; a short history because a late mask is worthless.
OUTPUT_QOS = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# Latched: a consumer that starts later still gets the current id -> word map.
LATCHED_QOS = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
WARN_EVERY_S = 5.0


def _pack(data: np.ndarray) -> array.array:
    # rclpy takes an array('B') as it is; any other sequence is checked element by element (slow).
    packed = array.array("B")
    packed.frombytes(data)
    return packed


MESSAGES = MessageTypes(Image, LabelClass, LabelInfo, Segmentation, _pack)


def _subscribed(publisher: Any) -> bool:
    return publisher.get_subscription_count() > 0


class StartupError(RuntimeError):
    """Bad parameters or a model that does not load: the node cannot start."""


@dataclass(frozen=True)
class Active:
    """What the inference thread segments with; replaced as a whole, between two frames."""

    settings: Settings  # vocabulary and prompt_templates: those of `label_map`, encoded
    label_map: LabelMap


@dataclass
class Frame:
    msg: Any
    decode: Callable[[Any], np.ndarray]
    received: float  # time.monotonic()


def image_qos(reliability: str) -> QoSProfile:
    """Sensor-data QoS with depth 1: only the newest frame matters."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def load_segmenter(settings: Settings) -> Segmenter:
    options = {"engine_path": settings.engine_path} if settings.engine_path else {}
    return Segmenter.from_checkpoint(
        settings.model_path,
        backend=settings.backend,
        device=settings.device,
        precision=settings.precision,
        input_size=settings.input_size or None,
        threshold=settings.threshold,
        template_set=settings.prompt_templates,
        **options,
    )


class SynsegNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__("synseg", **kwargs)
        try:
            settings = declare(self)
        except (ValueError, ParameterException) as error:
            raise StartupError(f"invalid parameters: {error}") from error
        # Accepted by the parameter callback (executor thread); `_active`: in effect (inference thread).
        self._settings = settings
        self.get_logger().info(f"loading {settings.backend} model from '{settings.model_path}'")
        try:
            self._segmenter = load_segmenter(settings)
        except Exception as error:
            raise StartupError(f"cannot load the model from '{settings.model_path}': {error}") from error
        label_map = LabelMap.create(settings.vocabulary)
        self._segmenter.encode_vocabulary(label_map.words, settings.prompt_templates)
        self._active = Active(settings, label_map)
        # The newest vocabulary encoded in full (set by the vocabulary thread, applied by the worker).
        self._prepared = VocabularyRequest(settings.vocabulary, settings.prompt_templates)
        # The worker and the one-shot service share the model; one call at a time.
        self._model_lock = threading.Lock()
        self._stats = PipelineStats()
        self._camera_info: CameraInfo | None = None

        self._labels_pub = self.create_publisher(Image, "~/labels", OUTPUT_QOS)
        self._confidence_pub = self.create_publisher(Image, "~/confidence", OUTPUT_QOS)
        self._overlay_pub = self.create_publisher(Image, "~/overlay", OUTPUT_QOS)
        self._segmentation_pub = self.create_publisher(Segmentation, "~/segmentation", OUTPUT_QOS)
        self._label_info_pub = self.create_publisher(LabelInfo, "~/label_info", LATCHED_QOS)
        self._vision_label_info_pub = (
            self.create_publisher(VisionLabelInfo, "~/vision_label_info", LATCHED_QOS)
            if VisionLabelInfo is not None
            else None
        )
        self._camera_info_pub = (
            self.create_publisher(CameraInfo, "~/camera_info", OUTPUT_QOS) if settings.use_camera_info else None
        )
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self._worker: LatestFrameWorker[Frame, str] = LatestFrameWorker(
            self._process, self._apply, self._report_failure
        )
        self._vocabulary = VocabularyPreparer(
            self._segmenter.encode_vocabulary, self._vocabulary_ready, self._vocabulary_failed
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._publish_label_info()
        self._worker.start()
        self._vocabulary.start()

        qos = image_qos(settings.image_reliability)
        events = SubscriptionEventCallbacks(message_lost=self._on_frames_lost)
        if settings.input_transport == "compressed":
            self._image_sub = self.create_subscription(
                CompressedImage, "image/compressed", lambda msg: self._on_image(msg, decode_compressed), qos,
                event_callbacks=events,
            )
        else:
            self._image_sub = self.create_subscription(
                Image, "image", lambda msg: self._on_image(msg, decode_image), qos, event_callbacks=events
            )
        if settings.use_camera_info:
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, image_qos("best_effort"))
        self._start_segment_service()
        self._reporter = StatusReporter(
            name=f"{self.get_fully_qualified_name()}: segmentation",
            hardware_id=f"{settings.backend}:{settings.device}",
            input_topic=self._image_sub.topic_name,
        )
        self.create_timer(settings.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"segmenting {self._image_sub.topic_name} ({settings.input_transport}, "
            f"{settings.image_reliability}) into {self._labels_pub.topic_name} with "
            f"{self._segmenter.backend_name}/{self._segmenter.precision}; settings: {settings}"
        )

    def close(self) -> None:
        """Stop the threads without waiting for a model or encoding call in flight (it cannot be
        interrupted and may take seconds); they are daemons and end after it."""
        self._worker.stop()
        self._vocabulary.stop()
        self._service_executor.shutdown()
        self._service_node.destroy_node()

    # --- executor thread: callbacks only hand over -------------------------------------------

    def _on_image(self, msg: Any, decode: Callable[[Any], np.ndarray]) -> None:
        dropped = self._worker.submit(Frame(msg, decode, time.monotonic()))
        self._stats.frame_received(dropped)

    def _on_frames_lost(self, info: QoSMessageLostInfo) -> None:
        self._stats.frames_lost(info.total_count_change)
        self.get_logger().warning(
            f"{info.total_count} frames lost in DDS so far: large best-effort images need a bigger "
            "shared-memory segment in the camera's process (config/fastdds_large_images.xml, docs/ROS.md)",
            throttle_duration_sec=WARN_EVERY_S,
        )

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        try:
            settings = validated_changes(self._settings, parameters)
        except ValueError as error:
            self.get_logger().warning(f"rejected parameters: {error}")
            return SetParametersResult(successful=False, reason=str(error))
        # This is the only set-parameters callback, so accepting here means the values are set;
        # the worker applies them between two frames (no post-set callback on Humble). A vocabulary
        # or template set is encoded first, on the vocabulary thread; the rest applies at once.
        self._settings = settings
        if any(p.name in ("vocabulary", "prompt_templates") for p in parameters):
            self._vocabulary.request(VocabularyRequest(settings.vocabulary, settings.prompt_templates))
        self._worker.request("parameters")
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        active = self._active
        status = self._reporter.status(
            self._stats.snapshot(),
            {
                "backend": self._segmenter.backend_name,
                "precision": self._segmenter.precision,
                "device": active.settings.device,
                "vocabulary_size": str(len(active.label_map.words)),
                "vocabulary_version": str(active.label_map.version),
                "label_encoding": active.label_map.encoding,
            },
            self._preparing(),
        )
        self._diagnostics_pub.publish(DiagnosticArray(header=self._now_header(), status=[status]))

    # --- service thread: one-shot queries --------------------------------------------------

    def _start_segment_service(self) -> None:
        """`~/segment` on a hidden node spun by a thread of its own, so a long query holds up neither
        images nor parameters nor diagnostics. (A MultiThreadedExecutor would too, but rclpy's
        hands every callback to a thread pool: that halved the masks per second under a flood.)"""
        self._service_node = rclpy.create_node(
            f"{HIDDEN_NODE_PREFIX}{self.get_name()}_segment",
            namespace=self.get_namespace(),
            context=self.context,
            use_global_arguments=False,  # a `__node:=` remap is meant for this node, not that one
            start_parameter_services=False,
        )
        self._service_node.create_service(Segment, f"{self.get_fully_qualified_name()}/segment", self._on_segment)
        self._service_executor = SingleThreadedExecutor(context=self.context)
        self._service_executor.add_node(self._service_node)
        self._service_thread = threading.Thread(target=self._serve, name="synseg-segment-service", daemon=True)
        self._service_thread.start()

    def _serve(self) -> None:
        try:
            self._service_executor.spin()
        except ExternalShutdownException:  # Ctrl-C: main() ends the node
            pass

    def _on_segment(self, request: Segment.Request, response: Segment.Response) -> Segment.Response:
        try:
            response.segmentation = self._segment_once(request)
            response.success = True
        except ValueError as error:  # a bad image, vocabulary or threshold
            self.get_logger().warning(f"segment service: rejected a request: {error}")
            response.success, response.message = False, str(error)
        except Exception as error:  # noqa: BLE001 - the model failed: answer, report and keep serving
            self._report_failure("the segment service", error)
            response.success, response.message = False, f"segmentation failed: {type(error).__name__}: {error}"
        return response

    def _segment_once(self, request: Segment.Request) -> Segmentation:
        active = self._active
        settings, label_map = active.settings, active.label_map
        rgb = decode_image(request.image)
        if len(request.vocabulary):
            label_map = LabelMap.create(parse_vocabulary(request.vocabulary, settings.max_vocabulary_size))
        if request.threshold < 0:
            threshold = settings.threshold
        elif 0 <= request.threshold <= 1:  # also false for NaN
            threshold = float(request.threshold)
        else:
            raise ValueError(
                f"threshold must be from 0 to 1 (or negative for the node's threshold), got {request.threshold}"
            )
        with self._model_lock:
            result = self._segmenter.segment(rgb, label_map.words, threshold, settings.prompt_templates)
        header = request.image.header
        labels = image_message(MESSAGES, header, label_map.encode(result.labels), label_map.encoding)
        confidence = image_message(MESSAGES, header, result.confidence, "32FC1")
        return segmentation_message(MESSAGES, header, label_map, threshold, labels, confidence)

    # --- inference thread ---------------------------------------------------------------------

    def _apply(self, _changed: str) -> None:
        """Switch to the newest accepted settings with the newest vocabulary encoded in full (read
        here, not passed: a request can replace another before it is applied); label_info goes
        out before the first mask made with them."""
        settings, prepared, before = self._settings, self._prepared, self._active
        label_map = before.label_map.with_words(prepared.words)
        settings = dataclasses.replace(settings, vocabulary=prepared.words, prompt_templates=prepared.template_set)
        self._active = Active(settings, label_map)
        self._publish_label_info()
        if label_map is not before.label_map:
            names = ", ".join(f"{word}={i}" for i, word, _ in label_map.classes())
            self.get_logger().info(f"vocabulary version {label_map.version}: {names}")

    def _process(self, frame: Frame) -> None:
        active = self._active
        settings, label_map = active.settings, active.label_map
        start = time.perf_counter()
        try:
            rgb = frame.decode(frame.msg)
        except ImageDecodeError as error:
            self._stats.input_rejected(str(error))
            self.get_logger().warning(f"skipped an image: {error}", throttle_duration_sec=WARN_EVERY_S)
            return
        converted = time.perf_counter()
        with self._model_lock:
            result = self._segmenter.segment(rgb, label_map.words, settings.threshold, settings.prompt_templates)
            timings = dict(self._segmenter.timings)
        segmented = time.perf_counter()

        header = frame.msg.header
        self._publish_outputs(settings, label_map, header, rgb, result)
        published = time.perf_counter()

        # "publish" is everything after the model: label ids, overlay, messages, sending.
        self._stats.frame_published(
            {"convert": converted - start, **timings, "publish": published - segmented},
            model_s=segmented - converted,
            node_latency_s=time.monotonic() - frame.received,
            stamp_latency_s=self._stamp_age(header.stamp),
        )

    def _publish_outputs(
        self, settings: Settings, label_map: LabelMap, header: Header, rgb: np.ndarray, result: Any
    ) -> None:
        """Build and send only what someone subscribes to: the copies cost as much as the sending."""
        bundle = settings.publish_segmentation and _subscribed(self._segmentation_pub)
        labels = confidence = None
        if bundle or _subscribed(self._labels_pub):
            labels = image_message(MESSAGES, header, label_map.encode(result.labels), label_map.encoding)
            if _subscribed(self._labels_pub):
                self._labels_pub.publish(labels)
        if settings.publish_confidence and (bundle or _subscribed(self._confidence_pub)):
            confidence = image_message(MESSAGES, header, result.confidence, "32FC1")
            if _subscribed(self._confidence_pub):
                self._confidence_pub.publish(confidence)
        if bundle:
            self._segmentation_pub.publish(
                segmentation_message(MESSAGES, header, label_map, settings.threshold, labels, confidence)
            )
        if settings.publish_overlay and _subscribed(self._overlay_pub):
            overlay = overlay_image(rgb, result.labels, label_map.words, settings.overlay_alpha)
            self._overlay_pub.publish(image_message(MESSAGES, header, overlay, "rgb8"))
        camera_info = self._camera_info
        if self._camera_info_pub is not None and camera_info is not None:
            camera_info = copy.copy(camera_info)
            camera_info.header = header
            self._camera_info_pub.publish(camera_info)

    # --- vocabulary thread ----------------------------------------------------------------------

    def _vocabulary_ready(self, request: VocabularyRequest) -> None:
        self._prepared = request
        self._worker.request("vocabulary")

    def _vocabulary_failed(self, request: VocabularyRequest, error: BaseException) -> None:
        version = self._active.label_map.version
        self._report_failure(
            f"encoding the vocabulary of {len(request.words)} words (vocabulary version {version} stays in use)",
            error,
        )

    def _report_failure(self, what: str, error: BaseException) -> None:
        self._stats.failed(f"{what}: {error}")
        self.get_logger().error(f"{what} failed: {error!r}", throttle_duration_sec=WARN_EVERY_S)

    # --- helpers --------------------------------------------------------------------------------

    def _preparing(self) -> Preparing | None:
        progress = self._vocabulary.progress()
        if progress is None:
            return None
        seconds = time.monotonic() - progress.since
        since = self.get_clock().now().nanoseconds / 1e9 - seconds
        return Preparing(len(progress.request.words), progress.encoded, seconds, since)

    def _publish_label_info(self) -> None:
        active = self._active
        settings, label_map = active.settings, active.label_map
        header = self._now_header()
        self._label_info_pub.publish(
            label_info_message(MESSAGES, header, label_map, settings.threshold, settings.prompt_templates)
        )
        if self._vision_label_info_pub is not None:
            self._vision_label_info_pub.publish(
                VisionLabelInfo(
                    header=header,
                    class_map=[VisionClass(class_id=i, class_name=word) for i, word, _ in label_map.classes()],
                    threshold=float(settings.threshold),
                )
            )

    def _now_header(self) -> Header:
        return Header(stamp=self.get_clock().now().to_msg())

    def _stamp_age(self, stamp: Any) -> float | None:
        """Seconds from the image's stamp to now, when the stamp is from this clock's time base."""
        if stamp.sec == 0 and stamp.nanosec == 0:
            return None
        age = (self.get_clock().now() - Time.from_msg(stamp, clock_type=self.get_clock().clock_type)).nanoseconds
        return age / 1e9 if age >= 0 else None


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C (then the process ends here); 1 when it cannot start."""
    rclpy.init(args=args)
    node = None
    try:
        node = SynsegNode()
        rclpy.spin(node)
    except StartupError as error:
        rclpy.logging.get_logger("synseg").fatal(str(error))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
        # Now, not at interpreter exit: this ends the DDS participant and removes its shared memory.
        rclpy.utilities.get_default_context().destroy()
    # Everything is closed. Skip the interpreter's teardown: unloading torch and friends takes
    # 1-4 s, and a model call still in flight on the daemon inference thread would hold it up too.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
