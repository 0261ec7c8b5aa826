"""Shared pytest fixtures: isolated DDS for every ROS test, node processes, a probe node."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

import ros_harness

# Tests stop the processes they start with SIGINT (Ctrl-C). A shell starts background jobs with
# SIGINT ignored, and children inherit an ignored signal, so a suite run in the background would
# start nodes and builds that cannot be interrupted. A handled signal is reset for children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# SELAVPR_GARDENS_POINT overrides where the images are; set empty, the data set is absent
# (how .ci/run gives the suite exactly what a new user without ../shared has).
GARDENS_POINT = os.environ.get(
    "SELAVPR_GARDENS_POINT",
    str(ros_harness.REPO_ROOT.parent / "shared" / "data" / "gardens_point_walking"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the Gardens Point images ``data``, so ``-m data`` selects it."""
    for item in items:
        if "gardens_point" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)


@pytest.fixture(scope="session", autouse=True)
def _isolated_dds(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test (and every process it starts) uses loopback DDS in this run's own domain."""
    ros_harness.apply_isolated_dds_env(tmp_path_factory.mktemp("ros_log"))


@pytest.fixture
def ros_probe() -> Iterator[ros_harness.RosProbe]:
    """Give an rclpy node in the test process, spinning in the background; closed afterwards."""
    probe = ros_harness.RosProbe()
    try:
        yield probe
    finally:
        probe.close()


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., ros_harness.NodeProcess]]:
    """Start commands as separate processes; all are stopped after the test, pass or fail."""
    started: list[ros_harness.NodeProcess] = []

    def start(argv: Sequence[str], env: dict[str, str] | None = None) -> ros_harness.NodeProcess:
        log = tmp_path / f"proc{len(started)}_{Path(argv[0]).name}.log"
        proc = ros_harness.NodeProcess(argv, log, env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def gardens_point() -> Path:
    """Find the Gardens Point Walking images; skip the test when the data set is absent."""
    if not GARDENS_POINT or not (Path(GARDENS_POINT) / "day_left").is_dir():
        pytest.skip(f"Gardens Point data not found at '{GARDENS_POINT}' (only in the dev "
                    "workspace: ../shared/data, or SELAVPR_GARDENS_POINT)")
    return Path(GARDENS_POINT)


LOCALIZER_PLACES = 6


@pytest.fixture(scope="session")
def localizer_world(tmp_path_factory):
    """Make a checkpoint, maps A (6 places; also as int4) and B (3 other places), PNG images."""
    import cv2

    import node_testlib
    from map_build_testlib import make_checkpoint

    root = tmp_path_factory.mktemp("localizer_node")
    checkpoint = make_checkpoint(root / "small.safetensors")
    images_a = node_testlib.place_images(LOCALIZER_PLACES, seed=1)
    images_b = node_testlib.place_images(3, seed=2)
    files = {}
    for name, images in (("a", images_a), ("b", images_b)):
        files[name] = []
        for i, image in enumerate(images):
            path = root / f"{name}{i}.png"
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            files[name].append(str(path))
    map_a = node_testlib.build_map(root / "a.selavpr", checkpoint, images_a)
    map_b = node_testlib.build_map(root / "b.selavpr", checkpoint, images_b)
    map_a_int4 = node_testlib.build_map(root / "a-int4.selavpr", checkpoint, images_a, "int4")
    return {"checkpoint": checkpoint, "map_a": map_a, "map_b": map_b, "map_a_int4": map_a_int4,
            "files": files}
