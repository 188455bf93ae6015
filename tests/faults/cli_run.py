"""A CLI-like process: one run of a job whose only step is in pool duckdb_writer, executed in this
process as ``ibpipeline backfill`` executes its run (``run_owner.execute_here``).

``python cli_run.py STATE_DIR NAME hang|finish``: the step starts a child process the way dbt is
started, writes ``NAME.pids`` (this pid, the child's pid) and ``NAME.run`` (its run id) in
STATE_DIR, then hangs (``hang``) or finishes. ``DAGSTER_HOME`` is the instance.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from ibpipeline.automation.run_owner import execute_here
from ibpipeline.process import children_die_with_this_process

STATE, NAME, MODE = Path(sys.argv[1]), sys.argv[2], sys.argv[3]


@dg.asset(pool="duckdb_writer")
def locked_write(context: dg.AssetExecutionContext) -> None:
    with children_die_with_this_process():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (STATE / f"{NAME}.run").write_text(context.run_id)
    (STATE / f"{NAME}.pids").write_text(f"{os.getpid()} {child.pid}")
    if MODE == "hang":
        time.sleep(600)
    child.kill()
    child.wait()


if __name__ == "__main__":
    job = dg.define_asset_job("cli_crash_job", [locked_write])
    defs = dg.Definitions(assets=[locked_write], jobs=[job])
    with dg.DagsterInstance.get() as instance:
        result = execute_here(defs.resolve_job_def("cli_crash_job"), instance, check_interval_s=1)
    print(result.run_id, flush=True)
