"""What every ``logcap`` subcommand shares: the ``--config`` option and how a config is
loaded (a file, or the embedded default) and refused (exit 78, every problem listed)."""

from __future__ import annotations

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


def load(config_path: Path | None) -> Config:
    """The config at ``config_path``, or the embedded default when it is None."""
    if config_path is not None:
        return load_config(config_path)
    text = resources.files("logcap.configs").joinpath(DEFAULT_CONFIG).read_text("utf-8")
    # the embedded config's relative paths are relative to where logcap is started
    return parse_config(text, f"<embedded {DEFAULT_CONFIG}>", Path.cwd())


def load_or_exit(config_path: Path | None) -> Config:
    """:func:`load`, or print every problem and exit 78 (EX_CONFIG)."""
    try:
        return load(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"invalid configuration: {len(exc.problems)} problem(s)", err=True)
        sys.exit(EX_CONFIG)
