"""The config reference (docs/CONFIG.md), generated from the config structs.

:func:`render` walks :class:`logcap.config.Config` with :mod:`msgspec.inspect`: one section
per struct (each source and sink type included), one bullet per key with its type, limits,
default and description. What the structs cannot say (the syntax, an example of each
component type, the environment variables) comes from :mod:`logcap.config._reference_text`.
``logcap config reference`` prints the result; ``tests/test_config_reference.py`` fails
when docs/CONFIG.md differs from it (regenerate with
``logcap config reference > docs/CONFIG.md``).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect as mi

from logcap.config._reference_text import (
    ENVIRONMENT,
    EXAMPLES,
    FOOTER,
    INTRO,
    TEST_ENVIRONMENT,
)
from logcap.config._units import ByteSize, Duration

_DURATION_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0), ("ms", 1e-3))
_WIDTH = 92
_COMPONENTS = {"sources": "Sources below", "sinks": "Sinks below"}
_SIZE_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def code(text: str) -> str:
    """``text`` as inline Markdown code, whatever backticks it holds."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def human_duration(seconds: float) -> str:
    """``0.2`` → ``200ms``: the largest unit that gives a whole number."""
    for unit, size in _DURATION_UNITS:
        count = seconds / size
        if count >= 1 and abs(count - round(count)) < 1e-9:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def human_size(size: int) -> str:
    """``1048576`` → ``1MiB``: the largest binary unit that divides it."""
    for unit, step in _SIZE_UNITS:
        if size >= step and size % step == 0:
            return f"{size // step}{unit}"
    return f"{size}B"


def _unwrap(kind: mi.Type) -> tuple[mi.Type, str | None]:
    if isinstance(kind, mi.Metadata):
        extra = kind.extra_json_schema or {}
        return kind.type, extra.get("description")
    return kind, None


def _custom(cls: type) -> tuple[str, list[str]]:
    if issubclass(cls, Duration):
        limits = []
        if cls.minimum is not None:
            relation = ">" if cls.exclusive_minimum else "≥"
            limits.append(f"{relation} {human_duration(cls.minimum) if cls.minimum else '0'}")
        return "duration", limits
    if issubclass(cls, ByteSize):
        limits = [f"≥ {human_size(cls.minimum)}"] if cls.minimum is not None else []
        limits += [f"≤ {human_size(cls.maximum)}"] if cls.maximum is not None else []
        return "size", limits
    return cls.__name__, []


def _bounds(kind: Any, names: tuple[tuple[str, str], ...]) -> list[str]:
    return [
        f"{sign} {getattr(kind, name)}" for name, sign in names if getattr(kind, name) is not None
    ]


def _lengths(kind: Any, what: str) -> list[str]:
    out = []
    if kind.min_length == 1:
        out.append("not empty")
    elif kind.min_length is not None:
        out.append(f"at least {kind.min_length} {what}")
    if kind.max_length is not None:
        out.append(f"at most {kind.max_length} {what}")
    return out


def describe(kind: mi.Type) -> tuple[str, list[str]]:
    """A type as words (``list of string``) and its limits (``≥ 1``, ``matches …``)."""
    kind, _ = _unwrap(kind)
    if isinstance(kind, mi.StrType):
        limits = _lengths(kind, "characters")
        if kind.pattern is not None:
            limits.append(f"matches {code(kind.pattern)}")
        return "string", limits
    if isinstance(kind, mi.IntType | mi.FloatType):
        names = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
        return ("integer" if isinstance(kind, mi.IntType) else "number"), _bounds(kind, names)
    if isinstance(kind, mi.BoolType):
        return "boolean", []
    if isinstance(kind, mi.LiteralType):
        return "one of " + ", ".join(code(str(value)) for value in kind.values), []
    if isinstance(kind, mi.CustomType):
        return _custom(kind.cls)
    if isinstance(kind, mi.StructType):
        return "mapping", []
    if isinstance(kind, mi.ListType):
        item, limits = describe(kind.item_type)
        return f"list of {item}", [*_lengths(kind, "items"), *(f"each {x}" for x in limits)]
    if isinstance(kind, mi.DictType):
        key, key_limits = describe(kind.key_type)
        value, value_limits = describe(kind.value_type)
        limits = [f"keys {x}" for x in key_limits] + [f"values {x}" for x in value_limits]
        return f"mapping of {key} to {value}", limits
    if isinstance(kind, mi.UnionType):
        if all(isinstance(m, mi.StructType) and m.tag is not None for m in kind.types):
            tags = [str(m.tag) for m in kind.types if isinstance(m, mi.StructType)]
            *others, last = [code(tag) for tag in tags]
            return f"component whose `type` is {', '.join(others)} or {last}", []
        parts = [describe(member) for member in kind.types if not isinstance(member, mi.NoneType)]
        words = " or ".join(word for word, _ in parts)
        limits = [limit for _, part_limits in parts for limit in part_limits]
        nullable = any(isinstance(member, mi.NoneType) for member in kind.types)
        return (f"{words} or null" if nullable else words), limits
    return type(kind).__name__, []


def _plain(value: Any) -> Any:
    if isinstance(value, Duration):
        return human_duration(value)
    if isinstance(value, ByteSize):
        return human_size(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def default_text(field: mi.Field) -> str | None:
    """The field's default as it would be written in YAML; None when it is required."""
    if field.required:
        return None
    value = field.default_factory() if field.default is msgspec.NODEFAULT else field.default
    if isinstance(value, msgspec.Struct):
        return "`{}`"
    value = _plain(value)
    if isinstance(value, str) and value and value[0] not in "[{*&!|>'\"%@`#" and ": " not in value:
        return code(value)
    return code(json.dumps(value, ensure_ascii=False))


def _struct_of(kind: mi.Type) -> tuple[mi.StructType | None, str]:
    """The struct a field holds (directly, in a list, or nullable) and the path suffix."""
    kind, _ = _unwrap(kind)
    if isinstance(kind, mi.UnionType):
        structs = [m for m in kind.types if isinstance(_unwrap(m)[0], mi.StructType)]
        if len(structs) == 1:
            return _struct_of(structs[0])
    if isinstance(kind, mi.ListType):
        inner, suffix = _struct_of(kind.item_type)
        return inner, "[]" + suffix
    if isinstance(kind, mi.DictType):
        inner, suffix = _struct_of(kind.value_type)
        return inner, ".<name>" + suffix
    if isinstance(kind, mi.StructType) and kind.tag is None:
        return kind, ""
    return None, ""


def _doc_of(cls: type) -> str:
    """The first paragraph of ``cls``'s docstring, wrapped."""
    text = (cls.__doc__ or "").strip()
    return _wrap(" ".join(text.split("\n\n", 1)[0].split()))


def _child_path(path: str, field: mi.Field, suffix: str) -> str:
    return f"{path}.{field.encode_name}{suffix}" if path else field.encode_name + suffix


def _keys(struct: mi.StructType, path: str) -> Iterator[str]:
    """One bullet per key: name (type; limits; default): description, wrapped."""
    for field in struct.fields:
        kind, description = _unwrap(field.type)
        words, limits = describe(kind)
        inner, suffix = _struct_of(kind)
        if inner is not None:
            words += f", see {code(_child_path(path, field, suffix))}"
        elif field.name in _COMPONENTS and not path:
            words += f", see {_COMPONENTS[field.name]}"
        default = default_text(field)
        facts = [words, *limits, "required" if default is None else f"default {default}"]
        text = f"- **`{field.encode_name}`** ({'; '.join(facts)}): {description or 'UNDOCUMENTED'}"
        yield _wrap(text, "  ")


def _wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(
        text, _WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _sections(struct: mi.StructType, path: str, level: int, note: str = "") -> Iterator[str]:
    """``struct``'s keys, then a section for each struct it holds."""
    yield from _keys(struct, path)
    for field in struct.fields:
        inner, suffix = _struct_of(field.type)
        if inner is None:
            yield from _tagged_items(field, path, level)
            continue
        inner_path = _child_path(path, field, suffix)
        yield ""
        yield f"{'#' * level} `{inner_path}`{note}"
        yield ""
        yield _doc_of(inner.cls)
        yield ""
        yield from _sections(inner, inner_path, min(level + 1, 6), note)


def _tagged_items(field: mi.Field, path: str, level: int) -> Iterator[str]:
    """A section per kind of a list of tagged structs (a pipeline's steps)."""
    kind, _ = _unwrap(field.type)
    if not isinstance(kind, mi.ListType):
        return
    union, _ = _unwrap(kind.item_type)
    if not isinstance(union, mi.UnionType):
        return
    for member in union.types:
        if not isinstance(member, mi.StructType) or member.tag is None:
            continue
        inner_path = _child_path(path, field, "[]")
        yield ""
        yield f"{'#' * level} `{inner_path}` (`type: {member.tag}`)"
        yield ""
        yield _doc_of(member.cls)
        yield ""
        yield from _sections(member, inner_path, min(level + 1, 6), f" (`type: {member.tag}`)")


def _components(field: mi.Field, title: str) -> Iterator[str]:
    kind, description = _unwrap(field.type)
    assert isinstance(kind, mi.DictType)
    union, _ = _unwrap(kind.value_type)
    members = union.types if isinstance(union, mi.UnionType) else (union,)
    yield f"## {title}: `{field.name}.<name>`"
    yield ""
    yield _wrap(f"{description} The name is the key; `type` chooses one of the kinds below.")
    for member in members:
        assert isinstance(member, mi.StructType)
        path = f"{field.name}.<name>"
        yield ""
        yield f"### `type: {member.tag}`"
        yield ""
        yield _doc_of(member.cls)
        yield ""
        yield "```yaml"
        yield EXAMPLES[(field.name, str(member.tag))].rstrip("\n")
        yield "```"
        yield ""
        yield from _sections(member, path, 4, f" (`type: {member.tag}`)")


def _variables(table: tuple[tuple[str, str, str], ...]) -> list[str]:
    return [
        _wrap(f"- **{code(name)}** ({where}): {meaning}", "  ") for name, where, meaning in table
    ]


def render() -> str:
    """The whole reference as Markdown (the text of docs/CONFIG.md)."""
    from logcap.config._schema import Config

    config = mi.type_info(Config)
    assert isinstance(config, mi.StructType)
    lines = [INTRO.rstrip("\n"), "", "## Top level", "", _doc_of(Config), ""]
    lines += _keys(config, "")
    for field in config.fields:
        inner, suffix = _struct_of(field.type)
        if inner is not None:
            lines += ["", f"## `{field.name}{suffix}`", "", _doc_of(inner.cls), ""]
            lines += _sections(inner, field.name + suffix, 3)
    for field in config.fields:
        if field.name in ("sources", "sinks"):
            lines += ["", *_components(field, field.name.capitalize())]
    lines += ["", "## Environment variables", "", *_variables(ENVIRONMENT), ""]
    lines += [FOOTER.rstrip("\n"), "", "### Read by the tests and benchmarks only", ""]
    lines += [*_variables(TEST_ENVIRONMENT), ""]
    return "\n".join(lines)
