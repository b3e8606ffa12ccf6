"""The README's example config is a config `logcap validate` accepts (it shows every
component type and the processing keys; a renamed or removed key must show up here)."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from logcap.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_example_config_validates(tmp_path: Path) -> None:
    match = re.search(r"```yaml\n(data_dir: \./data.*?)```", README.read_text(), re.S)
    assert match is not None, "the example config block is gone from README.md"
    config = tmp_path / "logcap.yaml"
    config.write_text(match.group(1))
    (tmp_path / "ca.pem").write_text("")  # the http sink's tls.ca_file, resolved next to it
    result = CliRunner().invoke(
        main,
        ["validate", "--config", str(config)],
        env={"INGEST_TOKEN": "t0ken", "COLLECTOR_TOKEN": "t0ken"},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "ok: 4 source(s), 7 sink(s)"
