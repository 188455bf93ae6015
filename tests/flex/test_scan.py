"""The vectorized scanner (``ibpipeline.flex.scan``) reads exactly what lxml reads.

``parse_statement`` reads bytes of the regular Flex shape with the scanner and anything else with
lxml (``parse_with_lxml``). These tests hold the two equal, table by table and field by field,
on every real statement, on simulated ones, on hand-made values that an XML parser rewrites
(entities, character references, literal whitespace), in small chunks and from a file; and they
check that every shape the scanner does not read, and every malformed input, ends in lxml's
result or lxml's error.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from ibpipeline.flex import parse
from ibpipeline.flex.parse import FlexParseError, ParsedFlex, parse_statement, parse_with_lxml
from ibpipeline.flex.scan import IrregularXml
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.world import World
from tests.fixture_files import corpus_files, corpus_params

FIELDS = ("statements", "source_sha256", "query_name", "query_type", "skipped", "warnings")
FIELDS += ("problems", "skipped_rows")
NOT_REGULAR = {  # corpus files with XML comments: read by lxml
    "jal__ibkr.xml",
    "jal__ibkr_bond.xml",
    "jal__ibkr_corp_actions.xml",
}


def assert_same(scanned: ParsedFlex, parsed: ParsedFlex) -> None:
    for name, table in parsed.tables.items():
        assert scanned.tables[name].equals(table), name
    for field in FIELDS:
        assert getattr(scanned, field) == getattr(parsed, field), field


def scanned(data: bytes | Path) -> ParsedFlex:
    """The scanner's result (fails the test if the scanner declines the input)."""
    return parse._parse_scanned(data, None)


@pytest.mark.parametrize("path", corpus_params())
def test_every_real_statement_reads_the_same_as_with_lxml(path: Path):
    expected = parse_with_lxml(path)
    if path.name in NOT_REGULAR:
        with pytest.raises(IrregularXml):
            scanned(path.read_bytes())
        assert_same(parse_statement(path), expected)
    else:
        assert_same(scanned(path.read_bytes()), expected)
        assert_same(scanned(path), expected)


def test_most_of_the_corpus_takes_the_scanner():
    files = corpus_files()
    assert len([p for p in files if p.name not in NOT_REGULAR]) >= 19


def world_statement(accounts: int = 3, days: int = 40) -> bytes:
    start = date(2024, 1, 2)
    world = World(seed=11, n_accounts=accounts, inception=start)
    ids = [a.account_id for a in world.accounts]
    return render_statement(world, ids, start, start + timedelta(days=days - 1))


def test_a_simulated_statement_in_small_chunks_and_flushes(monkeypatch, tmp_path):
    data = world_statement()
    expected = parse_with_lxml(data)
    assert expected["trades"].num_rows > 0 and expected["open_positions"].num_rows > 0
    assert_same(scanned(data), expected)
    # chunks cut every ~64 KiB and a flush every 500 rows: the same tables
    monkeypatch.setattr(parse, "SCAN_CHUNK_BYTES", 1 << 16)
    monkeypatch.setattr(parse, "FLUSH_ROWS", 500)
    expected_small_flush = parse_with_lxml(data)
    assert_same(scanned(data), expected_small_flush)
    path = tmp_path / "statement.xml"
    path.write_bytes(data)
    assert_same(scanned(path), expected_small_flush)


HEAD = (
    '<FlexQueryResponse queryName="q" type="AF">\n<FlexStatements count="1">\n'
    '<FlexStatement accountId="U1" fromDate="20240102" toDate="20240102" period="" '
    'whenGenerated="20240103;010203">\n<Trades>\n'
)
TAIL = "</Trades>\n</FlexStatement>\n</FlexStatements>\n</FlexQueryResponse>\n"


def trade(description: str, extra: str = "") -> str:
    return (
        f'<Trade accountId="U1" currency="USD" symbol="SPY" description="{description}" '
        f'tradeDate="20240102" quantity="1" tradePrice="1" levelOfDetail="EXECUTION"{extra} />\n'
    )


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("S&amp;P 500", "S&P 500"),
        ("S&#38;P &#x41;&#66; &lt;x&gt; &quot;q&quot; &apos;a&apos;", "S&P AB <x> \"q\" 'a'"),
        ("tab\there", "tab here"),
        ("line\nbreak", "line break"),
        ("crlf\r\nbreak", "crlf break"),
        ("kept&#10;line&#9;tab", "kept\nline\ttab"),
        ("Zürich € 株", "Zürich € 株"),
    ],
)
def test_values_are_what_an_xml_parser_reads(raw: str, value: str):
    data = (HEAD + trade(raw) + TAIL).encode()
    expected = parse_with_lxml(data)
    assert expected["trades"]["description"].to_pylist() == [value]
    assert_same(scanned(data), expected)


@pytest.mark.parametrize(
    "xml",
    [
        '<?xml version="1.0" encoding="UTF-8"?>\n' + HEAD + trade("a") + TAIL,
        "\ufeff" + HEAD + trade("a") + TAIL,
        HEAD.replace("<Trades>\n", "<Trades >\n")
        + trade("a")
        + TAIL.replace("</Trades>", "</Trades >"),
        HEAD + trade("a").replace(" />", "/>").replace('" ', '"\n    ') + TAIL,
    ],
    ids=["declaration", "byte-order-mark", "space-in-tags", "attributes-on-lines"],
)
def test_regular_variants_take_the_scanner(xml: str):
    data = xml.encode()
    assert_same(scanned(data), parse_with_lxml(data))


@pytest.mark.parametrize(
    "xml",
    [
        HEAD + "<!-- a comment -->\n" + trade("a") + TAIL,
        HEAD + trade("a").replace('description="a"', "description='a'") + TAIL,
        HEAD + trade("a").replace(" />", "></Trade>") + TAIL,
        HEAD + "<Trade/>\n" + trade("a") + TAIL,
        HEAD + "<![CDATA[x]]>\n" + trade("a") + TAIL,
        "  \n" + HEAD + trade("a") + TAIL,
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n' + HEAD + trade("Z\xfcrich") + TAIL,
        HEAD + trade("a") + "text\n" + TAIL,
        HEAD + trade("a", ' xmlns:x="urn:x" x:note="n"') + TAIL,
        HEAD.replace("<FlexQueryResponse ", '<FlexQueryResponse xmlns="urn:x" ') + TAIL,
    ],
    ids=["comment", "single-quotes", "row-with-end-tag", "row-without-attributes", "cdata",
         "leading-space", "latin-1", "text", "prefixed-namespace", "default-namespace"],
)  # fmt: skip
def test_other_shapes_fall_back_to_lxml_with_the_same_result(xml: str):
    data = xml.encode("latin-1" if "ISO-8859-1" in xml else "utf-8")
    with pytest.raises(IrregularXml):
        scanned(data)
    try:
        expected = parse_with_lxml(data)
    except FlexParseError as exc:  # a default namespace renames the root: lxml's error
        with pytest.raises(FlexParseError, match="root element is <{urn:x}FlexQueryResponse>"):
            parse_statement(data)
        assert "xmlns=" in xml, exc
        return
    assert_same(parse_statement(data), expected)


@pytest.mark.parametrize(
    "xml",
    [
        HEAD + trade("a"),  # truncated
        HEAD + trade("a") + TAIL.replace("</Trades>", "</Trade>"),  # wrong end tag
        HEAD + trade("a<b") + TAIL,  # '<' in a value
        HEAD + trade("a & b") + TAIL,  # bare '&'
        HEAD + trade("&nbsp;") + TAIL,  # undefined entity
        HEAD + trade("a", ' symbol="X"') + TAIL,  # duplicate attribute
        HEAD + trade("a") + TAIL + "<FlexQueryResponse/>\n",  # content after the root
        HEAD + trade("a\x01") + TAIL,  # control character
        HEAD + trade('a" x="1') + TAIL.replace("</Trades>", "</Trades x=>"),  # bad attribute
    ],
    ids=["truncated", "wrong-end-tag", "lt-in-value", "bare-amp", "undefined-entity",
         "duplicate-attribute", "after-root", "control", "bad-attribute"],
)  # fmt: skip
def test_malformed_input_gets_lxmls_error(xml: str):
    data = xml.encode()
    with pytest.raises(FlexParseError) as lxml_error:
        parse_with_lxml(data)
    with pytest.raises(FlexParseError) as error:
        parse_statement(data)
    assert str(error.value) == str(lxml_error.value)
    assert "invalid or truncated Flex XML" in str(error.value)


def test_a_wrong_root_is_the_same_error_either_way():
    data = b'<FlexStatementResponse timestamp="x"><Status>Fail</Status></FlexStatementResponse>'
    with pytest.raises(FlexParseError, match="status/error envelope"):
        parse_statement(data)
    data = b'<html lang="en"><body class="x"/></html>'
    with pytest.raises(FlexParseError, match=r"root element is <html>"):
        scanned(data)


def test_string_views_match_the_bytes_they_point_at():
    """Arrow ``string_view`` pieces (inline up to 12 bytes, else prefix + offset), near the end
    of the buffer too, equal Python's slices of the same bytes."""
    import numpy as np

    from ibpipeline.flex.scan import _string_views

    data = bytes(range(32, 127)) * 3
    u8 = np.frombuffer(data, np.uint8)
    rng = np.random.default_rng(5)
    starts = rng.integers(0, len(data), 400)
    lengths = np.minimum(rng.integers(0, 30, 400), len(data) - starts)
    starts = np.concatenate([starts, [len(data) - 1, len(data) - 12, len(data) - 13, 0]])
    lengths = np.concatenate([lengths, [1, 12, 13, 0]])
    views = _string_views(u8, starts, lengths)
    views.validate(full=True)
    expected = [data[s : s + n].decode() for s, n in zip(starts, lengths, strict=True)]
    assert views.to_pylist() == expected


@pytest.mark.parametrize("path", corpus_params())
def test_statement_accounts_by_the_scanner_equal_lxmls(path: Path):
    from ibpipeline.flex.ingest import _account_ids_lxml, statement_accounts
    from ibpipeline.flex.scan import scan_document
    from ibpipeline.flex.schema import NULL_TOKENS

    data = path.read_bytes()
    raw = _account_ids_lxml(data)
    expected = tuple(sorted(raw))
    if path.name in NOT_REGULAR:
        with pytest.raises(IrregularXml):
            scan_document(data)
    else:
        found = scan_document(data)
        assert found.root == "FlexQueryResponse"
        assert {a for a in found.account_ids if a not in NULL_TOKENS} <= raw
    assert statement_accounts(data) == expected


def test_scan_document_checks_nesting_and_the_root():
    from ibpipeline.flex.scan import scan_document

    good = (HEAD + trade("a") + TAIL).encode()
    assert scan_document(good).account_ids == {"U1"}
    assert scan_document(good, size=64).statement_account_ids == ("U1",)  # cut in many blocks
    for bad in (
        HEAD + trade("a"),
        HEAD + trade("a") + TAIL.replace("</Trades>", "</Trade>"),
        HEAD + trade("a") + TAIL + "<x/>",
    ):
        with pytest.raises(IrregularXml):
            scan_document(bad.encode())
