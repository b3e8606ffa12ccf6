"""``logcap config``: the config reference and the files logcap ships (logcap/examples.py)."""

from __future__ import annotations

import click

from logcap.examples import BY_NAME, EXAMPLES, read


@click.group(name="config")
def config_group() -> None:
    """Describe the configuration; print the shipped configs, units, dashboard and alerts."""


@config_group.command()
def reference() -> None:
    """Print the config reference (docs/CONFIG.md): every key, type, default and limit."""
    from logcap.config.reference import render

    click.echo(render(), nl=False)


@config_group.command()
@click.argument("name", required=False, metavar="[NAME]", type=click.Choice(list(BY_NAME)))
def example(name: str | None) -> None:
    """Print the shipped file NAME as it is (redirect it where it goes); without NAME, list
    the names."""
    if name is not None:
        click.echo(read(name), nl=False)
        return
    width = max(len(e.name) for e in EXAMPLES)
    for e in EXAMPLES:
        click.echo(f"{e.name:<{width}}  {e.about}")
