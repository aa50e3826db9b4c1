"""The file sink: a run to ``.csv`` or ``.parquet`` in time order, plus its labels CSV."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.progress import Progress
from stream.simulator.config import FILE_COLUMNS, N_SIGNALS, SIGNALS
from stream.simulator.generator import PlantSimulator
from stream.simulator.labels import write_labels
from stream.simulator.summary import RunSummary, started_labels, summarize


def default_labels_path(out: str | Path) -> Path:
    """``<out>.labels.csv``, next to the data file."""
    out = Path(out)
    return out.with_name(out.name + ".labels.csv")


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"{path}: the output file must end in .csv or .parquet (got {suffix!r})")


def write_file(
    sim: PlantSimulator,
    path: str | Path,
    *,
    labels_path: str | Path | None = None,
    steps_per_chunk: int | None = None,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Write the run to ``.csv`` or ``.parquet``, rows in time order, plus the labels CSV.

    Columns: :data:`FILE_COLUMNS`. CSV timestamps are RFC 3339 (as ``format_ts`` writes
    them); Parquet has ``timestamp[ms, UTC]``. ``fault`` is 1 inside a fault of that asset,
    ``fault_kind`` the kind or empty. An endless run writes until ``stop`` is set.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    fmt = file_format(path)
    n_a = sim.config.n_assets
    per_chunk = steps_per_chunk or max(1, 100_000 // n_a)
    asset_names_arr = np.array(sim.assets)
    time_type = pa.timestamp("ms", tz="UTC") if fmt == "parquet" else pa.string()
    schema = pa.schema(
        [
            pa.field("timestamp", time_type, nullable=False),
            pa.field("asset", pa.string(), nullable=False),
            *[pa.field(s, pa.float64(), nullable=False) for s in SIGNALS],
            pa.field("fault", pa.int8(), nullable=False),
            pa.field("fault_kind", pa.string(), nullable=False),
        ]
    )
    started = time.monotonic()
    steps = 0
    interrupted = False
    sink = pa.OSFile(str(path), "wb")
    writer: Any
    if fmt == "parquet":
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
    else:
        sink.write((",".join(FILE_COLUMNS) + "\n").encode())
        writer = pacsv.CSVWriter(
            sink,
            schema,
            write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
        )
    try:
        for chunk in sim.chunks(per_chunk):
            ts = chunk.ts_ms.reshape(-1)
            if fmt == "parquet":
                time_col = pa.array(ts, type=pa.timestamp("ms", tz="UTC"))
            else:
                text = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms")
                time_col = pa.array(np.char.add(text, "Z"), type=pa.string())
            flat = chunk.values.reshape(-1, N_SIGNALS)
            columns = [
                time_col,
                pa.array(asset_names_arr[chunk.asset_index()], type=pa.string()),
                *[pa.array(flat[:, j], type=pa.float64()) for j in range(N_SIGNALS)],
                pa.array(chunk.fault.reshape(-1).astype(np.int8), type=pa.int8()),
                pa.array(chunk.fault_kind_names(), type=pa.string()),
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            steps += chunk.n_steps
            if progress is not None:
                progress.update(steps * n_a)
            if stop is not None and stop.is_set():
                interrupted = sim.n_steps is None or steps < sim.n_steps
                break
    finally:
        writer.close()
        sink.close()
        if progress is not None:
            progress.close()
    if labels_path is not None:
        write_labels(labels_path, started_labels(sim.labels, steps))
    return summarize(
        sim,
        steps,
        time.monotonic() - started,
        str(path),
        str(labels_path) if labels_path is not None else None,
        interrupted,
    )
