"""logcap as a package: ``python -m build`` makes an sdist and, from it, a wheel that
carries the files an operator installs (logcap/examples.py); the wheel, installed with pip
into a fresh virtual environment outside the checkout, prints them
(``logcap config example``), validates the default config it printed and runs on its
embedded default until SIGTERM.

The fresh environment is made without ``--system-site-packages`` and pip installs the
wheel's dependencies into it from the package index, pinned by scripts/constraints.txt
(from pip's cache after the first run: about 15 s for the whole module here); every
command runs with its cwd and PYTHONPATH outside the checkout, so nothing is imported from
the source tree — the first test proves where ``logcap`` is imported from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from logcap.cli import main
from logcap.examples import BY_NAME, EXAMPLES
from tests._waiting import wait_for
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# -- in the checkout ---------------------------------------------------------------------


def test_every_shipped_file_has_an_example_name() -> None:
    shipped = {
        p.relative_to(CONFIGS).as_posix()
        for p in CONFIGS.rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    }
    assert shipped == {e.path for e in EXAMPLES}


@pytest.mark.parametrize("name", list(BY_NAME))
def test_config_example_prints_the_file_as_it_is(name: str) -> None:
    result = CliRunner().invoke(main, ["config", "example", name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == (CONFIGS / BY_NAME[name].path).read_text("utf-8")


def test_config_example_without_a_name_lists_the_names() -> None:
    result = CliRunner().invoke(main, ["config", "example"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == list(BY_NAME)


def test_config_example_refuses_an_unknown_name() -> None:
    result = CliRunner().invoke(main, ["config", "example", "nginx"])
    assert result.exit_code == 2  # click's usage error, naming the choices
    assert "'systemd'" in result.stderr


def test_version_prints_logcap_and_the_project_version() -> None:
    result = CliRunner().invoke(main, ["--version"], catch_exceptions=False)
    assert result.exit_code == 0
    assert result.stdout == f"logcap {VERSION}\n"


# -- from a wheel, in a fresh environment ------------------------------------------------


@dataclass(frozen=True)
class Installed:
    """A fresh virtual environment with the built wheel installed, and a cwd outside the
    checkout to run it from."""

    venv: Path
    wheel: Path
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [str(self.venv / "bin" / "logcap"), *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"logcap {args}: exit {done.returncode}\n{done.stderr}"
        return done.stdout


def _outside_env(venv: Path) -> dict[str, str]:
    """The environment of an operator's shell with the venv on the PATH: nothing pointing
    into the checkout or its .venv."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONUSERBASE")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("LOGCAP_")}
    return {**env, "PATH": f"{venv}/bin:/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _call(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> None:
    done = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    top = tmp_path_factory.mktemp("packaging")
    assert not top.is_relative_to(ROOT)
    # build from a copy of what git would commit (tracked and new files, not what
    # .gitignore names): no build/ or *.egg-info is written into the checkout, and none
    # left there is packaged
    src = top / "src"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for rel in filter(None, listed.decode().split("\0")):
        if (ROOT / rel).is_file():  # a tracked file another change has just deleted is not
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    dist = top / "dist"
    # sdist first, then the wheel from the unpacked sdist: both must carry the files
    _call([sys.executable, "-m", "build", "--outdir", str(dist), str(src)], top, os.environ)
    (wheel,) = dist.glob("logcap-*.whl")
    venv = top / "venv"
    env = _outside_env(venv)
    _call([sys.executable, "-m", "venv", str(venv)], top, env)
    constraints = src / "scripts" / "constraints.txt"
    _call(
        [f"{venv}/bin/python", "-m", "pip", "install", "-q", "-c", str(constraints), str(wheel)],
        top,
        env,
    )
    cwd = top / "work"
    cwd.mkdir()
    return Installed(venv, wheel, cwd, env)


def test_the_installed_logcap_is_the_wheel_not_the_checkout(installed: Installed) -> None:
    where = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", "import logcap; print(logcap.__file__)"],
        cwd=installed.cwd,
        env=installed.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(installed.venv / "lib"), where
    assert installed.run("--version") == f"logcap {VERSION}\n"


def test_the_wheel_carries_every_example(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    assert {f"logcap/configs/{e.path}" for e in EXAMPLES} <= names
    assert installed.run("config", "example").split()[0] == EXAMPLES[0].name
    for example in EXAMPLES:  # systemd's unit, supervisord's program, dashboards, alerts
        printed = installed.run("config", "example", example.name)
        assert printed == (CONFIGS / example.path).read_text("utf-8"), example.name


def test_the_printed_configs_validate(installed: Installed) -> None:
    for name in ("default", "service"):
        config = installed.cwd / f"{name}.yaml"
        config.write_text(installed.run("config", "example", name))
        assert installed.run("validate", "--config", str(config)) == (
            "ok: 1 source(s), 1 sink(s)\n"
        )


def test_run_on_the_embedded_default_delivers_and_stops_on_sigterm(
    installed: Installed, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "app.log").write_text("".join(f"line {i}\n" for i in range(100)))
    address = f"127.0.0.1:{free_port()}"
    env = {
        **installed.env,
        "LOGCAP_INPUT": str(tmp_path / "in"),
        "LOGCAP_OUTPUT": str(tmp_path / "out"),
        "LOGCAP_DATA_DIR": str(tmp_path / "data"),
        "LOGCAP_API_ADDRESS": address,
    }
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [str(installed.venv / "bin" / "logcap"), "run"],
            cwd=installed.cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def delivered() -> bool:
            assert agent.poll() is None, f"the agent exited early:\n{log.read_text()}"
            return sum(len(p.read_text().splitlines()) for p in (tmp_path / "out").glob("*")) >= 100

        wait_for(delivered, 60, "the 100 lines in the archive")
        with urllib.request.urlopen(f"http://{address}/ready", timeout=5) as ready:
            assert ready.status == 200
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=60) == 0, log.read_text()
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    (archive,) = (tmp_path / "out").glob("local-*.ndjson")
    assert "line 99" in archive.read_text()
