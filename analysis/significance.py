"""Which differences between two rows of a table are beyond seed noise.

Method: a paired comparison over seeds. Two rows are compared on the seeds both ran; runs of the
same seed are paired (the seed fixes what the two runs share: data order, initial draws where
the configurations allow it), so seed-to-seed swings common to both rows cancel, and the
per-seed differences d_s = this row − reference row are summarised by their mean
and a 95 % Student-t confidence interval, mean ± t(0.975, n − 1) · sd(d) / √n. The difference is
"beyond noise" when that interval excludes 0 (equivalently a two-sided paired t-test at 5 %).
With three seeds t(0.975, 2) = 4.30, so only differences several times the seed-to-seed spread
of the differences qualify. With one shared seed there is no spread to compare with, and the
verdict is "n=1: cannot tell"; rows with no seed in common are "no shared seed". No correction
for the several comparisons of a table is made: a table of twenty comparisons shows about one
"yes" by chance where nothing differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
YES, NO, ONE_SEED, NO_SHARED = "yes", "no", "n=1: cannot tell", "no shared seed"

NOTE = ("Δ, 95% CI, beyond noise: the difference in {metric}, {references}, "
        "paired by seed: the mean of the "
        "per-seed differences over the n seeds both rows ran, and its 95 % Student-t "
        "confidence interval, mean ± t(0.975, n−1)·sd/√n. Beyond noise: yes where the interval "
        "excludes 0 (a two-sided paired t-test at 5 %), no where it holds 0; n=1: cannot tell "
        "with a single shared seed (no seed spread to compare with). An interval of zero width "
        "means every seed differed by the same amount: on a score counted in whole validation "
        "examples read it with that in mind. No correction for the "
        "table's several comparisons: about one in twenty comparisons of rows that do not "
        "differ reads yes.")


@dataclass(frozen=True)
class Paired:
    """The paired difference of two rows over their shared seeds."""
    n: int
    mean: float
    low: float
    high: float
    verdict: str

    @property
    def beyond_noise(self) -> bool | None:
        """True / False where a verdict is possible, None where it is not (n < 2)."""
        return {YES: True, NO: False}.get(self.verdict)


def paired(this: dict, reference: dict, level: float = LEVEL) -> Paired:
    """Compare two rows given as {seed: value}; only seeds present (and finite) in both count."""
    seeds = sorted(s for s in set(this) & set(reference)
                   if _finite(this[s]) and _finite(reference[s]))
    d = np.array([float(this[s]) - float(reference[s]) for s in seeds])
    n = len(d)
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, NO_SHARED)
    mean = float(d.mean())
    if n == 1:
        return Paired(1, mean, math.nan, math.nan, ONE_SEED)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / math.sqrt(n))
    low, high = mean - half, mean + half
    beyond = low > 0 or high < 0
    return Paired(n, mean, low, high, YES if beyond else NO)


def _finite(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
