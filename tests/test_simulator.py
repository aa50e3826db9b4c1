"""The plant simulator: reproducible, chunk-invariant, physically coupled, honestly labelled."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import common.progress
from common.timestamps import format_ts
from plantwatch.settings import load_settings
from plantwatch.simulate import add_arguments, config_from_args, run
from stream.schema import ReadingDecoder, SensorReading
from stream.simulator import (
    FAULT_KINDS,
    FILE_COLUMNS,
    LABEL_COLUMNS,
    SIGNALS,
    Chunk,
    FaultInterval,
    KafkaUnreachableError,
    PlantSimulator,
    Progress,
    SimConfig,
    default_labels_path,
    produce,
    write_file,
)

T, P, Q, CUR, V = range(5)

#: Small but rich: every fault kind twice, normal changes, blocks of 512 steps crossed.
RICH = SimConfig(
    n_assets=3,
    duration_s=4000,
    seed=11,
    faults=12,
    warmup_s=120,
    fault_duration_s=(30, 150),
    regime_changes=2,
    sensor_drifts=2,
    start_ms=1_795_899_600_000,
)


def clean_of(config: SimConfig) -> SimConfig:
    return dataclasses.replace(config, faults=0)


@pytest.fixture(scope="module")
def rich() -> tuple[PlantSimulator, Chunk, Chunk]:
    sim = PlantSimulator(RICH)
    return sim, sim.generate(), PlantSimulator(clean_of(RICH)).generate()


# ---------------------------------------------------------------------- reproducibility


def test_same_seed_same_data_and_other_seed_differs() -> None:
    a = PlantSimulator(RICH).generate()
    b = PlantSimulator(RICH).generate()
    c = PlantSimulator(dataclasses.replace(RICH, seed=12)).generate()
    assert np.array_equal(a.values, b.values)
    assert np.array_equal(a.fault, b.fault)
    assert PlantSimulator(RICH).labels == PlantSimulator(RICH).labels
    assert not np.allclose(a.values, c.values)
    assert PlantSimulator(RICH).labels != PlantSimulator(dataclasses.replace(RICH, seed=12)).labels


@pytest.mark.parametrize("steps_per_chunk", [1, 37, 512, 999])
def test_chunked_generation_equals_one_shot(
    rich: tuple[PlantSimulator, Chunk, Chunk], steps_per_chunk: int
) -> None:
    sim, whole, _ = rich
    chunks = list(sim.chunks(steps_per_chunk))
    assert sum(c.n_steps for c in chunks) == RICH.n_steps
    assert [c.start_step for c in chunks] == list(range(0, 4000, steps_per_chunk))
    for name in ("values", "ts_ms", "fault", "fault_kind", "load", "step_ts_ms"):
        joined = np.concatenate([getattr(c, name) for c in chunks])
        assert np.array_equal(joined, getattr(whole, name)), name


def test_endless_run_streams_the_same_numbers_as_a_finite_one() -> None:
    finite = SimConfig(n_assets=2, duration_s=1500, seed=4)
    endless = dataclasses.replace(finite, duration_s=None)
    sim = PlantSimulator(endless)
    assert sim.n_steps is None
    it = sim.chunks(500)
    first = np.concatenate([next(it).values for _ in range(3)])
    assert np.array_equal(first, PlantSimulator(finite).generate().values)


def test_timestamps_and_time_order() -> None:
    sim = PlantSimulator(SimConfig(n_assets=4, period_ms=10, duration_s=2, seed=1))
    chunk = sim.generate()
    ts = chunk.ts_ms.reshape(-1)
    assert np.all(np.diff(ts) >= 0)  # time-major flattening is time order across assets
    # One step's readings spread evenly over the period, in asset order.
    assert chunk.ts_ms[0].tolist() == [sim.config.start_ms + o for o in (0, 2, 5, 7)]
    assert np.all(np.diff(chunk.ts_ms, axis=0) == 10)
    assert sim.ts_ms(3, 5) == sim.config.start_ms + 50 + 7


# ---------------------------------------------------------------------- physics


def test_signals_are_plausible_and_coupled() -> None:
    sim = PlantSimulator(SimConfig(n_assets=3, duration_s=6 * 3600, seed=2))
    chunk = sim.generate()
    v = chunk.values
    assert np.all(np.isfinite(v))
    assert v[..., T].min() > 30 and v[..., T].max() < 110
    assert v[..., P].min() > 0.5 and v[..., P].max() < 6.5
    assert v[..., Q].min() > 100 and v[..., Q].max() < 700
    assert v[..., CUR].min() > 2 and v[..., CUR].max() < 20
    assert v[..., V].min() > 0.02 and v[..., V].max() < 1.0
    for a in range(3):
        # Current tracks the load; pressure and flow move together along the system curve.
        assert np.corrcoef(v[:, a, CUR], chunk.load[:, a])[0, 1] > 0.75
        assert np.corrcoef(v[:, a, P], v[:, a, Q])[0, 1] > 0.85
        x = np.c_[np.ones(len(v)), v[:, a, Q] ** 2]
        fit, *_ = np.linalg.lstsq(x, v[:, a, P], rcond=None)
        resid = v[:, a, P] - x @ fit
        assert resid.var() < 0.25 * v[:, a, P].var()
        assert np.corrcoef(v[:, a, V], chunk.load[:, a])[0, 1] > 0.4
    # Normal data is not stationary white noise: neighbours are strongly related.
    for j in range(len(SIGNALS)):
        x = v[:, 0, j]
        assert np.corrcoef(x[:-1], x[1:])[0, 1] > 0.5, SIGNALS[j]
    # Per-asset set-points differ.
    assert np.ptp(v[..., Q].mean(axis=0)) > 5


def test_temperature_lags_a_load_step_while_current_follows_at_once() -> None:
    base = SimConfig(n_assets=1, duration_s=9000, seed=0, warmup_s=600, regime_changes=1)
    for seed in range(20):
        config = dataclasses.replace(base, seed=seed)
        step = PlantSimulator(config).labels[0]
        if step.start_step + 4000 <= 9000:
            break
    else:
        pytest.fail("no seed below 20 places the regime change early enough")
    assert step.kind == "regime_change" and not step.is_fault
    with_step = PlantSimulator(config).generate().values[:, 0]
    without = PlantSimulator(dataclasses.replace(config, regime_changes=0)).generate().values[:, 0]
    d = with_step - without
    t0 = step.start_step
    assert np.all(d[:t0] == 0)  # the event changes nothing before it starts
    final = d[t0 + 3000 : t0 + 3600].mean(axis=0)
    early = d[t0 + 20 : t0 + 60].mean(axis=0)
    assert abs(final[CUR]) > 1.0 and abs(final[T]) > 2.0
    assert np.sign(final[CUR]) == np.sign(step.magnitude) == np.sign(final[T])
    assert early[CUR] / final[CUR] > 0.8  # the motor current follows the speed in seconds
    assert early[T] / final[T] < 0.15  # the housing temperature needs many minutes
    assert early[Q] / final[Q] > 0.8


# ---------------------------------------------------------------------- faults


def test_fault_plan_is_spread_non_overlapping_and_after_warmup() -> None:
    config = dataclasses.replace(RICH, n_assets=6, control_assets=2, faults=24)
    sim = PlantSimulator(config)
    assert len(sim.faults) == 24
    assert sorted(f.kind for f in sim.faults) == sorted(FAULT_KINDS * 4)
    by_asset: dict[str, list[FaultInterval]] = defaultdict(list)
    for f in sim.faults:
        by_asset[f.asset].append(f)
        assert f.start_step >= 120  # warm-up of 120 readings at 1 s
        assert f.start_ms - config.start_ms >= 120_000
        assert f.stop_step <= 4000
        assert f.end_ms == sim.ts_ms(sim.assets.index(f.asset), f.stop_step - 1)
        if f.kind == "spike":
            assert 1 <= f.stop_step - f.start_step <= 3
        else:
            assert 30 <= f.stop_step - f.start_step <= 150
    assert set(by_asset) == set(sim.assets[:4])  # the last two are control assets
    for faults in by_asset.values():
        faults.sort(key=lambda f: f.start_step)
        for before, after in itertools.pairwise(faults):
            assert before.stop_step < after.start_step


def test_every_fault_is_in_the_data_and_nothing_else_changes(
    rich: tuple[PlantSimulator, Chunk, Chunk],
) -> None:
    sim, data, clean = rich
    assert {f.kind for f in sim.faults} == set(FAULT_KINDS)
    changed = (data.values != clean.values).any(axis=-1)
    assert not np.any(changed & ~data.fault), "a fault leaked outside its labelled interval"
    step_ = {"temp": 0.25, "pressure": 0.04, "flow": 6.0, "current": 0.2, "vibration_rms": 0.015}
    for f in sim.faults:
        a = sim.assets.index(f.asset)
        span = slice(f.start_step, f.stop_step)
        x, ref = data.values[span, a], clean.values[span, a]
        assert data.fault[span, a].all()
        assert (data.fault_kind[span, a] == FAULT_KINDS.index(f.kind)).all()
        j = SIGNALS.index(f.signals[0])
        if f.kind == "stuck_sensor":
            assert np.all(x[:, j] == data.values[f.start_step - 1, a, j])
            assert np.ptp(ref[:, j]) > 0  # the real signal kept moving
        elif f.kind in ("spike", "level_shift"):
            shift = x[:, j] - ref[:, j]
            assert np.all(np.abs(shift) > 8 * step_[f.signal])
            assert np.all(np.sign(shift) == np.sign(f.magnitude))
        elif f.kind == "noise_increase":
            n = f.stop_step - f.start_step
            before = data.values[f.start_step - n : f.start_step, a]
            for s in f.signals:
                k = SIGNALS.index(s)
                assert np.diff(x[:, k]).std() > 2.5 * np.diff(before[:, k]).std(), s
        elif f.kind == "bearing_wear":
            tail = max(1, (f.stop_step - f.start_step) // 10)
            assert x[-tail:, V].mean() > 2.0 * ref[-tail:, V].mean()
            assert x[-tail:, T].mean() > ref[-tail:, T].mean() + 2.0
        elif f.kind == "cavitation":
            burst = x[:, P] < ref[:, P] * 0.9
            assert 0.1 < burst.mean() < 0.9  # intermittent
            assert burst[0] and burst[-1]  # the label starts and ends with a burst
            assert np.all(x[burst, Q] < ref[burst, Q])
            assert x[burst, V].mean() > 1.5 * ref[burst, V].mean()


def test_stuck_sensor_freezes_the_last_value_across_block_boundaries() -> None:
    config = SimConfig(
        n_assets=2,
        duration_s=6000,
        seed=3,
        faults=24,
        fault_kinds=("stuck_sensor",),
        fault_duration_s=(40, 200),
        warmup_s=0,
    )
    sim = PlantSimulator(config)
    data = sim.generate()
    crossing = 0
    for f in sim.faults:
        a, j = sim.assets.index(f.asset), SIGNALS.index(f.signal)
        frozen = data.values[f.start_step - 1, a, j] if f.start_step else data.values[0, a, j]
        assert np.all(data.values[f.start_step : f.stop_step, a, j] == frozen)
        crossing += f.start_step // sim.block_steps != (f.stop_step - 1) // sim.block_steps
    assert crossing >= 1


def test_control_assets_get_no_faults_and_normal_changes_are_not_faults() -> None:
    config = dataclasses.replace(RICH, control_assets=1, regime_changes=3, sensor_drifts=3)
    sim = PlantSimulator(config)
    data = sim.generate()
    clean = PlantSimulator(clean_of(config)).generate()
    assert not any(f.asset == sim.assets[-1] for f in sim.faults)
    assert not data.fault[:, -1].any()
    assert np.array_equal(data.values[:, -1], clean.values[:, -1])
    normal = [x for x in sim.labels if not x.is_fault]
    assert sorted(x.kind for x in normal) == ["regime_change"] * 3 + ["sensor_drift"] * 3
    for x in normal:
        a = sim.assets.index(x.asset)
        assert not data.fault[x.start_step : x.stop_step, a].all()
        if x.kind == "sensor_drift":
            j = SIGNALS.index(x.signal)
            flat = dataclasses.replace(config, sensor_drifts=0, faults=0)
            base = PlantSimulator(flat).generate().values[:, a, j]
            d = clean.values[:, a, j] - base
            assert np.all(d[: x.start_step] == 0)
            assert abs(d[x.stop_step - 1] - x.magnitude) < 0.1 * abs(x.magnitude) + 0.01


def test_magnitude_scales_the_effect() -> None:
    small = dataclasses.replace(RICH, fault_magnitude=0.5)
    big = PlantSimulator(RICH)
    half = PlantSimulator(small)
    for f_big, f_half in zip(big.faults, half.faults, strict=True):
        assert (f_big.kind, f_big.start_step) == (f_half.kind, f_half.start_step)
        if f_big.kind in ("spike", "level_shift", "bearing_wear"):
            assert f_half.magnitude == pytest.approx(f_big.magnitude / 2)


def test_impossible_plans_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="lengthen --duration"):
        PlantSimulator(SimConfig(duration_s=100, faults=10, n_assets=1, warmup_s=10))
    with pytest.raises(ValueError, match="warm-up"):
        PlantSimulator(SimConfig(duration_s=50, faults=1, warmup_s=60))
    with pytest.raises(ValueError, match="control assets"):
        SimConfig(n_assets=2, control_assets=2, faults=1)
    with pytest.raises(ValueError, match="fault kinds"):
        SimConfig(fault_kinds=("meltdown",))


# ---------------------------------------------------------------------- files


def read_labels(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == LABEL_COLUMNS
        return list(reader)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_file_round_trip_and_labels_line_up(
    tmp_path: Path, rich: tuple[PlantSimulator, Chunk, Chunk], suffix: str
) -> None:
    sim, data, _ = rich
    out = tmp_path / f"plant{suffix}"
    labels_path = default_labels_path(out)
    summary = write_file(sim, out, labels_path=labels_path, steps_per_chunk=700)
    assert summary.readings == 12_000 and not summary.interrupted
    assert sum(summary.faults_by_kind.values()) == 12
    if suffix == ".parquet":
        table = pq.read_table(out)
    else:  # keep the timestamp text as written, to check its format
        as_text = pacsv.ConvertOptions(column_types={"timestamp": pa.string()})
        table = pacsv.read_csv(out, convert_options=as_text)
    assert tuple(table.column_names) == FILE_COLUMNS
    assert table.num_rows == 12_000
    flat_ts = data.ts_ms.reshape(-1)
    if suffix == ".parquet":
        assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
        ts = np.asarray(table.column("timestamp").cast(pa.int64()))
    else:
        text = table.column("timestamp").to_pylist()
        assert text[:3] == [format_ts(int(t)) for t in flat_ts[:3]]
        assert text[-1] == format_ts(int(flat_ts[-1]))
        ts = np.asarray(
            table.column("timestamp").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
        )
    assert np.array_equal(ts, flat_ts)
    for j, s in enumerate(SIGNALS):
        assert np.array_equal(np.asarray(table.column(s)), data.values[..., j].reshape(-1)), s
    assets = np.array(table.column("asset").to_pylist())
    assert np.array_equal(assets, np.array(sim.assets)[data.asset_index()])
    fault = np.asarray(table.column("fault"))
    kinds = np.array(table.column("fault_kind").to_pylist())
    assert set(np.unique(fault).tolist()) == {0, 1}

    # Labels line up exactly with the per-row fault column.
    rows = read_labels(labels_path)
    assert len(rows) == len(sim.labels)
    expected = np.zeros(len(fault), dtype=np.int8)
    expected_kind = np.full(len(fault), "", dtype=object)
    for row in rows:
        if row["is_fault"] != "true":
            assert row["kind"] in ("regime_change", "sensor_drift")
            continue
        inside = (assets == row["asset"]) & (ts >= int(row["start_ms"]))
        inside &= ts <= int(row["end_ms"])
        assert row["start_ts"] == format_ts(int(row["start_ms"]))
        assert not expected[inside].any(), "overlapping faults on one asset"
        expected[inside] = 1
        expected_kind[inside] = row["kind"]
    assert np.array_equal(fault, expected)
    assert np.array_equal(kinds, expected_kind.astype(str))


def test_output_format_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        write_file(PlantSimulator(SimConfig(duration_s=10)), tmp_path / "plant.xlsx")
    assert not (tmp_path / "plant.xlsx").exists()


# ---------------------------------------------------------------------- command line


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_rate_start_and_shrinking_defaults() -> None:
    args = parse(["--assets", "20", "--rate", "2000", "--duration", "30"])
    config = config_from_args(args, now_ms=1_795_899_600_000)
    assert config.period_ms == 10
    assert config.start_ms == 1_795_899_600_000  # Kafka: starts now
    assert config.faults == 20 and config.warmup_s == 6.0
    PlantSimulator(config)  # the defaults fit a 30 s run
    args = parse(["--duration", "600", "--out", "x.csv", "--period-ms", "500", "--rate", "9"])
    config = config_from_args(args, now_ms=1_795_899_600_000)
    assert config.period_ms == 500  # --period-ms wins over --rate
    assert config.start_ms == 1_795_899_600_000 - 600_000  # file: ends now
    args = parse(["--duration", "600", "--no-pace"])
    config = config_from_args(args, now_ms=1_795_899_600_000)
    assert config.start_ms == 1_795_899_600_000 - 600_000  # unpaced: ends now, none ahead
    args = parse(["--start", "2026-01-01T00:00:00Z", "--forever", "--fault-kinds", "spike"])
    config = config_from_args(args, now_ms=1_795_899_600_000)
    assert config.start_ms == 1_767_225_600_000
    assert config.duration_s is None and config.fault_kinds == ("spike",)
    with pytest.raises(SystemExit):
        parse(["--fault-kinds", "meltdown"])
    with pytest.raises(ValueError, match="1 ms"):
        config_from_args(parse(["--assets", "1", "--rate", "5000"]))


def test_cli_writes_file_labels_and_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "history.csv"
    argv = ["--assets", "3", "--duration", "900", "--start", "1795899600000", "--seed", "9"]
    argv += ["--control-assets", "1", "--regime-changes", "1", "--out", str(out), "--quiet"]
    assert run(parse(argv), load_settings(env={})) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("simulate: 2,700 readings") and str(out) in line
    assert "faults injected: 2" in line
    rows = read_labels(default_labels_path(out))
    assert sorted(r["is_fault"] for r in rows) == ["false", "true", "true"]
    # Same options, same bytes.
    again = tmp_path / "again.csv"
    argv[-2] = str(again)
    assert run(parse(argv), load_settings(env={})) == 0
    assert again.read_bytes() == out.read_bytes()


def test_cli_refuses_a_plan_that_cannot_fit(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--duration", "30", "--faults", "9", "--fault-duration-s", "20:40", "--out", "x.csv"]
    assert run(parse(argv), load_settings(env={})) == 2
    assert "lengthen --duration" in capsys.readouterr().err


def test_progress_is_the_shared_line_labelled_simulate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert Progress is common.progress.Progress
    argv = ["--assets", "3", "--duration", "900", "--start", "1795899600000"]
    assert run(parse([*argv, "--out", str(tmp_path / "loud.csv")]), load_settings(env={})) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    # Not a terminal: plain lines, and always one at the total.
    assert any(x.startswith("simulate: 2,700/2,700 readings") and "100%" in x for x in lines)
    assert lines[-1].startswith("simulate: 2,700 readings (900 per asset)")
    quiet = [*argv, "--out", str(tmp_path / "quiet.csv"), "--quiet"]
    assert run(parse(quiet), load_settings(env={})) == 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------------- Kafka


def test_produce_without_a_broker_says_how_to_get_one() -> None:
    sim = PlantSimulator(SimConfig(n_assets=2, duration_s=10))
    with pytest.raises(KafkaUnreachableError, match="plantwatch broker start"):
        produce(sim, {"bootstrap.servers": "127.0.0.1:1"}, "sensors", connect_timeout_s=0.5)


@pytest.mark.integration
def test_produce_to_kafka_and_read_back(kafka_bootstrap: str, new_topic) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import Consumer

    topic = new_topic("sim", partitions=3)
    labels_topic = new_topic("simlabels", partitions=1)
    config = SimConfig(
        n_assets=4, duration_s=500, seed=5, faults=2, warmup_s=60, fault_duration_s=(20, 60)
    )
    sim = PlantSimulator(config)
    summary = produce(
        sim, {"bootstrap.servers": kafka_bootstrap}, topic, labels_topic=labels_topic, pace=False
    )
    assert summary.readings == 2000 and not summary.interrupted

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"sim-test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": "false",
        }
    )
    consumer.subscribe([topic, labels_topic])
    decoder = ReadingDecoder(allowed_signals=SIGNALS)
    readings: dict[str, list[SensorReading]] = defaultdict(list)
    labels: list[dict[str, object]] = []
    deadline = time.monotonic() + 60
    try:
        while (sum(map(len, readings.values())) < 2000 or len(labels) < 2) and (
            time.monotonic() < deadline
        ):
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                value = msg.value()
                assert value is not None
                if msg.topic() == labels_topic:
                    labels.append(json.loads(value))
                    continue
                reading = decoder.decode(value)
                assert isinstance(reading, SensorReading), reading
                assert msg.key() == reading.asset.encode()
                assert set(reading.values) == set(SIGNALS)
                readings[reading.asset].append(reading)
    finally:
        consumer.close()
    assert sum(map(len, readings.values())) == 2000
    assert sorted(readings) == list(sim.assets)
    whole = sim.generate()
    for a, asset in enumerate(sim.assets):
        got = readings[asset]
        ts = [r.ts_ms for r in got]
        assert ts == sorted(ts) and len(set(ts)) == 500  # per-asset order kept by keying
        assert ts == whole.ts_ms[:, a].tolist()
        assert [r.values["flow"] for r in got] == whole.values[:, a, Q].tolist()
    assert sorted((x["asset"], x["start_ms"]) for x in labels) == sorted(
        (f.asset, f.start_ms) for f in sim.faults
    )
    assert all(x["is_fault"] is True for x in labels)
