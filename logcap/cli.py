"""The ``logcap`` command line: ``run`` and ``validate`` (the other commands live in
``logcap/cli_*.py``: ``config``, ``dlq``, ``tap``, ``top``).

Exit codes: 0 success; 1 a run that could not drain cleanly; 75 (EX_TEMPFAIL) another
agent is running on the same ``data_dir``; 78 (EX_CONFIG) an invalid configuration, a
bad ``LOGCAP_LOG_LEVEL``, or a listening address that cannot be bound at start — a
systemd unit can list it in ``RestartPreventExitStatus``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from logcap.cli_common import (
    EX_CONFIG,
    config_option,
    listen_or_exit,
    load_or_exit,
    log_level_or_exit,
)
from logcap.errors import ConfigError

EXIT_LOCKED = 75  # EX_TEMPFAIL: the data_dir is in use by a running agent


@click.group()
# `logcap 0.1.0`, whatever the program is called (`python -m logcap`, a pipx shim)
@click.version_option(package_name="logcap", prog_name="logcap", message="%(prog)s %(version)s")
def main() -> None:
    """logcap: tail logs into sinks through shared-memory rings, at least once."""


@main.command()
@config_option
def validate(config_path: Path | None) -> None:
    """Check a config file; print every problem with its YAML path and line."""
    config = load_or_exit(config_path)
    log_level_or_exit()
    click.echo(f"ok: {len(config.sources)} source(s), {len(config.sinks)} sink(s)")


def _register_subcommands() -> None:
    from logcap.cli_config import config_group
    from logcap.cli_dlq import dlq
    from logcap.cli_tap import tap
    from logcap.cli_top import top

    main.add_command(config_group)
    main.add_command(dlq)
    main.add_command(tap)
    main.add_command(top)


_register_subcommands()


@main.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the pipeline until SIGTERM/SIGINT, then drain and exit."""
    config = load_or_exit(config_path)
    logging.basicConfig(
        stream=sys.stderr,
        level=log_level_or_exit(),
        format="%(asctime)s %(levelname)s [supervisor] %(name)s: %(message)s",
    )
    from logcap import datadir

    try:
        lock_fd = datadir.lock(config.data_dir)
    except datadir.DataDirLocked as exc:
        click.echo(f"logcap: {exc}", err=True)
        sys.exit(EXIT_LOCKED)
    try:
        listen_or_exit(config)
    except SystemExit:
        os.close(lock_fd)
        raise
    from logcap.supervisor import Supervisor

    try:
        sys.exit(Supervisor(config).run())
    except ConfigError as exc:  # an address taken between the check and the bind
        for problem in exc.problems:
            click.echo(f"logcap: {problem}", err=True)
        sys.exit(EX_CONFIG)
    finally:
        os.close(lock_fd)
