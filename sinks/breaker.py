"""A sink's circuit breaker: stop hammering a destination that keeps failing.

States: *closed* (deliver normally), *open* (deliver nothing: every batch goes straight
to the retry heap, redeliveries wait), *half-open* (after ``open_duration``, one batch is
tried as a probe: success closes the circuit, failure opens it again). It opens after
``failure_threshold`` consecutive batches failed with a retryable error; a permanent
error (a batch the destination refuses as such) says nothing about the destination's
health and neither opens nor closes it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Annotated

from logcap.capture.pipeline.config import Condition
from logcap.config._base import StrictStruct, doc
from logcap.config._units import PositiveDuration
from logcap.errors import DeliveryError, Permanent

log = logging.getLogger(__name__)


class BreakerConfig(StrictStruct, frozen=True):
    """When a sink's circuit opens and for how long."""

    failure_threshold: Annotated[
        int,
        doc("Consecutive batches failing with a retryable error that open the circuit.", ge=1),
    ] = 5
    open_duration: Annotated[
        PositiveDuration,
        doc("How long the circuit stays open before one batch is tried as a probe."),
    ] = PositiveDuration(10.0)


class SinkConfigBase(StrictStruct, kw_only=True, frozen=True):
    """What every sink's config has, besides its own keys. Each sink type's config is
    the one home of its knowledge: ``check`` (cross-field rules, pure) and ``build``
    (opens files and sockets; see sinks/registry.py)."""

    circuit_breaker: Annotated[
        BreakerConfig, doc("When this sink stops trying a failing destination for a while.")
    ] = BreakerConfig()
    inputs: Annotated[
        list[str] | None,
        doc(
            "Names of the sources whose entries this sink receives; left out: every "
            "source. Batches with none of them are acknowledged at once, nothing sent."
        ),
    ] = None
    when: Annotated[
        Condition | None,
        doc(
            "Only entries matching this condition, e.g. {field: level, in: [error, "
            "critical]} (the pipelines' condition language; decided once per entry by the "
            "dispatcher). Left out: every entry of its inputs."
        ),
    ] = None

    def check(self) -> list[tuple[tuple[str, ...], str]]:
        """(key path, reason) of every cross-field problem; none unless a type says so."""
        return []

    def routed_fields(self) -> set[str]:
        """The field paths this sink's templates name ('{fields.NAME.SUB}' → 'NAME.SUB'):
        the dispatcher cuts groups where their values change (sinks/template.py)."""
        return set()

    def routes_by_level(self) -> bool:
        """Whether this sink names the group's level (a Kafka level route, '{level}' in a
        template): only then does the dispatcher cut groups where the level changes, as
        entries of alternating levels would otherwise make a group each."""
        return False


class State(enum.IntEnum):
    """Exported as the ``logcap_sink_circuit_state`` gauge."""

    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class CircuitBreaker:
    """The state machine; the sink runner asks it before every attempt."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig,
        on_change: Callable[[State], None] = lambda state: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.config = config
        self.on_change = on_change
        self.clock = clock
        self.state = State.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.first_opened_at = 0.0  # when it last opened from closed (probes reopen it)
        self.last_error: DeliveryError | None = None

    def allows(self) -> bool:
        """Whether an attempt may be made now (in half-open: the one probe)."""
        if self.state is State.OPEN and self.clock() - self.opened_at >= self.config.open_duration:
            log.debug("sink %s: circuit half-open, one batch is tried as a probe", self.name)
            self._enter(State.HALF_OPEN)
        return self.state is not State.OPEN

    @property
    def probing(self) -> bool:
        return self.state is State.HALF_OPEN

    def succeeded(self) -> None:
        self.failures = 0
        if self.state is not State.CLOSED:
            log.info(
                "sink %s: circuit closed after %.1fs open: a probe batch was delivered; "
                "delivering again (last error was: %s)",
                self.name,
                self.clock() - self.first_opened_at,
                self.last_error,
            )
            self._enter(State.CLOSED)

    def failed(self, error: DeliveryError) -> None:
        if isinstance(error, Permanent):
            return
        self.last_error = error
        self.failures += 1
        if self.state is State.HALF_OPEN:
            # still open as far as the operator is concerned: the opening was logged, and
            # the sink logs each failed batch, so one more line per open_duration is noise
            log.debug(
                "sink %s: circuit open again for %.1fs: the probe batch failed: %s",
                self.name,
                self.config.open_duration,
                error,
            )
            self.opened_at = self.clock()
            self._enter(State.OPEN)
        elif self.state is State.CLOSED and self.failures >= self.config.failure_threshold:
            log.warning(
                "sink %s: circuit open for %.1fs after %d batches in a row failed with a "
                "retryable error: %s",
                self.name,
                self.config.open_duration,
                self.failures,
                error,
            )
            self.opened_at = self.first_opened_at = self.clock()
            self._enter(State.OPEN)

    def _enter(self, state: State) -> None:
        self.state = state
        self.on_change(state)
