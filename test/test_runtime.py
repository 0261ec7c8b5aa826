"""run_node: a signal ends the process with 0 only after the executor thread left rclpy.

A daemon executor thread still waiting inside rclpy when the interpreter finalises is killed
with a forced unwind through C++ and aborts the process ("terminate called without an active
exception", exit -6): the shutdown every node went through. Seen under load in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ros_harness

pytestmark = pytest.mark.ros

SCRIPT = textwrap.dedent("""
    import os, signal, sys, threading
    from selavpr_ros.ros.managed_node import ManagedNode
    from selavpr_ros.ros.runtime import run_node

    class Probe(ManagedNode):
        def __init__(self):
            super().__init__("runtime_probe", [])
            # a service and a timer keep the executor busy, then a signal stops the process
            self.add_trigger_service("~/ping", lambda: (True, "pong"))
            self.create_timer(0.01, lambda: None)
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    rc = run_node(Probe, sys.argv[:1])
    left = [t.name for t in threading.enumerate()
            if t is not threading.main_thread() and t.name == "executor"]
    print("rc", rc, "executor threads left", len(left), flush=True)
    sys.exit(rc)
""")


@pytest.mark.parametrize("attempt", range(3))
def test_a_signal_ends_the_node_after_the_executor_thread_returned(attempt: int,
                                                                  tmp_path: Path) -> None:
    env = {**os.environ, **ros_harness.isolated_dds_env(tmp_path)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=120, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "rc 0 executor threads left 0" in output, output
    assert "terminate called" not in output
