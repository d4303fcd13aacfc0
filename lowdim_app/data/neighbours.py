"""When a nearest training image counts as a copy: the offline stand-in for the paper's SSCD
copy detection (the search itself is :func:`lowdim_app.metrics.nearest`).

Distance: RMS pixel distance in [-1, 1] units, ``||x - y||_2 / sqrt(n)``. On the built-in
digits split, held-out test digits lie at RMS >= 0.084 from their nearest training digit
(1st percentile 0.098, median 0.18), so we call a sample a **near-copy** (memorized) when
its nearest training image is closer than ``COPY_THRESHOLD = 0.07`` and **novel**
(generalized) when it is farther than ``NOVEL_THRESHOLD = 0.10``; in between is ambiguous.
(Zhang et al. 2025, App. B.2, uses SSCD similarity > 0.9 / < 0.5 the same way.)
"""
from __future__ import annotations

COPY_THRESHOLD = 0.07
NOVEL_THRESHOLD = 0.10
