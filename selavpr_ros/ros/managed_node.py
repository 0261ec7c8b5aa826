"""The lifecycle runtime the three nodes share: transitions, state, failures, services, shutdown.

A node subclasses :class:`ManagedNode` and writes four hooks: ``configure`` (open what it needs;
raise to fail: the reason is kept and logged in one line), ``activate`` (subscribe, start the
worker), ``deactivate`` (stop the worker, finish what is queued) and ``release`` (give back the
map and the model; ``final`` on shutdown, error and process exit). The transitions, the state
label diagnostics report, the once-only release at exit and the services that always answer
are written here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_srvs.srv import Trigger

from selavpr_ros.ros.params import Param, declare
from selavpr_ros.ros.runtime import describe_error

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class ManagedNode(LifecycleNode):
    """A lifecycle node whose transitions call four hooks and never raise."""

    def __init__(self, name: str, params: list[Param]) -> None:
        super().__init__(name)
        self.values: dict[str, Any] = declare(self, params)
        self.state_label = "unconfigured"
        self.failure_reason = ""
        self._finalized = False

    # --- hooks ---------------------------------------------------------------------------
    def configure(self) -> None:
        """Open the map and the model; raise to stay unconfigured (the message is the reason).

        A failing configure closes what it opened itself: release is not called after it.
        """

    def activate(self) -> None:
        """Subscribe and start processing."""

    def deactivate(self) -> None:
        """Stop processing (unsubscribe, join the worker); must be safe to call twice."""

    def release(self, final: bool) -> None:
        """Release the map and the model; ``final`` at shutdown (save what must be saved)."""

    # --- transitions -----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configure()
        except Exception as err:  # noqa: BLE001 - any failure leaves the node unconfigured
            self.failure_reason = describe_error(err)
            self.get_logger().error(f"configure failed: {self.failure_reason}")
            return FAILURE
        self.failure_reason = ""
        self.state_label = "inactive"
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.activate()
        except Exception as err:  # noqa: BLE001 - refused, stays inactive
            self.failure_reason = describe_error(err)
            self.get_logger().error(f"activate failed: {self.failure_reason}")
            self.deactivate()
            return FAILURE
        self.state_label = "active"
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        self.state_label = "inactive"
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_quietly(final=False)
        self.state_label = "unconfigured"
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.finish()
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate()
        self._release_quietly(final=True)
        self.state_label = "unconfigured"
        return SUCCESS

    def finish(self) -> None:
        """Stop and release for good, once (shutdown transition, Ctrl-C, SIGTERM)."""
        if self._finalized:
            return
        self._finalized = True
        self.deactivate()
        self._release_quietly(final=True)
        self.state_label = "finalized"

    def destroy_node(self) -> None:
        self.finish()
        super().destroy_node()

    def _release_quietly(self, final: bool) -> None:
        try:
            self.release(final)
        except Exception as err:  # noqa: BLE001 - releasing must not end the process
            self.get_logger().error(f"release failed: {describe_error(err)}")

    # --- services, logging, diagnostics ---------------------------------------------------
    def log_outcome(self, ok: bool, message: str) -> None:
        """Log ``message`` as info or error (rclpy refuses two severities from one call site)."""
        if not message:
            return
        if ok:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)

    def add_trigger_service(self, name: str, handler: Callable[[], tuple[bool, str]]) -> None:
        """Serve ``handler`` as a std_srvs/Trigger service that always answers.

        Whatever ``handler`` raises becomes ``success: false`` with a one-line message, so a
        caller never waits for an answer that a failed callback will not send.
        """

        def serve(_request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
            try:
                response.success, response.message = handler()
            except Exception as err:  # noqa: BLE001 - the caller gets an answer, always
                response.success = False
                response.message = f"{name.lstrip('~/')} failed: {describe_error(err)}"
            self.log_outcome(response.success, response.message)
            return response

        self.create_service(Trigger, name, serve,
                            callback_group=MutuallyExclusiveCallbackGroup())

    def publish_diagnostics(self, statuses: Callable[[], list[DiagnosticStatus]],
                            period_s: float = 1.0) -> None:
        """Publish ``statuses()`` on /diagnostics every ``period_s`` of wall time.

        The timer runs on the steady clock, so diagnostics go on (and turn STALE) when a
        replayed bag's /clock stops; the header is stamped with the node's clock.
        """
        publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        def publish() -> None:
            array = DiagnosticArray(status=statuses())
            array.header.stamp = self.get_clock().now().to_msg()
            publisher.publish(array)

        self.create_timer(period_s, publish, callback_group=MutuallyExclusiveCallbackGroup(),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

    def diagnostic_name(self, part: str) -> str:
        """Status name: the node's fully qualified name without the leading slash, and part."""
        return f"{self.get_fully_qualified_name().lstrip('/')}: {part}"
