"""Reading CSV/Parquet tables: time parsing, label columns never as signals, segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from common.timestamps import MIN_TS_MS
from stream.files import EMPTY, RISING, ROW_ORDER, FileFormatError, read_table

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


@pytest.mark.parametrize("name", ["timestamps", "T_STAMP", "Date", "date_time"])
def test_time_columns_by_the_names_data_sets_and_historians_give_them(
    tmp_path: Path, name: str
) -> None:
    # Yahoo's A3/A4 benchmark files say "timestamps", Ignition's historian "t_stamp": read
    # as a signal, a clock only rises and every window is new to the model.
    f = tmp_path / "x.csv"
    f.write_text(f"{name},value\n1416733200,5\n1416726000,4\n1416729600,6\n")
    t = read_table(f)
    assert t.time_column == name and t.signals == ("value",)
    assert np.diff(t.ts_ms).tolist() == [3_600_000, 3_600_000]


def test_a_row_counter_and_a_fault_number_are_not_signals(tmp_path: Path) -> None:
    # The Tennessee Eastman CSV exports number their rows in a "sample" column: as a
    # signal, every test window lies past anything training saw (81 % of a fault-free
    # run's rows alerted). A sensor with a tie or a dip, and a file's only column, stay.
    rng = np.random.default_rng(0)
    n = 40
    rising = np.cumsum(rng.uniform(0.5, 1.5, n))
    flat_once = rising.copy()
    flat_once[20] = flat_once[19]
    lines = ["faultNumber,simulationRun,sample,x1,level,total"]
    lines += [
        f"{int(i >= 20)},1,{i + 1},{rng.normal():.4f},{flat_once[i]:.4f},{rising[i]:.6f}"
        for i in range(n)
    ]
    f = tmp_path / "tep.csv"
    f.write_text("\n".join(lines) + "\n")
    t = read_table(f)
    assert t.ignored == (("sample", RISING), ("total", RISING))
    # faultNumber is their ground truth, never a signal (as SKAB's anomaly column is not).
    assert t.signals == ("simulationRun", "x1", "level")
    alone = tmp_path / "counter.csv"
    alone.write_text("count\n" + "".join(f"{i}\n" for i in range(n)))
    assert read_table(alone).signals == ("count",) and read_table(alone).ignored == ()
    dead = tmp_path / "dead.csv"
    dead.write_text("a,tag,b\n" + "".join(f"{i % 3},,{i % 5}\n" for i in range(n)))
    assert read_table(dead).signals == ("a", "b")
    assert read_table(dead).ignored == (("tag", EMPTY),)


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


# -- whitespace matrices (the soft-sensor data sets' .txt format) --------------------------

SOFTSENSOR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "softsensor"


@given(
    values=arrays(
        np.float64,
        st.tuples(st.integers(1, 12), st.integers(1, 6)),
        elements=st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False),
    ),
    header=st.sampled_from(["names", "title", "none"]),
    blank_first=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_whitespace_matrix_round_trips(
    tmp_path_factory: pytest.TempPathFactory,
    values: np.ndarray,
    header: str,
    blank_first: bool,
) -> None:
    n = values.shape[1]
    names = [f"c{j}" for j in range(n)]
    lines = ["   "] if blank_first else []
    if header == "names":
        lines.append("   " + "   ".join(names))
    elif header == "title":
        lines.append(f"\tScaled data ({','.join(names)})")
    lines += ["  " + "  ".join(f"{v:.16e}" for v in row) for row in values]
    f = tmp_path_factory.mktemp("m") / "data.txt"
    f.write_text("\n".join(lines) + "\n")
    t = read_table(f, row_interval_ms=60_000)
    expected = tuple(names) if header != "none" else tuple(f"col{j + 1}" for j in range(n))
    assert t.signals == expected
    np.testing.assert_array_equal(t.values, values)
    assert t.time_column == ROW_ORDER
    assert (np.diff(t.ts_ms) == 60_000).all()


def test_a_comma_separated_txt_is_still_a_csv(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("a,b\n1,2\n3,4\n")
    assert read_table(f).signals == ("a", "b")


def test_a_ragged_whitespace_txt_is_not_taken_for_a_matrix(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("a b\n1 2\n3\n")
    with pytest.raises(FileFormatError):
        read_table(f)


@pytest.mark.skipif(
    not (SOFTSENSOR / "SRU_data.txt").is_file(),
    reason="soft-sensor data not present (../shared/datasets/softsensor/, see its README)",
)
def test_the_soft_sensor_files_read_with_their_names() -> None:
    sru = read_table(SOFTSENSOR / "SRU_data.txt")
    assert sru.signals == ("u1", "u2", "u3", "u4", "u5", "y1", "y2") and len(sru) == 10_081
    deb = read_table(SOFTSENSOR / "debutanizer_data.txt")
    assert deb.signals == ("u1", "u2", "u3", "u4", "u5", "u6", "u7", "y") and len(deb) == 2394
    assert deb.values.min() == 0.0 and deb.values.max() == 1.0  # min-max scaled, README
