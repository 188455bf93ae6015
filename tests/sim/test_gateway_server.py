"""Wire-level tests of the IB Gateway simulator with hand-written raw-socket clients.

A tiny hand-built world (one USD account with 100 AAPL at 150.25, NLV 100000.00, plus an EUR
account holding an option, a future and USD cash) makes every expected byte explicit.
"""

from __future__ import annotations

import socket
import struct
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from ibpipeline.sim.gateway_server import (
    UNSET_DOUBLE,
    GatewayFaults,
    GatewaySimulator,
    GatewaySimulatorThread,
    encode_frame,
    negotiate_version,
    parse_hello,
)
from ibpipeline.world.model import (
    Account,
    AccountDay,
    Instrument,
    NavComponents,
    Position,
    Trade,
)

AS_OF = datetime(2025, 1, 15, 14, 30, tzinfo=UTC)  # 09:30 EST
D = Decimal


def _instrument(
    conid: int, symbol: str, category: str, currency: str, exchange: str, **kw: object
) -> Instrument:
    return Instrument(conid, symbol, symbol, category, currency, exchange, **kw)


def _position(conid: int, qty: str, mark: str, value: str, cost: str, ccy: str, cat: str):
    return Position(conid, D(qty), D(mark), D(value), D(cost), (), ccy, cat)


def _nav(cash: str, stock: str, options: str) -> NavComponents:
    total = D(cash) + D(stock) + D(options)
    return NavComponents(D(cash), D(stock), D(options), D(0), D(0), total)


def _day(account_id: str, at: datetime, base: str, **kw: object) -> AccountDay:
    defaults: dict[str, object] = {
        "trades": (),
        "cash_transactions": (),
        "external_flow_base": D(0),
        "daily_return": D(0),
        "prev_nav_base": D(0),
        "variation": {},
    }
    return AccountDay(account_id, at.date(), base, **(defaults | kw))  # type: ignore[arg-type]


class StubWorld:
    """The slice of the World API the simulator reads, with hand-picked figures."""

    accounts = (
        Account("DU1234567", "", "A", "USD", "Individual", "Individual", None, date(2020, 1, 2)),
        Account(
            "DU7654321", "", "B", "EUR", "Advisor Client", "Individual", "F1", date(2020, 1, 2)
        ),
    )
    instruments = {
        265598: Instrument(265598, "AAPL", "Apple", "STK", "USD", "NASDAQ"),
        500001: _instrument(
            500001,
            "SAP   250321C00200000",
            "OPT",
            "EUR",
            "EUREX",
            multiplier=D(100),
            underlying_symbol="SAP",
            strike=D(200),
            expiry=date(2025, 3, 21),
            put_call="C",
        ),
        500002: _instrument(
            500002,
            "FDAXH5",
            "FUT",
            "EUR",
            "EUREX",
            multiplier=D(25),
            underlying_symbol="DAX",
            expiry=date(2025, 3, 21),
        ),
    }

    def state_at(self, account_id: str, at: datetime) -> AccountDay:
        if account_id == "DU1234567":
            aapl = _position(265598, "100", "150.25", "15025.00", "15025.00", "USD", "STK")
            return _day(
                account_id,
                at,
                "USD",
                cash={"USD": D("84975.00")},
                positions={265598: aapl},
                fx_to_base={"USD": D(1)},
                nav=_nav("84975.00", "15025.00", "0"),
                external_flow_base=D("100000.00"),
            )
        trade = Trade(
            account_id,
            "T1",
            "X1",
            "77",
            "E1",
            500001,
            "SAP   250321C00200000",
            "OPT",
            "EUR",
            D(1),
            at.date(),
            at - timedelta(hours=1),
            D(2),
            D("10.5"),
            D("-2100"),
            D("-1.7"),
            "USD",
            D("-2101.7"),
            D("12.5"),
            "O",
            D(0),
            "BUY",
            "EUREX",
            D(100),
        )
        return _day(
            account_id,
            at,
            "EUR",
            cash={"EUR": D("50000.00"), "USD": D("1000.00")},
            positions={
                500001: _position(500001, "2", "12.5", "2500.00", "2100.00", "EUR", "OPT"),
                500002: _position(500002, "-1", "20000", "-500000.00", "-499000.00", "EUR", "FUT"),
            },
            fx_to_base={"EUR": D(1), "USD": D("0.9")},
            nav=_nav("50900.00", "0", "2500.00"),
            trades=(trade,),
            prev_nav_base=D("53000.00"),
        )


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


class RawClient:
    """A blocking TWS API client written from the wire reference (not from the simulator)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)

    def hello(self, versions: bytes = b"v157..178") -> list[str]:
        self.sock.sendall(b"API\0" + struct.pack(">I", len(versions)) + versions)
        return self.recv()

    def send(self, *fields: object) -> None:
        self.sock.sendall(encode_frame(*fields))

    def recv_frame(self) -> bytes:
        header = recv_exact(self.sock, 4)
        return header + recv_exact(self.sock, struct.unpack(">I", header)[0])

    def recv(self) -> list[str]:
        return self.recv_frame()[4:].decode().split("\0")[:-1]

    def recv_until(self, msg_id: str) -> list[list[str]]:
        out = []
        while True:
            fields = self.recv()
            out.append(fields)
            if fields[0] == msg_id:
                return out

    def start(self, client_id: int = 1) -> list[list[str]]:
        """startApi; returns the startup messages up to nextValidId plus farm messages."""
        self.send(71, 2, client_id, "")
        msgs = [self.recv(), self.recv()]
        return msgs

    def is_closed(self, wait: float = 2.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sim():
    with GatewaySimulatorThread(
        StubWorld(), clock=AS_OF, faults=GatewayFaults(farm_messages=False), pnl_interval=0.05
    ) as running:
        yield running


@pytest.fixture
def client(sim):
    c = RawClient(sim.port)
    yield c
    c.close()


def ready(c: RawClient, client_id: int = 1) -> None:
    assert c.hello()[0] == "176"
    c.start(client_id)


def test_reference_byte_level_example(sim):
    """§10 of the protocol reference, byte for byte."""
    c = RawClient(sim.port)
    c.sock.sendall(bytes.fromhex("41504900 00000009") + b"v157..178")
    reply = c.recv_frame()
    assert reply == bytes.fromhex("0000001a") + b"176\x0020250115 09:30:00 EST\x00"
    c.sock.sendall(bytes.fromhex("00000008 37310032 00310000"))
    assert c.recv() == ["15", "1", "DU1234567,DU7654321"]
    assert c.recv() == ["9", "1", "1"]
    c.sock.sendall(bytes.fromhex("00000005 36310031 00"))
    frames = [c.recv_frame() for _ in range(3)]
    aapl = b"61\x003\x00DU1234567\x00265598\x00AAPL\x00STK\x00\x000.0\x00\x00\x00NASDAQ\x00USD\x00AAPL\x00NMS\x00100\x00150.25\x00"
    assert frames[0] == bytes.fromhex("00000045") + aapl
    assert frames[1][4:].split(b"\0")[:3] == [b"61", b"3", b"DU7654321"]
    c.recv_until("62")
    c.sock.sendall(bytes.fromhex("0000001a") + b"62\x001\x001\x00All\x00NetLiquidation\x00")
    assert c.recv_frame() == bytes.fromhex("0000002e") + (
        b"63\x001\x001\x00DU1234567\x00NetLiquidation\x00100000.00\x00USD\x00"
    )
    assert c.recv() == ["63", "1", "1", "DU7654321", "NetLiquidation", "53400.00", "EUR"]
    assert c.recv_frame() == bytes.fromhex("00000007 36340031 003100")
    c.close()


@pytest.mark.parametrize(
    ("hello", "configured", "expected"),
    [
        ("v157..178", 176, 176),
        ("v157..178", 178, 178),
        ("v100..157", 176, 157),
        ("v100..217", 176, 176),
        ("v177..178", 176, None),
        ("v170", 176, 170),
        ("v180..190", 176, None),
    ],
)
def test_version_negotiation(hello, configured, expected):
    lo, hi, _ = parse_hello(hello.encode())
    assert negotiate_version(lo, hi, configured) == expected


def test_hello_options_are_split_off():
    assert parse_hello(b"v157..178 +PACEAPI") == (157, 178, "+PACEAPI")


def test_server_closes_when_client_minimum_is_too_high(sim):
    c = RawClient(sim.port)
    c.sock.sendall(b"API\0" + struct.pack(">I", 9) + b"v177..190")
    assert c.is_closed()


def test_handshake_fed_one_byte_at_a_time_and_coalesced_requests(sim):
    c = RawClient(sim.port)
    for byte in b"API\0" + struct.pack(">I", 9) + b"v157..178":
        c.sock.send(bytes([byte]))
        time.sleep(0.001)
    assert c.recv() == ["176", "20250115 09:30:00 EST"]
    c.sock.sendall(encode_frame(71, 2, 5, "") + encode_frame(49, 1) + encode_frame(17, 1))
    assert c.recv()[0] == "15"
    assert c.recv()[0] == "9"
    assert c.recv() == ["49", "1", str(int(AS_OF.timestamp()))]
    assert c.recv() == ["15", "1", "DU1234567,DU7654321"]
    split = encode_frame(8, 1, 10)
    c.sock.sendall(split[:3])
    time.sleep(0.05)
    c.sock.sendall(split[3:])
    assert c.recv() == ["9", "1", "1"]


def test_exact_field_counts_of_positions_portfolio_and_executions(client):
    ready(client)
    client.send(6, 2, 1, "DU7654321")
    msgs = client.recv_until("54")
    portfolio = [m for m in msgs if m[0] == "7"]
    assert [len(m) for m in portfolio] == [20, 20]
    opt = next(m for m in portfolio if m[2] == "500001")
    # conId..tradingClass, position, marketPrice, marketValue, averageCost (per contract), uPnL
    assert opt[2:13] == [
        "500001",
        "SAP",
        "OPT",
        "20250321",
        "200",
        "C",
        "100",
        "EUREX",
        "EUR",
        "SAP   250321C00200000",
        "SAP",
    ]
    assert opt[13:] == ["2", "12.5", "2500", "1050", "400", "0", "DU7654321"]
    assert msgs[-2][0] == "8" and msgs[-1] == ["54", "1", "DU7654321"]
    values = {(m[2], m[4]): m[3] for m in msgs if m[0] == "6"}
    assert values[("NetLiquidation", "EUR")] == "53400.00"
    assert values[("CashBalance", "USD")] == "1000.00"
    assert values[("ExchangeRate", "USD")] == "0.9"
    assert values[("CashBalance", "BASE")] == "50900.00"
    assert values[("AccountType", "")] == "INDIVIDUAL"

    client.send(61, 1)
    positions = [m for m in client.recv_until("62") if m[0] == "61"]
    assert {len(m) for m in positions} == {16}
    client.send(74, 1, 7, "DU7654321", "")
    multi = client.recv_until("72")
    assert [len(m) for m in multi[:-1]] == [18, 18]
    assert multi[-1] == ["72", "1", "7"]

    client.send(7, 3, 9, 0, "", "", "", "", "", "")
    execs = client.recv_until("55")
    assert [m[0] for m in execs] == ["11", "59", "55"]
    assert len(execs[0]) == 31 and execs[0][14] == "E1" and execs[0][18] == "BOT"
    assert execs[1] == ["59", "1", "E1", "1.7", "USD", "0", "", ""]


def test_exec_details_carry_pending_price_revision_at_178():
    with GatewaySimulatorThread(StubWorld(), clock=AS_OF, server_version=178) as sim178:
        c = RawClient(sim178.port)
        assert c.hello()[0] == "178"
        c.start()
        c.send(7, 3, 9, 0, "DU7654321", "", "", "", "", "")
        execs = c.recv_until("55")
        assert len(next(m for m in execs if m[0] == "11")) == 32
        c.close()


def test_place_order_is_refused_read_only_and_error_layout_follows_version(sim):
    new = RawClient(sim.port)
    ready(new)
    new.send(3, 42, 265598, "AAPL", "STK")  # placeOrder (truncated: only the id is read)
    new.send(49, 1)
    error = new.recv()
    assert error[:4] == ["4", "2", "42", "321"] and len(error) == 6 and error[5] == ""
    assert "Read-Only" in error[4] and "never executes orders" in error[4]
    assert new.recv()[0] == "49"  # nothing else was sent for the order
    old = RawClient(sim.port)
    assert old.hello(b"v100..160")[0] == "160"
    old.start(client_id=2)
    old.send(3, 43, 265598)
    old_error = old.recv()
    assert old_error[:4] == ["4", "2", "43", "321"] and len(old_error) == 5  # no trailing field


def test_third_distinct_account_summary_request_gets_322(client):
    ready(client)
    for req_id in (1, 2, 1):
        client.send(62, 1, req_id, "All", "NetLiquidation")
        assert client.recv_until("64")[-1] == ["64", "1", str(req_id)]
    client.send(62, 1, 3, "All", "NetLiquidation")
    client.send(49, 1)
    error = client.recv()
    assert error[:4] == ["4", "2", "3", "322"]
    assert client.recv()[0] == "49"


def test_account_summary_ledger_tags(client):
    ready(client)
    client.send(62, 1, 1, "All", "AccountType,TotalCashValue,$LEDGER:ALL")
    rows = [m for m in client.recv_until("64") if m[0] == "63"]
    eur = {(m[4], m[6]): m[5] for m in rows if m[3] == "DU7654321"}
    assert eur[("AccountType", "")] == "INDIVIDUAL"
    assert eur[("TotalCashValue", "EUR")] == "50900.00"
    assert eur[("CashBalance", "USD")] == "1000.00"
    assert eur[("CashBalance", "EUR")] == "50000.00"
    assert eur[("CashBalance", "BASE")] == "50900.00"
    assert eur[("ExchangeRate", "BASE")] == "1.00"
    client.send(62, 1, 2, "All", "$LEDGER")
    base_only = [m for m in client.recv_until("64") if m[0] == "63"]
    assert base_only and {m[6] for m in base_only} == {"BASE"}


def test_pnl_stream_is_sent_at_once_and_then_periodically(client):
    ready(client)
    client.send(92, 5, "DU1234567", "")
    first = client.recv()
    assert first == ["94", "5", "0", "0", "0"]  # flat day: NAV == deposit, no unrealized/realized
    client.send(94, 6, "DU7654321", "", 500001)
    single = client.recv()
    assert single == ["95", "6", "2", UNSET_DOUBLE, "400", "0", "2500"]
    kinds = [client.recv()[0] for _ in range(4)]
    assert kinds.count("94") >= 1 and kinds.count("95") >= 1
    client.send(93, 5)
    client.send(95, 6)
    time.sleep(0.15)
    client.send(49, 1)
    while (msg := client.recv())[0] != "49":
        assert msg[0] in ("94", "95")  # only frames already in flight before the cancel


def test_invalid_account_gets_321(client):
    ready(client)
    client.send(92, 8, "U0000000", "")
    error = client.recv()
    assert error[:4] == ["4", "2", "8", "321"] and "U0000000" in error[4]


def test_unknown_messages_are_ignored(client):
    ready(client)
    client.send(999, 1, "junk")
    client.send("notanumber")
    client.send(49, 1)
    assert client.recv()[0] == "49"


def test_client_id_in_use_gets_326_then_close_and_is_freed_on_eof(sim):
    first = RawClient(sim.port)
    ready(first, client_id=7)
    second = RawClient(sim.port)
    second.hello()
    second.send(71, 2, 7, "")
    error = second.recv()
    assert error[:4] == ["4", "2", "-1", "326"] and len(error) == 6
    assert second.is_closed()
    first.close()
    time.sleep(0.1)
    third = RawClient(sim.port)
    ready(third, client_id=7)
    third.send(49, 1)
    assert third.recv()[0] == "49"
    third.close()


def test_startup_sends_farm_and_connectivity_messages():
    faults = GatewayFaults(connectivity_codes=(1100, 1102))
    with GatewaySimulatorThread(StubWorld(), clock=AS_OF, faults=faults) as running:
        c = RawClient(running.port)
        c.hello()
        msgs = c.start() + [c.recv() for _ in range(5)]
        assert [m[0] for m in msgs[:2]] == ["15", "9"]
        assert [m[3] for m in msgs[2:]] == ["2104", "2106", "2158", "1100", "1102"]
        assert all(m[2] == "-1" and len(m) == 6 for m in msgs[2:])
        running.notify(1101)
        assert c.recv()[3] == "1101"
        c.close()


def test_refuse_fault_toggles_at_run_time_on_the_same_port():
    with GatewaySimulatorThread(
        StubWorld(), clock=AS_OF, faults=GatewayFaults(refuse=True)
    ) as running:
        with pytest.raises(ConnectionRefusedError):
            RawClient(running.port)
        running.set_faults(GatewayFaults())
        c = RawClient(running.port)
        assert c.hello()[0] == "176"
        running.set_faults(GatewayFaults(refuse=True))
        with pytest.raises(ConnectionRefusedError):
            RawClient(running.port)
        c.start()  # the established connection keeps working
        c.close()


def test_stall_fault_answers_the_handshake_only():
    with GatewaySimulatorThread(StubWorld(), faults=GatewayFaults(stall=True)) as running:
        c = RawClient(running.port)
        assert c.hello()[0] == "176"
        c.send(71, 2, 1, "")
        c.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            c.recv()
        c.close()


def test_drop_fault_is_one_shot_when_asked():
    faults = GatewayFaults(drop_after_messages=3, one_shot=True, farm_messages=False)
    with GatewaySimulatorThread(StubWorld(), clock=AS_OF, faults=faults) as running:
        c = RawClient(running.port)
        c.hello()
        c.start()
        c.send(61, 1)
        assert c.recv()[0] == "61"
        with pytest.raises((EOFError, ConnectionResetError)):
            c.recv()
        c.close()
        again = RawClient(running.port)
        again.hello()
        again.start()
        again.send(61, 1)
        assert again.recv_until("62")[-1] == ["62", "1"]
        again.close()
        assert running.simulator.faults.drop_after_messages is None


def test_drop_right_after_handshake():
    with GatewaySimulatorThread(
        StubWorld(), faults=GatewayFaults(drop_after_messages=0)
    ) as running:
        c = RawClient(running.port)
        assert c.hello()[0] == "176"
        assert c.is_closed()


def test_unset_pnl_fault():
    faults = GatewayFaults(unset_pnl=True, farm_messages=False)
    with GatewaySimulatorThread(StubWorld(), clock=AS_OF, faults=faults) as running:
        c = RawClient(running.port)
        ready(c)
        c.send(92, 3, "DU1234567", "")
        assert c.recv() == ["94", "3", UNSET_DOUBLE, UNSET_DOUBLE, UNSET_DOUBLE]
        c.close()


def test_simulator_rejects_bad_configuration():
    with pytest.raises(ValueError, match="server_version"):
        GatewaySimulator(StubWorld(), server_version=180)
    with pytest.raises(ValueError, match="U999"):
        GatewaySimulator(StubWorld(), account_ids=["U999"])
    with pytest.raises(ValueError, match="connectivity_codes"):
        GatewayFaults(connectivity_codes=(2104,))


def test_official_ibapi_client_reads_accounts_summary_and_positions(sim):
    """IB's own client (ibapi 9.81 speaks v100..157; the simulator announces 157)."""
    ibapi = pytest.importorskip("ibapi")
    import threading

    from ibapi.client import EClient
    from ibapi.wrapper import EWrapper

    class App(EWrapper, EClient):
        def __init__(self):
            EWrapper.__init__(self)
            EClient.__init__(self, self)
            self.accounts = ""
            self.summary: dict[tuple[str, str, str], str] = {}
            self.positions: dict[tuple[str, int], float] = {}
            self.done = threading.Event()
            self.got_summary = threading.Event()
            self.got_positions = threading.Event()

        def managedAccounts(self, accountsList):
            self.accounts = accountsList

        def nextValidId(self, orderId):
            self.reqAccountSummary(1, "All", "NetLiquidation,$LEDGER:ALL")
            self.reqPositions()

        def accountSummary(self, reqId, account, tag, value, currency):
            self.summary[(account, tag, currency)] = value

        def accountSummaryEnd(self, reqId):
            self.got_summary.set()

        def position(self, account, contract, position, avgCost):
            self.positions[(account, contract.conId)] = float(position)

        def positionEnd(self):
            self.got_positions.set()

    app = App()
    app.connect("127.0.0.1", sim.port, clientId=3)
    assert app.serverVersion() == 157, ibapi.__file__
    thread = threading.Thread(target=app.run, daemon=True)
    thread.start()
    try:
        assert app.got_summary.wait(5) and app.got_positions.wait(5)
    finally:
        app.disconnect()
        thread.join(5)
    assert app.accounts == "DU1234567,DU7654321"
    assert app.summary[("DU1234567", "NetLiquidation", "USD")] == "100000.00"
    assert app.summary[("DU7654321", "CashBalance", "BASE")] == "50900.00"
    assert app.positions == {
        ("DU1234567", 265598): 100.0,
        ("DU7654321", 500001): 2.0,
        ("DU7654321", 500002): -1.0,
    }


@pytest.mark.parametrize("stop_with", ["SIGINT", "SIGTERM"])
def test_run_gateway_simulator_stops_on_a_signal_even_with_sigint_ignored(stop_with: str) -> None:
    """Started as a background job of a script starts it (SIGINT ignored), the simulator still stops
    cleanly on SIGINT or SIGTERM."""
    import signal

    from tests.sim.background import started_with_sigint_ignored

    code = (
        "from ibpipeline.sim.gateway_server import run_gateway_simulator\n"
        "run_gateway_simulator(port=0, accounts=2)\n"
    )
    with started_with_sigint_ignored(code) as process:
        line = process.stdout.readline()
        assert line.startswith("IB Gateway simulator listening on 127.0.0.1:"), line
        process.send_signal(getattr(signal, stop_with))
        assert process.wait(timeout=30) == 0
