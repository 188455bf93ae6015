"""Every command of README.md and deploy/README.md works verbatim on a fresh clone (issue 10, item 7).

The fenced ``bash``/``sh`` blocks are extracted and run as a user would: from a copy of the working
tree without data or Dagster state (``.venv`` linked, the dbt manifest as ``make install`` leaves
it), with a clean environment (no DAGSTER_HOME, no IBKR_* variables) and, where ``unshare -n``
works, in a private network namespace, so the fixed ports of the README (3000, 8765, 4002) collide
with nothing on this machine.

``PLAN`` names every block and what the test does with it: ``run`` (exit status 0, then a check),
``serve`` (start it, probe what it serves, stop it) or ``skip`` (with the reason). The few
documented substitutions (``replace``) only shorten date ranges. A block added to either README
fails ``test_every_readme_block_is_planned`` until it is planned here. deploy/README.md runs in
``test_readme_deploy_commands.py`` (a file of its own: ``--dist loadfile`` gives it another worker).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.world import World

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "deploy/README.md")
FENCE_RE = re.compile(r"^```(bash|sh)\n(.*?)^```", re.S | re.M)
SIM_TOKEN, SIM_QUERY_ID = "T", "123456"  # the README's `ibpipeline sim flex` example
FLEX_URL = "http://127.0.0.1:8765/AccountManagement/FlexWebService"
IMPORTED = (date(2026, 10, 19), date(2026, 10, 23))
"""Days of the Activity Flex statement "downloaded" into ~/Downloads (the simulator renders it)."""
SHORT_START = "2026-10-26"  # backfills run Mon 10-26 .. Sat 10-31 instead of two years


SIM_WORLD = World(seed=7, n_accounts=4, inception=date(2024, 1, 2))
"""The world of `ibpipeline sim flex --seed 7` / `sim gateway --seed 7` (their defaults)."""


def fenced_blocks(doc: str) -> list[str]:
    """The fenced bash/sh blocks of ``doc`` (relative to the project root), in order."""
    return [m.group(2) for m in FENCE_RE.finditer((ROOT / doc).read_text())]


def commands(block: str) -> list[str]:
    """The commands of a block: continuation lines joined, comments and blank lines dropped."""
    out, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line
        if line.endswith("\\"):
            current += "\n"
            continue
        out.append(current)
        current = ""
    return out


@dataclass(frozen=True)
class Step:
    """What the test does with the block of ``doc`` containing ``key``."""

    doc: str
    key: str
    action: str  # run | serve | skip
    why: str = ""
    env: dict[str, str] = field(default_factory=dict)
    replace: tuple[tuple[str, str], ...] = ()
    only: str | None = None  # run only the commands containing this text (the others: ``why``)
    each: bool = False  # serve: every command of the block is its own server
    probes: tuple[str, ...] = ()
    flex_sim: bool = False  # needs `ibpipeline sim flex` (README, Development) on port 8765


FLEX_ENV = {
    # the user's settings (README "Flex Web Service", step 3), pointed at the simulator
    "IBKR_FLEX_TOKEN": SIM_TOKEN,
    "IBKR_FLEX_QUERY_ID": SIM_QUERY_ID,
    "IBKR_FLEX_BASE_URL": FLEX_URL,
}

PLAN: tuple[Step, ...] = (
    Step(
        "README.md",
        "make demo",
        "skip",
        "`make demo` (= run_demo) runs in tests/test_cli.py::test_demo_twice_gives_the_same_rows; "
        "`make test` is the whole suite, this test included",
    ),
    Step(
        "README.md",
        "dagster dev -w workspace.yaml     # from the project folder",
        "serve",
        probes=("graphql",),
    ),
    Step(
        "README.md",
        "sim gateway --seed 7 --accounts 3 &",
        "serve",
        probes=("graphql", "tcp:4002", "demo_world_flex"),
    ),
    Step("README.md", "export IBKR_FLEX_TOKEN=...", "serve", probes=("graphql",)),
    Step("README.md", "ibpipeline import ~/Downloads/*.xml", "run"),
    Step(
        "README.md",
        "ibpipeline backfill --start 2024-11-01",
        "run",
        "two years plan ~20k materializations (minutes of event writes): the range starts at "
        f"{SHORT_START} instead; against `ibpipeline sim flex` as the README shows it",
        env=FLEX_ENV,
        flex_sim=True,
        replace=(("2024-11-01", SHORT_START),),
    ),
    Step("README.md", "select * from performance_summary", "run"),
    Step(
        "deploy/README.md",
        "export DAGSTER_HOME=/srv/ibpipeline/dagster_home",
        "skip",
        "production instance: writes /srv and needs the Postgres credentials of "
        "deploy/dagster.yaml; the other deploy commands run on a SQLite DAGSTER_HOME instead",
    ),
    Step("deploy/README.md", "dagster definitions validate", "run"),
    Step(
        "deploy/README.md",
        "dagster-webserver -w workspace.yaml",
        "serve",
        each=True,
        probes=("graphql", "daemon"),
    ),
    Step("deploy/README.md", "dagster schedule start", "run"),
    Step(
        "deploy/README.md",
        "ibpipeline backfill --start 2024-01-01",
        "run",
        "`ibpipeline backfill` is README.md's command (run above) on another range; "
        f"the launched range starts at {SHORT_START}",
        env=FLEX_ENV,  # section 2: the service environment (launching resolves the EnvVars)
        only="dagster job launch",
        replace=(("2024-01-01", SHORT_START),),
    ),
    Step(
        "deploy/README.md",
        "celery -A ibpipeline.celery_worker worker",
        "skip",
        "a Celery worker needs a broker and a Postgres instance: "
        "tests/distributed/test_celery_workers.py starts two such workers on a RabbitMQ vhost of "
        "their own and runs flex_daily_job on them",
    ),
)


def planned_step(doc: str, block: str) -> list[Step]:
    return [s for s in PLAN if s.doc == doc and s.key in block]


def test_every_readme_block_is_planned() -> None:
    for doc in DOCS:
        blocks = fenced_blocks(doc)
        assert blocks, doc
        for block in blocks:
            assert len(planned_step(doc, block)) == 1, f"{doc}: plan exactly once:\n{block}"
    for step in PLAN:
        found = [b for b in fenced_blocks(step.doc) if step.key in b]
        assert len(found) == 1, f"{step.doc}: no single block contains {step.key!r}"
        assert step.action != "skip" or step.why


def test_readme_sim_command_serves_the_demo_world() -> None:
    """The simulator block of the README serves `ibpipeline demo`'s world: same seed, accounts
    and inception as the demo's defaults (the demo prints the same commands)."""
    from ibpipeline import cli
    from ibpipeline.demo import DEMO_INCEPTION, demo_dates

    (block,) = [b for b in fenced_blocks("README.md") if "sim gateway" in b]
    args = cli.build_parser().parse_args(["demo"])
    for command in commands(block)[:2]:
        argv = command.rstrip(" &").split()[1:]
        sim = cli.build_parser().parse_args(argv)
        assert (sim.seed, sim.accounts, sim.inception) == (args.seed, args.accounts, DEMO_INCEPTION)
    start, _ = demo_dates(args.days, date.today())
    assert start >= DEMO_INCEPTION


# --- running them ---------------------------------------------------------------------------


class Namespace:
    """Runs commands in a private network namespace (when ``unshare -n`` works) from ``cwd``."""

    def __init__(self, cwd: Path, logs: Path) -> None:
        self.cwd, self.logs = cwd, logs
        self.prefix: list[str] = []
        self.holder: subprocess.Popen | None = None
        if shutil.which("unshare") and shutil.which("nsenter") and shutil.which("ip"):
            holder = subprocess.Popen(
                [
                    "unshare",
                    "-n",
                    "--",
                    "sh",
                    "-c",
                    "ip link set lo up && echo up && exec sleep 3600",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            if holder.stdout.readline().strip() == "up":
                self.holder = holder
                self.prefix = ["nsenter", f"--net=/proc/{holder.pid}/ns/net", "--"]
            else:
                holder.wait()

    def run(self, script: str, env: dict[str, str], timeout: float = 300) -> str:
        done = subprocess.run(
            [*self.prefix, "bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, (
            f"{script}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done.stdout

    def start(self, script: str, env: dict[str, str], name: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        return subprocess.Popen(
            [*self.prefix, "bash", "-c", script],
            cwd=self.cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def members(self) -> list[int]:
        """Processes in this namespace (all of them started by this test), the holder excepted."""
        if self.holder is None:
            return []
        mine = os.readlink(f"/proc/{self.holder.pid}/ns/net")
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != self.holder.pid:
                try:
                    if os.readlink(entry / "ns" / "net") == mine:
                        pids.append(int(entry.name))
                except OSError:
                    continue
        return pids

    def close(self) -> None:
        for pid in self.members():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()


def stop(proc: subprocess.Popen) -> None:
    """Ctrl-C (as a user stops `dagster dev`), then SIGTERM and SIGKILL to what is left of the
    process group of ``proc`` (the simulators a block started with ``&`` ignore Ctrl-C)."""
    for sig, wait in ((signal.SIGINT, 40), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


PROBE = textwrap.dedent(
    """
    import json, re, socket, sys, time, urllib.parse, urllib.request

    def until(fn, timeout=150):
        end, last = time.monotonic() + timeout, None
        while time.monotonic() < end:
            try:
                out = fn()
                if out is not None:
                    return out
            except Exception as exc:
                last = exc
            time.sleep(1)
        raise SystemExit(f"timed out: {last!r}")

    def graphql():
        q = ('{ workspaceOrError { __typename ... on Workspace { locationEntries { name '
             'locationOrLoadError { __typename ... on PythonError { message } } } } } }')
        req = urllib.request.Request("http://127.0.0.1:3000/graphql", json.dumps({"query": q}).encode(),
                                     {"Content-Type": "application/json"})
        entries = json.load(urllib.request.urlopen(req, timeout=10))["data"]["workspaceOrError"]["locationEntries"]
        loaded = {e["name"]: e["locationOrLoadError"] for e in entries if e["locationOrLoadError"]}
        if "ibpipeline" not in loaded:
            return None
        return loaded["ibpipeline"]

    def tcp(port):
        socket.create_connection(("127.0.0.1", int(port)), timeout=5).close()
        return {"port": port}

    def flex_accounts(base, token, query):
        url = f"{base}/SendRequest?" + urllib.parse.urlencode({"t": token, "q": query, "v": 3})
        ref = re.search(r"<ReferenceCode>(\\w+)<", urllib.request.urlopen(url, timeout=10).read().decode()).group(1)
        def get():
            url = f"{base}/GetStatement?" + urllib.parse.urlencode({"t": token, "q": ref, "v": 3})
            body = urllib.request.urlopen(url, timeout=30).read().decode()
            return sorted(set(re.findall(r'<AccountInformation [^>]*accountId="([^"]+)"', body))) or None
        return until(get, 60)

    kind, *args = sys.argv[1:]
    if kind == "graphql":
        print(json.dumps(until(graphql)))
    elif kind == "tcp":
        print(json.dumps(until(lambda: tcp(*args))))
    elif kind == "flex":
        print(json.dumps(until(lambda: flex_accounts(*args))))
    """
)


@dataclass
class Context:
    ns: Namespace
    project: Path
    home: Path
    deploy_home: Path
    env: dict[str, str]

    def probe(self, *args: str) -> object:
        out = self.ns.run(f".venv/bin/python {self.home / 'probe.py'} {' '.join(args)}", self.env)
        return json.loads(out.strip().splitlines()[-1])


def check_probe(ctx: Context, probe: str, proc: subprocess.Popen) -> None:
    if probe == "graphql":
        loaded = ctx.probe("graphql")
        assert loaded["__typename"] == "RepositoryLocation", loaded
    elif probe.startswith("tcp:"):
        ctx.probe("tcp", probe.removeprefix("tcp:"))
    elif probe == "demo_world_flex":
        from ibpipeline.demo import demo_dates, demo_world

        accounts = ctx.probe("flex", FLEX_URL, "demo-token", SIM_QUERY_ID)
        world = demo_world(7, 3, demo_dates(60, date.today())[0])
        assert accounts == sorted(a.account_id for a in world.accounts)
    elif probe == "daemon":
        time.sleep(3)
        assert proc.poll() is None, "dagster-daemon exited"
    else:
        raise AssertionError(probe)


def instance_runs(project: Path, home: Path | None = None) -> list[dg.DagsterRun]:
    """Runs of the project's instance (``home``: a DAGSTER_HOME) as the CLI sees it from there."""
    cwd = os.getcwd()
    os.chdir(project)  # the SQLite base_dir of dagster.yaml is relative to the working directory
    try:
        with dg.DagsterInstance.from_config(str(home or project)) as instance:
            return list(instance.get_runs())
    finally:
        os.chdir(cwd)


def gateway_snapshot(project: Path) -> None:
    """What `make demo` leaves besides the Flex tables: one gateway snapshot of the simulated
    world in the project's instance and data folder, with its DuckDB views."""
    from datetime import UTC, datetime

    from ibpipeline.assets.warehouse import gateway_warehouse_views
    from ibpipeline.automation.gateway_schedule import take_snapshot
    from ibpipeline.resources import DataDirResource, GatewayResource
    from ibpipeline.sim.gateway_server import GatewaySimulatorThread

    at = datetime(2026, 10, 30, 20, 0, tzinfo=UTC)  # Friday 16:00 New York
    cwd = os.getcwd()
    os.chdir(project)
    try:
        with (
            dg.DagsterInstance.from_config(str(project)) as instance,
            GatewaySimulatorThread(SIM_WORLD, clock=lambda: at) as gateway,
        ):
            resources = {
                "gateway": GatewayResource(
                    gateways=[f"127.0.0.1:{gateway.port}"], as_of=at.isoformat()
                ),
                "data_dir": DataDirResource(path=str(project / "data")),
            }
            take_snapshot(instance, resources)
            dg.materialize([gateway_warehouse_views], instance=instance, resources=resources)
    finally:
        os.chdir(cwd)


CHECKS: dict[str, Callable[[Context, str], None]] = {}


def check(key: str) -> Callable:
    def register(fn: Callable[[Context, str], None]) -> Callable[[Context, str], None]:
        CHECKS[key] = fn
        return fn

    return register


@check("ibpipeline import ~/Downloads/*.xml")
def _imported(ctx: Context, out: str) -> None:
    assert "ingested" in out and "marts rebuilt for" in out, out
    assert list((ctx.project / "flex-tables").rglob("*.parquet"))


@check("ibpipeline backfill --start 2024-11-01")
def _backfilled(ctx: Context, out: str) -> None:
    assert f"backfilled {SHORT_START}..2026-10-31" in out, out
    queued = [r for r in instance_runs(ctx.project) if r.status == dg.DagsterRunStatus.QUEUED]
    assert [r.job_name for r in queued] == ["flex_daily_job"]
    assert queued[0].tags["dagster/asset_partition_range_start"] == SHORT_START
    assert queued[0].tags["dagster/asset_partition_range_end"] == "2026-10-31"


@check("select * from performance_summary")
def _queried(ctx: Context, out: str) -> None:
    assert "ALL" in out, out  # performance_summary's household row
    for account in SIM_WORLD.accounts:
        assert out.count(account.account_id) >= 2, out  # in both queries


@check("dagster schedule start")
def _started(ctx: Context, out: str) -> None:
    assert out.count("Started") >= 3 or out.count("started") >= 3, out


@check("ibpipeline backfill --start 2024-01-01")
def _launched(ctx: Context, out: str) -> None:
    (run,) = instance_runs(ctx.project, ctx.deploy_home)
    assert run.status == dg.DagsterRunStatus.QUEUED and run.job_name == "flex_daily_job"


def block_of(step: Step) -> str:
    (block,) = [b for b in fenced_blocks(step.doc) if step.key in b]
    script = "\n".join(c for c in commands(block) if step.only is None or step.only in c)
    for old, new in step.replace:
        script = script.replace(old, new)
    return script


@contextlib.contextmanager
def readme_context() -> Iterator[Context]:
    """A fresh copy of the working tree, a home folder and the private network namespace."""
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    base = Path(tempfile.mkdtemp(dir=shm, prefix="ibpipeline-readme-"))
    project, home, deploy_home = base / "ibpipeline", base / "home", base / "dagster_home"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, project / name)
    (project / ".venv").symlink_to(ROOT / ".venv")
    # `make install` runs `dbt parse` into dbt_project/target (the session's manifest is the same)
    (project / "dbt_project" / "target").mkdir()
    shutil.copy2(
        ROOT / "dbt_project" / "target" / "manifest.json",
        project / "dbt_project" / "target" / "manifest.json",
    )
    (home / "Downloads").mkdir(parents=True)
    (home / "Downloads" / "statement.xml").write_bytes(
        render_statement(SIM_WORLD, [a.account_id for a in SIM_WORLD.accounts], *IMPORTED)
    )
    (home / "probe.py").write_text(PROBE)
    deploy_home.mkdir()
    (deploy_home / "dagster.yaml").write_text(
        (ROOT / "dagster.yaml")
        .read_text()
        .replace(".dagster_storage", str(deploy_home / "storage"))
    )
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    ns = Namespace(project, base)
    if ns.holder is None:
        import socket

        for port in (3000, 4002, 8765):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    ns.close()
                    shutil.rmtree(base, ignore_errors=True)
                    pytest.skip(f"no private network namespace and port {port} is taken")
    try:
        yield Context(ns, project, home, deploy_home, env)
    finally:
        ns.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def context() -> Iterator[Context]:
    with readme_context() as ctx:
        yield ctx


def run_plan(ctx: Context, doc: str) -> None:
    """Every step of ``doc`` in ``PLAN`` order; step durations are printed (``pytest -s``)."""
    flex_sim = None
    for step in PLAN:
        if step.doc != doc or step.action == "skip":
            continue
        env = dict(ctx.env, **step.env)
        if doc.startswith("deploy/"):
            # the service's environment: section 1's DAGSTER_HOME (SQLite here), the package
            # installed on PATH
            env |= {
                "DAGSTER_HOME": str(ctx.deploy_home),
                "PATH": f"{ctx.project / '.venv' / 'bin'}:{env['PATH']}",
            }
        script = block_of(step)
        name = re.sub(r"\W+", "_", step.key)[:40]
        if step.flex_sim and flex_sim is None:
            # README, Development: the Flex simulator on its own
            (sim,) = re.findall(r"`(ibpipeline sim flex --port 8765[^`]*)`", readme_text())
            flex_sim = ctx.ns.start(f".venv/bin/{' '.join(sim.split())}", env, "flex_sim")
            ctx.probe("tcp", "8765")
        if step.key == "select * from performance_summary":
            gateway_snapshot(ctx.project)
        started = time.monotonic()
        if step.action == "run":
            out = ctx.ns.run(script, env)
            print(f"{step.key}: {time.monotonic() - started:.0f} s")
            if step.key in CHECKS:
                CHECKS[step.key](ctx, out)
            continue
        servers = (
            [ctx.ns.start(c, env, f"{name}_{i}") for i, c in enumerate(commands(script))]
            if step.each
            else [ctx.ns.start(script, env, name)]
        )
        try:
            for probe in step.probes:
                check_probe(ctx, probe, servers[-1])
            assert all(s.poll() is None for s in servers), ctx.ns.logs / f"{name}.log"
            print(f"{step.key}: up in {time.monotonic() - started:.0f} s")
        finally:
            for server in reversed(servers):
                stop(server)
            print(f"{step.key}: stopped after {time.monotonic() - started:.0f} s")
    if flex_sim is not None:
        stop(flex_sim)
    deadline = time.monotonic() + 30
    while ctx.ns.members() and time.monotonic() < deadline:
        time.sleep(1)
    leftover = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in ctx.ns.members()}
    assert leftover == {}, f"processes left running after their block: {leftover}"


@pytest.mark.slow
def test_readme_commands_work_verbatim(context: Context) -> None:
    """README.md: ~2.5 min on an idle 2-core machine (dbt runs twice: import, backfill)."""
    run_plan(context, "README.md")


def readme_text() -> str:
    return (ROOT / "README.md").read_text()
