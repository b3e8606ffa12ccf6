"""A Kafka message → one entry: (labels, event time ns, message, level, fields JSON).

``logcap``: the value is an entry a logcap kafka sink produced (dispatch/encode.py); its
timestamp, labels (its ``host`` included), level, fields and message are kept, its
source becomes the label ``origin_source``. ``json``: an object, which becomes the
entry's fields (a string ``message`` member is also the message). ``text``: the value
is the message. A value that does not decode as asked is taken as text (counted by the
caller), so nothing is dropped. The event time is the entry's own (logcap), else the
message's timestamp, else when it was read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import msgspec

from logcap.capture.docker.stream import parse_rfc3339

KafkaEntry = tuple[dict[str, str], int, str, str | None, bytes | None]


class LogcapValue(msgspec.Struct, gc=False):
    """What a logcap kafka sink writes as a message value."""

    message: str
    timestamp: str = ""
    source: str = ""
    labels: msgspec.Raw = msgspec.Raw()  # decoded once per distinct value (Decoder)
    level: str | None = None
    fields: msgspec.Raw = msgspec.Raw()  # (Raw | None is not a union msgspec takes)


_logcap = msgspec.json.Decoder(LogcapValue).decode
_labels = msgspec.json.Decoder(dict[str, str]).decode
LABELS_REMEMBERED = 4096  # distinct label sets kept decoded (one agent's are few)
_object = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
_string = msgspec.json.Decoder(str).decode


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


class Decoder:
    """Turns messages of one source into entries; ``failed`` counts values that did not
    decode as ``decoding`` says (taken as text)."""

    def __init__(self, decoding: str, labels_from: list[str], header_labels: list[str]) -> None:
        self.failed = 0
        self.labels_from = frozenset(labels_from)
        self.header_labels = frozenset(header_labels)
        self._decode: Callable[[bytes, dict[str, str], int], KafkaEntry] = {
            "logcap": self._as_logcap,
            "json": self._as_json,
            "text": self._as_text,
        }[decoding]
        # labels are shared by every message of a partition when they name no offset,
        # key or header: the dispatcher then sees one run, not one per message
        self._per_message = bool(self.header_labels) or bool(self.labels_from & {"offset", "key"})
        self._shared: dict[tuple[str, int], dict[str, str]] = {}
        # (labels JSON, the message's own labels) -> the merged mapping, one object per
        # distinct set: decoded once, and runs of equal labels found by identity
        self._merged: dict[tuple[bytes, int], dict[str, str]] = {}
        self._seconds: dict[str, int] = {}

    def entries(self, messages: list[Any], read_ns: int) -> list[KafkaEntry]:
        """The entries of a partition's (error-free) messages, in order; logcap entries
        with labels shared per partition take one loop with no call per message but
        the decode (what an aggregator spends most of its time on)."""
        if self._decode != self._as_logcap or self._per_message or not messages:
            return [self.entry(message, read_ns) for message in messages]
        base = self._labels(messages[0])
        merged, seconds = self._merged, self._seconds
        out: list[KafkaEntry] = []
        for message in messages:
            value = message.value() or b""
            try:
                entry = _logcap(value)
            except msgspec.DecodeError:
                out.append(self.entry(message, read_ns))
                continue
            raw = bytes(entry.labels)
            own = merged.get((raw + entry.source.encode(), id(base)))
            text = entry.timestamp
            if (
                own is None
                or len(text) != 30
                or text[:19] not in seconds
                or text[19] != "."
                or text[29] != "Z"
                or not text[20:29].isdecimal()
            ):
                out.append(self.entry(message, read_ns))  # first sight: the long way
                continue
            fields = bytes(entry.fields) or None
            if fields is not None and not fields.startswith(b"{"):
                fields = None
            stamp = seconds[text[:19]] * 1_000_000_000 + int(text[20:29])
            out.append((own, stamp, entry.message, entry.level, fields))
        return out

    def entry(self, message: Any, read_ns: int) -> KafkaEntry:
        """The entry of one (error-free) message."""
        value = message.value() or b""
        kind, stamp = message.timestamp()
        stamp = stamp * 1_000_000 if kind and stamp > 0 else read_ns
        return self._decode(value, self._labels(message), stamp)

    def _labels(self, message: Any) -> dict[str, str]:
        topic, partition = message.topic(), message.partition()
        if not self._per_message:
            shared = self._shared.get((topic, partition))
            if shared is None:
                shared = self._shared[(topic, partition)] = self._base(topic, partition)
            return shared
        labels = self._base(topic, partition)
        if "offset" in self.labels_from:
            labels["offset"] = str(message.offset())
        if "key" in self.labels_from and (key := message.key()) is not None:
            labels["key"] = _text(key)
        if self.header_labels:
            for name, value in message.headers() or ():
                if name in self.header_labels and value is not None:
                    labels[name] = _text(value)
        return labels

    def _base(self, topic: str, partition: int) -> dict[str, str]:
        labels = {}
        if "topic" in self.labels_from:
            labels["topic"] = topic
        if "partition" in self.labels_from:
            labels["partition"] = str(partition)
        return labels

    def _as_text(self, value: bytes, labels: dict[str, str], stamp: int) -> KafkaEntry:
        return labels, stamp, _text(value), None, None

    def _as_json(self, value: bytes, labels: dict[str, str], stamp: int) -> KafkaEntry:
        try:
            members = _object(value)
        except msgspec.DecodeError:
            self.failed += 1
            return self._as_text(value, labels, stamp)
        message = ""
        raw = members.get("message")
        if raw is not None:
            with contextlib.suppress(msgspec.DecodeError):  # else only in the fields
                message = _string(raw)
        return labels, stamp, message, None, bytes(value).strip()

    def _as_logcap(self, value: bytes, labels: dict[str, str], stamp: int) -> KafkaEntry:
        try:
            entry = _logcap(value)
        except msgspec.DecodeError:
            self.failed += 1
            return self._as_text(value, labels, stamp)
        raw = bytes(entry.labels)
        key = (raw + entry.source.encode(), id(labels))
        own = self._merged.get(key)
        if own is None:
            try:
                own = {**(_labels(raw) if raw else {}), **labels}
            except msgspec.DecodeError:
                self.failed += 1
                return self._as_text(value, labels, stamp)
            if entry.source:
                own["origin_source"] = entry.source
            if len(self._merged) >= LABELS_REMEMBERED:
                self._merged.clear()
            self._merged[key] = own
        if entry.timestamp:
            stamp = self._stamp(entry.timestamp) or stamp
        fields = bytes(entry.fields) or None
        if fields is not None and not fields.startswith(b"{"):
            fields = None  # null, or not an object: an entry's fields are an object
        return own, stamp, entry.message, entry.level, fields

    def _stamp(self, text: str) -> int:
        """Nanoseconds of an entry's ``YYYY-MM-DDTHH:MM:SS.fffffffffZ`` (what logcap
        writes; the seconds looked up once per second), else of any RFC 3339 UTC time."""
        if len(text) == 30 and text[19] == "." and text[29] == "Z" and text[20:29].isdecimal():
            seconds = self._seconds.get(text[:19])
            if seconds is None:
                if len(self._seconds) > 4096:
                    self._seconds.clear()
                seconds = self._seconds[text[:19]] = parse_rfc3339(text[:19] + "Z") // 10**9
            return seconds * 1_000_000_000 + int(text[20:29])
        return parse_rfc3339(text)
