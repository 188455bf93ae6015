"""Configuration faults (issue 10, item 6): where step logs land, and how the deployment guide
serves the webserver."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def test_compute_logs_land_in_the_instance_storage_not_in_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The project's ``dagster.yaml`` (the instance ``dagster dev`` uses from the project folder)
    writes step stdout/stderr under the git-ignored ``.dagster_storage``, not into ``./storage``."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "dagster.yaml").write_bytes((ROOT / "dagster.yaml").read_bytes())
    monkeypatch.chdir(project)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    # the files a step's capture writes (``capture_logs`` writes the same paths, mirroring them
    # to the terminal with a `tail -F` child, which timed out inside a loaded pytest worker)
    from dagster._core.storage.compute_log_manager import ComputeIOType

    key = ["run1", "compute_logs", "step"]
    with dg.DagsterInstance.from_config(str(project)) as instance:
        manager = instance.compute_log_manager
        with manager.open_log_stream(key, ComputeIOType.STDOUT) as out:
            out.write("step output\n")
        with manager.open_log_stream(key, ComputeIOType.STDERR) as err:
            err.write("step error\n")
    logs = sorted(p.relative_to(project) for p in project.rglob("*") if p.is_file())
    step_logs = [p for p in logs if p.name.startswith("step.")]
    assert step_logs and all(p.parts[:2] == (".dagster_storage", "compute_logs") for p in step_logs)
    assert "step output" in (project / next(p for p in step_logs if p.suffix == ".out")).read_text()
    assert not (project / "storage").exists()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(ROOT / step_logs[0])], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, f"{step_logs[0]} is not git-ignored"


def webserver_commands(markdown: str) -> list[str]:
    """Every command line of the code blocks of ``markdown`` that runs ``dagster-webserver`` or
    ``dagster dev`` (continuation lines joined)."""
    blocks = "\n".join(re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.S | re.M))
    commands = []
    for line in re.sub(r"\\\n\s*", " ", blocks).splitlines():
        words = shlex.split(line, comments=True) if "dagster" in line else []
        for i, word in enumerate(words):
            name = Path(word).name
            if name == "dagster-webserver" or (
                name == "dagster" and words[i + 1 : i + 2] == ["dev"]
            ):
                commands.append(line.strip())
                break
    return commands


def bound_hosts(command: str) -> list[str]:
    """The addresses a webserver command line binds (``-h``/``--host``)."""
    words = shlex.split(command, comments=True)
    hosts = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-h", "--host")]
    return hosts + [w.split("=", 1)[1] for w in words if w.startswith("--host=")]


def test_deploy_guide_serves_the_webserver_on_loopback_behind_an_authenticating_proxy() -> None:
    guide = (ROOT / "deploy" / "README.md").read_text()
    commands = webserver_commands(guide)
    assert any(c.startswith("dagster-webserver") for c in commands), commands
    for command in commands:
        assert "0.0.0.0" not in command, command
        assert bound_hosts(command) and set(bound_hosts(command)) <= LOOPBACK, command
    assert re.search(r"proxy_pass http://127\.0\.0\.1:3000", guide)
    assert re.search(r"authenticat", guide, re.I)
    readme_commands = webserver_commands((ROOT / "README.md").read_text())
    assert readme_commands  # dagster dev binds loopback unless told otherwise
    assert all(set(bound_hosts(c)) <= LOOPBACK for c in readme_commands), readme_commands
