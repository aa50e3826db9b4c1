"""File sources: CSV and Parquet tables of readings, for training and backtests.

A table has a time column (``timestamp``, ``datetime``, ``time`` or ``ts``, or named by
the caller), numeric signal columns, and optionally an ``asset`` column and a label
column. Besides CSV and Parquet, a ``.txt``/``.dat`` whitespace-separated numeric matrix
(the soft-sensor benchmarks' format: blank or title lines, a header of names or a title
naming them in parentheses, numbers like ``2.6890035e-001``) is read as a table.
Label-like columns (``anomaly``, ``changepoint``, ``fault`` …) are never used as signals,
so a label can never leak into a model's inputs.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from common.cadence import cadence_of_intervals, measure_cadence
from common.timestamps import MIN_TS_MS

#: Time columns found by name (case-insensitive), in this order of preference: what
#: historians and public data sets call them (Yahoo's A3/A4 say "timestamps", Ignition
#: "t_stamp").
TIME_COLUMNS = ("timestamp", "timestamps", "datetime", "date_time", "time", "ts", "t_stamp", "date")
#: Parts of a column name that say it may be a clock, for the note on a file without one.
CLOCK_WORDS = ("time", "stamp", "date", "epoch")
#: Columns that carry ground truth in common data sets (SKAB, our simulator, NAB-style
#: files, the Tennessee Eastman CSV exports' ``faultNumber``), compared in lower case; they
#: are excluded from the signals whether or not they are the chosen label.
LABEL_LIKE_COLUMNS = frozenset(
    {
        "anomaly",
        "changepoint",
        "label",
        "labels",
        "fault",
        "fault_kind",
        "faultnumber",
        "fault_number",
        "is_fault",
        "is_anomaly",
        "attack",
    }
)
#: ``time_column`` of a file without one: rows in file order, ``row_interval_ms`` apart.
ROW_ORDER = ""
#: Suffixes that may hold a whitespace-separated matrix instead of a delimited table.
MATRIX_SUFFIXES = (".txt", ".dat")
#: Epoch numbers below this are taken as seconds, above as milliseconds.
_EPOCH_SECONDS_LIMIT = 100_000_000_000


class FileFormatError(ValueError):
    """A file that cannot be read as a table of readings; the message says why."""


@dataclass(frozen=True)
class Table:
    """Readings in time order: ``values`` is (rows, signals) float64, NaN where missing."""

    ts_ms: npt.NDArray[np.int64]
    signals: tuple[str, ...]
    values: npt.NDArray[np.float64]
    assets: npt.NDArray[np.object_] | None
    labels: npt.NDArray[np.int8] | None
    time_column: str
    #: Numeric columns left out of the signals, with why (:data:`RISING`, :data:`EMPTY`):
    #: see :func:`read_table`.
    ignored: tuple[tuple[str, str], ...] = ()

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def asset_rows(self) -> list[tuple[object, int, int]]:
        """``(asset, start, end)`` of each asset's rows (one range when there is no asset)."""
        n = len(self)
        if n == 0:
            return []
        if self.assets is None:
            return [(None, 0, n)]
        change = np.flatnonzero(self.assets[1:] != self.assets[:-1]) + 1
        starts = [0, *change.tolist()]
        ends = [*change.tolist(), n]
        return [(self.assets[s], s, e) for s, e in zip(starts, ends, strict=True)]

    def cadence(self) -> dict[str, Any]:
        """Each asset's sampling interval, and all assets' pooled (``Cadence.to_json``).

        ``{"interval_ms": …, "p10_ms": …, "p90_ms": …, "intervals": …, "assets": {…}}``;
        the model artifact keeps it, so the monitor judges gaps in the asset's own terms.
        """
        per_asset = {
            str(asset): measure_cadence(self.ts_ms[s:e]) for asset, s, e in self.asset_rows()
        }
        diffs = [np.diff(self.ts_ms[s:e]) for _, s, e in self.asset_rows()]
        out = cadence_of_intervals(np.concatenate(diffs) if diffs else []).to_json()
        if self.assets is not None:
            out["assets"] = {a: c.to_json() for a, c in per_asset.items()}
        return out

    def segments(
        self, *, max_gap_ms: int | None = None, max_gap_intervals: float | None = None
    ) -> list[tuple[int, int]]:
        """Row ranges ``[start, end)`` contiguous in time: per asset, split at long gaps.

        A gap is longer than ``max_gap_ms`` or, when that is None, longer than
        ``max_gap_intervals`` times the asset's own median interval (so minute data is not
        cut at every row). Rows of one asset must be contiguous in the table (``read_table``
        sorts them so).
        """
        bounds: list[tuple[int, int]] = []
        for _, start, end in self.asset_rows():
            ts = self.ts_ms[start:end]
            limit: float | None = max_gap_ms
            if limit is None and max_gap_intervals is not None:
                interval = measure_cadence(ts).interval_ms
                limit = None if interval is None else max_gap_intervals * interval
            cut = np.zeros(end - start, dtype=bool)
            cut[0] = True
            if limit is not None:
                cut[1:] |= np.diff(ts) > limit
            starts = (np.flatnonzero(cut) + start).tolist()
            ends = [*starts[1:], end]
            bounds.extend((int(s), int(e)) for s, e in zip(starts, ends, strict=True))
        return bounds


def _sniff_delimiter(path: Path) -> str:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        head = fh.read(8192)
    try:
        return csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _numbers(line: str) -> list[float] | None:
    try:
        return [float(tok) for tok in line.split()]
    except ValueError:
        return None


def _matrix_names(header: list[str], n: int) -> list[str]:
    """Column names from the last text line above the numbers, else ``col1 … coln``.

    A line of exactly ``n`` words names the columns; a title with ``n`` comma-separated
    names in parentheses does too (``SRU Scaled data (u1,u2,u3,u4,u5,y1,y2)``).
    """
    for line in reversed(header):
        # Names in parentheses first: a title of n words must not become the names.
        for inner in re.findall(r"\(([^()]*)\)", line):
            names = [w.strip() for w in inner.split(",")]
            if len(names) == n and all(names):
                return names
        words = line.split()
        if len(words) == n:
            return words
    return [f"col{i + 1}" for i in range(n)]


def read_matrix(path: Path) -> pa.Table | None:
    r"""A whitespace-separated numeric matrix as a table; None when the file is not one.

    The file is one if its first line of numbers has no ``,``, ``;`` or ``|`` and every
    later non-blank line holds as many numbers; text lines may only come before the numbers.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     f = pathlib.Path(tmp) / "m.txt"
    ...     _ = f.write_text("  \n  a   b\n  1.0e-001  2\n  3  4\n")
    ...     read_matrix(f).to_pydict()
    {'a': [0.1, 3.0], 'b': [2.0, 4.0]}
    """
    header: list[str] = []
    rows: list[list[float]] = []
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            numbers = _numbers(line)
            if not rows:
                if numbers is None or not numbers:
                    header.append(line)
                    if len(header) > 20:
                        return None
                    continue
                if any(sep in line for sep in ",;|"):
                    return None
            if numbers is None or len(numbers) != len(rows[0] if rows else numbers):
                return None
            rows.append(numbers)
    if not rows:
        return None
    names = _matrix_names(header, len(rows[0]))
    if len(set(names)) != len(names):
        names = [f"col{i + 1}" for i in range(len(names))]
    data = np.asarray(rows, dtype=np.float64)
    return pa.table({name: data[:, j] for j, name in enumerate(names)})


def _read_arrow(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FileFormatError(f"{path} does not exist")
    if suffix in MATRIX_SUFFIXES:
        matrix = read_matrix(path)
        if matrix is not None:
            return matrix
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path)
        if suffix in (".csv", ".txt", ".tsv"):
            return pacsv.read_csv(
                path, parse_options=pacsv.ParseOptions(delimiter=_sniff_delimiter(path))
            )
    except (pa.ArrowInvalid, OSError) as exc:
        raise FileFormatError(f"{path} could not be read: {exc}") from exc
    raise FileFormatError(
        f"{path}: use a .csv or .parquet file (or a whitespace-separated .txt matrix) "
        f"(got {suffix or 'no suffix'})"
    )


def _to_epoch_ms(column: pa.ChunkedArray, name: str) -> npt.NDArray[np.int64]:
    typ = column.type
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return np.asarray(pc.cast(column, pa.timestamp("ms", tz="UTC")).cast(pa.int64()), np.int64)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        raw = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
        if not np.all(np.isfinite(raw)):
            raise FileFormatError(f"time column {name!r} has empty or non-finite values")
        scale = 1000.0 if raw.size and np.nanmax(np.abs(raw)) < _EPOCH_SECONDS_LIMIT else 1.0
        return np.rint(raw * scale).astype(np.int64)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        # Offsets given ("Z", "+01:00") are honoured; a time without one is taken as UTC.
        for target in (pa.timestamp("ms", tz="UTC"), pa.timestamp("ms")):
            try:
                return np.asarray(pc.cast(column, target).cast(pa.int64()), dtype=np.int64)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
        first = column[0].as_py() if len(column) else None
        raise FileFormatError(
            f"time column {name!r} is not RFC 3339 / ISO 8601 text (first value {first!r})"
        )
    raise FileFormatError(f"time column {name!r} has type {typ}, not a time or a number")


def read_table(
    path: str | Path,
    *,
    time_column: str | None = None,
    asset_column: str = "asset",
    label_column: str | None = None,
    signals: Sequence[str] | None = None,
    row_interval_ms: int = 1000,
) -> Table:
    """Read a CSV (``,``/``;``/tab separated, sniffed) or Parquet file into a :class:`Table`.

    Rows are sorted by asset, then time (stable). ``signals`` fixes which columns are used
    and in which order (a model's signal list); otherwise every numeric column that is not
    the time, asset or a label-like column is a signal, except one that rises at every row
    (a counter) or has no value at all (a dead tag), while others remain: those are named
    in ``Table.ignored`` with why. With no time column (none named
    and none of :data:`TIME_COLUMNS`), rows keep file order, ``row_interval_ms`` apart
    (one second unless told: the soft-sensor data sets are given one row per minute).
    """
    if row_interval_ms < 1:
        raise FileFormatError(f"row_interval_ms must be at least 1, got {row_interval_ms}")
    path = Path(path)
    table = _read_arrow(path)
    names = list(table.column_names)
    if time_column is None:
        lowered = {n.lower(): n for n in names}
        time_column = next((lowered[c] for c in TIME_COLUMNS if c in lowered), None)
    elif time_column != ROW_ORDER and time_column not in names:
        raise FileFormatError(f"{path}: time column {time_column!r} not among {names[:12]}")
    if label_column is not None and label_column not in names:
        raise FileFormatError(f"{path}: label column {label_column!r} not among {names[:12]}")
    if time_column is None or time_column == ROW_ORDER:
        # A matrix of readings with no clock (a lab export, a benchmark's .txt): file order,
        # row_interval_ms apart. The cadence is then that interval; settings in
        # milliseconds (cooldown, re-baselining) count readings in it.
        time_column = ROW_ORDER
        ts_ms = MIN_TS_MS + row_interval_ms * np.arange(table.num_rows, dtype=np.int64)
    else:
        ts_ms = _to_epoch_ms(table.column(time_column), time_column)

    reserved = {time_column, asset_column, label_column} | {
        n for n in names if n.lower() in LABEL_LIKE_COLUMNS
    }
    if signals is None:
        chosen = [
            n
            for n in names
            if n not in reserved
            and (
                pa.types.is_integer(table.schema.field(n).type)
                or pa.types.is_floating(table.schema.field(n).type)
                or pa.types.is_null(table.schema.field(n).type)
            )
        ]
    else:
        missing = [s for s in signals if s not in names]
        if missing:
            raise FileFormatError(f"{path}: the model's signals {missing} are not in the file")
        chosen = list(signals)
    if not chosen:
        raise FileFormatError(f"{path}: no numeric signal columns besides time/asset/labels")
    values = _numeric(path, table, chosen)
    ignored: tuple[tuple[str, str], ...] = ()
    if signals is None:
        # A column that rises at every row of the file is a row counter or a clock (the
        # TEP exports' "sample"): as a signal, every later window lies past anything
        # training saw. A real sensor, noise and all, never rises at every single row.
        # A column with no value at all (a dead tag in a historian export) leaves no
        # reading complete. Neither is a signal, unless nothing else is.
        why = [
            RISING if _rises_every_row(values[:, j]) else EMPTY if _empty(values[:, j]) else ""
            for j in range(len(chosen))
        ]
        keep = [j for j, w in enumerate(why) if not w]
        if keep and len(keep) < len(chosen):
            ignored = tuple((chosen[j], w) for j, w in enumerate(why) if w)
            chosen, values = [chosen[j] for j in keep], values[:, keep]

    assets = None
    if asset_column in names:
        assets = np.asarray(
            pc.cast(table.column(asset_column), pa.string()).to_numpy(zero_copy_only=False),
            dtype=object,
        )
    labels = None
    if label_column is not None:
        raw = np.asarray(
            pc.cast(table.column(label_column), pa.float64()).to_numpy(zero_copy_only=False),
            dtype=np.float64,
        )
        labels = (np.nan_to_num(raw) > 0).astype(np.int8)

    order = np.lexsort((ts_ms, assets)) if assets is not None else np.argsort(ts_ms, kind="stable")
    return Table(
        ts_ms=ts_ms[order],
        signals=tuple(chosen),
        values=values[order],
        assets=assets[order] if assets is not None else None,
        labels=labels[order] if labels is not None else None,
        time_column=time_column,
        ignored=ignored,
    )


def _numeric(path: Path, table: pa.Table, names: Sequence[str]) -> npt.NDArray[np.float64]:
    """The columns ``names`` of ``table`` as float64 (rows, columns), NaN where missing."""
    values = np.empty((table.num_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        col = table.column(name)
        try:
            values[:, j] = np.asarray(
                pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise FileFormatError(f"{path}: signal column {name!r} is not numeric") from exc
    values[~np.isfinite(values)] = np.nan
    return values


#: Rows a column must rise over, every one, to be taken for a counter rather than a signal.
MIN_RISING_ROWS = 10
#: Why :func:`read_table` left a numeric column out of the signals (``Table.ignored``).
RISING = "rises at every row (a row counter or a clock)"
EMPTY = "has no value at all"


def _empty(column: npt.NDArray[np.float64]) -> bool:
    return not bool(np.isfinite(column).any())


def _rises_every_row(column: npt.NDArray[np.float64]) -> bool:
    """Whether ``column`` (file order) is present in every row and rises at each.

    >>> _rises_every_row(np.arange(12.0)), _rises_every_row(np.r_[np.arange(11.0), 10.0])
    (True, False)
    """
    return (
        column.size >= MIN_RISING_ROWS
        and bool(np.isfinite(column).all())
        and bool((np.diff(column) > 0).all())
    )


def iter_rows(table: Table, chunk_rows: int) -> Iterator[slice]:
    """Slices of ``chunk_rows`` rows, in the order a streaming replay consumes them."""
    for start in range(0, len(table), chunk_rows):
        yield slice(start, min(start + chunk_rows, len(table)))
