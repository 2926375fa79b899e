"""The history lab: each landmark paper's key claim, re-run on real data through one engine.

`visionzoo lab list | run CLAIM | report`. A claim trains its arms with `engine.fit.fit`
(one recipe for all arms), writes `results/lab/CLAIM.json` (every figure per seed, the
recipe, what was scaled down, the environment) and `CLAIM.png`, and decides its verdict
(reproduced / not reproduced / inconclusive) by a rule fixed in code beforehand.
"""

from visionzoo.lab import claims  # noqa: F401 - registers the claims
from visionzoo.lab.core import BUDGETS, CLAIMS, ORDER, VERDICTS, run_claim

for _name in sorted(CLAIMS, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
    CLAIMS[_name] = CLAIMS.pop(_name)  # the papers' order, whichever file registers them

__all__ = ["BUDGETS", "CLAIMS", "VERDICTS", "run_claim"]
