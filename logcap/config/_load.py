"""Load a config file: YAML → ``${VAR}`` interpolation → strict validation → absolute paths.

Validation is pure (no files or sockets are opened) and reports *every* problem it can
find, each as ``FILE:LINE: path.to.key: reason``. Components are validated one by one so
one bad sink does not hide a bad source.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import yaml

from logcap.capture.config import SourceConfig
from logcap.config._base import resolve_path
from logcap.config._rules import (
    check_http_bodies,
    check_inapplicable,
    check_listeners,
    check_pipelines,
    check_rings,
)
from logcap.config._schema import BufferConfig, Config
from logcap.config._units import dec_hook
from logcap.config._walk import check_struct, known_keys
from logcap.dispatch.bounds import DLQ_RECORD_OVERHEAD, ENTRY_OVERHEAD, largest_batch_bytes
from logcap.errors import ConfigError
from logcap.sinks.config import SinkConfig
from logcap.sinks.routing import check_inputs

PathKey = tuple[str | int, ...]
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?")


class _Document:
    """The parsed YAML plus the line of every key, for error messages."""

    def __init__(self, text: str, origin: str) -> None:
        self.origin = origin
        self.lines: dict[PathKey, int] = {}
        self.problems: list[str] = []
        self.failed: set[PathKey] = set()  # keys whose ${VAR} failed: one problem is enough
        self.interpolation_failures: set[PathKey] = set()
        self.cross_field = 0  # problems of valid values together: the config still converts
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data = yaml.safe_load(text) if node is not None else {}
        except yaml.YAMLError as exc:
            self.data = None
            self.problems.append(
                f"{origin}:{_yaml_error_line(exc, text)}: invalid YAML: {_yaml_error_reason(exc)}"
            )
            return
        if node is not None:
            self._index(node, ())

    def _index(self, node: yaml.Node, path: PathKey) -> None:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, value_node in node.value:
                key = key_node.value
                if key in seen:
                    self.problems.append(
                        f"{self.origin}:{key_node.start_mark.line + 1}: "
                        f"{_dotted((*path, key))}: duplicate key"
                    )
                seen.add(key)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                self._index(value_node, (*path, key))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._index(item, (*path, i))

    def line_of(self, path: PathKey) -> int:
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)

    def problem(self, path: PathKey, reason: str) -> None:
        if path in self.failed:
            return
        where = _dotted(path) or "(document)"
        line = f"{self.origin}:{self.line_of(path)}: {where}: {reason}"
        # one problem, one line: a key or value may hold a line break (escaped here)
        self.problems.append(line.replace("\r", "\\r").replace("\n", "\\n"))


def _yaml_error_line(exc: yaml.YAMLError, text: str) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(exc, "position", None)  # ReaderError: a character offset, no mark
    return text.count("\n", 0, position) + 1 if isinstance(position, int) else 1


def _yaml_error_reason(exc: yaml.YAMLError) -> str:
    # PyYAML's str() spans several lines and repeats the position; keep one line per problem
    if isinstance(exc, yaml.MarkedYAMLError):
        reason = ": ".join(part for part in (exc.context, exc.problem) if part)
    elif isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        reason = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    else:
        reason = str(exc)
    return " ".join(reason.split())


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _interpolate(
    doc: _Document, value: Any, path: PathKey, env: Mapping[str, str], unset: str | None
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(doc, v, (*path, k), env, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(doc, v, (*path, i), env, unset) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name is None:  # '${INGEST TOKEN}' would otherwise be used as it is written
            doc.problem(
                path,
                f"malformed variable {match.group(0)!r}: write ${{NAME}} or ${{NAME:-default}} "
                "(NAME: letters, digits, '_'), or $$ for a literal '$'",
            )
            doc.interpolation_failures.add(path)
            return match.group(0)
        if name in env and (env[name] != "" or default is None):
            return env[name]
        if default is not None:
            return default
        if unset is not None:
            return unset
        doc.problem(path, f"environment variable {name} is not set (use ${{{name}:-default}})")
        doc.interpolation_failures.add(path)
        return ""

    return _VAR.sub(substitute, value)


def _convert(value: Any, kind: Any) -> Any:
    # strict=False lets an interpolated string ("${N:-500}") set an int, float or bool field;
    # msgspec still rejects text that is not a valid number or true/false/1/0
    return msgspec.convert(value, kind, dec_hook=dec_hook, strict=False)


def _validate(doc: _Document, value: Any, kind: Any, path: PathKey) -> bool:
    """Report every problem of ``value`` as ``kind`` (config/_walk.py); True if none."""
    return check_struct(value, kind, path, doc.problem, _convert)


def _check_components(
    doc: _Document, data: dict[str, Any], section: str, kind: Any, base: Path, slot: int
) -> None:
    components = data.get(section)
    if components is None or components == {}:
        doc.problem((section,), f"at least one entry under '{section}' is required")
        return
    if not isinstance(components, dict):
        doc.problem((section,), "expected a mapping of names to components")
        return
    for name, body in components.items():
        if not isinstance(body, dict):
            doc.problem((section, name), "expected a mapping with a 'type' key")
        elif "type" not in body:
            doc.problem((section, name), "missing required key 'type'")
        elif body["type"] not in (tags := _tags(kind)):
            doc.problem(
                (section, name, "type"),
                f"{body['type']!r} is not one of {', '.join(tags)}",
            )
        elif _validate(doc, body, kind, (section, name)):
            _check_component(doc, (section, name), _convert(body, kind).with_base(base), body, slot)
        elif (known := known_keys(body, kind)) != body and check_struct(
            known, kind, (section, name), lambda _path, _reason: None, _convert
        ):  # only unknown keys were wrong: the rules across the others still run
            _check_component(
                doc, (section, name), _convert(known, kind).with_base(base), known, slot
            )


def _check_component(doc: _Document, at: PathKey, component: Any, body: Any, slot: int) -> None:
    """A valid component's own cross-field rules (its config's check()), and the keys it
    was given that cannot apply; paths are resolved already (TLS files are looked for),
    and this runs even when other sections have problems: all of one component at once."""
    before = len(doc.problems)
    problems = component.check(slot) if at[0] == "sources" else component.check()
    for path, problem in problems:
        doc.problem((*at, *path), problem)
    rules = getattr(component, "inapplicable", None)
    for key, why in (rules() if rules else {}).items():
        if key in body:
            doc.problem((*at, key), why)
    doc.cross_field += len(doc.problems) - before


def _collector_slot_bytes(data: dict[str, Any]) -> int:
    """The buffer's slot size for the sources' checks (the default if it is itself bad:
    that problem is reported with the buffer section)."""
    try:
        buffer = _convert(data.get("buffer") or {}, BufferConfig)
    except msgspec.ValidationError:
        buffer = BufferConfig()
    return int(buffer.collector_slot_bytes)


def _tags(kind: Any) -> list[str]:
    return [str(member.__struct_config__.tag) for member in typing.get_args(kind)]


def _check_limits(doc: _Document, config: Config) -> None:
    for ring in ("collector_slots", "batch_slots"):
        count = getattr(config.buffer, ring)
        if count & (count - 1):
            doc.problem(("buffer", ring), f"must be a power of two, got {count}")
    _check_batch_fits(doc, config)
    if config.retry.max_entries < config.dispatcher.batch_max_events:
        doc.problem(
            ("retry", "max_entries"),
            "is smaller than one batch (dispatcher.batch_max_events): nothing could wait",
        )
    if config.retry.initial_backoff > config.retry.max_backoff:
        doc.problem(("retry", "initial_backoff"), "is larger than max_backoff")
    if config.dlq.segment_bytes > config.dlq.max_bytes:
        doc.problem(("dlq", "segment_bytes"), "is larger than dlq.max_bytes")
    if config.supervisor.restart_backoff > config.supervisor.restart_backoff_max:
        doc.problem(("supervisor", "restart_backoff"), "is larger than restart_backoff_max")


def _check_batch_fits(doc: _Document, config: Config) -> None:
    """The retry heap and the DLQ must each hold the largest batch (dispatch/bounds.py),
    or a failed batch could neither wait nor be dead-lettered, and every sink would stop.
    (A batch larger than retry.spool_max_bytes is dead-lettered as overflow at once.)"""
    largest = largest_batch_bytes(config)
    why = (
        f"the largest batch is {largest} bytes (dispatcher.batch_max_bytes, or one entry "
        "alone: 6 x the longest max_line_bytes escaped, or an http source's "
        f"buffer.collector_slot_bytes, plus {ENTRY_OVERHEAD} bytes of labels and meta)"
    )
    if config.dlq.max_bytes < largest + DLQ_RECORD_OVERHEAD:
        doc.problem(
            ("dlq", "max_bytes"),
            f"{config.dlq.max_bytes} bytes cannot hold a dead-lettered batch: {why}, and its "
            f"record needs {DLQ_RECORD_OVERHEAD} more; raise it to at least "
            f"{largest + DLQ_RECORD_OVERHEAD}",
        )
    if config.retry.max_bytes < largest:
        doc.problem(
            ("retry", "max_bytes"),
            f"{config.retry.max_bytes} bytes cannot hold a batch waiting for a retry: {why}",
        )


def parse_config(
    text: str,
    origin: str = "<config>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    unset: str | None = None,
) -> Config:
    """Validate config ``text``; relative paths resolve against ``base_dir`` (default cwd).
    An unset ``${VAR}`` without a default is a problem, or reads as ``unset`` if given."""
    doc = _Document(text, origin)
    if doc.data is not None and not isinstance(doc.data, dict):
        doc.problem((), "the document must be a mapping")
    if doc.problems:
        raise ConfigError(doc.problems)
    data = _interpolate(doc, doc.data, (), os.environ if env is None else env, unset)
    doc.failed = set(doc.interpolation_failures)
    base = base_dir if base_dir is not None else Path.cwd()
    slot = _collector_slot_bytes(data)
    _check_components(doc, data, "sources", SourceConfig, base, slot)
    _check_components(doc, data, "sinks", SinkConfig, base, slot)
    names = set(data.get("sources") or {}) & set(data.get("sinks") or {})
    for name in sorted(names):
        doc.problem(("sinks", name), "a sink cannot have the same name as a source")
    for section in ("sources", "sinks"):
        for name in data.get(section) or {}:
            if not isinstance(name, str) or not re.fullmatch(
                r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name
            ):
                doc.problem(
                    (section, name), "names use letters, digits, '_', '-', '.' (at most 64)"
                )
    # every key on its own, so a bad `api` does not hide a bad `dispatcher`
    _validate(doc, {k: v for k, v in data.items() if k not in ("sources", "sinks")}, Config, ())
    if len(doc.problems) > doc.cross_field:  # only cross-field ones: the rest still converts
        raise ConfigError(doc.problems)
    config: Config = _convert(data, Config)
    # paths resolve first: the checks name the files that will be opened (TLS files)
    config = msgspec.structs.replace(
        config,
        data_dir=resolve_path(base, config.data_dir),
        sources={n: s.with_base(base) for n, s in config.sources.items()},
        sinks={n: s.with_base(base) for n, s in config.sinks.items()},
    )
    _check_limits(doc, config)
    for path, problem in config.api.check():
        doc.problem(("api", *path), problem)
    check_inapplicable(doc.problem, config, data)
    check_pipelines(doc.problem, config)
    check_listeners(doc.problem, config)
    check_rings(doc.problem, config)
    check_http_bodies(doc.problem, config)
    check_inputs(doc.problem, config)
    if doc.problems:
        raise ConfigError(doc.problems)
    return config


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    unset: str | None = None,
) -> Config:
    """Read and validate the config file at ``path`` (``unset``: see parse_config)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read config: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: config is not UTF-8: {exc}"]) from exc
    return parse_config(text, str(file), file.resolve().parent, env, unset)
