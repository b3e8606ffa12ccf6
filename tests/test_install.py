"""Installing on a stock Debian host: the README's setup and the service install, run
with Debian's own ``/usr/bin/python3`` (which refuses system-wide ``pip install``,
PEP 668) and nothing but ``/usr/bin:/bin`` on the PATH."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from logcap.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")
pytestmark = pytest.mark.skipif(
    not (Path("/etc/debian_version").exists() and DEBIAN_PYTHON.exists()),
    reason="a Debian host with its python3 package",
)


def _stock_env(**extra: str) -> dict[str, str]:
    """The environment of a root shell on a stock host: no pyenv, no venv on the PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYENV", "VIRTUAL_ENV"))}
    env.pop("PYTHON", None)
    env.pop("LOGCAP_VENV", None)
    return {**env, "PATH": "/usr/bin:/bin", **extra}


def _environment_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines, as systemd's ``EnvironmentFile=`` reads them (comments aside)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def _run(args: list[str], env: dict[str, str], cwd: Path = ROOT, timeout: float = 600) -> str:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_setup_with_debian_python_installs_into_a_venv_and_validate_runs(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    out = _run(["bash", "scripts/setup.sh"], _stock_env(LOGCAP_VENV=str(venv)))
    assert f"setup: logcap is {venv}/bin/logcap" in out
    cfg = os.readlink(venv / "bin" / "python")  # made by Debian's interpreter
    assert cfg.startswith(("/usr/bin/python", "python")), cfg
    # the embedded default config (what the README's run command starts)
    validated = _run([str(venv / "bin" / "logcap"), "validate"], _stock_env())
    assert validated.strip() == "ok: 1 source(s), 1 sink(s)"
    # nothing went into the system's Python
    probe = subprocess.run(
        [str(DEBIAN_PYTHON), "-c", "import logcap"], cwd=tmp_path, capture_output=True
    )
    assert probe.returncode != 0


def test_service_install_stages_a_layout_systemd_accepts(tmp_path: Path) -> None:
    stage = tmp_path / "root"
    out = _run(["bash", "scripts/install.sh", "--root", str(stage)], _stock_env())
    assert "ok: 1 source(s), 1 sink(s)" in out  # the installed config validated
    logcap = stage / "opt" / "logcap" / "bin" / "logcap"
    assert os.readlink(stage / "usr" / "local" / "bin" / "logcap") == "/opt/logcap/bin/logcap"
    # a copy of the checkout, not an editable link to it: the service outlives the checkout
    where = _run(
        [
            str(stage / "opt/logcap/bin/python"),
            "-c",
            "import logcap.capture as c; print(c.__file__)",
        ],
        _stock_env(),
        cwd=tmp_path,  # not the checkout: its logcap/ would be found first
    )
    assert where.startswith(f"{stage}/opt/logcap/lib/"), where
    env_file = stage / "etc" / "logcap" / "logcap.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640  # secrets: not world-readable

    # state in /var/lib/logcap (systemd's $STATE_DIRECTORY), not next to the config in /etc
    config = stage / "etc" / "logcap" / "logcap.yaml"
    assert str(load_config(config, env={}).data_dir) == "/var/lib/logcap"
    assert str(load_config(config, env={"STATE_DIRECTORY": "/srv/x"}).data_dir) == "/srv/x"
    # a secret in the EnvironmentFile reaches ${INGEST_TOKEN}, as systemd passes it on
    ingest = "  ingest: {type: http, address: 127.0.0.1:9599, bearer_token: '${INGEST_TOKEN}'}\n"
    config.write_text(config.read_text().replace("sources:\n", "sources:\n" + ingest, 1))
    env_file.write_text(env_file.read_text() + "INGEST_TOKEN=s3cret-token\n")
    assert load_config(config, env=_environment_file(env_file)).sources["ingest"]
    unset = subprocess.run(
        [str(logcap), "validate", "--config", str(config)], env=_stock_env(), capture_output=True
    )
    assert b"environment variable INGEST_TOKEN is not set" in unset.stderr

    unit = (stage / "etc" / "systemd" / "system" / "logcap.service").read_text()
    for line in (
        "ExecStart=/opt/logcap/bin/logcap run --config /etc/logcap/logcap.yaml",
        "EnvironmentFile=-/etc/logcap/logcap.env",
        "StateDirectory=logcap",
        "User=logcap",
    ):
        assert line in unit.splitlines(), line
    # systemd's own check of the unit, with its program where the stage put it
    staged = tmp_path / "logcap.service"
    staged.write_text(unit.replace("/opt/logcap/bin/logcap", str(logcap)))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(staged)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
