"""Input encodings: lines are found in the file's own encoding (code-unit aligned for
UTF-16/32, where a 0x0A byte can sit inside another character), decoded with invalid
bytes replaced, a byte-order mark dropped, and binary garbage never stops anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logcap.capture.file.encoding import line_codec
from logcap.config import parse_config
from logcap.errors import ConfigError
from tests.conftest import free_port, wait_for, write_config

# U+0A00 encodes as 00 0A in UTF-16-LE and 0A 00 in UTF-16-BE: a raw newline byte search
# would cut these lines in the middle of a character.
TRICKY = ["plain ascii", "gurmukhi \u0a00\u0a0a inside", "emoji \U0001f600 and é", ""]


@pytest.mark.parametrize("name", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_newlines_are_found_only_on_code_unit_boundaries(name: str) -> None:
    codec = line_codec(name)
    whole = "".join(line + "\n" for line in TRICKY).encode(name)
    data = whole + "partial".encode(name)
    assert codec.rfind(data) == len(whole)
    first = codec.find(data)
    assert data[:first].decode(name) == TRICKY[0]


def test_ascii_compatible_encodings_cut_at_the_plain_newline() -> None:
    for name in ("utf-8", "latin-1", "cp1252", "shift_jis", "gb18030"):
        codec = line_codec(name)
        data = "日本 line\nnext\nrest".encode(name, "replace")
        assert data[: codec.rfind(data)].decode(name).endswith("next\n"), name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("utf-16", "byte order"),
        ("utf-32", "byte order"),
        ("rot13", "not a text"),
        ("klingon", "unknown"),
    ],
)
def test_unusable_encodings_are_refused_by_validation(name: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"""
sources:
  app: {{type: file, include: [x], encoding: {name}}}
sinks: {{out: {{type: blackhole}}}}
""",
            "c.yaml",
        )
    assert "sources.app.encoding" in str(info.value) and why in str(info.value)


def _run(
    tmp_path: Path, start_agent, files: dict[str, bytes], encoding: str, expected: int
) -> list[dict]:
    address = f"127.0.0.1:{free_port()}"
    (tmp_path / "logs").mkdir()
    for name, data in files.items():
        (tmp_path / "logs" / name).write_bytes(data)
    config = write_config(
        tmp_path,
        f"""
data_dir: ./data
sources:
  app: {{type: file, include: ["./logs/*.log"], encoding: {encoding}}}
sinks:
  out: {{type: file, path: "./out/all.ndjson"}}
dispatcher: {{batch_timeout: 50ms}}
""",
        address,
    )
    agent = start_agent(config, address)
    agent.wait_ready()
    wait_for(
        lambda: agent.metric("logcap_component_sent_events_total", component="out") >= expected,
        30,
        f"{expected} entries",
    )
    assert agent.stop() == 0
    with (tmp_path / "out" / "all.ndjson").open("rb") as out:
        return [json.loads(line) for line in out]


def test_utf16_file_with_a_bom_arrives_as_the_same_text(tmp_path: Path, start_agent) -> None:
    data = "\ufeff".encode("utf-16-le") + "".join(f"{t}\n" for t in TRICKY).encode("utf-16-le")
    entries = _run(tmp_path, start_agent, {"a.log": data}, "utf-16-le", len(TRICKY))
    assert [e["message"] for e in entries] == TRICKY


def test_latin1_file_is_decoded_as_latin1(tmp_path: Path, start_agent) -> None:
    lines = ["café crème", "naïve façade", "¡olé!"]
    data = "".join(f"{t}\n" for t in lines).encode("latin-1")
    entries = _run(tmp_path, start_agent, {"a.log": data}, "latin-1", len(lines))
    assert [e["message"] for e in entries] == lines


def test_binary_and_invalid_utf8_are_replaced_and_nothing_stops(
    tmp_path: Path, start_agent
) -> None:
    garbage = bytes(range(256)).replace(b"\n", b"") + b"\n" + b"\xff\xfe\xfd broken\n"
    data = b"before\n" + garbage + b"\x00\x01 nul and controls\n\n" + b"after\n"
    entries = _run(tmp_path, start_agent, {"a.log": data}, "utf-8", 6)
    messages = [e["message"] for e in entries]
    assert messages[0] == "before" and messages[-1] == "after" and messages[-2] == ""
    assert "\ufffd" in messages[1] and messages[2] == "\ufffd\ufffd\ufffd broken"
    assert messages[3] == "\x00\x01 nul and controls"


def test_newlines_are_counted_at_aligned_offsets_only() -> None:
    from logcap.capture.file.encoding import line_codec

    wide = "a\nb\n\u0a00\n".encode("utf-16-le")  # U+0A00 is 00 0A: a 0x0A byte, no newline
    assert line_codec("utf-16-le").count(wide, len(wide)) == 3
    assert line_codec("utf-16-le").count(wide, 4) == 1
    assert line_codec("utf-8").count(b"a\nb\nc", 5) == 2
