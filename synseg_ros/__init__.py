"""ROS 2 layer of SynSeg: the `synseg` node, its messages, and the offline rosbag2 tool.

Everything that segments lives in `synseg_core`; this package only moves messages.
"""

# The generated interfaces (synseg_ros.msg, synseg_ros.srv) may be installed in another prefix than
# this source package (scripts/build_ros_interfaces.sh); let both folders serve the one package.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
