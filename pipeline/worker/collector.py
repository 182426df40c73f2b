"""Tuning of CPython's cyclic garbage collector for the worker's batch loop.

The ingest loop allocates tens of container objects per event (orjson's dicts and lists, the normalized
tuple, the row) and frees nearly all of them when the batch is written: reference counting reclaims them.
With CPython's default thresholds the cyclic collector still runs a generation-0 pass every 700 container
allocations, and each pass walks the objects the current batch holds alive, so its cost grows with the
batch: 20,000 events meant thousands of passes per batch, a sixth of the worker's CPU.

A larger generation-0 threshold makes those passes rare; objects in reference cycles are still collected,
in fewer, larger passes (memory stays bounded: `bench/ingest.py` prints the worker's RSS along the run).
`gc.freeze()` moves what start-up allocated (modules, the app, settings) out of the collector's reach, so
the full collections that remain do not walk it again and again.
"""

from __future__ import annotations

import gc

#: container allocations (minus deallocations) between two generation-0 passes; CPython's default is 700
GEN0_THRESHOLD_ALLOCATIONS = 100_000


def tune_for_batches() -> None:
    """Call once start-up is done, before the ingest loop runs."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD_ALLOCATIONS, gen1, gen2)
