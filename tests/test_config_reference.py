"""The operator's reference: docs/CONFIG.md (generated from the config structs, printed by
``logcap config reference``) and docs/INGEST.md (the HTTP ingest payload).

Each test fails when a document no longer says what the code does: a struct changed and
CONFIG.md was not regenerated, an example no longer validates, an environment variable
or an HTTP status is not documented, a limit of the ingest collector changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec.inspect as mi
import pytest
from click.testing import CliRunner

from logcap.capture._record import HEADER_SIZE
from logcap.capture.http import acks, collector
from logcap.capture.http.config import HttpSourceConfig
from logcap.cli import main
from logcap.config import BufferConfig, Config, parse_config
from logcap.config._reference_text import ENVIRONMENT, EXAMPLES, TEST_ENVIRONMENT
from logcap.config.reference import human_duration, human_size, render
from logcap.errors import BadRequest, TooLarge

ROOT = Path(__file__).resolve().parent.parent
CONFIG_MD = ROOT / "docs" / "CONFIG.md"
INGEST_MD = ROOT / "docs" / "INGEST.md"
REGENERATE = "python3 -m logcap config reference > docs/CONFIG.md"
PACKAGES = ("logcap", "capture", "dispatch", "sinks", "ringbuf", "retry", "dlq", "metrics")
_PY_ENV = re.compile(r"""(?:environ\.get|getenv|environ)\s*[(\[]\s*["']([A-Z][A-Z0-9_]*)["']""")
_SHELL_ENV = re.compile(r"\$\{(LOGCAP_[A-Z0-9_]+)")


def _structs(kind: mi.Type, path: str) -> list[tuple[str, mi.StructType]]:
    """Every struct reachable from ``kind`` with a dotted path, components included."""
    kind = kind.type if isinstance(kind, mi.Metadata) else kind
    if isinstance(kind, mi.StructType):
        found = [(path, kind)]
        for field in kind.fields:
            found += _structs(field.type, f"{path}.{field.name}")
        return found
    if isinstance(kind, mi.UnionType):
        return [s for member in kind.types for s in _structs(member, path)]
    if isinstance(kind, mi.ListType):
        return _structs(kind.item_type, path + "[]")
    if isinstance(kind, mi.DictType):
        return _structs(kind.value_type, path + ".<name>")
    return []


def _component_types(section: str) -> list[str]:
    field = next(f for f in mi.type_info(Config).fields if f.name == section)
    assert isinstance(field.type, mi.Metadata) and isinstance(field.type.type, mi.DictType)
    union = field.type.type.value_type
    assert isinstance(union, mi.UnionType)
    return [str(member.tag) for member in union.types if isinstance(member, mi.StructType)]


def test_config_md_is_generated_from_the_current_structs() -> None:
    assert CONFIG_MD.read_text(encoding="utf-8") == render(), (
        f"docs/CONFIG.md is stale: regenerate it with `{REGENERATE}`"
    )


def test_logcap_config_reference_prints_the_reference() -> None:
    result = CliRunner().invoke(main, ["config", "reference"])
    assert result.exit_code == 0, result.output
    assert result.output == render()
    assert result.output.startswith("# logcap configuration reference\n")


def test_every_key_of_every_struct_has_a_documented_entry() -> None:
    text = render()
    assert "UNDOCUMENTED" not in text
    for path, struct in _structs(mi.type_info(Config), ""):
        for field in struct.fields:
            assert f"- **`{field.encode_name}`** (" in text, (
                f"{path}.{field.name} is not in the reference"
            )


@pytest.mark.parametrize("section", ["sources", "sinks"])
def test_every_component_type_has_a_section_and_an_example(section: str) -> None:
    text = render()
    for tag in _component_types(section):
        assert f"### `type: {tag}`" in text
        assert (section, tag) in EXAMPLES, f"no example for {section} type {tag}"
    assert {key for key in EXAMPLES if key[0] == section} == {
        (section, tag) for tag in _component_types(section)
    }


@pytest.mark.parametrize(("section", "tag"), sorted(EXAMPLES))
def test_each_example_is_a_valid_config(section: str, tag: str, tmp_path: Path) -> None:
    text = EXAMPLES[(section, tag)]
    # a config needs both a source and a sink
    if section == "sources":
        text += "sinks:\n  devnull:\n    type: blackhole\n"
    else:
        text += "sources:\n  app:\n    type: file\n    include: [./logs/*.log]\n"
    env = {"INGEST_TOKEN": "s3cret", "COLLECTOR_TOKEN": "s3cret"}
    config = parse_config(text, f"<example {section} {tag}>", tmp_path, env)
    components = config.sources if section == "sources" else config.sinks
    assert [c.__struct_config__.tag for c in components.values()] == [tag]


def test_units_are_written_as_an_operator_would_write_them() -> None:
    assert [human_duration(s) for s in (0.2, 0.25, 1.0, 60.0, 300.0, 3600.0, 604800.0)] == [
        "200ms",
        "250ms",
        "1s",
        "1m",
        "5m",
        "1h",
        "7d",
    ]
    assert [human_size(n) for n in (64, 65536, 10 * 2**20, 2**30, 1000)] == [
        "64B",
        "64KiB",
        "10MiB",
        "1GiB",
        "1000B",
    ]


def _variables_read() -> set[str]:
    """Environment variables read by the code, the embedded config, tests, bench, scripts."""
    names: set[str] = set()
    for folder in (*PACKAGES, "tests", "bench"):
        for file in (ROOT / folder).rglob("*.py"):
            found = set(_PY_ENV.findall(file.read_text(encoding="utf-8")))
            # the tests also read the environment they run in (PATH, ...): only logcap's own
            names |= found if folder in PACKAGES else {n for n in found if n.startswith("LOGCAP_")}
    for file in [*(ROOT / "scripts").glob("*.sh"), ROOT / "configs" / "default.yaml"]:
        names |= set(_SHELL_ENV.findall(file.read_text(encoding="utf-8")))
    return names


def test_every_environment_variable_logcap_reads_is_documented() -> None:
    documented = {name for name, _, _ in ENVIRONMENT + TEST_ENVIRONMENT}
    read = _variables_read()
    assert {"LOGCAP_LOG_LEVEL", "LOGCAP_INPUT", "LOGCAP_API_ADDRESS"} <= read
    assert read - documented == set(), "add them to logcap/config/_reference_text.py"
    assert sorted(documented - read - {"${NAME}"}) == [], "documented but read nowhere"


def test_ingest_doc_lists_every_status_the_collector_answers() -> None:
    source = Path(collector.__file__).read_text(encoding="utf-8")
    statuses = {int(code) for code in re.findall(r"_reply\(\s*(\d{3})", source)}
    statuses |= {BadRequest.status, TooLarge.status, 501}  # 501: http.server, other methods
    assert {200, 400, 401, 413, 429, 503} <= statuses
    text = INGEST_MD.read_text(encoding="utf-8")
    for status in statuses:
        assert f"\n| {status} |" in text, f"HTTP {status} is not in docs/INGEST.md"


def test_ingest_doc_states_the_collector_limits() -> None:
    text = INGEST_MD.read_text(encoding="utf-8")
    for phrase in (
        f"`POST {collector.PATH}`",
        f"at most {collector.MAX_LABELS} |",
        f"at most {collector.MAX_LABEL_NAME_BYTES} bytes",
        f"at most {collector.MAX_LABELS_BYTES // 1024} KiB",
        f"(default {human_size(HttpSourceConfig().max_body_bytes)};",
        f"(default {human_size(BufferConfig().collector_slot_bytes)}) less a {HEADER_SIZE}-byte",
        f"within {acks.ACK_TIMEOUT:g} s",
        f"up to {acks.SETTLE_TIMEOUT:g} s",
    ):
        assert phrase in text, f"docs/INGEST.md should say {phrase!r}"


def test_ingest_doc_lists_every_entry_field() -> None:
    text = INGEST_MD.read_text(encoding="utf-8")
    for field in mi.type_info(collector.IncomingEntry).fields:
        assert f"\n| `{field.name}` |" in text, f"entry field {field.name} is not documented"
