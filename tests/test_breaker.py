"""The circuit breaker's state machine (sinks/breaker.py), on a clock the test moves."""

from __future__ import annotations

from logcap.errors import Permanent, Retryable
from logcap.sinks.breaker import BreakerConfig, CircuitBreaker, State
from tests._retry_helpers import Clock


def _breaker(
    clock: Clock, threshold: int = 3, open_for: float = 10.0
) -> tuple[CircuitBreaker, list[State]]:
    changes: list[State] = []
    config = BreakerConfig(failure_threshold=threshold, open_duration=open_for)  # type: ignore[arg-type]
    return CircuitBreaker("s", config, on_change=changes.append, clock=clock), changes


def test_opens_after_consecutive_retryable_failures_and_probes_after_the_pause() -> None:
    clock = Clock()
    breaker, changes = _breaker(clock)
    down = Retryable("connection refused", "connection")
    breaker.failed(down)
    breaker.succeeded()  # a success in between: the count starts again
    breaker.failed(down)
    breaker.failed(down)
    assert breaker.allows() and breaker.state is State.CLOSED
    breaker.failed(down)
    assert breaker.state is State.OPEN and not breaker.allows()
    assert breaker.last_error is down
    clock.advance(9.9)
    assert not breaker.allows()
    clock.advance(0.2)
    assert breaker.allows() and breaker.probing  # one probe
    breaker.failed(down)  # the probe failed: open again, for another pause
    assert breaker.state is State.OPEN and not breaker.allows()
    clock.advance(10)
    assert breaker.allows() and breaker.probing
    breaker.succeeded()
    assert breaker.state is State.CLOSED and breaker.allows()
    assert changes == [State.OPEN, State.HALF_OPEN, State.OPEN, State.HALF_OPEN, State.CLOSED]


def test_permanent_errors_neither_open_nor_close_the_circuit() -> None:
    clock = Clock()
    breaker, changes = _breaker(clock, threshold=1)
    for _ in range(5):
        breaker.failed(Permanent("400 entry out of order", "rejected"))
    assert breaker.state is State.CLOSED and changes == []
    breaker.failed(Retryable("503", "server_error"))
    clock.advance(10)
    assert breaker.allows() and breaker.probing
    breaker.failed(Permanent("400 too old", "rejected"))  # says nothing about health
    assert breaker.probing
