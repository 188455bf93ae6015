"""The dbt project of the marts and the ``DbtCliResource`` that runs it.

Standalone on purpose (absolute imports only, no ibpipeline imports): ``dagster-dbt project
prepare-and-package --file ibpipeline/dbt.py`` loads it as a plain file. The manifest
(``dbt_project/target/manifest.json``) must exist before the definitions load: ``make install``
runs ``dbt parse``, ``dagster dev`` re-parses a stale manifest on start (``DAGSTER_IS_DEV_CLI``,
with this venv's ``dbt``: dagster-dbt's own ``prepare_if_dev`` looks ``dbt`` up on PATH, which
fails under a venv that is not activated), tests call ``ensure_manifest()`` once per session.
Nothing here runs dbt at import time otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from functools import cached_property
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from dagster_dbt import DbtCliResource, DbtProject
from packaging import version

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DBT_EXECUTABLE = str(Path(sys.prefix) / "bin" / "dbt")
FAST_EXIT_DBT = Path(sys.prefix) / "bin" / "ibpipeline-dbt"
"""dbt without the interpreter's teardown (``ibpipeline.dbt_main``): what the assets run, when
this venv has it (``make install`` puts it there; an older install falls back to ``dbt``)."""
_SOURCE_SUFFIXES = (".sql", ".yml", ".yaml")

dbt_project = DbtProject(project_dir=PROJECT_DIR, profiles_dir=PROJECT_DIR)


class ProjectDbtCliResource(DbtCliResource):
    """``DbtCliResource`` without the two dbt start-ups dagster-dbt adds to every ``cli()`` call.

    - ``_cli_version``: dagster-dbt runs ``dbt --version`` (a whole dbt process: 2-3 s idle, over
      10 s on a loaded machine) to tell dbt Core from the Fusion engine. The executable is this
      venv's ``dbt`` (``DBT_EXECUTABLE``), so the version is the installed dbt-core package's.
    - ``_initialize_dbt_core_adapter``: dagster-dbt loads the profile, registers a dbt adapter and
      loads every dbt macro in the Dagster process (1-4 s per call), only for
      ``fetch_column_metadata``/``fetch_row_counts``, which the marts do not use (their column
      tables come from the manifest: ``ibpipeline.assets.marts``). Without an adapter dagster-dbt
      streams the same events (it does so for the Fusion engine).

    Both override private dagster-dbt methods (0.29): ``tests/assets/test_marts_assets.py`` checks
    that they still exist with these names, so an upgrade that renames them fails there.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(package_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Any) -> None:
        return None


def dbt_resource() -> DbtCliResource:
    """The project's dbt resource (``ProjectDbtCliResource``) running this venv's
    ``ibpipeline-dbt`` (else its ``dbt``; no PATH lookup)."""
    executable = str(FAST_EXIT_DBT) if FAST_EXIT_DBT.is_file() else DBT_EXECUTABLE
    return ProjectDbtCliResource(project_dir=dbt_project, dbt_executable=executable)


def manifest_is_stale(project: DbtProject = dbt_project) -> bool:
    """True when the manifest is missing or older than a project ``.sql``/``.yml`` file."""
    manifest = project.manifest_path
    if not manifest.is_file():
        return True
    built = manifest.stat().st_mtime
    target = project.project_dir / project.target_path
    return any(
        path.stat().st_mtime > built
        for path in project.project_dir.rglob("*")
        if path.suffix in _SOURCE_SUFFIXES and target not in path.parents
    )


def ensure_manifest(project: DbtProject = dbt_project) -> Path:
    """Run ``dbt parse`` when the manifest is stale; return its path.

    dbt writes into a temporary target folder and the manifest is then moved into place, so a
    concurrent reader sees the old or the new file, never a partial one. Raises ``RuntimeError``
    with dbt's output when parsing fails.
    """
    manifest = project.manifest_path
    if manifest_is_stale(project):
        manifest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=manifest.parent, prefix=".parse-") as tmp:
            done = subprocess.run(
                [
                    DBT_EXECUTABLE,
                    "parse",
                    "--quiet",
                    "--project-dir",
                    str(project.project_dir),
                    "--profiles-dir",
                    str(project.profiles_dir),
                    "--target-path",
                    tmp,
                    "--log-path",
                    tmp,
                ],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"dbt parse failed:\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
                )
            os.replace(Path(tmp) / manifest.name, manifest)
    return manifest


if os.environ.get("DAGSTER_IS_DEV_CLI"):
    ensure_manifest()
