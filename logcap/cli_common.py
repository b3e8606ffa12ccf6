"""What every ``logcap`` subcommand shares: the ``--config`` option and how a config is
loaded (a file, or the embedded default) and refused (exit 78, every problem listed)."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import click

from logcap.config import Config, load_config, parse_config
from logcap.errors import ConfigError

EX_CONFIG = 78
DEFAULT_CONFIG = "default.yaml"

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML config file (default: the embedded default config).",
)


UNSET = "unset"


def load(config_path: Path | None, secrets: bool = True) -> Config:
    """The config at ``config_path``, or the embedded default when it is None.

    ``secrets=False`` is for commands that use the config's data_dir and names but never
    talk to a destination (``logcap dlq list``): an unset ``${VAR}`` without a default
    reads as ``unset`` instead of being an error, so the operator running them need not
    have the agent's secrets (``${INGEST_TOKEN}``) in the environment."""
    unset = None if secrets else UNSET
    if config_path is not None:
        return load_config(config_path, unset=unset)
    text = resources.files("logcap.configs").joinpath(DEFAULT_CONFIG).read_text("utf-8")
    # the embedded config's relative paths are relative to where logcap is started
    return parse_config(text, f"<embedded {DEFAULT_CONFIG}>", Path.cwd(), unset=unset)


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def log_level_or_exit() -> str:
    """``LOGCAP_LOG_LEVEL`` (default info) as a logging level name, or exit 78 naming
    the valid ones (a bad value would otherwise be a traceback in every process)."""
    value = os.environ.get("LOGCAP_LOG_LEVEL", "info")
    if value.strip().lower() not in LOG_LEVELS:
        click.echo(
            f"logcap: LOGCAP_LOG_LEVEL: {value!r} is not one of {', '.join(LOG_LEVELS)}",
            err=True,
        )
        sys.exit(EX_CONFIG)
    return value.strip().upper()


def listen_or_exit(config: Config) -> None:
    """Exit 78 with one line if an address the agent listens on cannot be bound now
    (in use, not local, not resolvable), before any process is started: the child that
    binds it would otherwise crash and be restarted for ever."""
    import socket

    from logcap.config._rules import listeners

    for path, who, address in listeners(config):
        host, port = address.rsplit(":", 1)
        try:  # as http.server binds: IPv4, SO_REUSEADDR
            probe = socket.create_server((host, int(port)), family=socket.AF_INET)
        except OSError as exc:
            # create_server appends the address to strerror; say it once
            reason = (exc.strerror or str(exc)).split(" (while attempting", 1)[0]
            click.echo(
                f"logcap: cannot listen on {address} for {who} ({'.'.join(path)}): {reason}",
                err=True,
            )
            sys.exit(EX_CONFIG)
        probe.close()


def load_or_exit(config_path: Path | None, secrets: bool = True) -> Config:
    """:func:`load`, or print every problem and exit 78 (EX_CONFIG)."""
    try:
        return load(config_path, secrets)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"invalid configuration: {len(exc.problems)} problem(s)", err=True)
        sys.exit(EX_CONFIG)
