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


def config_file_joins() -> dict[str, ast.Call]:
    """`os.path.join(config, "<file>")` calls by file name, where `config` is the share directory's
    `config` folder."""
    (share,) = [call for call in calls_to("join") if call.args and is_share_directory_call(call.args[0])]
    assert [ast.literal_eval(arg) for arg in share.args[1:]] == ["config"]
    return {
        ast.literal_eval(call.args[1]): call
        for call in calls_to("join")
        if len(call.args) == 2 and ast.unparse(call.args[0]) == "config"
    }


def test_the_default_params_file_is_the_packages_config_synseg_yaml():
    assert "synseg.yaml" in config_file_joins()
    assert REPO.joinpath("config", "synseg.yaml").is_file()  # CMakeLists.txt installs config/ into the share directory


def test_the_default_dds_profile_is_the_packages_fast_dds_profile_for_large_images():
    assert "fastdds_large_images.xml" in config_file_joins()
    assert REPO.joinpath("config", "fastdds_large_images.xml").is_file()
    (getenv,) = [call for call in calls_to("get") if "environ" in ast.unparse(call.func)]
    assert ast.literal_eval(getenv.args[0]) == "FASTRTPS_DEFAULT_PROFILES_FILE"  # a profile the user set wins


def test_the_node_process_gets_the_dds_profile_under_both_fast_dds_names():
    (node,) = calls_to("Node")
    keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
    assert keywords["additional_env"] == "dds_env"
    (assign,) = [n for n in ast.walk(TREE) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "dds_env"]
    text = ast.unparse(assign.value)
    assert "'FASTRTPS_DEFAULT_PROFILES_FILE': profile" in text and "'FASTDDS_DEFAULT_PROFILES_FILE': profile" in text


def test_the_node_action_starts_the_installed_synseg_executable():
    (node,) = calls_to("Node")
    keywords = {k.arg: k.value for k in node.keywords}
    assert ast.literal_eval(keywords["package"]) == "synseg_ros"
    assert ast.literal_eval(keywords["executable"]) == "synseg"  # lib/synseg_ros/synseg: see test_packaging.py
