"""Shared pytest fixtures: paths to the public fixtures and a running Flex Web Service simulator."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.instance_storage import event_log_storage_config
from ibpipeline.sim.flex_server import FlexSimulator
from tests.fixture_files import PUBLIC_FLEX_DIR

FLEX_TOKEN = "731054826619374025548312"  # 24 digits like a real token; grep-able in leak tests
FLEX_QUERY_ID = "800969"


LONGEST_FIRST = (
    "tests/test_readme_commands.py",
    "tests/storage/test_ducklake_writers.py",
    "tests/automation/test_ui_backfill.py",
    "tests/assets/test_marts_assets.py",
    "tests/corpus/test_corpus_import.py",
    "tests/assets/test_normalize_queries.py",
    "tests/marts/test_marts_ibkr_data.py",
    "tests/test_cli.py",
    "tests/distributed/test_celery_workers.py",
    "tests/automation/test_inbox.py",
    "tests/automation/test_backfill_console.py",
    "tests/faults/test_fault_killed_cli_run.py",
    "tests/storage/test_ducklake.py",
    "tests/marts/test_marts_synthetic.py",
    "tests/test_readme_deploy_commands.py",
)
"""The longest files (sum of their tests' --durations in a full -n 4 run), longest first.
``--dist loadfile`` hands out whole files in collection order (see ``pytest_configure``): these go
first, then every other file with a ``slow`` test, then the rest, so that no worker starts a
several-minute file near the end while the others are idle. A stale list only costs time."""


def pytest_configure(config: pytest.Config) -> None:
    """Build the dbt manifest before collection: the definitions load it at import time.

    xdist's ``--dist loadfile`` queues files by their number of tests (``--loadscope-reorder``, its
    default), which put the files of one or two slow tests last; the queue follows the order of
    ``pytest_collection_modifyitems`` below instead."""
    from ibpipeline.dbt import ensure_manifest

    ensure_manifest()
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``LONGEST_FIRST``, then files with a ``slow`` test, then the rest (a stable sort: the
    order within a file and within each group is unchanged)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    root = Path(__file__).resolve().parents[1]

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.relative_to(root).as_posix() if item.path.is_relative_to(root) else ""
        if name in LONGEST_FIRST:
            return (0, LONGEST_FIRST.index(name))
        return (1, 0) if item.path in slow_files else (2, 0)

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def sigterm_not_ignored() -> Iterator[None]:
    """Give each test a test process whose SIGTERM is not ignored. An ignored signal stays
    ignored across exec, so every child process would inherit it and outlive ``terminate()``:
    in CI a Dagster ``tail -F`` log mirror and a billiard pool worker did, and their tests waited
    until their timeouts. Something earlier in the same pytest worker had set it (not found)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield


@pytest.fixture(autouse=True)
def fresh_forkserver() -> Iterator[None]:
    """Stop multiprocessing's forkserver after each test. A run executed in the test process
    (``dg.execute_job`` with the multiprocess executor) starts it once per process and reuses
    it: its environment and the repository it preloaded (``ibpipeline.forkserver_preload``) would
    be an earlier test's (another simulator, another data folder). A launched run has a process,
    hence a forkserver, of its own."""
    yield
    from multiprocessing import forkserver

    server = forkserver._forkserver  # noqa: SLF001 (no public way to restart it)
    if server._forkserver_pid is not None:  # noqa: SLF001
        server._stop()  # noqa: SLF001


@pytest.fixture
def public_flex_dir() -> Path:
    """Folder of the four real public Activity Flex XML statements."""
    return PUBLIC_FLEX_DIR


@pytest.fixture
def flex_token() -> str:
    """The token the ``flex_sim`` fixture accepts."""
    return FLEX_TOKEN


@pytest.fixture
def flex_query_id() -> str:
    """The query id the ``flex_sim`` fixture accepts."""
    return FLEX_QUERY_ID


@pytest.fixture
def flex_statement() -> bytes:
    """Bytes of a real two-account Flex statement (served by ``flex_sim``)."""
    return (PUBLIC_FLEX_DIR / "pp_file26_two_accounts.xml").read_bytes()


@pytest.fixture
def flex_sim(flex_statement: bytes) -> Iterator[FlexSimulator]:
    """A running Flex simulator on a free loopback port serving ``flex_statement`` for
    ``FLEX_TOKEN``/``FLEX_QUERY_ID``, with rate limits loose enough for fast tests (tests may
    change ``generation_polls``, ``rate_limits``, ``faults`` ... at run time)."""
    simulator = FlexSimulator(
        lambda *_: flex_statement,
        FLEX_TOKEN,
        {FLEX_QUERY_ID},
        rate_limits=(RateLimit(1000, 1.0),),
    )
    with simulator:
        yield simulator


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch folder on tmpfs when available: Dagster's SQLite storage commits every event,
    which is slow on a busy disk."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(dir=shm, prefix="ibpipeline-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dagster_home(work_dir: Path) -> Path:
    return work_dir / "dagster_home"


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """A SQLite-backed Dagster instance on disk (pools work, its files can be grepped), with the
    project's event log (``dagster.yaml``: a range run's materializations stored in batches)."""
    dagster_home.mkdir()
    event_log = event_log_storage_config(dagster_home / "history" / "runs")
    with dg.instance_for_test(
        temp_dir=str(dagster_home), overrides={"event_log_storage": event_log}
    ) as inst:
        yield inst


@pytest.fixture
def data_dir(work_dir: Path) -> Path:
    return work_dir / "data"


@pytest.fixture
def flex_env(monkeypatch: pytest.MonkeyPatch, flex_token: str) -> str:
    """``IBKR_FLEX_TOKEN`` set to the simulator's token for this test only."""
    monkeypatch.setenv("IBKR_FLEX_TOKEN", flex_token)
    return flex_token
