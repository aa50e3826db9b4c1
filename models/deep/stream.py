"""The streaming form of the LSTM forecaster: one LSTM step per new reading, per asset."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from models.deep.scoring import scale_errors
from models.protocol import FloatArray

if TYPE_CHECKING:
    from models.deep.forecaster import LSTMForecasterScorer

STREAM_STATE_VERSION = 2
#: How far (in training standard deviations) a window's offset may move from its asset's
#: last one and the window still continue the carried state (see ``score_windows``).
SHIFT_TOLERANCE = 0.05
_EXACT = torch.float64


class ForecasterStream:
    """Scores each new reading with one LSTM step per asset, batched across assets.

    Carries ``(h, c)`` per asset in a pooled tensor, so a reading costs one LSTM step
    instead of re-running ``window - 1`` steps. The pool holds at most ``max_assets``
    assets; a new asset beyond that evicts the least recently stepped one (its state
    restarts from zero if it comes back). ``forget`` drops assets explicitly.

    Relation to :meth:`LSTMForecasterScorer.score_batch`: the score of a reading is the
    scaled squared error of the prediction made from the state *before* the reading. For an
    asset's first ``window`` readings the stream equals the window scorer exactly (both run
    the same readings from a zero state). After that they are different estimators: the
    window re-runs the last ``window - 1`` readings from zero, the stream carries state over
    the asset's whole history. With a forgetting LSTM they stay close (measured in
    ``tests/test_deep.py``), but they are not equal. Scores are NaN, and contributions zero,
    until an asset has seen ``warmup_steps`` readings (default ``window - 1``).

    The monitor serves it through :meth:`score_windows`: the ready windows of a batch, one
    LSTM step each, with a window that does not continue the asset's last one (its first,
    the first after a gap, another re-baselining offset) priming the state from its own
    rows, so that nothing the window path decides is lost.

    Snapshots are plain arrays: ``{"version", "h", "c", "steps", "tail", "shift"}`` per
    asset (``tail``: the last scored window's rows after its first, before any shift, empty
    when none; ``shift``: that window's offset).
    """

    def __init__(
        self,
        scorer: LSTMForecasterScorer,
        *,
        max_assets: int = 10_000,
        warmup_steps: int | None = None,
    ) -> None:
        if max_assets < 1:
            raise ValueError(f"max_assets must be at least 1, got {max_assets}")
        self.scorer = scorer
        self.max_assets = max_assets
        self.warmup_steps = scorer.window - 1 if warmup_steps is None else warmup_steps
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {self.warmup_steps}")
        # In float64: a reading's result then does not depend on which other assets share
        # its batched step (float32 GEMMs round differently by batch size), so scores and
        # alerts are the same however the batches were cut (cast to float32 at the end).
        self._module = copy.deepcopy(scorer.forecaster).to(_EXACT).eval()
        self._layers = scorer.arch.layers
        self._hidden = scorer.arch.hidden
        self._slots: OrderedDict[str, int] = OrderedDict()
        self._free: list[int] = []
        self._steps = np.zeros(0, dtype=np.int64)
        #: Per slot, the last window :meth:`score_windows` scored, less its first row, and
        #: whether there is one: what the next window must start with to continue it.
        self._tail = np.zeros((0, scorer.window - 1, scorer.n_signals), dtype=np.float32)
        self._has_tail = np.zeros(0, dtype=np.bool_)
        self._shift = np.zeros((0, scorer.n_signals), dtype=np.float32)
        self.evicted_total = 0
        # Pools are asset-major (slots, layers, hidden) so a batch is one index_select.
        with torch.inference_mode():
            self._h = torch.zeros(
                0, self._layers, self._hidden, device=scorer.device, dtype=torch.float64
            )
            self._c = torch.zeros_like(self._h)

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def assets(self) -> list[str]:
        """Assets held, least recently stepped first."""
        return list(self._slots)

    def _grow(self) -> None:
        old = self._steps.shape[0]
        new = min(self.max_assets, max(16, 2 * old))
        with torch.inference_mode():
            shape = (new - old, self._layers, self._hidden)
            self._h = torch.cat([self._h, self._h.new_zeros(shape)])
            self._c = torch.cat([self._c, self._c.new_zeros(shape)])
        self._steps = np.concatenate([self._steps, np.zeros(new - old, dtype=np.int64)])
        self._tail = np.concatenate(
            [self._tail, np.zeros((new - old, *self._tail.shape[1:]), np.float32)]
        )
        self._has_tail = np.concatenate([self._has_tail, np.zeros(new - old, np.bool_)])
        self._shift = np.concatenate(
            [self._shift, np.zeros((new - old, self._shift.shape[1]), np.float32)]
        )
        self._free.extend(range(new - 1, old - 1, -1))

    def _acquire(self, asset_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """Slots for distinct assets, allocating (and evicting the stalest) as needed."""
        if len(asset_ids) > self.max_assets:
            raise ValueError(
                f"{len(asset_ids)} assets in one step but max_assets={self.max_assets}; "
                "raise max_assets"
            )
        slots = np.empty(len(asset_ids), dtype=np.int64)
        new: list[int] = []
        # Known assets first move to the recent end, so eviction never takes one of them.
        for i, asset in enumerate(asset_ids):
            slot = self._slots.get(asset)
            if slot is None:
                new.append(i)
            else:
                self._slots.move_to_end(asset)
                slots[i] = slot
        for i in new:
            if not self._free and self._steps.shape[0] < self.max_assets:
                self._grow()
            if self._free:
                slot = self._free.pop()
            else:
                _, slot = self._slots.popitem(last=False)
                self.evicted_total += 1
            with torch.inference_mode():
                self._h[slot] = 0.0
                self._c[slot] = 0.0
            self._steps[slot] = 0
            self._has_tail[slot] = False
            self._slots[asset_ids[i]] = slot
            slots[i] = slot
        return slots

    def step(
        self, asset_ids: Sequence[str], readings: npt.ArrayLike
    ) -> tuple[FloatArray, FloatArray]:
        """Scores one new normalised reading per entry; ``readings`` is (B, signals).

        An asset may appear more than once; its readings are taken in the order given.
        Returns scores (B,) (NaN while the asset warms up) and contributions (B, S).
        """
        x = np.ascontiguousarray(readings, dtype=np.float32)
        n_signals = self.scorer.n_signals
        if x.ndim != 2 or x.shape != (len(asset_ids), n_signals):
            raise ValueError(
                f"readings have shape {x.shape}; expected ({len(asset_ids)}, {n_signals}) "
                "(one normalised reading per asset id)"
            )
        if not np.isfinite(x).all():
            raise ValueError("readings contain NaN or inf; clean them before scoring")
        if len(set(asset_ids)) == len(asset_ids):
            return self._step_distinct(asset_ids, x)
        scores = np.full(len(asset_ids), np.nan, dtype=np.float32)
        contributions = np.zeros((len(asset_ids), n_signals), dtype=np.float32)
        # Repeated assets go in rounds: the k-th reading of an asset in the k-th round.
        seen: dict[str, int] = {}
        rounds: list[list[int]] = []
        for i, asset in enumerate(asset_ids):
            k = seen.get(asset, 0)
            seen[asset] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append(i)
        for positions in rounds:
            s, c = self._step_distinct([asset_ids[i] for i in positions], x[positions])
            scores[positions] = s
            contributions[positions] = c
        return scores, contributions

    def score_windows(
        self,
        asset_ids: Sequence[str],
        windows: npt.ArrayLike,
        *,
        unshifted: npt.ArrayLike | None = None,
        shifts: npt.ArrayLike | None = None,
    ) -> tuple[FloatArray, FloatArray]:
        """Scores ready windows (B, window, signals) as the window scorer would, at one LSTM
        step each: scores (B,) and contributions (B, S). The windows come grouped by asset,
        each asset's in time order (as the monitor makes them).

        A window that continues its asset's previous one (its first ``window - 1`` rows are
        that window's last ``window - 1``, bit for bit) is one step from the carried state.
        Any other (an asset's first window, the first after a gap or a restart, one under a
        new re-baselining offset) primes the state by running its first ``window - 1`` rows
        from zero: the window scorer's own computation, so its score is the window scorer's.
        Which windows continue depends on the windows alone, never on how batches were cut.

        A monitor that shifts each window by an offset of its own (drift followed slowly,
        a re-baselining offset) gives the windows before the shift as ``unshifted`` and the
        offsets (B, S) as ``shifts``: continuation is judged on ``unshifted``, and a window
        whose offset moved more than :data:`SHIFT_TOLERANCE` since its asset's last one is
        primed afresh (a re-baselining), while a slowly followed drift is carried (the
        carried state saw each reading under the offset of its own time, a difference far
        below the model's noise).
        """
        x = np.ascontiguousarray(windows, dtype=np.float32)
        n = len(asset_ids)
        window, n_signals = self.scorer.window, self.scorer.n_signals
        if x.shape != (n, window, n_signals):
            raise ValueError(
                f"windows have shape {x.shape}; expected ({n}, {window}, {n_signals}) "
                "(one window per asset id)"
            )
        if n == 0:
            return np.zeros(0, np.float32), np.zeros((0, n_signals), np.float32)
        if not np.isfinite(x).all():
            raise ValueError("windows contain NaN or inf; clean them before scoring")
        judged = x if unshifted is None else np.ascontiguousarray(unshifted, dtype=np.float32)
        moved = (
            np.zeros((n, n_signals), np.float32)
            if shifts is None
            else np.ascontiguousarray(shifts, dtype=np.float32)
        )
        if judged.shape != x.shape or moved.shape != (n, n_signals):
            raise ValueError(
                f"unshifted {judged.shape} and shifts {moved.shape} must match windows "
                f"{x.shape} and ({n}, {n_signals})"
            )
        names = list(asset_ids)
        firsts = [0] + [i for i in range(1, n) if names[i] != names[i - 1]]
        run_assets = [names[i] for i in firsts]
        if len(set(run_assets)) != len(run_assets):
            raise ValueError("windows must come grouped by asset (each asset's in one run)")
        run_slots = self._acquire(run_assets)
        starts = np.asarray(firsts, np.int64)
        lengths = np.diff(np.append(starts, n))
        ends = np.append(starts[1:], n)
        run_of = np.repeat(np.arange(starts.size), lengths)
        slots = run_slots[run_of]
        before = np.empty((n, window - 1, n_signals), np.float32)
        before[1:] = judged[:-1, 1:]
        before[starts] = self._tail[run_slots]
        shifted_before = np.empty_like(moved)
        shifted_before[1:] = moved[:-1]
        shifted_before[starts] = self._shift[run_slots]
        follows = (judged[:, :-1] == before).all(axis=(1, 2))
        follows &= (np.abs(moved - shifted_before) <= SHIFT_TOLERANCE).all(axis=1)
        follows[starts] &= self._has_tail[run_slots]
        # Sequences: each asset's run cut where a window is primed. A sequence starts from
        # the carried state (the run's first window continues) or a primed one, and goes
        # over its windows' newest readings: one LSTM call for every sequence of the batch.
        opens = ~follows
        opens[starts] = True
        seq_starts = np.flatnonzero(opens)
        seq_len = np.diff(np.append(seq_starts, n))
        seq_of = np.repeat(np.arange(seq_starts.size), seq_len)
        at = np.arange(n) - seq_starts[seq_of]
        primed = ~follows[seq_starts]
        lstm, head = self._module.lstm, self._module.head
        device = self.scorer.device
        with torch.inference_mode():
            h0 = self._h.index_select(0, torch.from_numpy(slots[seq_starts]).to(device))
            c0 = self._c.index_select(0, torch.from_numpy(slots[seq_starts]).to(device))
            if primed.any():
                rows = torch.from_numpy(x[seq_starts[primed], :-1]).to(device, _EXACT)
                _, (hp, cp) = lstm(rows)  # (layers, primed, hidden)
                into = torch.from_numpy(np.flatnonzero(primed)).to(device)
                h0.index_copy_(0, into, hp.transpose(0, 1))
                c0.index_copy_(0, into, cp.transpose(0, 1))
            newest = torch.from_numpy(x[:, -1]).to(device, _EXACT)
            padded = newest.new_zeros(seq_starts.size, int(seq_len.max()), n_signals)
            where = (torch.from_numpy(seq_of).to(device), torch.from_numpy(at).to(device))
            padded[where] = newest
            packed = nn.utils.rnn.pack_padded_sequence(
                padded, torch.from_numpy(seq_len), batch_first=True, enforce_sorted=False
            )
            state = (h0.transpose(0, 1).contiguous(), c0.transpose(0, 1).contiguous())
            out, (hn, cn) = lstm(packed, state)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
            # Each reading is predicted from the state before it: the sequence's initial
            # state for its first, the output after the reading before for the others.
            before_top = torch.cat([h0[:, -1:], out[:, :-1]], dim=1)
            pred = head(before_top[where])
            errors = ((pred - newest) ** 2).float().cpu().numpy()
            # Each run's last sequence leaves the asset's state.
            last = torch.from_numpy(seq_of[ends - 1]).to(device)
            index = torch.from_numpy(run_slots).to(device)
            self._h.index_copy_(0, index, hn.transpose(0, 1).index_select(0, last))
            self._c.index_copy_(0, index, cn.transpose(0, 1).index_select(0, last))
        self._tail[run_slots] = judged[ends - 1, 1:]
        self._shift[run_slots] = moved[ends - 1]
        self._has_tail[run_slots] = True
        # Readings each state has seen since it was zero: a primed window's state has seen
        # its whole window; a continued one, one more than the window before it.
        last_primed = np.maximum.accumulate(np.where(follows, -1, np.arange(n)))[ends - 1]
        fresh = last_primed >= starts
        self._steps[run_slots] = np.where(
            fresh, window + (ends - 1 - last_primed), self._steps[run_slots] + lengths
        )
        return scale_errors(errors, self.scorer.error_scale)

    def _step_distinct(
        self, asset_ids: Sequence[str], x: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        slots = self._acquire(asset_ids)
        module = self._module
        device = self.scorer.device
        with torch.inference_mode():
            index = torch.from_numpy(slots).to(device)
            readings = torch.from_numpy(x).to(device, _EXACT)
            pred, h, c = module.step(
                readings, self._h.index_select(0, index), self._c.index_select(0, index)
            )
            self._h.index_copy_(0, index, h)
            self._c.index_copy_(0, index, c)
            errors = ((pred - readings) ** 2).float().cpu().numpy()
        seen_before = self._steps[slots]
        self._steps[slots] += 1
        self._has_tail[slots] = False  # a reading stepped alone: no window continues it
        scores, contributions = scale_errors(errors, self.scorer.error_scale)
        cold = seen_before < self.warmup_steps
        if cold.any():
            scores[cold] = np.nan
            contributions[cold] = 0.0
        return scores, contributions

    def forget(self, asset_ids: Sequence[str]) -> None:
        """Drops the state of these assets (unknown ids are ignored)."""
        for asset in asset_ids:
            slot = self._slots.pop(asset, None)
            if slot is not None:
                self._free.append(slot)

    def snapshot(self, asset: str) -> dict[str, npt.NDArray[Any]]:
        """The asset's state as plain arrays (copies), for checkpointing."""
        slot = self._slots.get(asset)
        if slot is None:
            raise KeyError(f"no stream state for asset {asset!r}")
        with torch.inference_mode():
            h = self._h[slot].cpu().numpy().copy()
            c = self._c[slot].cpu().numpy().copy()
        return {
            "version": np.array(STREAM_STATE_VERSION, dtype=np.int64),
            "h": h,
            "c": c,
            "steps": np.array(self._steps[slot], dtype=np.int64),
            "tail": (
                self._tail[slot].copy()
                if self._has_tail[slot]
                else np.zeros((0, self.scorer.n_signals), np.float32)
            ),
            "shift": self._shift[slot].copy(),
        }

    def snapshot_all(self) -> dict[str, dict[str, npt.NDArray[Any]]]:
        """Every asset's state, keyed by asset id."""
        return {asset: self.snapshot(asset) for asset in self._slots}

    def restore(self, asset: str, state: Mapping[str, npt.NDArray[Any]]) -> None:
        """Puts back a state from :meth:`snapshot` (replacing any the asset has)."""
        version = int(np.asarray(state.get("version", -1)))
        if version != STREAM_STATE_VERSION:
            raise ValueError(
                f"stream state for {asset!r} has version {version}; this code reads "
                f"version {STREAM_STATE_VERSION}; let the asset warm up afresh instead"
            )
        shape = (self._layers, self._hidden)
        h = np.asarray(state["h"], dtype=np.float64)
        c = np.asarray(state["c"], dtype=np.float64)
        if h.shape != shape or c.shape != shape:
            raise ValueError(
                f"stream state for {asset!r} has h {h.shape}, c {c.shape}; this model "
                f"needs {shape} (was it saved by another model?)"
            )
        tail = np.asarray(state["tail"], dtype=np.float32)
        if tail.size and tail.shape != self._tail.shape[1:]:
            raise ValueError(
                f"stream state for {asset!r} has a last window of {tail.shape}; this model "
                f"needs {self._tail.shape[1:]} (was it saved by another model?)"
            )
        slot = int(self._acquire([asset])[0])
        with torch.inference_mode():
            self._h[slot] = torch.from_numpy(h).to(self.scorer.device)
            self._c[slot] = torch.from_numpy(c).to(self.scorer.device)
        self._steps[slot] = int(np.asarray(state["steps"]))
        self._has_tail[slot] = bool(tail.size)
        if tail.size:
            self._tail[slot] = tail
            self._shift[slot] = np.asarray(state["shift"], dtype=np.float32)
