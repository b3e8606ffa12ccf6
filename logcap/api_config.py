"""``/config``: the effective config as JSON, every secret replaced by "<redacted>" —
keys named like a secret, and every value that took its text from a set ``${VAR}``."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import yaml

if TYPE_CHECKING:
    from logcap.config import Config
    from logcap.supervisor import Supervisor

log = logging.getLogger(__name__)


REDACTED = "<redacted>"
_SECRET_KEY = re.compile(
    r"token|passw|secret|credential|authorization|cookie|api[-_]?key", re.IGNORECASE
)
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")  # as config/_load.py


# -- /config ---------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Config units (ByteSize, Duration) are int and float subclasses: plain numbers."""
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return str(value)


def _from_environment(text: str, env: Mapping[str, str]) -> set[tuple[Any, ...]]:
    """Paths of the values in config ``text`` that took text from a set environment
    variable (a ``${VAR:-default}`` that fell back to its default holds nothing secret)."""
    found: set[tuple[Any, ...]] = set()

    def walk(value: Any, path: tuple[Any, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))
        elif isinstance(value, str):
            names = (m.group(1) for m in _VARIABLE.finditer(value))
            if any(name is not None and env.get(name) for name in names):
                found.add(path)

    walk(yaml.safe_load(text), ())
    return found


def _scrub(value: Any, secret: bool = False) -> Any:
    """``value`` with what every secret-named key holds redacted (URLs cannot carry a
    password: their pattern refuses user info)."""
    if isinstance(value, dict):
        return {
            key: _scrub(item, secret or bool(_SECRET_KEY.search(str(key))))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item, secret) for item in value]
    if value is None:
        return None
    return REDACTED if secret else value


def redacted_config(config: Config, text: str, env: Mapping[str, str]) -> Any:
    """The effective ``config`` as JSON-able builtins without its secrets: values of keys
    named like a secret (``*token*``, ``*password*``, ``*secret*``, an Authorization
    header, …) and every value taken from the environment (``text`` is the
    config as written, to tell those apart)."""
    data = msgspec.to_builtins(config, enc_hook=_plain)
    for path in _from_environment(text, env):
        data = _redact_at(data, path)
    return _scrub(data)


def _redact_at(value: Any, path: tuple[Any, ...]) -> Any:
    """``value`` with what is at ``path`` (if anything) redacted."""
    if not path:
        return REDACTED
    key, rest = path[0], path[1:]
    if isinstance(value, list):
        present = isinstance(key, int) and 0 <= key < len(value)
    else:
        present = isinstance(value, dict) and key in value
    if present:
        value[key] = _redact_at(value[key], rest)
    return value


def _config_text(origin: str) -> str | None:
    """The text the running config was loaded from (``Supervisor.origin``)."""
    if origin.startswith("<embedded "):
        name = origin.removeprefix("<embedded ").removesuffix(">")
        return resources.files("logcap.configs").joinpath(name).read_text("utf-8")
    if origin.startswith("<"):
        return None
    try:
        return Path(origin).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s again for /config: %s", origin, exc)
        return None


def config_view(sup: Supervisor) -> tuple[int, Any]:
    """The answer to every GET /config of the run: the config is fixed for the run, so it
    is redacted once, at start, while its file still holds the text it was loaded from."""
    text = _config_text(sup.origin)
    unknown = (503, {"error": "the config's text is unknown: its secrets cannot be told"})
    if text is None:
        return unknown
    try:
        return 200, redacted_config(sup.config, text, os.environ)
    except yaml.YAMLError:  # the file was rewritten since: which values are secret is unknown
        return unknown
