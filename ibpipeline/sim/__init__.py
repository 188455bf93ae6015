"""Simulators of the IBKR services the pipeline reads (Flex Web Service, IB Gateway)."""
