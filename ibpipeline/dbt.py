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
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

PROJECT_DIR = Path(__file__).resolve().parents[1] / "dbt_project"
DBT_EXECUTABLE = str(Path(sys.prefix) / "bin" / "dbt")
_SOURCE_SUFFIXES = (".sql", ".yml", ".yaml")

dbt_project = DbtProject(project_dir=PROJECT_DIR, profiles_dir=PROJECT_DIR)


def dbt_resource() -> DbtCliResource:
    """A ``DbtCliResource`` on the project using this venv's ``dbt`` (no PATH lookup)."""
    return DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)


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
