"""The supervisor's judgement of a child's exit, without starting processes."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest
from _component_helpers import config_from_yaml

from logcap.supervisor import Child, Supervisor


class _Exited:
    """A finished process, as ``subprocess.Popen`` reports it."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.pid = 1

    def poll(self) -> int:
        return self.code


def _supervisor(tmp_path: Path) -> Supervisor:
    text = """\
        sources: {app: {type: http}}
        sinks: {out: {type: console}}
        """
    return Supervisor(config_from_yaml(textwrap.dedent(text), tmp_path))


@pytest.mark.parametrize(("code", "finished"), [(0, True), (-signal.SIGTERM, True), (1, False)])
def test_a_collector_ended_by_the_drains_own_sigterm_has_finished(
    tmp_path: Path, code: int, finished: bool
) -> None:
    """SIGTERM can reach a collector before it sets its handler (before it read
    anything): that is a finished collector, not a crash to restart during the drain."""
    child = Child("collector", "app", "http")
    child.process = _Exited(code)  # type: ignore[assignment]
    _supervisor(tmp_path)._check(child, draining=True)
    assert child.finished is finished
    assert (child.restart_at is None) is finished


def test_a_sink_ended_by_sigterm_during_a_drain_is_still_a_crash(tmp_path: Path) -> None:
    child = Child("sink", "out", "console")
    child.process = _Exited(-signal.SIGTERM)  # type: ignore[assignment]
    _supervisor(tmp_path)._check(child, draining=True)
    assert not child.finished and child.restart_at is not None
