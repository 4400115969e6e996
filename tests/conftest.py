"""Suite-wide settings.

Hypothesis' per-example deadline (200 ms by default) measures the host, not the code: on a
loaded 2-core CI machine a slow example failed a round-trip property that holds. Examples are
judged by their assertions only.
"""

from hypothesis import settings

settings.register_profile("tokenbrake", deadline=None)
settings.load_profile("tokenbrake")
