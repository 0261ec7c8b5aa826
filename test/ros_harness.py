"""Test harness for real ROS 2 processes talking over real DDS, kept on this machine.

Used by every test that needs ROS: it isolates DDS (loopback only, a random domain per test
run), starts node executables as separate processes and always stops them, and gives the test
its own rclpy context with a spinning probe node to publish and collect messages. Waiting is
always on a condition (matched endpoints, received messages), never a fixed sleep.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

TEST_DIR = Path(__file__).resolve().parent
REPO_ROOT = TEST_DIR.parent
LOOPBACK_PROFILE = TEST_DIR / "fastdds_loopback.xml"
# One random domain per test run, so concurrent runs on a machine do not see each other.
DOMAIN_ID = random.SystemRandom().randint(1, 100)


def isolated_dds_env(log_dir: Path | None = None) -> dict[str, str]:
    """Environment variables that keep DDS on loopback and in this run's own domain."""
    env = {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(DOMAIN_ID),
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(LOOPBACK_PROFILE),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "PYTHONUNBUFFERED": "1",
        "RCUTILS_COLORIZED_OUTPUT": "0",
    }
    if log_dir is not None:
        env["ROS_LOG_DIR"] = str(log_dir)
    return env


def apply_isolated_dds_env(log_dir: Path | None = None) -> None:
    """Isolate DDS for this process too (call before rclpy creates a context)."""
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated; overrides the discovery range
    os.environ.update(isolated_dds_env(log_dir))


def executable(name: str) -> str:
    """Path of a console script installed in the environment running the tests."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"executable '{name}' not found; run scripts/setup.sh first")
    return found


class NodeProcess:
    """A node (or any command) running as a separate process, with its output in a log file."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self.log_path = log_path
        full_env = dict(os.environ)
        full_env.update(env or {})
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
            start_new_session=True,
        )

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        """Everything the process printed so far (also after :meth:`stop`)."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` appears in the output; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"'{text}' not seen from {self.argv[0]} (exit={self.proc.poll()}); output:\n"
            + self.output()
        )

    def stop(self, timeout: float = 10.0) -> int:
        """Interrupt the process like Ctrl-C, kill it if it does not end; return its status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class RosProbe:
    """A node in the test process, in its own rclpy context, spinning in a background thread."""

    def __init__(self, name: str = "selavpr_test_probe") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._lock = threading.Lock()
        self._received: dict[str, list[Any]] = {}
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self._executor.spin()
        except (ExternalShutdownException, self._rclpy.executors.ShutdownException):
            pass

    def subscribe(self, msg_type: type, topic: str, qos: Any = 10) -> None:
        """Collect every message on ``topic``; read them with :meth:`messages`."""
        with self._lock:
            self._received.setdefault(topic, [])

        def store(msg: Any) -> None:
            with self._lock:
                self._received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, store, qos)

    def messages(self, topic: str) -> list[Any]:
        with self._lock:
            return list(self._received.get(topic, []))

    def wait_for_messages(self, topic: str, count: int = 1, timeout: float = 30.0) -> list[Any]:
        """Wait until ``count`` messages arrived on ``topic`` and return all received."""
        wait_until(lambda: len(self.messages(topic)) >= count, timeout,
                   f"{count} message(s) on {topic}")
        return self.messages(topic)

    def wait_for_publishers(self, topic: str, count: int = 1, timeout: float = 30.0) -> None:
        wait_until(lambda: self.node.count_publishers(topic) >= count, timeout,
                   f"{count} publisher(s) on {topic}")

    def wait_for_subscribers(self, topic: str, count: int = 1, timeout: float = 30.0) -> None:
        wait_until(lambda: self.node.count_subscribers(topic) >= count, timeout,
                   f"{count} subscriber(s) on {topic}")

    def wait_for_node(self, name: str, timeout: float = 30.0) -> None:
        wait_until(lambda: name in self.node.get_node_names(), timeout, f"node '{name}'")

    def call(self, srv_type: type, service: str, request: Any, timeout: float = 60.0) -> Any:
        """Call ``service`` and return its response; fail the test when none comes in time."""
        client = self.node.create_client(srv_type, service)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"no service {service}"
            future = client.call_async(request)
            wait_until(future.done, timeout, f"the response of {service}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameters(self, node: str, **values: Any) -> Any:
        """Set parameters of ``node`` (fully qualified); return the SetParametersResult list."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return self.call(SetParameters, f"{node}/set_parameters", request).results

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5.0)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; raise AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
