"""list_managed_accounts against a simulated gateway and a dead address, over loopback."""

from __future__ import annotations

import socket
import time
from datetime import date

from ibpipeline.gateway import GatewayAddress, list_managed_accounts
from ibpipeline.sim.gateway_server import GatewaySimulatorThread
from ibpipeline.world import World


def test_one_live_and_one_dead_gateway():
    world = World(seed=3, n_accounts=3, inception=date(2024, 1, 2))
    served = [world.accounts[2].account_id, world.accounts[0].account_id]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = GatewayAddress("127.0.0.1", sock.getsockname()[1])
    with GatewaySimulatorThread(world, account_ids=served) as sim:
        live = GatewayAddress("127.0.0.1", sim.port)
        answers = list_managed_accounts([live, dead], client_id=21, timeout=2.0)
        deadline = time.monotonic() + 2.0
        while sim.simulator.active_clients and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sim.simulator.active_clients == 0  # disconnected after reading
    assert list(answers) == [str(live), str(dead)]
    assert answers[str(live)] == served
    assert answers[str(dead)] == "connection refused (is the API port open?)"
