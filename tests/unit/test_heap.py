import gc
import time

from tokenbrake.streams.heap import THRESHOLDS, HeapAger, tune_gc


def test_ages_the_heap_at_most_once_per_interval():
    ager = HeapAger(interval_s=3600)
    try:
        assert ager.maybe_age() is True and gc.get_freeze_count() > 0  # survivors moved out of the collector's walk
        assert ager.maybe_age() is False  # not again within the interval
    finally:
        gc.unfreeze()


def test_first_ageing_happens_whatever_the_monotonic_clock_reads(monkeypatch):
    # time.monotonic() counts from boot on Linux: on a machine up for 5 s an interval of an hour
    # must not postpone the first ageing (it did when "never" was written as 0.0)
    monkeypatch.setattr(time, "monotonic", lambda: 5.0)
    ager = HeapAger(interval_s=3600)
    try:
        assert ager.maybe_age() is True
        assert ager.maybe_age() is False
    finally:
        gc.unfreeze()


def test_building_a_heap_ager_leaves_the_process_thresholds_alone():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # not THRESHOLDS, whatever an earlier test left
        HeapAger(interval_s=3600)
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_tune_gc_sets_the_process_thresholds():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's default, whatever an earlier test left
        tune_gc()
        assert gc.get_threshold() == THRESHOLDS != (700, 10, 10)
    finally:
        gc.set_threshold(*before)
