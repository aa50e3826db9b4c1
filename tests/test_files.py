"""Reading CSV/Parquet tables: time parsing, label columns never as signals, segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.timestamps import MIN_TS_MS
from stream.files import ROW_ORDER, FileFormatError, read_table

SKAB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "skab"


def test_csv_semicolon_and_labels(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(
        "datetime;a;b;anomaly;changepoint\n"
        "2020-03-09 10:14:34;1;2;0;0\n"
        "2020-03-09 10:14:33;3;;1;1\n"
    )
    t = read_table(f, label_column="anomaly")
    assert t.signals == ("a", "b")  # changepoint is label-like: never a signal
    assert t.ts_ms.tolist() == [1583748873000, 1583748874000]  # sorted by time
    assert t.labels is not None and t.labels.tolist() == [1, 0]
    assert np.isnan(t.values[0, 1])


def test_parquet_with_assets_and_epoch_ms(tmp_path: Path) -> None:
    f = tmp_path / "x.parquet"
    pq.write_table(
        pa.table(
            {
                "ts": [1_795_899_601_000, 1_795_899_600_000, 1_795_899_600_000],
                "asset": ["p2", "p1", "p2"],
                "temp": [1.0, 2.0, 3.0],
                "fault_kind": ["", "", ""],
            }
        ),
        f,
    )
    t = read_table(f)
    assert t.signals == ("temp",)
    assert t.assets is not None and t.assets.tolist() == ["p1", "p2", "p2"]
    assert t.segments() == [(0, 1), (1, 3)]
    assert t.values[:, 0].tolist() == [2.0, 3.0, 1.0]


def test_segments_split_at_gaps(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(
        "timestamp,a\n"
        + "".join(f"{1_795_899_600_000 + s * 1000},{s}\n" for s in [0, 1, 2, 100, 101])
    )
    assert read_table(f).segments(max_gap_ms=10_000) == [(0, 3), (3, 5)]


def test_a_file_without_a_clock_keeps_row_order_one_second_apart(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("a,label\n3,0\n1,1\n2,0\n")
    t = read_table(f, label_column="label")
    assert t.time_column == ROW_ORDER
    assert t.values[:, 0].tolist() == [3.0, 1.0, 2.0]  # not sorted by value: file order
    assert np.diff(t.ts_ms).tolist() == [1000, 1000] and t.ts_ms[0] == MIN_TS_MS


def test_small_numbers_as_time_are_seconds_even_before_2000(tmp_path: Path) -> None:
    # Benchmarks index their rows 1, 2, 3 ... in a "timestamp" column: seconds from 1970.
    f = tmp_path / "x.csv"
    f.write_text("timestamp,value\n2,5\n1,4\n3,6\n")
    t = read_table(f)
    assert t.ts_ms.tolist() == [1000, 2000, 3000]


def test_errors_name_the_problem(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("when,a\n1,2\n")
    with pytest.raises(FileFormatError, match="not among"):
        read_table(f, time_column="at")
    with pytest.raises(FileFormatError, match="does not exist"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(FileFormatError, match="label column"):
        read_table(f, time_column="when", label_column="y")
    g = tmp_path / "y.json"
    g.write_text("{}")
    with pytest.raises(FileFormatError, match=r"csv or \.parquet"):
        read_table(g)


@pytest.mark.skipif(not SKAB.is_dir(), reason="SKAB data set not present at ../shared/datasets")
def test_reads_skab() -> None:
    t = read_table(SKAB / "valve1" / "0.csv", label_column="anomaly")
    assert len(t.signals) == 8 and "changepoint" not in t.signals
    assert len(t) == 1147 and t.labels is not None and int(t.labels.sum()) == 401
