"""Code location of the crashed-run test: one asset in pool duckdb_writer that starts a child
process (as dbt is started) and, in a first run (not a retry), never finishes."""

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from ibpipeline.process import children_die_with_this_process

STATE = Path(os.environ.get("IBPIPELINE_CRASH_STATE", "."))


@dg.asset(pool="duckdb_writer")
def locked_write(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    with children_die_with_this_process():
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (STATE / f"{context.run_id}.pids").write_text(f"{os.getpid()} {os.getppid()} {child.pid}")
    while "dagster/parent_run_id" not in context.run.tags:
        time.sleep(0.5)
    child.kill()
    child.wait()
    return dg.MaterializeResult(metadata={"child": child.pid})


crash_job = dg.define_asset_job("crash_job", [locked_write])
defs = dg.Definitions(assets=[locked_write], jobs=[crash_job])
