"""Process entry helpers shared by the nodes: init, autostart, guarded spin, one-line errors.

A node that cannot start (bad map, bad checkpoint, bad parameter) must say so in one log line
and exit non-zero, not print a traceback; Ctrl-C and SIGTERM, once or repeated, must end it
with status 0 after it finished its work. Once running, no exception escaping a callback may
end the process: it is logged in one line and the executor spins on.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import rclpy
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node

if TYPE_CHECKING:
    from selavpr_ros.ros.managed_node import ManagedNode

SUCCESS = TransitionCallbackReturn.SUCCESS


class StartError(Exception):
    """Raised by :func:`autostart` when configure or activate failed (the reason is logged)."""


def autostart(node: LifecycleNode, enabled: bool, reason: Callable[[], str]) -> None:
    """Configure and activate ``node`` like a lifecycle manager would (``autostart:=true``).

    Without ``enabled`` the node only says that it waits for a lifecycle manager.
    """
    if not enabled:
        node.get_logger().info(f"{node.get_name()} started unconfigured (autostart false): "
                               "waiting for configure")
        return
    if node.trigger_configure() != SUCCESS:
        raise StartError(reason() or "configure failed")
    if node.trigger_activate() != SUCCESS:
        raise StartError(reason() or "activate failed")


def spin_guarded(executor: Executor, node: Node, stop: threading.Event) -> None:
    """Spin until ``stop`` is set or rclpy shuts down; a failed callback is logged, not fatal.

    ``spin_once`` with a short timeout lets this thread see ``stop`` and return by itself, so
    the process never exits while it waits inside rclpy: a daemon thread woken there during
    interpreter shutdown aborts the process ("terminate called without an active exception").
    """
    while not stop.is_set() and rclpy.ok(context=executor.context):
        try:
            executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            return
        except Exception as err:  # noqa: BLE001 - a callback must never end the node
            node.get_logger().error(f"callback failed: {type(err).__name__}: {err}")


def run_node(
    make_node: Callable[[], ManagedNode], args: Sequence[str] | None = None,
    num_threads: int = 1,
) -> int:
    """Create the node with ``make_node`` and spin it until a signal; return the exit status.

    ``make_node`` may raise :class:`StartError` or any other exception (a bad parameter, a map
    that fails to open): the process prints one ``cannot start:`` line and exits 1.

    Callbacks run on one thread (``num_threads`` 1) unless a node's callback must wait for
    another callback: the nodes do their work in their own threads, and Jazzy's
    MultiThreadedExecutor hands a queued task to its pool again on every wake-up until a pool
    thread starts it, a busy loop that holds the GIL from the worker whenever callbacks come
    often (/clock at 50 Hz under sim time, /tf; bench/PERFORMANCE.md, issue 25).

    SIGINT and SIGTERM (Ctrl-C, ``ros2 launch`` stopping, systemd) only set an event: the
    executor spins in a thread while the main thread waits for it, then the node finishes
    (saves, logs) while the context is still valid, and only then is rclpy shut down. rclpy's
    own signal handlers are not installed: they shut the context down first, so the final
    log lines could not reach /rosout, and a second signal landed in ``destroy_node``.
    """
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=list(args) if args is not None else sys.argv,
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    node: ManagedNode | None = None
    try:
        try:
            node = make_node()
        except Exception as err:  # noqa: BLE001 - any start failure is one line, exit 1
            text = str(err) if isinstance(err, StartError) else describe_error(err)
            rclpy.logging.get_logger("selavpr_ros").fatal(f"cannot start: {text}")
            return 1
        executor: Executor = SingleThreadedExecutor() if num_threads == 1 \
            else MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        spinner = threading.Thread(target=spin_guarded, args=(executor, node, stop),
                                   name="executor")
        spinner.start()
        while spinner.is_alive() and not stop.wait(0.5):
            pass
        stop.set()
        spinner.join()  # back from rclpy before anything is shut down
        executor.shutdown(timeout_sec=5.0)
        node.finish()  # the context is valid: the last log lines still reach /rosout
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def describe_error(err: BaseException) -> str:
    """One line for any exception: our own errors' message, else its type and first line."""
    from selavpr_ros.errors import SelaVPRError

    text = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, SelaVPRError):
        return text
    return f"{type(err).__name__}: {text}"[:500]
