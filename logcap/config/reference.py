"""The config reference (docs/CONFIG.md), generated from the config structs."""

from __future__ import annotations


def render() -> str:
    """The reference as Markdown."""
    return "# logcap configuration reference\n"
