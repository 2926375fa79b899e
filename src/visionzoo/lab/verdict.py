"""Verdicts that can come out either way, and say when they cannot tell.

Each sub-claim is one measured effect with its 95% interval, decided by a rule declared in
the claim before it runs: `greater` (the paper says the effect is positive, at least
`margin`), `no_worse` (the effect is above -`margin`) or `at_least` (a single arm reaches
a target). Validity gates (an arm at chance, an arm still improving, censored targets on
both sides, a scaled arm below its base) make a sub-claim "inconclusive" with the reason.
A claim's headline verdict is its one primary sub-claim's; secondaries are reported beside
it, never merged. Deterministic counts (MACs, parameters, latency ratios) are facts, shown
beside the verdict and never used as evidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from visionzoo.lab.stats import Interval

REPRODUCED = "reproduced"
NOT = "not reproduced"
INCONCLUSIVE = "inconclusive"
PARTLY = "partly reproduced"  # results written before the primary-claim rule
VERDICTS = (REPRODUCED, NOT, INCONCLUSIVE, PARTLY)
Rule = Literal["greater", "no_worse", "at_least"]

# Gate thresholds (accuracy as a fraction), fixed before any run.
CHANCE_TOLERANCE = 0.02  # an arm within 2 pp of chance has not learned
PLATEAU_EPOCHS = 3  # an arm is unconverged if its test accuracy rose by more than
PLATEAU_RISE = 0.005  # 0.5 pp over its last 3 epochs


def decide(rule: Rule, iv: Interval, margin: float = 0.0, unit: str = "pp") -> tuple[str, str]:
    """The verdict of one measured effect, and the reason in words.

    greater: reproduced when the interval lies above 0 and the effect is at least `margin`;
    not reproduced when the interval lies below `margin` (the claimed size is ruled out).
    no_worse: reproduced when the interval lies above -`margin`; not when it lies below.
    at_least: `iv` is the arm's accuracy minus the target; reproduced when above 0, not when
    below. Anything else: inconclusive, the interval is too wide to tell.
    """
    if rule == "greater":
        if iv.lo > 0 and iv.effect >= margin:
            return REPRODUCED, "the interval lies above 0"
        if iv.hi < margin:
            return NOT, f"the interval lies below {margin_text(margin, unit)}"
    elif rule == "no_worse":
        if iv.lo > -margin:
            return REPRODUCED, f"the interval lies above -{margin_text(margin, unit)}"
        if iv.hi < -margin:
            return NOT, f"the interval lies below -{margin_text(margin, unit)}"
    elif rule == "at_least":
        if iv.lo > 0:
            return REPRODUCED, "the interval lies above the target"
        if iv.hi < 0:
            return NOT, "the interval lies below the target"
    else:
        raise ValueError(f"unknown rule {rule!r}")
    return INCONCLUSIVE, "the interval is too wide to tell"


def margin_text(margin: float, unit: str = "pp") -> str:
    """The margin in the effect's unit: percentage points, or as is (a log ratio)."""
    return f"{100 * margin:.2f} pp" if unit == "pp" else f"{margin:.2f}{unit}"


# ---------------------------------------------------------------------------------------
# Validity gates: each returns a reason, or None when the arm passes.


def at_chance(arm: str, accuracies: Sequence[float], chance: float) -> str | None:
    """An arm whose mean accuracy is within CHANCE_TOLERANCE of chance has not learned."""
    mean = sum(accuracies) / len(accuracies)
    if mean <= chance + CHANCE_TOLERANCE:
        return f"{arm} at chance ({100 * mean:.1f}% vs {100 * chance:.1f}%)"
    return None


def unconverged(arm: str, curves: Sequence[Sequence[float]], every: int = 1) -> str | None:
    """An arm whose mean test accuracy rose by more than PLATEAU_RISE over its last
    PLATEAU_EPOCHS evaluations is still learning: its final figure is not its plateau.
    `every`: epochs between evaluations (an arm with 10x the epochs on a tenth of the data is
    evaluated every 10 epochs, so the window spans the same optimizer steps)."""
    n = min((len(c) for c in curves), default=0)
    if n <= PLATEAU_EPOCHS:
        return f"{arm} unconverged ({n} evaluations, fewer than {PLATEAU_EPOCHS + 1} to judge)"
    mean = [sum(c[i] for c in curves) / len(curves) for i in range(n)]
    rise = mean[-1] - mean[-1 - PLATEAU_EPOCHS]
    if rise > PLATEAU_RISE:
        span = PLATEAU_EPOCHS * every
        return f"{arm} unconverged (+{100 * rise:.2f} pp over its last {span} epochs)"
    return None


def censored_both(what: str, censored_a: Sequence[bool], censored_b: Sequence[bool]) -> str | None:
    """A time-to-target ratio means nothing when neither arm reached the target."""
    if all(censored_a) and all(censored_b):
        return f"{what}: neither arm reached the target"
    return None


def below_base(arm: str, scaled: Sequence[float], base: Sequence[float]) -> str | None:
    """A scaled-up arm that ends below its own unscaled base was not trained to its plateau."""
    if sum(scaled) / len(scaled) < sum(base) / len(base):
        return f"{arm} ends below its unscaled base"
    return None


# ---------------------------------------------------------------------------------------
# Typed results


@dataclass
class SubClaim:
    """One measured effect and its verdict. `flags` are the validity gates that failed (any
    makes it inconclusive); `facts` are deterministic figures shown beside it."""

    name: str
    primary: bool
    rule: Rule
    effect: float
    lo: float
    hi: float
    margin: float
    seeds: int
    verdict: str
    reason: str
    flags: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    unit: str = "pp"  # pp: fractions shown as percentage points; x: ratios

    @classmethod
    def judge(
        cls,
        name: str,
        iv: Interval,
        rule: Rule,
        margin: float = 0.0,
        primary: bool = False,
        flags: Sequence[str | None] = (),
        facts: dict[str, Any] | None = None,
        unit: str = "pp",
    ) -> SubClaim:
        """Decide `iv` by `rule`; any failed gate in `flags` (None: passed) overrides it."""
        failed = [f for f in flags if f]
        verdict, reason = decide(rule, iv, margin, unit)
        if failed:
            verdict, reason = INCONCLUSIVE, "; ".join(failed)
        return cls(
            name, primary, rule, iv.effect, iv.lo, iv.hi, margin, iv.n, verdict, reason,
            failed, dict(facts or {}), unit,
        )  # fmt: skip

    def text(self) -> str:
        """'+0.52 pp [+0.21, +0.83], 5 seeds: reproduced (the interval lies above 0)'."""
        k = 100 if self.unit == "pp" else 1
        unit = " pp" if self.unit == "pp" else self.unit
        return (
            f"{self.name}: {k * self.effect:+.2f}{unit} [{k * self.lo:+.2f}, {k * self.hi:+.2f}],"
            f" {self.seeds} seeds: {self.verdict} ({self.reason})"
        )


@dataclass
class ClaimResult:
    """What a claim returns: one primary sub-claim (the headline), the secondaries, the
    deterministic facts, every arm's runs, the recipe and what the budget scaled down."""

    subclaims: list[SubClaim]
    arms: dict[str, list[dict[str, Any]]]
    recipe: dict[str, Any]
    scaled_down: list[str]
    facts: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # claim-specific tables
    plot: Callable[[Any], None] | None = None  # draw(fig) on a fresh figure

    def __post_init__(self) -> None:
        n = sum(s.primary for s in self.subclaims)
        if n != 1:
            raise ValueError(f"a claim declares exactly one primary sub-claim, got {n}")

    @property
    def primary(self) -> SubClaim:
        return next(s for s in self.subclaims if s.primary)

    @property
    def verdict(self) -> str:
        return self.primary.verdict

    @property
    def summary(self) -> str:
        return self.primary.text()

    def to_json(self) -> dict[str, Any]:
        """The JSON body (without the drawing function)."""
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "primary": asdict(self.primary),
            "secondary": [asdict(s) for s in self.subclaims if not s.primary],
            "facts": self.facts,
            "arms": self.arms,
            "recipe": self.recipe,
            "scaled_down": self.scaled_down,
            **self.extra,
        }
