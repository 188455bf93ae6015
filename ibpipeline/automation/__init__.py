"""Orchestration: ``jobs`` (Flex raw/normalize, inbox import), ``schedules`` (daily Flex run),
``sensors`` (account discovery, raw -> normalized chaining, inbox), ``backfill`` (the synchronous
``ibpipeline backfill``), ``ranges`` (range-run helpers) and ``gateway_schedule``.

Deliberately imports nothing: ``ibpipeline.definitions`` imports the submodules it registers.
"""
