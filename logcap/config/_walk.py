"""Validate a config mapping key by key, so every problem of a component is reported.

msgspec stops at the first bad value of a struct; an operator fixing a config one error
per ``logcap validate`` run would need as many runs as there are mistakes. Here each key
of a mapping is converted on its own against its field's type (recursing into nested
structs), unknown and missing keys are each reported, and only when every key is valid
is the whole struct converted (which runs its ``__post_init__``). Enum errors name the
values that would have been accepted.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

import msgspec

PathKey = tuple[str | int, ...]
Report = Callable[[PathKey, str], None]
Convert = Callable[[Any, Any], Any]
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")
_UNKNOWN_FIELD = re.compile(r"unknown field `(.+)`")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_BAD_ENUM = re.compile(r"^Invalid enum value (.+)$")


def _strip(kind: Any) -> Any:
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    return kind


def _members(kind: Any) -> list[Any]:
    """The alternatives of a union (``X | None``), or ``[kind]``."""
    kind = _strip(kind)
    if typing.get_origin(kind) in (Union, types.UnionType):
        return [_strip(k) for k in typing.get_args(kind)]
    return [kind]


def _struct_of(kind: Any, value: Any) -> type[msgspec.Struct] | None:
    """The struct class a mapping ``value`` is meant as, if ``kind`` names one."""
    structs = [k for k in _members(kind) if isinstance(k, type) and issubclass(k, msgspec.Struct)]
    if not isinstance(value, dict) or not structs:
        return None
    if len(structs) == 1 and structs[0].__struct_config__.tag is None:
        return structs[0]
    tagged = {s.__struct_config__.tag: s for s in structs}
    found = tagged.get(value.get("type"))
    return found


def _list_of(kind: Any, value: Any) -> Any:
    """The item type when ``kind`` is ``list[X]`` of structs and ``value`` a list."""
    kind = _strip(kind)
    if not isinstance(value, list) or typing.get_origin(kind) is not list:
        return None
    (item,) = typing.get_args(kind)
    has_struct = any(isinstance(k, type) and issubclass(k, msgspec.Struct) for k in _members(item))
    return item if has_struct else None


def _tags_of(kind: Any) -> tuple[str, list[str]] | None:
    """(tag field, tags) when ``kind`` is a union of tagged structs."""
    structs = [k for k in _members(kind) if isinstance(k, type) and issubclass(k, msgspec.Struct)]
    tagged = [s for s in structs if s.__struct_config__.tag is not None]
    if len(tagged) < 2:
        return None
    return str(tagged[0].__struct_config__.tag_field), [
        str(s.__struct_config__.tag) for s in tagged
    ]


def _pattern_description(kind: Any, is_field: bool) -> str | None:
    """The description of a named pattern type (``Token``, ``HeaderValue``) in ``kind``.
    A field's own ``doc()`` (the last metadata of its outermost ``Annotated``) says what
    the key is for, not what its text must look like, so it is skipped."""
    stack = [kind]
    while stack:
        current = stack.pop()
        if typing.get_origin(current) is typing.Annotated:
            inner, *metas = typing.get_args(current)
            if is_field and current is kind:
                metas = metas[:-1]
            for meta in metas:
                if isinstance(meta, msgspec.Meta) and meta.pattern and meta.description:
                    return meta.description
            stack.append(inner)
        elif typing.get_origin(current) in (Union, types.UnionType):
            stack.extend(typing.get_args(current))
    return None


def _mapping_of(kind: Any, value: Any) -> tuple[Any, Any] | None:
    """(key type, value type) when ``kind`` is a plain ``dict[K, V]`` and value a mapping."""
    kind = _strip(kind)
    if isinstance(value, dict) and typing.get_origin(kind) is dict:
        key_kind, item_kind = typing.get_args(kind)
        return key_kind, item_kind
    return None


def _enum_values(kind: Any) -> list[str]:
    values: list[str] = []
    for member in _members(kind):
        if typing.get_origin(member) is Literal:
            values.extend(str(v) for v in typing.get_args(member))
    return values


def convert_reporting(
    value: Any, kind: Any, path: PathKey, report: Report, convert: Convert, is_field: bool = False
) -> Any:
    """``convert(value, kind)``, or None after reporting why not (with the key's path)."""
    try:
        return convert(value, kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        where = _MSGSPEC_PATH.search(message)
        sub: PathKey = ()
        if where:
            message = message[: where.start()]
            sub = tuple(
                int(index) if index else key for key, index in _PATH_PART.findall(where.group(1))
            )
        unknown = _UNKNOWN_FIELD.search(message)
        bad_enum = _BAD_ENUM.match(message)
        if unknown:  # point at the offending key's own line, not its parent's
            sub = (*sub, unknown.group(1))
            message = f"unknown key '{unknown.group(1)}'"
        elif bad_enum and not sub and _enum_values(kind):
            message = f"{bad_enum.group(1)} is not one of {', '.join(_enum_values(kind))}"
        elif message.startswith("Expected `str`") and not sub:
            described = _pattern_description(kind, is_field)
            if described:  # msgspec never echoes the value: it may be a secret (a token)
                message = f"{message} ({described[0].lower()}{described[1:]})"
        report((*path, *sub), message)
        return None


def check_struct(
    value: Any, kind: Any, path: PathKey, report: Report, convert: Convert, is_field: bool = False
) -> bool:
    """Report every problem of ``value`` as ``kind``; True if there was none."""
    struct = _struct_of(kind, value)
    mapping = _mapping_of(kind, value)
    if mapping is not None:  # each entry on its own, at its own key
        key_kind, item_kind = mapping
        ok = True
        for key, item in value.items():
            if convert_reporting(
                key, key_kind, (*path, key), report, convert
            ) is None or not check_struct(item, item_kind, (*path, key), report, convert):
                ok = False
        return ok
    item_kind = _list_of(kind, value)
    if item_kind is not None:  # each item on its own, at its own index
        results = [
            check_struct(item, item_kind, (*path, i), report, convert)
            for i, item in enumerate(value)
        ]
        return all(results) and convert_reporting(value, kind, path, report, convert) is not None
    if struct is None:
        tags = _tags_of(kind)
        if isinstance(value, dict) and tags:  # a tagged union: say which tags there are
            tag_key, names = tags
            if tag_key not in value:
                report(path, f"missing required key '{tag_key}' (one of {', '.join(names)})")
            else:
                report((*path, tag_key), f"{value[tag_key]!r} is not one of {', '.join(names)}")
            return False
        return convert_reporting(value, kind, path, report, convert, is_field) is not None or (
            _accepts_none(value, kind, convert)
        )
    tag_field = struct.__struct_config__.tag_field
    fields = {f.encode_name: f for f in msgspec.structs.fields(struct)}
    ok = True
    for key, item in value.items():
        if key == tag_field:
            continue
        field = fields.get(key)
        if field is None:
            report((*path, key), f"unknown key '{key}'")
            ok = False
        elif not check_struct(item, field.type, (*path, key), report, convert, is_field=True):
            ok = False
    for name, field in fields.items():
        required = field.default is msgspec.NODEFAULT and field.default_factory is msgspec.NODEFAULT
        if required and name not in value:
            report(path, f"Object missing required field `{name}`")
            ok = False
    if ok:  # every key is fine alone: what is left are rules across keys (__post_init__)
        ok = convert_reporting(value, kind, path, report, convert) is not None
    return ok


def known_keys(value: Any, kind: Any) -> Any:
    """``value`` without the keys the struct it is meant as has no field for (``value``
    itself if it is not a mapping for a struct): what is left can still be checked."""
    struct = _struct_of(kind, value)
    if struct is None:
        return value
    names = {f.encode_name for f in msgspec.structs.fields(struct)}
    names.add(str(struct.__struct_config__.tag_field))
    return {key: item for key, item in value.items() if key in names}


def _accepts_none(value: Any, kind: Any, convert: Convert) -> bool:
    if value is not None:
        return False
    try:
        convert(None, kind)
    except msgspec.ValidationError:
        return False
    return True
