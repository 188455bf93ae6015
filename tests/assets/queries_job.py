"""``flex_daily_job`` of the project's definitions, built in whichever process imports it (for
``dg.reconstructable``: launched-run style execution with the multiprocess executor)."""

import dagster as dg


def flex_daily_job() -> dg.JobDefinition:
    from ibpipeline.definitions import build_defs

    return build_defs().resolve_job_def("flex_daily_job")
