"""launch/segment.launch.py read as source (`ast`), so it is checked where launch_ros is missing too
(it is not on PyPI); test_launch.py runs it where launch_ros is installed."""

from __future__ import annotations

import ast

from synseg_ros.testing import REPO

LAUNCH_FILE = REPO / "launch" / "segment.launch.py"
TREE = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def module_constant(name: str) -> object:
    for statement in TREE.body:
        if isinstance(statement, ast.Assign) and any(getattr(t, "id", None) == name for t in statement.targets):
            return ast.literal_eval(statement.value)
    raise AssertionError(f"{LAUNCH_FILE.name} assigns no {name}")


def calls_to(name: str) -> list[ast.Call]:
    """Every call of `name` or `<anything>.name`."""
    return [
        node
        for node in ast.walk(TREE)
        if isinstance(node, ast.Call) and name in (getattr(node.func, "id", None), getattr(node.func, "attr", None))
    ]


def is_share_directory_call(node: ast.expr) -> bool:
    """`get_package_share_directory("synseg_ros")`"""
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "id", None) == "get_package_share_directory"
        and [ast.literal_eval(arg) for arg in node.args] == ["synseg_ros"]
    )


def test_the_launch_file_declares_the_arguments_users_change_most():
    arguments = module_constant("ARGUMENTS")
    assert {"image", "params_file", "namespace", "backend", "vocabulary", "log_level"} <= set(arguments)
    for name, (_, description) in arguments.items():
        assert description, f"argument {name} has no description"
    assert arguments["image"][0] == "/camera/image_raw" and arguments["log_level"][0] == "info"
    # ... and each entry of that table becomes a DeclareLaunchArgument.
    (declare,) = calls_to("DeclareLaunchArgument")
    (declared,) = [node for node in ast.walk(TREE) if isinstance(node, ast.ListComp) and declare in ast.walk(node)]
    assert ast.unparse(declared.generators[0].iter) == "ARGUMENTS.items()"


def test_the_default_params_file_is_the_packages_config_synseg_yaml():
    (join,) = [call for call in calls_to("join") if call.args and is_share_directory_call(call.args[0])]
    parts = [ast.literal_eval(arg) for arg in join.args[1:]]
    assert parts == ["config", "synseg.yaml"]
    assert REPO.joinpath(*parts).is_file()  # CMakeLists.txt installs config/ into the share directory


def test_the_node_action_starts_the_installed_synseg_executable():
    (node,) = calls_to("Node")
    keywords = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(keywords["package"]) == "synseg_ros"
    assert ast.literal_eval(keywords["executable"]) == "synseg"  # lib/synseg_ros/synseg: see test_packaging.py
