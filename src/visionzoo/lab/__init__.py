"""The history lab: each landmark paper's key claim, re-run on real data through one engine.

`visionzoo lab list | run CLAIM | report`. A claim trains its arms with `engine.fit.fit`
(one recipe for all arms), writes `results/lab/CLAIM.json` (every figure per seed, the
recipe, what was scaled down, the environment) and `CLAIM.png`, and decides its verdict
(reproduced / partly reproduced / not reproduced) by a rule fixed in code beforehand.
"""

from visionzoo.lab import claims_classic, claims_modern  # noqa: F401 - registers the claims
from visionzoo.lab.core import BUDGETS, CLAIMS, VERDICTS, run_claim

__all__ = ["BUDGETS", "CLAIMS", "VERDICTS", "run_claim"]
