"""pip install -e .[dev]  — the library (synseg_core) and the ROS layer (synseg_ros) as Python packages.

What to install for what (PyTorch is only needed to train, export and run the torch backend):

    pip install -e .[deploy]        a robot: ONNX Runtime over an ONNX export (text tower included), no PyTorch
    pip install -e .[deploy,ros]    ... and the ROS 2 node (rclpy from PyPI)
    pip install -e .[torch]         the torch backend, the bundled demo (scripts/run_demo.sh)
    pip install -e .[train] / [onnx] training / ONNX export (both include [torch])
    pip install -e .[dev]           everything the tests need

A colcon/ament build of the ROS package uses CMakeLists.txt + package.xml instead.
"""
from setuptools import find_packages, setup

TORCH = ["torch>=2.4", "torchvision", "open_clip_torch>=2.32"]
EXTRAS = {
    "torch": TORCH,
    "deploy": ["numpy>=1.24", "opencv-python-headless>=4.8", "onnxruntime>=1.18", "tokenizers>=0.15", "pillow>=9", "pyyaml>=6",
               "safetensors>=0.4", "tqdm>=4.60"],
    "onnx": [*TORCH, "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.2"],
    "train": [*TORCH, "tensorboard>=2.14", "matplotlib>=3.7"],
    "ros": [
        "rosbags>=0.10",
        "ros-jazzy-rclpy[fastrtps]",
        "ros-jazzy-sensor-msgs",
        "ros-jazzy-std-msgs",
        "ros-jazzy-diagnostic-msgs",
    ],
    "tensorrt-typing": ["mypy>=1.10"],
}
EXTRAS["dev"] = sorted(
    {*EXTRAS["deploy"], *EXTRAS["onnx"], *EXTRAS["train"], *EXTRAS["ros"], "pytest>=8", "pytest-timeout>=2", "ruff>=0.5", "mypy>=1.10",
     "transformers>=4.40"}
)

setup(
    name="synseg",
    version="0.1.0",
    description="SynSeg open-vocabulary semantic segmentation: library, training, deployment and a ROS 2 node",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # msg/ (the ROS package's interface definitions, for colcon at the repository root) also ships as
    # synseg_ros/interfaces/*.msg, so the bag tool of a pip install finds the messages without ROS.
    packages=find_packages(include=["synseg_core", "synseg_core.*", "synseg_ros", "synseg_ros.*"]) + ["synseg_ros.interfaces"],
    package_dir={"synseg_ros.interfaces": "msg"},
    package_data={
        "synseg_core": ["configs/*.yaml", "assets/samples/*.png", "assets/demo_model/*"],
        "synseg_ros.interfaces": ["*.msg"],
    },
    # What every part needs; torch and the inference runtimes come with the extras above.
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pillow>=9",
        "safetensors>=0.4",
        "pyyaml>=6",
        "tqdm>=4.60",
    ],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["synseg-segment=synseg_core.segment:main", "synseg-train=synseg_core.train:main", "synseg-evaluate=synseg_core.evaluate:main", "synseg-export=synseg_core.export:main", "synseg-ros-node=synseg_ros.node:main", "synseg-ros-bag=synseg_ros.bag:main"]},
)
