"""Tuning of CPython's cyclic garbage collector for the worker's batch loop.

The ingest loop allocates tens of container objects per event (orjson's dicts and lists, the normalized
tuple, the row) and frees nearly all of them when the batch is written: reference counting reclaims them.
With CPython's default thresholds the cyclic collector still runs a generation-0 pass every 700 container
allocations, and each pass walks the objects the current batch holds alive, so its cost grows with the
batch: 20,000 events meant thousands of passes per batch, a sixth of the worker's CPU.

A larger generation-0 threshold makes those passes rare; objects in reference cycles are still collected,
in fewer, larger passes (memory stays bounded: `bench/ingest.py` prints the worker's RSS along the run).
The threshold counts allocations *minus* deallocations, so what matters is how much the heap grows between
passes, and a pass walks what is young and alive: a batch's rows and the detectors' lists of it. At
100,000 a pass came every few batches' worth of growth mid-batch, walking those (34 ms each, 1.7 s of a
1,000,000-event run); at 1,000,000 none came in that run (the heap does not grow that much: nearly every
object dies by reference counting) and the worker spent 6-7% less CPU, at the same peak RSS (measured with
gc.callbacks over `python bench/ingest.py`).
`gc.freeze()` moves what start-up allocated (modules, the app, settings) out of the collector's reach, so
the full collections that remain do not walk it again and again.
"""

from __future__ import annotations

import gc

#: container allocations (minus deallocations) between two generation-0 passes; CPython's default is 700
GEN0_THRESHOLD_ALLOCATIONS = 1_000_000


def tune_for_batches() -> None:
    """Call once start-up is done, before the ingest loop runs."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD_ALLOCATIONS, gen1, gen2)
