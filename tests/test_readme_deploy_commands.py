"""Every command of deploy/README.md works verbatim on a fresh clone, as ``PLAN`` of
``test_readme_commands.py`` says (there, README.md; here in a file of its own so that
``pytest --dist loadfile`` runs the two READMEs on two workers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.test_readme_commands import Context, readme_context, run_plan


@pytest.fixture
def context() -> Iterator[Context]:
    with readme_context() as ctx:
        yield ctx


@pytest.mark.slow
def test_deploy_readme_commands_work_verbatim(context: Context) -> None:
    """deploy/README.md on a SQLite DAGSTER_HOME: ~1 min on an idle 2-core machine."""
    run_plan(context, "deploy/README.md")
