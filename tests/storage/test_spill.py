import os
import time
from datetime import date, timedelta

import pyarrow as pa

from ibpipeline.storage.spill import Spill, spill_folder

D1, D2 = date(2024, 3, 1), date(2024, 3, 2)


def rows(accounts: list[str], day: date) -> pa.Table:
    return pa.table(
        {
            "account_id": accounts,
            "date": pa.array([day] * len(accounts), pa.date32()),
            "n": pa.array(range(len(accounts)), pa.int64()),
        }
    )


def test_each_day_reads_back_alone_in_the_order_added_or_sorted(tmp_path):
    with spill_folder(tmp_path) as folder:
        spill = Spill(folder, sort_keys={"sorted": ("account_id",)})
        for name in ("plain", "sorted"):  # two parts, accounts disjoint and interleaved
            spill.add(name, D1, rows(["U1", "U5"], D1))
            spill.add(name, D2, rows(["U1"], D2))
            spill.add(name, D1, rows(["U3", "U7"], D1))
        spill.finish()
        plain, ordered = spill.rows("plain"), spill.rows("sorted")
        assert plain.keys() == {D1, D2}
        assert plain[D1].take()["account_id"].to_pylist() == ["U1", "U5", "U3", "U7"]
        day1 = ordered[D1].take()
        assert day1["account_id"].to_pylist() == ["U1", "U3", "U5", "U7"]
        assert day1["n"].to_pylist() == [0, 0, 1, 1]  # stable: each row kept its values
        assert ordered[D2].take().equals(rows(["U1"], D2))
        assert spill.rows("absent") == {}
        assert any(folder.iterdir())
    assert not folder.exists()  # removed when the block ends


def test_a_folder_left_by_a_killed_process_goes_a_day_later(tmp_path):
    with spill_folder(tmp_path) as folder:
        Spill(folder).add("t", D1, rows(["U1"], D1))
        left = folder.parent / "left-by-a-killed-run"
        (left / "x").mkdir(parents=True)
        recent = folder.parent / "another-run-going-on"
        recent.mkdir()
        two_days_ago = time.time() - timedelta(days=2).total_seconds()
        os.utime(left, (two_days_ago, two_days_ago))
    with spill_folder(tmp_path):
        pass
    assert not left.exists() and recent.exists()
