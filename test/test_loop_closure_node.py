"""loop_closure_node over DDS: a revisit bag replayed, loops checked, the run saved, bad input."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import loop_testlib as lt
import ros_harness
from selavpr_ros.extractors.classical import ClassicalConfig, ClassicalExtractor
from selavpr_ros.io.bags import BagWriter
from selavpr_ros.io.poses import Pose
from selavpr_ros.localizer import Localizer
from selavpr_ros.loop import LoopDetector
from selavpr_ros.map import PlaceMap
from selavpr_ros.synthetic.revisit import revisit_depths, write_revisit_bag

pytestmark = pytest.mark.ros
PUBLISHER = str(ros_harness.TEST_DIR / "bag_publisher.py")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("loop_node")
    drive, extractor = lt.make_drive()
    vocabulary = root / "vocabulary.selavpr"  # no places: gives the node its extractor only
    PlaceMap.create(vocabulary, extractor).close()
    bag = root / "revisit_bag"
    write_revisit_bag(drive, str(bag))
    offline = lt.run_detector(drive, LoopDetector(extractor, lt.test_config()))
    return {"root": root, "drive": drive, "extractor": extractor, "vocabulary": vocabulary,
            "bag": bag, "offline": offline}


def node_args(world: dict[str, Any], **extra: object) -> list[str]:
    params = {"prior_map": world["vocabulary"], "prior_loops": False,
              "qos_depth": 1000, **extra}
    args = [ros_harness.executable("loop_closure_node"), "--ros-args", "--log-level",
            "loop_closure_node:=debug"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return args


def call_save(probe: ros_harness.RosProbe, timeout: float = 60.0) -> Any:
    from std_srvs.srv import Trigger

    client = probe.node.create_client(Trigger, "/loop_closure_node/save")
    assert client.wait_for_service(timeout_sec=timeout)
    future = client.call_async(Trigger.Request())
    ros_harness.wait_until(future.done, timeout, "the ~/save response")
    return future.result()


def true_position(drive: Any, stamp_ns: int) -> tuple[float, float, float]:
    return next(f.position for f in drive.frames if f.stamp_ns == stamp_ns)


def stamp_ns(t: Any) -> int:
    return int(t.sec) * 10**9 + int(t.nanosec)


def start(world: dict[str, Any], probe: ros_harness.RosProbe, start_process: Any,
          **extra: object) -> Any:
    from std_msgs.msg import Float64MultiArray

    from selavpr_msgs.msg import LoopClosure

    probe.subscribe(LoopClosure, "/loop_closure", qos=100)
    probe.subscribe(Float64MultiArray, "/loop_closure_detection", qos=100)
    node = start_process(node_args(world, **extra))
    node.wait_for_output("loop_closure_node started", timeout=120)
    probe.wait_for_subscribers("/camera/image_raw")
    probe.wait_for_subscribers("/odom")
    return node


def test_replayed_revisit_bag_publishes_only_true_loops_as_offline(
        world: dict[str, Any], ros_probe: Any, start_process: Any, tmp_path: Path) -> None:
    drive = world["drive"]
    saved = tmp_path / "run.selavpr"
    node = start(world, ros_probe, start_process, save_map=saved)
    publisher = start_process([sys.executable, PUBLISHER, str(world["bag"])])
    publisher.wait_for_output("done", timeout=120)
    keyframes = world["offline"]
    node.wait_for_output(f"keyframe {len(keyframes) - 1} at", timeout=300)

    expected = [(r.keyframe.stamp_ns, r.then_stamp_ns) for _, r in keyframes if r.loop]
    assert len(expected) >= 10
    msgs = ros_probe.wait_for_messages("/loop_closure", count=len(expected), timeout=30)
    arrays = ros_probe.wait_for_messages("/loop_closure_detection", count=len(expected),
                                         timeout=30)
    # offline and live agree loop for loop
    assert [(stamp_ns(m.stamp_now), stamp_ns(m.stamp_then)) for m in msgs] == expected
    image_stamps = {f.stamp_ns for f in drive.frames}
    for m, a in zip(msgs, arrays, strict=True):
        now, then = stamp_ns(m.stamp_now), stamp_ns(m.stamp_then)
        assert now in image_stamps and then in image_stamps and then < now
        assert math.dist(true_position(drive, now), true_position(drive, then)) <= lt.TRUE_LOOP_M
        assert m.map_id == "" and m.consistency >= 2 and not m.has_relative_pose
        assert m.header.frame_id == "odom"
        # LIO-SAM's array: both times are the bag's keyframe stamps (seconds, float64)
        assert len(a.data) == 2
        assert abs(a.data[0] - now / 1e9) < 1e-6 and abs(a.data[1] - then / 1e9) < 1e-6

    response = call_save(ros_probe)
    assert response.success, response.message
    assert f"{len(keyframes)} keyframes" in response.message
    assert node.stop() == 0
    with PlaceMap.open(saved, verify=True) as place_map:
        assert place_map.count == len(keyframes)
        extractor = ClassicalExtractor.from_state(place_map.extractor_state())
        query = next(f for f in drive.frames if f.traversal == 1 and f.index > 35)
        top = Localizer(place_map, extractor).query(query.image).candidates[0]
        assert top.position is not None
        assert math.dist(top.position, query.position) <= lt.TRUE_LOOP_M


def replay_and_compare(world: dict[str, Any], probe: ros_harness.RosProbe,
                       start_process: Any, node: Any, bag: Path) -> list[Any]:
    """Replay ``bag`` to the running node; return its loops, checked to be the offline ones."""
    publisher = start_process([sys.executable, PUBLISHER, str(bag)])
    publisher.wait_for_output("done", timeout=120)
    keyframes = world["offline"]
    node.wait_for_output(f"keyframe {len(keyframes) - 1} at", timeout=300)
    expected = [(r.keyframe.stamp_ns, r.then_stamp_ns) for _, r in keyframes if r.loop]
    msgs = probe.wait_for_messages("/loop_closure", count=len(expected), timeout=30)
    assert [(stamp_ns(m.stamp_now), stamp_ns(m.stamp_then)) for m in msgs] == expected
    return msgs


def test_camera_info_and_depth_give_each_loop_a_relative_pose(
        world: dict[str, Any], ros_probe: Any, start_process: Any) -> None:
    from selavpr_ros.geometry.transforms import invert, pose_matrix

    drive = world["drive"]
    bag = world["root"] / "revisit_depth_bag"
    write_revisit_bag(drive, str(bag), camera=lt.ROUTE.camera,
                      depths=revisit_depths(lt.ROUTE, drive))
    node = start(world, ros_probe, start_process, camera_info_topic="/camera/camera_info",
                 depth_topic="/camera/depth/image_raw")
    # camera info does not change the decision (min_inliers is 0 by default)
    msgs = replay_and_compare(world, ros_probe, start_process, node, bag)
    posed = [m for m in msgs if m.has_relative_pose]
    assert len(posed) >= 0.8 * len(msgs)
    errors = []
    by_stamp = {f.stamp_ns: f for f in drive.frames}
    for m in posed:
        now, then = by_stamp[stamp_ns(m.stamp_now)], by_stamp[stamp_ns(m.stamp_then)]
        truth = invert(pose_matrix(then.position, then.orientation)) @ pose_matrix(
            now.position, now.orientation)
        p = m.relative_pose.pose.position
        errors.append(math.dist((p.x, p.y, p.z), truth[:3, 3]))
        cov = list(m.relative_pose.covariance)
        assert all(cov[7 * i] > 0 for i in range(6))  # variances on the diagonal
    # PnP on the matched keyframe's depth (metres of grid resolution at 160x120, see
    # test_loop.py); the passes are 3 m apart
    errors.sort()
    assert errors[len(errors) // 2] < 0.8
    assert node.stop() == 0


OdometryEdit = Callable[[Pose], list[tuple[int, Pose]]]


def write_drive_bag(drive: Any, path: Path, odometry: OdometryEdit) -> None:
    """Write the drive as a bag; ``odometry(pose)`` gives the (recorded, pose) to write."""
    items: list[tuple[int, Any]] = [(f.stamp_ns, f) for f in drive.frames]
    items += [(p.stamp_ns, p) for p in drive.return_poses]
    with BagWriter(path) as writer:
        for stamp, item in sorted(items, key=lambda i: i[0]):
            pose = item if isinstance(item, Pose) else Pose(stamp, item.position,
                                                             item.orientation)
            if not isinstance(item, Pose):
                writer.write_image("/camera/image_raw", stamp, item.image, "camera")
            for recorded, message in odometry(pose):
                writer.write_odometry("/odom", message, "odom", "base_link", recorded)


def write_faulty_bag(drive: Any, path: Path) -> tuple[set[int], int]:
    """Pass two with a hole in the odometry (images without poses) and a 500 m jump."""
    second = [f for f in drive.frames if f.traversal == 1]
    hole = {f.stamp_ns for f in second[4:8]}
    jump_from = second[14].stamp_ns

    def odometry(pose: Pose) -> list[tuple[int, Pose]]:
        if pose.stamp_ns in hole:
            return []
        if pose.stamp_ns >= jump_from:
            x, y, z = pose.position
            pose = Pose(pose.stamp_ns, (x + 500.0, y, z), pose.orientation)
        return [(pose.stamp_ns, pose)]

    write_drive_bag(drive, path, odometry)
    return hole, jump_from


def test_bad_odometry_is_logged_and_no_false_loop_is_published(
        world: dict[str, Any], ros_probe: Any, start_process: Any, tmp_path: Path) -> None:
    drive = world["drive"]
    bag = tmp_path / "faulty_bag"
    hole, jump_from = write_faulty_bag(drive, bag)
    node = start(world, ros_probe, start_process, pose_tolerance=0.6, max_odom_gap=1.0)
    publisher = start_process([sys.executable, PUBLISHER, str(bag)])
    publisher.wait_for_output("done", timeout=120)
    last = max(f.stamp_ns for f in drive.frames)
    node.wait_for_output(f"at {last} ns", timeout=300)
    out = node.output()
    assert "odometry gap of" in out
    assert "odometry jumped" in out
    assert f"no odometry within 0.600 s of image {min(hole)} ns" in out
    assert node.returncode is None  # still running
    for m in ros_probe.messages("/loop_closure"):
        now, then = stamp_ns(m.stamp_now), stamp_ns(m.stamp_then)
        assert now not in hole
        assert math.dist(true_position(drive, now), true_position(drive, then)) <= lt.TRUE_LOOP_M
    assert "Traceback" not in out
    assert node.stop() == 0


def test_prior_map_of_another_extractor_is_refused_in_one_line(
        world: dict[str, Any], start_process: Any, tmp_path: Path) -> None:
    other = ClassicalExtractor(ClassicalConfig(long_side=160, vocabulary_size=16)).fit(
        [f.image for f in world["drive"].frames[::4]])
    prior = tmp_path / "other.selavpr"
    PlaceMap.create(prior, other).close()
    node = start_process(node_args(world, prior_map=prior, extractor="selavpr",
                                   checkpoint="/nonexistent.pth"))
    ros_harness.wait_until(lambda: node.returncode is not None, 60, "the node to exit")
    assert node.returncode == 1
    lines = [line for line in node.output().splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "classical" in lines[0], node.output()
    assert "Traceback" not in node.output()


def test_shipped_parameter_file_is_derived_from_the_declarations() -> None:
    import yaml

    from selavpr_ros.localizer.config import settings
    from selavpr_ros.loop import LoopConfig
    from selavpr_ros.nodes.loop_closure_node import PARAMS, YAML_HEADER
    from selavpr_ros.ros.params import render_yaml

    shipped = ros_harness.REPO_ROOT / "config" / "loop_closure.yaml"
    assert shipped.read_text() == render_yaml(YAML_HEADER, PARAMS)
    values = yaml.safe_load(shipped.read_text())["/**"]["ros__parameters"]
    assert list(values) == [p.name for p in PARAMS]
    for p in PARAMS:  # rcl refuses a YAML value whose type differs from the declared one
        assert type(values[p.name]) is type(p.default), p.name
    core = LoopConfig()  # every core setting is a parameter with the core's default
    for s in settings(config_class=LoopConfig):
        assert values[s.name] == getattr(core, s.name), s.name


def test_one_odometry_stamp_far_in_the_future_does_not_stop_loop_closure(
        world: dict[str, Any], ros_probe: Any, start_process: Any, tmp_path: Path) -> None:
    drive = world["drive"]
    stray_after = [f for f in drive.frames if f.traversal == 0][10].stamp_ns
    bag = tmp_path / "stray_stamp_bag"

    def odometry(pose: Pose) -> list[tuple[int, Pose]]:
        messages = [(pose.stamp_ns, pose)]
        if pose.stamp_ns == stray_after:  # recorded in order, stamped 1e6 s ahead
            messages.append((pose.stamp_ns + 1, Pose(pose.stamp_ns + 10**15, pose.position,
                                                      pose.orientation)))
        return messages

    write_drive_bag(drive, bag, odometry)
    node = start(world, ros_probe, start_process)
    # the stray message is dropped: the run is the same as without it
    replay_and_compare(world, ros_probe, start_process, node, bag)
    out = node.output()
    assert "stray stamp dropped" in out
    assert "older than the last one" not in out and "no odometry within" not in out
    assert node.stop() == 0


def test_save_answers_after_a_failed_save_and_never_replaces_the_prior_map(
        world: dict[str, Any], ros_probe: Any, start_process: Any, tmp_path: Path) -> None:
    from std_srvs.srv import Trigger

    drive = world["drive"]
    first = [f for f in drive.frames if f.traversal == 0][:12]
    bag = tmp_path / "short_bag"
    with BagWriter(bag) as writer:
        for f in first:
            writer.write_image("/camera/image_raw", f.stamp_ns, f.image, "camera")
            writer.write_odometry("/odom", Pose(f.stamp_ns, f.position, f.orientation), "odom",
                                  "base_link")
    node = start(world, ros_probe, start_process)  # save_map empty
    publisher = start_process([sys.executable, PUBLISHER, str(bag)])
    publisher.wait_for_output("done", timeout=120)
    node.wait_for_output("keyframe 2 at", timeout=120)

    service = "/loop_closure_node/save"
    failed = ros_probe.call(Trigger, service, Trigger.Request())
    assert not failed.success and "save_map is empty" in failed.message
    # saving onto the prior map in use is refused when set, in one line
    refused = ros_probe.set_parameters("/loop_closure_node", save_map=str(world["vocabulary"]))
    assert not refused[0].successful and "prior_map" in refused[0].reason
    saved = tmp_path / "run.selavpr"
    assert ros_probe.set_parameters("/loop_closure_node", save_map=str(saved))[0].successful
    done = ros_probe.call(Trigger, service, Trigger.Request())  # answered after a failure
    assert done.success, done.message
    again = ros_probe.call(Trigger, service, Trigger.Request())  # and after a success
    assert again.success, again.message
    with PlaceMap.open(world["vocabulary"]) as prior:
        assert prior.count == 0
    with PlaceMap.open(saved) as run:
        assert run.count >= 3
    assert "Logger severity" not in node.output()

    # Ctrl-C: the run is saved once more and that last line still reaches /rosout
    from rcl_interfaces.msg import Log

    ros_probe.subscribe(Log, "/rosout", qos=1000)
    assert node.stop() == 0
    ros_harness.wait_until(
        lambda: any(m.name == "loop_closure_node" and "saved the run's" in m.msg
                    for m in ros_probe.messages("/rosout")), 10, "the final save on /rosout")
    out = node.output()
    assert "Failed to publish log message" not in out and "terminate called" not in out
    assert "Traceback" not in out


def test_save_map_naming_the_prior_map_is_refused_at_start(
        world: dict[str, Any], start_process: Any, tmp_path: Path) -> None:
    import shutil

    prior = tmp_path / "prior.selavpr"
    shutil.copytree(world["vocabulary"], prior)
    before = sorted(p.name for p in prior.iterdir())
    node = start_process(node_args(world, prior_map=prior, save_map=prior))
    ros_harness.wait_until(lambda: node.returncode is not None, 60, "the node to exit")
    assert node.returncode == 1
    lines = [line for line in node.output().splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "prior_map" in lines[0], node.output()
    assert sorted(p.name for p in prior.iterdir()) == before
    with PlaceMap.open(prior, verify=True) as place_map:
        assert place_map.count == 0
