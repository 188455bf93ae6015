"""``StatementParts``: a large statement parsed in parts of whole accounts gives, part after part,
exactly the tables of the whole document (on every real statement, split at every account, and on
simulated ones), whichever reader (scanner or lxml) reads it, even when the scanner gives up
half-way; an account whose statements are not consecutive is refused, not split."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from ibpipeline.flex import parse
from ibpipeline.flex.parse import AccountSplitError, ParsedFlex, StatementParts, parse_statement
from ibpipeline.sim.flex_statement import render_statement
from ibpipeline.world import World
from tests.fixture_files import corpus_params


def concatenated(parts: list[ParsedFlex], name: str) -> pa.Table:
    return pa.concat_tables([p.tables[name] for p in parts])


def problem_counts(parsed: list[ParsedFlex]) -> Counter:
    counts: Counter = Counter()
    for p in parsed:
        for problem in p.problems:
            counts[(problem.table, problem.column)] += problem.count
    return counts


def assert_parts_make_the_whole(parts: list[ParsedFlex], whole: ParsedFlex) -> None:
    for name, table in whole.tables.items():
        assert concatenated(parts, name).equals(table), name
    assert tuple(s for p in parts for s in p.statements) == whole.statements
    assert problem_counts(parts) == problem_counts([whole])
    last = parts[-1]
    assert (last.skipped, last.skipped_rows) == (whole.skipped, whole.skipped_rows)
    assert all(not p.skipped and not p.skipped_rows for p in parts[:-1])
    accounts = [{s.account_id for s in p.statements} for p in parts]
    assert sum(len(a) for a in accounts) == len(set().union(*accounts))  # one part per account


def write(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    path = tmp_path / "statement.xml"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("path", corpus_params())
def test_every_real_statement_split_at_every_account_is_the_whole(path: Path):
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    whole = parse_statement(path)
    split = StatementParts(path, sha, part_rows=1)
    try:
        parts = list(split)
    except AccountSplitError:  # an account's statements apart: refused, never split
        accounts = [s.account_id for s in whole.statements]
        runs = [a for i, a in enumerate(accounts) if i == 0 or accounts[i - 1] != a]
        assert len(runs) > len(set(runs))
        return
    assert split.digest == sha
    accounts = {s.account_id for s in whole.statements}
    assert len(parts) >= len(accounts)
    assert_parts_make_the_whole(parts, whole)


def world_statement(accounts: int, days: int) -> bytes:
    start = date(2024, 1, 2)
    world = World(seed=5, n_accounts=accounts, inception=start)
    ids = [a.account_id for a in world.accounts]
    return render_statement(world, ids, start, start + timedelta(days=days - 1))


def test_a_simulated_statement_in_parts_of_several_accounts(tmp_path):
    path, sha = write(tmp_path, world_statement(accounts=8, days=60))
    whole = parse_statement(path)
    rows = sum(t.num_rows for t in whole.tables.values())
    parts = list(StatementParts(path, sha, part_rows=rows // 4))
    assert 3 <= len(parts) <= 5  # a part ends at the first account change after rows // 4 rows
    assert_parts_make_the_whole(parts, whole)
    assert [p.tables["trades"]["statement_sha256"].unique().to_pylist() for p in parts[:1]] == [
        [sha]
    ]
    # one part when the threshold is never reached: the whole document
    (single,) = list(StatementParts(path, sha, part_rows=10 * rows))
    assert_parts_make_the_whole([single], whole)


def test_the_scanner_giving_up_half_way_resumes_with_lxml(tmp_path, monkeypatch):
    data = world_statement(accounts=6, days=40)
    # an XML comment near the end: the scanner reads the first blocks, hands out their parts,
    # then declines; lxml reads it all again and hands out only the parts not yet given
    end = data.rindex(b"</FlexStatements>")
    data = data[:end] + b"<!-- a comment the scanner does not read -->" + data[end:]
    path, sha = write(tmp_path, data)
    monkeypatch.setattr(parse, "SCAN_CHUNK_BYTES", 1 << 16)
    whole = parse_statement(path)
    split = StatementParts(path, sha, part_rows=1)
    parts = list(split)
    assert len(parts) == 6
    assert_parts_make_the_whole(parts, whole)
    assert split.digest == sha


def test_an_account_seen_again_after_its_part_is_refused(tmp_path):
    data = world_statement(accounts=3, days=10)
    first = data.index(b"<FlexStatement ")
    second = data.index(b"<FlexStatement ", first + 1)
    end = data.index(b"</FlexStatement>", first) + len(b"</FlexStatement>")
    repeated = data[first:end]  # the first account's statement, again at the end
    last = data.rindex(b"</FlexStatements>")
    data = data[:last] + repeated + data[last:]
    path, sha = write(tmp_path, data.replace(b'count="3"', b'count="4"'))
    assert second > end
    with pytest.raises(AccountSplitError, match="two parts"):
        list(StatementParts(path, sha, part_rows=1))
