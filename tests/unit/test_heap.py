import gc

from streams.heap import HeapAger


def test_ages_the_heap_at_most_once_per_interval():
    ager = HeapAger(interval_s=3600)
    try:
        assert ager.maybe_age() is True and gc.get_freeze_count() > 0  # survivors moved out of the collector's walk
        assert ager.maybe_age() is False  # not again within the interval
    finally:
        gc.unfreeze()
