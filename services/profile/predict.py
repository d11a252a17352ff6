"""Tenant-wide predicted traits of profiles: RFM scores and group, churn, next order and CLV.

Pure functions (no database, no I/O): the refresh job passes one value per customer as columns
(sequences or numpy arrays, all of the same length) and stores what comes back. Money is in integer
minor units (cents) in and out; time is in days.

RFM (`rfm_scores`)
    The population is the tenant's customers with at least one counted order; customers without one
    get no RFM (they are left out of the ranking and of the answer). Each of recency (days since the
    last order; fewer is better), frequency (counted orders) and monetary (total spent) is scored 1..5
    within that population, 5 the best: score = 1 + floor(5 * PERCENT_RANK), capped at 5, where
    PERCENT_RANK = (customers strictly worse) / (customers - 1), as SQL's PERCENT_RANK. Tie rule: equal
    values always get the same score, the one of the lowest-ranked of them (so the many one-order
    customers of a typical tenant all get F = 1, not an arbitrary split of them). With distinct values
    the worst customer gets 1, the best 5 and the scores are equal-sized quintiles. When every value is
    equal (a single customer included) the measure tells nothing apart and everyone gets the neutral 3.
    Pass recency in whole days if customers who bought on the same day should tie.

    The group comes from the usual R x FM grid, FM = floor((F + M) / 2) (the mean rounded half down, so
    the upper band needs both F and M):

        R \\ FM  1               2                   3                   4               5
        5       new             potential_loyalist  potential_loyalist  champions       champions
        4       promising       potential_loyalist  potential_loyalist  loyal           loyal
        3       about_to_sleep  about_to_sleep      need_attention      loyal           loyal
        2       hibernating     hibernating         at_risk             at_risk         cant_lose_them
        1       lost            lost                at_risk             at_risk         cant_lose_them

Purchase model (`fit_bgnbd`, `p_alive`, `expected_purchases`)
    BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"), fitted by maximum
    likelihood. Per customer: x = repeat purchases (distinct purchase days minus one), t_x = days from
    the first to the last purchase day, age = days from the first purchase day to now (the paper's T);
    `purchase_history` computes them from a customer's orders. Assumptions: a non-contractual setting
    (nobody tells us they left); while alive a customer buys as a Poisson process, with rates Gamma(r,
    alpha) across customers; after each repeat purchase they leave for good with a probability that is
    Beta(a, b) across customers, independent of the rate; all of it stationary (no seasonality, growth
    or campaign effects). The alive probability is 1 for x = 0: the model has a customer leave only right
    after a repeat purchase, so one-order customers are judged only through the tenant-wide parameters.
    Expected purchases use the paper's closed form (eq. 10, its 2F1 after Euler's transformation) and,
    where that fails in floating point (frequent buyers over long horizons), the integral it solves.

Spend model (`fit_gamma_gamma`, `expected_average_value`)
    Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value curves"; Fader & Hardie 2013,
    "The Gamma-Gamma model of monetary value"), fitted on repeat customers (x > 0) with the mean value
    of their x repeat purchases. Assumes order values vary around each customer's own mean, and that
    the mean is independent of how often they buy (check that the correlation between x and the
    average is weak before trusting the CLV).

Per-customer prediction (`predict`)
    churn probability = 1 - P(alive now); expected orders and CLV over a horizon as lifetimes'
    `customer_lifetime_value` does: months of 30 days, CLV = sum over months i of (expected purchases
    in month i) * (expected average value) / (1 + monthly discount) ** i (gross revenue, not margin);
    next order = last order + (alpha + age) / (r + x) days, the inverse of the posterior mean purchase
    rate of a customer who is still alive (it ignores the chance they left, which is the churn
    probability's job, and it may already be in the past: an overdue customer).

Both models are fitted with L-BFGS-B on the log-parameters, with analytic gradients.

Limits: a fit needs enough history: BG/NBD at least `MIN_CUSTOMERS` customers and `MIN_REPEATERS` of
them with repeat purchases, Gamma-Gamma `MIN_CUSTOMERS` repeat customers, and a likelihood with a finite
maximum (else the fit functions return None, and so do the predictions that need them); a history in
which nobody is seen leaving gives the model's no-dropout limit (`BgNbdParams.dropout` False: churn 0,
purchases at the customer's posterior rate), which holds only until churn shows up. Even then the
estimates are noisy for small tenants and for observation windows shorter than a few typical gaps
between orders; predictions for customers whose first order is very recent lean almost entirely on
the tenant-wide parameters; purchase days are UTC calendar days; and a first order's value does not
enter the spend model (as in the paper and lifetimes).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy import integrate, optimize, special

Floats = npt.NDArray[np.float64]
Column = Sequence[float] | npt.NDArray[np.float64] | npt.NDArray[np.int64]
K = TypeVar("K", bound=Hashable)

MIN_CUSTOMERS = 20
MIN_REPEATERS = 5
DAYS_PER_MONTH = 30
# The fits search log-parameters within these bounds (about 6e-6 to 1.6e5 once rescaled), far beyond any
# sensible value; a fit that ends on one is refused.
_LOG_BOUND = 12.0
# A fitted mean dropout probability below this is the no-dropout limit (see `fit_bgnbd`).
_NO_DROPOUT = 1e-4


class RfmGroup(StrEnum):
    champions = "champions"
    loyal = "loyal"
    potential_loyalist = "potential_loyalist"
    new = "new"
    promising = "promising"
    need_attention = "need_attention"
    about_to_sleep = "about_to_sleep"
    at_risk = "at_risk"
    cant_lose_them = "cant_lose_them"
    hibernating = "hibernating"
    lost = "lost"


_G = RfmGroup
# _GRID[r - 1][fm - 1]; the table in the module docstring, bottom row first.
_GRID: tuple[tuple[RfmGroup, ...], ...] = (
    (_G.lost, _G.lost, _G.at_risk, _G.at_risk, _G.cant_lose_them),
    (_G.hibernating, _G.hibernating, _G.at_risk, _G.at_risk, _G.cant_lose_them),
    (_G.about_to_sleep, _G.about_to_sleep, _G.need_attention, _G.loyal, _G.loyal),
    (_G.promising, _G.potential_loyalist, _G.potential_loyalist, _G.loyal, _G.loyal),
    (_G.new, _G.potential_loyalist, _G.potential_loyalist, _G.champions, _G.champions),
)


@dataclass(frozen=True)
class RfmScore:
    r: int
    f: int
    m: int
    group: RfmGroup


@dataclass(frozen=True)
class BgNbdParams:
    r: float
    alpha: float  # days
    a: float
    b: float
    # False when the history shows nobody leaving: the dropout probability's maximum-likelihood value is
    # 0 (a and b are then meaningless, stored as 0), every customer is alive and buys as in the NBD model.
    dropout: bool = True


@dataclass(frozen=True)
class GammaGammaParams:
    p: float
    q: float
    v: float  # minor units


@dataclass(frozen=True)
class PurchaseHistory:
    x: int  # repeat purchases: distinct purchase days minus one
    t_x: float  # days from the first to the last purchase day
    age: float  # days from the first purchase day to now (T in the paper)
    average_value: float  # mean total of the repeat purchase days, minor units; 0.0 when x == 0
    last_order_at: datetime


@dataclass(frozen=True)
class Prediction:
    churn_probability: float | None
    expected_orders: float | None  # purchases (distinct days) expected over the horizon
    clv_minor: int | None
    next_order_at: datetime | None


# RFM


def quintile_scores(values: Column, *, higher_is_better: bool = True) -> list[int]:
    """Scores 1..5 of each value within the given population (the rule in the module docstring)."""
    v = _column(values)
    if v.size == 0:
        return []
    if not higher_is_better:
        v = -v
    if v.min() == v.max():
        return [3] * v.size
    worse = np.searchsorted(np.sort(v), v, side="left")
    scores = np.minimum(5, 1 + (5 * worse) // (v.size - 1))
    return [int(s) for s in scores]


def rfm_group(r: int, f: int, m: int) -> RfmGroup:
    if not all(1 <= s <= 5 for s in (r, f, m)):
        raise ValueError("RFM scores go from 1 to 5")
    return _GRID[r - 1][(f + m) // 2 - 1]


def rfm_scores(
    customers: Sequence[K], recency_days: Column, frequency: Column, monetary_minor: Column
) -> dict[K, RfmScore]:
    """R, F, M scores and group of each customer with at least one counted order (`frequency` > 0)."""
    recency, orders, spent = _columns(recency_days, frequency, monetary_minor)
    if len(customers) != orders.size:
        raise ValueError("one value per customer")
    if len(set(customers)) != len(customers):
        raise ValueError("customers must be distinct")
    keep = orders > 0
    ids = [c for c, k in zip(customers, keep, strict=True) if k]
    r = quintile_scores(recency[keep], higher_is_better=False)
    f = quintile_scores(orders[keep])
    m = quintile_scores(spent[keep])
    return {
        c: RfmScore(r=ri, f=fi, m=mi, group=rfm_group(ri, fi, mi))
        for c, ri, fi, mi in zip(ids, r, f, m, strict=True)
    }


# Inputs of the purchase and spend models


def purchase_history(
    placed_at: Sequence[datetime], totals_minor: Sequence[int], now: datetime
) -> PurchaseHistory:
    """The models' inputs for one customer from their counted orders (at least one), as the paper and
    lifetimes' daily summary define them: orders on the same (UTC) calendar day make one purchase."""
    if not placed_at or len(placed_at) != len(totals_minor):
        raise ValueError("one total per order, and at least one order")
    by_day: dict[date, int] = {}
    for at, total in zip(placed_at, totals_minor, strict=True):
        day = _utc_day(at)
        by_day[day] = by_day.get(day, 0) + total
    days = sorted(by_day)
    first, last = days[0], days[-1]
    repeat = [by_day[d] for d in days[1:]]
    return PurchaseHistory(
        x=len(repeat),
        t_x=float((last - first).days),
        age=float(max((_utc_day(now) - first).days, (last - first).days)),
        average_value=sum(repeat) / len(repeat) if repeat else 0.0,
        last_order_at=max(placed_at),
    )


# BG/NBD


def bgnbd_log_likelihood(params: BgNbdParams, x: Column, t_x: Column, age: Column) -> float:
    """Sum of the customers' log-likelihoods (days)."""
    xs, txs, ages = _bgnbd_inputs(x, t_x, age)
    if not params.dropout:
        nbd, _ = _nbd_ll(np.array([params.r, params.alpha]), xs, ages, gradient=False)
        return float(nbd.sum())
    ll, _ = _bgnbd_ll(np.array([params.r, params.alpha, params.a, params.b]), xs, txs, ages, gradient=False)
    return float(ll.sum())


def fit_bgnbd(x: Column, t_x: Column, age: Column) -> BgNbdParams | None:
    """Maximum-likelihood BG/NBD parameters (alpha in days), or None below `MIN_CUSTOMERS` customers or
    `MIN_REPEATERS` repeat customers, or when the likelihood has no finite maximum (a parameter runs off
    to 0 or infinity: e.g. every customer buys at the same rate). When only the dropout runs off to 0
    (nobody is seen leaving), the answer is the limit of the model: no dropout (`dropout=False`), the
    purchase rates fitted alone (the NBD model)."""
    xs, txs, ages = _bgnbd_inputs(x, t_x, age)
    if xs.size < MIN_CUSTOMERS or np.count_nonzero(xs) < MIN_REPEATERS:
        return None
    # Fit in units of the longest age (every parameter but alpha is unit-free), so the optimiser sees
    # numbers near 1 whatever the tenant's history length.
    scale = float(ages.max())
    txs, ages = txs / scale, ages / scale

    def objective(theta: Floats) -> tuple[float, Floats]:
        params = np.exp(theta)
        ll, grad = _bgnbd_ll(params, xs, txs, ages, gradient=True)
        return -float(ll.mean()), -grad.mean(axis=1) * params

    found, on_bound = _minimize(objective, np.zeros(4))
    r, alpha, a, b = found
    if not on_bound and a / (a + b) >= _NO_DROPOUT:
        return BgNbdParams(r=r, alpha=alpha * scale, a=a, b=b)
    # The mean dropout probability a / (a + b) heading to 0 (a to its lower bound or b to its upper one,
    # or the optimiser stopping on the flat way there) with the rate parameters inside: the likelihood's
    # supremum is the no-dropout model.
    a_to_0, b_to_infinity = a < 1.0, b > 1.0
    if on_bound - {2, 3} or not all(a_to_0 if i == 2 else b_to_infinity for i in on_bound):
        return None

    def nbd_objective(theta: Floats) -> tuple[float, Floats]:
        params = np.exp(theta)
        ll, grad = _nbd_ll(params, xs, ages, gradient=True)
        return -float(ll.mean()), -grad.mean(axis=1) * params

    rates, rates_on_bound = _minimize(nbd_objective, np.zeros(2))
    if rates_on_bound:
        return None
    r, alpha = rates
    return BgNbdParams(r=r, alpha=alpha * scale, a=0.0, b=0.0, dropout=False)


def p_alive(params: BgNbdParams, x: Column, t_x: Column, age: Column) -> Floats:
    """Probability that each customer is still alive now: 1 for x == 0, else in [0, 1)."""
    xs, txs, ages = _bgnbd_inputs(x, t_x, age)
    if not params.dropout:
        return np.ones(xs.size)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    repeat = xs > 0
    log_odds = (
        np.log(a)
        - np.log(b + np.maximum(xs, 1) - 1)
        + (r + xs) * (np.log(alpha + ages) - np.log(alpha + txs))
    )
    alive: Floats = np.where(repeat, special.expit(-log_odds), 1.0)
    return alive


def expected_purchases(params: BgNbdParams, t: float, x: Column, t_x: Column, age: Column) -> Floats:
    """Expected purchases (distinct days) of each customer in the next `t` days (the paper's eq. 10); NaN
    in the rare cases floating point cannot evaluate it (extreme parameters)."""
    if t < 0:
        raise ValueError("t must not be negative")
    xs, txs, ages = _bgnbd_inputs(x, t_x, age)
    if not params.dropout:  # the posterior mean rate (r + x) / (alpha + age), for t days
        nbd: Floats = t * (params.r + xs) / (params.alpha + ages)
        return nbd
    alive = p_alive(params, xs, txs, ages)
    bought = _bought_while_alive(params, t, xs, ages)
    # 0 <= E[purchases | alive] <= t * E[rate | alive]. Outside that the closed form lost to floating
    # point, and the integral it solves is evaluated numerically instead, once per (x, age); unless the
    # customer's answer is 0 anyway.
    ceiling = t * (params.r + xs) / (params.alpha + ages)
    matters = alive * ceiling > 1e-12
    failed = ~_within(bought, ceiling) & matters
    if failed.any():
        pairs, back = np.unique(np.stack([xs[failed], ages[failed]], axis=1), axis=0, return_inverse=True)
        found = np.array([_bought_by_quadrature(params, t, x_i, age_i) for x_i, age_i in pairs])
        bought[failed] = found[back.reshape(-1)]
    expected: Floats = np.where(_within(bought, ceiling), bought * alive, np.where(matters, np.nan, 0.0))
    return expected


# Gamma-Gamma


def gamma_gamma_log_likelihood(params: GammaGammaParams, x: Column, average_value: Column) -> float:
    """Sum of the log-likelihoods of the customers with x > 0 and a positive average."""
    xs, ms = _gamma_gamma_inputs(x, average_value)
    ll, _ = _gamma_gamma_ll(np.array([params.p, params.q, params.v]), xs, ms, gradient=False)
    return float(ll.sum())


def fit_gamma_gamma(x: Column, average_value: Column) -> GammaGammaParams | None:
    """Maximum-likelihood Gamma-Gamma parameters from the repeat customers (x > 0, average > 0), or None
    below `MIN_CUSTOMERS` of them, when the likelihood has no finite maximum, or when the fit has q <= 1
    (no finite mean spend)."""
    xs, ms = _gamma_gamma_inputs(x, average_value)
    if xs.size < MIN_CUSTOMERS:
        return None
    scale = float(ms.mean())  # v is in money units, p and q are unit-free
    ms = ms / scale

    def objective(theta: Floats) -> tuple[float, Floats]:
        params = np.exp(theta)
        ll, grad = _gamma_gamma_ll(params, xs, ms, gradient=True)
        return -float(ll.mean()), -grad.mean(axis=1) * params

    found, on_bound = _minimize(objective, np.zeros(3))
    if on_bound or found[1] <= 1.0:
        return None
    p, q, v = found
    return GammaGammaParams(p=p, q=q, v=v * scale)


def expected_average_value(params: GammaGammaParams, x: Column, average_value: Column) -> Floats:
    """Expected mean value of each customer's future purchases: their own average shrunk towards the
    tenant's, the more the fewer repeat purchases they have (x == 0: the tenant's, p * v / (q - 1))."""
    xs, ms = _columns(x, average_value)
    p, q, v = params.p, params.q, params.v
    if q <= 1.0:
        raise ValueError("q must be above 1")
    ms = np.where(xs > 0, ms, 0.0)
    expected: Floats = p * (v + xs * ms) / (p * xs + q - 1.0)
    return expected


# Both


def predict(
    bgnbd: BgNbdParams | None,
    gamma_gamma: GammaGammaParams | None,
    *,
    x: Column,
    t_x: Column,
    age: Column,
    average_value: Column,
    last_order_at: Sequence[datetime],
    horizon_months: int = 12,
    monthly_discount: float = 0.01,
) -> list[Prediction]:
    """Churn probability, expected orders, CLV and next order date of each customer; None where the
    models could not be fitted (no BG/NBD: all None; no Gamma-Gamma: no CLV) or where floating point
    cannot evaluate them (`expected_purchases`)."""
    xs, txs, ages = _bgnbd_inputs(x, t_x, age)
    if len(last_order_at) != xs.size:
        raise ValueError("one value per customer")
    if horizon_months < 1 or monthly_discount <= -1.0:
        raise ValueError("the horizon needs a month, the discount rate must be above -1")
    if bgnbd is None:
        return [Prediction(None, None, None, None) for _ in range(xs.size)]
    churn = 1.0 - p_alive(bgnbd, xs, txs, ages)
    cumulative = np.stack(
        [expected_purchases(bgnbd, DAYS_PER_MONTH * i, xs, txs, ages) for i in range(horizon_months + 1)]
    )
    discount = (1.0 + monthly_discount) ** -np.arange(1, horizon_months + 1, dtype=np.float64)
    clv = np.full(xs.size, np.nan)
    if gamma_gamma is not None:
        clv = expected_average_value(gamma_gamma, xs, average_value) * (
            discount @ np.diff(cumulative, axis=0)
        )
    gap_days = (bgnbd.alpha + ages) / (bgnbd.r + xs)
    return [
        Prediction(
            churn_probability=float(churn[i]),
            expected_orders=_finite(cumulative[-1, i]),
            clv_minor=None if np.isnan(clv[i]) else round(float(clv[i])),
            next_order_at=_after(last_order_at[i], float(gap_days[i])),
        )
        for i in range(xs.size)
    ]


# Internals


def _column(values: Column) -> Floats:
    column = np.asarray(values, dtype=np.float64)
    if column.ndim != 1:
        raise ValueError("expected one value per customer")
    if not np.all(np.isfinite(column)):
        raise ValueError("values must be finite")
    return column


def _columns(*columns: Column) -> tuple[Floats, ...]:
    arrays = tuple(_column(c) for c in columns)
    if len({a.size for a in arrays}) > 1:
        raise ValueError("one value per customer in every column")
    return arrays


def _bgnbd_inputs(x: Column, t_x: Column, age: Column) -> tuple[Floats, Floats, Floats]:
    xs, txs, ages = _columns(x, t_x, age)
    if np.any(xs < 0) or np.any(xs != np.floor(xs)):
        raise ValueError("x counts repeat purchases")
    if np.any(txs < 0) or np.any(txs > ages):
        raise ValueError("need 0 <= t_x <= age")
    return xs, txs, ages


def _gamma_gamma_inputs(x: Column, average_value: Column) -> tuple[Floats, Floats]:
    xs, ms = _columns(x, average_value)
    keep = (xs > 0) & (ms > 0)
    return xs[keep], ms[keep]


def _bgnbd_ll(
    params: Floats, x: Floats, t_x: Floats, age: Floats, *, gradient: bool
) -> tuple[Floats, Floats]:
    """Per-customer log-likelihood (eq. 6 of the paper, in logs) and, if asked, its gradient with respect
    to (r, alpha, a, b), one row per parameter."""
    r, alpha, a, b = (float(v) for v in params)
    repeat = x > 0
    xr = np.maximum(x, 1.0)  # the dropout term exists only for x > 0; keep its arguments valid elsewhere
    beta_ab = special.betaln(a, b)
    head = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    alive = special.betaln(a, b + x) - beta_ab - (r + x) * np.log(alpha + age)
    left = special.betaln(a + 1.0, b + xr - 1.0) - beta_ab - (r + x) * np.log(alpha + t_x)
    ll: Floats = head + np.where(repeat, np.logaddexp(alive, left), alive)
    if not gradient:
        return ll, np.empty((0, x.size))
    w = np.where(repeat, special.expit(left - alive), 0.0)  # share of the dropout term
    dg = special.digamma
    d_beta_a, d_beta_b = dg(a) - dg(a + b), dg(b) - dg(a + b)
    d_r = dg(r + x) - dg(r) + np.log(alpha) - (1 - w) * np.log(alpha + age) - w * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * ((1 - w) / (alpha + age) + w / (alpha + t_x))
    d_a = (1 - w) * (dg(a + b) - dg(a + b + x)) + w * (dg(a + 1.0) - dg(a + b + x) - d_beta_a)
    d_b = (1 - w) * (dg(b + x) - dg(a + b + x) - d_beta_b) + w * (dg(b + xr - 1.0) - dg(a + b + x) - d_beta_b)
    return ll, np.stack([d_r, d_alpha, d_a, d_b])


def _bought_while_alive(params: BgNbdParams, t: float, x: Floats, age: Floats) -> Floats:
    """Eq. 10 without its P(alive) factor; NaN or nonsense where floating point fails."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1.0) < 1e-6:  # the closed form divides by a - 1; its limit is smooth
        a = 1.0 + 1e-6
    z = t / (alpha + age + t)
    c = a + b + x - 1.0
    with np.errstate(all="ignore"):
        # ((alpha + T) / (alpha + T + t)) ** (r + x) * 2F1(r + x, b + x; c; z) after Euler's transformation:
        # the same value, without 0 * inf for customers with many purchases.
        tail = (1.0 - z) ** (a - 1.0) * special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        bought: Floats = c / (a - 1.0) * (1.0 - tail)
    return bought


def _bought_by_quadrature(params: BgNbdParams, t: float, x: float, age: float) -> float:
    """What eq. 10 solves: E[(1 - exp(-lambda p t)) / p] for an alive customer, lambda ~ Gamma(r + x,
    alpha + T) and p ~ Beta(a, b + x) a posteriori; lambda integrated out in closed form, p numerically
    over its quantiles (bounded integrand, however concentrated or singular the Beta density is)."""
    k, s, bx = params.r + x, t / (params.alpha + age), params.b + x

    def integrand(u: float) -> float:
        p = float(special.betaincinv(params.a, bx, u))
        return float(-np.expm1(-k * np.log1p(p * s)) / p) if p > 0 else k * s

    # full_output keeps quad's warnings in its return value: a poor result fails the caller's bounds.
    result = integrate.quad(integrand, 0.0, 1.0, epsabs=0.0, epsrel=1e-10, limit=200, full_output=1)
    return float(result[0])


def _gamma_gamma_ll(params: Floats, x: Floats, m: Floats, *, gradient: bool) -> tuple[Floats, Floats]:
    """Per-customer log-density of the average m of x purchases and, if asked, its gradient with respect
    to (p, q, v)."""
    p, q, v = (float(value) for value in params)
    px = p * x
    total = v + m * x
    ll: Floats = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(v)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(total)
    )
    if not gradient:
        return ll, np.empty((0, x.size))
    dg = special.digamma
    d_p = x * (dg(px + q) - dg(px) + np.log(m) + np.log(x) - np.log(total))
    d_q = dg(px + q) - dg(q) + np.log(v) - np.log(total)
    d_v = q / v - (px + q) / total
    return ll, np.stack([d_p, d_q, d_v])


def _nbd_ll(params: Floats, x: Floats, age: Floats, *, gradient: bool) -> tuple[Floats, Floats]:
    """Per-customer log-likelihood of the NBD model (BG/NBD without dropout: x purchases in (0, age] at
    a Gamma(r, alpha) rate; t_x does not matter) and, if asked, its gradient with respect to (r, alpha)."""
    r, alpha = (float(v) for v in params)
    ll: Floats = (
        special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha) - (r + x) * np.log(alpha + age)
    )
    if not gradient:
        return ll, np.empty((0, x.size))
    d_r = special.digamma(r + x) - special.digamma(r) + np.log(alpha) - np.log(alpha + age)
    d_alpha = r / alpha - (r + x) / (alpha + age)
    return ll, np.stack([d_r, d_alpha])


def _minimize(
    objective: Callable[[Floats], tuple[float, Floats]], start: Floats
) -> tuple[tuple[float, ...], set[int]]:
    """The parameters at the optimum and the indexes of those that ended on the search bound (a
    likelihood still growing towards 0 or infinity: the data cannot pin them down); all of them when the
    optimum is not finite."""
    result = optimize.minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * start.size,
        options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
    )
    if not np.isfinite(result.fun):
        return tuple(float(v) for v in np.exp(result.x)), set(range(start.size))
    on_bound = {int(i) for i in np.flatnonzero(np.abs(result.x) >= _LOG_BOUND - 1e-6)}
    return tuple(float(v) for v in np.exp(result.x)), on_bound


def _within(bought: Floats, ceiling: Floats) -> npt.NDArray[np.bool_]:
    within: npt.NDArray[np.bool_] = (bought >= 0.0) & (bought <= ceiling * (1.0 + 1e-9) + 1e-12)
    return within


def _finite(value: np.float64) -> float | None:
    return float(value) if np.isfinite(value) else None


def _utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date() if at.tzinfo is not None else at.date()


def _after(at: datetime, days: float) -> datetime | None:
    try:
        return at + timedelta(days=days)
    except OverflowError:
        return None
