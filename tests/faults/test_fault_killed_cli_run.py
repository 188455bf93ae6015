"""Fault: ``kill -9`` of an ``ibpipeline backfill`` (or ``import``) process mid-dbt (issue 10, item 1).

Those commands execute their run in their own process; no daemon or code server watches it. A
killed one left its run STARTED and its ``duckdb_writer`` slot taken, so the next CLI run waited
"blocked by limit for pool duckdb_writer" forever. Expected: the run's dbt child dies with it, and
the next CLI run (before it starts, or while its step waits for the slot) fails the dead run,
frees its slot and completes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from ibpipeline import settings
from ibpipeline.automation import run_owner
from ibpipeline.flex.ratelimit import RateLimit
from ibpipeline.sim.flex_server import FlexSimulator, world_statement_source
from ibpipeline.world import World
from tests.automation.test_ui_backfill import wait_until
from tests.faults.test_fault_crashed_run import alive

ROOT = Path(__file__).resolve().parents[2]
CLI_RUN = Path(__file__).with_name("cli_run.py")
POOL = "duckdb_writer"
TOKEN = "731054826619374025548312"
QUERY_ID = "800969"


def make_home(tmp_path: Path) -> Path:
    """A DAGSTER_HOME configured by the project's dagster.yaml (pools of one slot)."""
    home = tmp_path / "home"
    home.mkdir()
    config = (ROOT / "dagster.yaml").read_text()
    config = config.replace("base_dir: .dagster_storage", f"base_dir: {home / 'storage'}")
    (home / "dagster.yaml").write_text(config)
    return home


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    # PYTHONPATH: this checkout's package, whatever checkout the venv's editable install names
    return {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}


def claimed(home: Path) -> dict[str, str]:
    """step key -> run id of the claimed duckdb_writer slots (a fresh read)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        info = instance.event_log_storage.get_concurrency_info(POOL)
    return {s.step_key: s.run_id for s in info.claimed_slots}


def get_run(home: Path, run_id: str) -> dg.DagsterRun:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_run_by_id(run_id)


def failure_message(home: Path, run_id: str) -> str:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    return failure.dagster_event.message


def child_pids(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def running(proc: subprocess.Popen) -> bool:
    """True while ``proc`` runs; raises when it has ended (nothing to wait for)."""
    if proc.poll() is not None:
        raise AssertionError(f"{proc.args} ended with {proc.returncode}")
    return True


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@dg.op
def noop() -> None:
    pass


@dg.job
def some_job() -> None:
    noop()


def test_runs_of_dead_processes_of_this_host_are_failed_and_free_their_slots(instance):
    storage = instance.event_log_storage
    storage.set_concurrency_slots(POOL, 1)
    host = run_owner.host_name()

    def started_run(tags_of) -> str:
        run_id = str(uuid.uuid4())
        instance.create_run_for_job(
            some_job, run_id=run_id, tags=tags_of(run_id), status=dg.DagsterRunStatus.STARTED
        )
        return run_id

    def tags(pid: int, start: str | None = None, host: str = host, of: str | None = None):
        def make(run_id: str) -> dict[str, str]:
            made = {
                run_owner.HOST_TAG: host,
                run_owner.PID_TAG: str(pid),
                run_owner.PID_RUN_TAG: of or run_id,
            }
            if start is not None:
                made[run_owner.PID_START_TAG] = start
            return made

        return make

    gone = dead_pid()
    dead = started_run(tags(gone))
    assert storage.claim_concurrency_slot(POOL, dead, "dbt_marts").is_claimed
    me = os.getpid()
    reused = started_run(tags(me, start="1"))  # this pid, but not the process started then
    live = started_run(run_owner.owner_tags)
    copied = started_run(tags(gone, of=dead))  # a re-execution with the dead run's tags
    elsewhere = started_run(tags(gone, host=f"not-{host}"))
    untagged = started_run(lambda _: {})

    failed = run_owner.fail_runs_of_dead_processes(instance)

    assert sorted(r.run_id for r in failed) == sorted([dead, reused])
    status = {r: instance.get_run_by_id(r).status for r in (dead, reused, live, copied)}
    status |= {r: instance.get_run_by_id(r).status for r in (elsewhere, untagged)}
    assert status == {
        dead: dg.DagsterRunStatus.FAILURE,
        reused: dg.DagsterRunStatus.FAILURE,
        live: dg.DagsterRunStatus.STARTED,
        copied: dg.DagsterRunStatus.STARTED,
        elsewhere: dg.DagsterRunStatus.STARTED,
        untagged: dg.DagsterRunStatus.STARTED,
    }
    (event,) = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"pid {gone} on {host}" in event.dagster_event.message
    info = storage.get_concurrency_info(POOL)
    assert info.claimed_slots == [] and info.active_slot_count == 0
    assert storage.claim_concurrency_slot(POOL, live, "dbt_marts").is_claimed
    assert run_owner.fail_runs_of_dead_processes(instance) == []


def test_owner_tags_name_this_process_and_its_start():
    tags = run_owner.owner_tags("r1")
    assert tags[run_owner.PID_TAG] == str(os.getpid())
    assert tags[run_owner.PID_RUN_TAG] == "r1"
    assert run_owner.process_alive(os.getpid(), tags.get(run_owner.PID_START_TAG))
    assert not run_owner.process_alive(os.getpid(), "1")
    assert not run_owner.process_alive(dead_pid())
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: (run_owner._stat(zombie.pid) or ("",))[0] == "Z", 30, "a zombie")
    assert not run_owner.process_alive(zombie.pid)
    zombie.wait()


def test_a_cli_run_waiting_for_the_slot_of_a_killed_cli_run_goes_ahead(tmp_path):
    """Run A takes the slot and hangs; run B's step waits for the slot; A is killed: B fails A,
    frees its slot (checking every second here) and completes; A's child died with A."""
    home, state = make_home(tmp_path), tmp_path / "state"
    state.mkdir()
    env = cli_env(home)
    first = subprocess.Popen(
        [sys.executable, str(CLI_RUN), str(state), "a", "hang"], env=env, cwd=tmp_path
    )
    try:
        wait_until(lambda: running(first) and (state / "a.pids").is_file(), 120, "run A's step")
        a_pid, a_child = map(int, (state / "a.pids").read_text().split())
        a_run = (state / "a.run").read_text()
        assert claimed(home) == {"locked_write": a_run}
        second = subprocess.Popen(
            [sys.executable, str(CLI_RUN), str(state), "b", "finish"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
        )

        def b_blocked() -> bool:
            with dg.DagsterInstance.from_config(str(home)) as instance:
                runs = instance.get_runs(dg.RunsFilter(job_name="cli_crash_job"))
                return any(
                    "blocked by limit" in entry.message
                    for run in runs
                    if run.run_id != a_run
                    for entry in instance.all_logs(run.run_id)
                )

        wait_until(lambda: running(second) and b_blocked(), 120, "run B to wait for the slot")
        os.kill(a_pid, signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0
        assert time.monotonic() - killed_at < 60
    finally:
        for proc in (first, locals().get("second")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    b_run = out.split()[-1]
    assert get_run(home, b_run).status == dg.DagsterRunStatus.SUCCESS
    assert get_run(home, a_run).status == dg.DagsterRunStatus.FAILURE
    assert f"pid {a_pid} on " in failure_message(home, a_run)
    assert claimed(home) == {}
    wait_until(lambda: not alive(a_child), 30, "run A's child to die with it")


@pytest.fixture
def flex_world_sim():
    world = World(seed=5, n_accounts=2, inception=date(2024, 1, 2))
    sim = FlexSimulator(
        world_statement_source(world), TOKEN, {QUERY_ID}, rate_limits=(RateLimit(1000, 1.0),)
    )
    with sim:
        yield sim


@pytest.mark.slow
def test_backfill_killed_mid_dbt_does_not_block_the_next_backfill(tmp_path, flex_world_sim):
    home = make_home(tmp_path)
    env = cli_env(
        home,
        **{
            settings.FLEX_TOKEN_ENV: TOKEN,
            settings.FLEX_QUERY_ID_ENV: QUERY_ID,
            settings.FLEX_BASE_URL_ENV: flex_world_sim.base_url,
            settings.DATA_DIR_ENV: str(tmp_path / "data"),
        },
    )
    command = [
        str(Path(sys.executable).with_name("ibpipeline")),
        "backfill",
        "--start",
        "2024-02-05",
        "--end",
        "2024-02-07",
    ]
    first = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        first_run = wait_until(
            lambda: running(first) and claimed(home).get("dbt_marts"),
            300,
            "the backfill's dbt step to take the slot",
        )
        dbt = wait_until(
            lambda: [p for p in child_pids(first.pid) if "dbt" in cmdline(p)],
            120,
            "dbt to start",
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    wait_until(lambda: not any(alive(p) for p in dbt), 30, "dbt to die with its run process")
    # the fault: the killed run is left STARTED, holding its slot
    assert get_run(home, first_run).status == dg.DagsterRunStatus.STARTED
    assert claimed(home) == {"dbt_marts": first_run}

    started = time.monotonic()
    second = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400
    )
    elapsed = time.monotonic() - started
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("backfilled 2024-02-05..2024-02-07 in run ")
    assert (
        f"run {first_run} of flex_daily_job was left unfinished by pid {first.pid}" in second.stderr
    )
    assert elapsed < 300
    assert get_run(home, first_run).status == dg.DagsterRunStatus.FAILURE
    assert f"pid {first.pid} on " in failure_message(home, first_run)
    assert claimed(home) == {}
