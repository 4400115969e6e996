"""The aggregation hot path adds a call's counters to a dozen lists: whichever branch it takes
(a call with no cached or reasoning tokens, no error and no retry skips the zeros), the lists
end as the plain element-wise sum, with the call's position."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tokenbrake.streams.state.store import add_into

counters = st.lists(st.integers(0, 10**15), min_size=8, max_size=8)
vectors = st.tuples(st.integers(0, 10**12), st.just(1), st.integers(0, 10**7), st.integers(0, 10**7),
                    st.sampled_from([0, 0, 5]), st.sampled_from([0, 0, 7]), st.booleans(), st.booleans())


@given(st.lists(counters, min_size=0, max_size=12), vectors, st.integers(-1, 2**40))
def test_add_into_is_the_element_wise_sum_and_sets_the_position(lists, vector, pos):
    targets = [[*values, -1] for values in lists]
    add_into(targets, vector, pos)
    assert targets == [[*(a + b for a, b in zip(values, vector, strict=True)), pos] for values in lists]
