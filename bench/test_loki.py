"""File → Loki through the whole process tree, against the strict in-repo fake of the push
API (tests/_loki_fake.py), protobuf+snappy (the default) and JSON.

    1 file ─▶ collector ─▶ dispatcher (encode once) ─▶ loki sink ─▶ fake Loki (127.0.0.1)

The fake decodes every push with its own reader on the same two cores, so these figures
are a floor for the sink; the Go original managed 200-500 lines/s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.conftest import LINES, record
from bench.harness import (
    LINE_BYTES,
    NETWORK_DISPATCHER,
    RunResult,
    agent_config,
    level_the_field,
    run_logcap,
)
from tests._loki_fake import LokiFake

API = "127.0.0.1:19613"


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_file_to_loki(benchmark, single_input, tmp_path: Path, encoding: str) -> None:
    logs, _ = single_input
    work = tmp_path / "w"
    results: list[RunResult] = []
    with LokiFake(unordered=True) as fake:

        def once() -> None:
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            sinks = f'  loki: {{type: loki, url: "{fake.url}", encoding: {encoding}}}'
            config = agent_config(work, logs, API, sinks, NETWORK_DISPATCHER)
            level_the_field(sorted(logs.glob("*.log")))
            results.append(
                run_logcap(
                    f"logcap file->loki ({encoding})",
                    config,
                    API,
                    "loki",
                    LINES,
                    LINES * LINE_BYTES,
                )
            )

        benchmark.pedantic(once, rounds=1, iterations=1)
        assert fake.entry_count() == LINES  # every line stored by the fake, once
    record(results[-1])
    benchmark.extra_info.update(lines_per_second=results[-1].lines_per_second)
