"""services.profile.predict: RFM scores and groups, BG/NBD and Gamma-Gamma fits, CLV."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.profile.predict import (
    BgNbdParams,
    GammaGammaParams,
    RfmGroup,
    bgnbd_log_likelihood,
    expected_average_value,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    p_alive,
    predict,
    purchase_history,
    quintile_scores,
    rfm_group,
    rfm_scores,
)

Floats = npt.NDArray[np.float64]

# The CDNOW estimates of Fader, Hardie & Lee (2005), alpha turned from weeks into days, and lifetimes'
# Gamma-Gamma fit of the same data, v turned from dollars into cents.
CDNOW = BgNbdParams(r=0.243, alpha=4.414 * 7, a=0.793, b=2.426)
CDNOW_SPEND = GammaGammaParams(p=6.25, q=3.74, v=1544.0)
WINDOW = 39 * 7.0  # days observed
COHORT = 12 * 7.0  # first purchases spread over the first 12 weeks, as in CDNOW
HOLDOUT = 39 * 7.0


@dataclass(frozen=True)
class Simulated:
    x: Floats
    t_x: Floats
    age: Floats
    holdout: Floats  # purchases in the HOLDOUT days after the window
    average_value: Floats  # mean value of the x repeat purchases, cents


def simulate(n: int, seed: int) -> Simulated:
    """Customers drawn from the BG/NBD and Gamma-Gamma processes with the CDNOW parameters."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(CDNOW.r, 1.0 / CDNOW.alpha, n)
    dropout = rng.beta(CDNOW.a, CDNOW.b, n)
    age = WINDOW - rng.uniform(0.0, COHORT, n)
    leaves_after = rng.geometric(dropout)  # the repeat purchase right after which they leave
    arrivals = rng.poisson(rate * age)  # what their Poisson process brings in (0, age]
    later = arrivals + rng.poisson(rate * HOLDOUT)
    x = np.minimum(leaves_after, arrivals)
    # The x-th of `arrivals` uniform times in (0, age] is a Beta(x, arrivals - x + 1) fraction of age.
    xr = np.maximum(x, 1)
    t_x = np.where(x > 0, age * rng.beta(xr, np.maximum(arrivals - xr + 1, 1)), 0.0)
    holdout = np.minimum(leaves_after, later) - x
    scale = rng.gamma(CDNOW_SPEND.q, 1.0 / CDNOW_SPEND.v, n)  # each customer's spend rate
    average_value = np.where(x > 0, rng.gamma(CDNOW_SPEND.p * xr, 1.0 / (scale * xr)), 0.0)
    return Simulated(x.astype(np.float64), t_x, age, holdout.astype(np.float64), average_value)


@pytest.fixture(scope="module")
def population() -> Simulated:
    # 20,000 customers: with a few thousand the standard errors of a and b are 20-25% (CDNOW's own, with
    # 2,357 customers, are 23% and 29%), too wide for a recovery test to mean much.
    return simulate(20_000, seed=2005)


@pytest.fixture(scope="module")
def fitted(population: Simulated) -> BgNbdParams:
    params = fit_bgnbd(population.x, population.t_x, population.age)
    assert params is not None
    return params


# RFM


def test_quintiles_of_distinct_values_are_equal_fifths_worst_1_best_5() -> None:
    values = np.random.default_rng(1).permutation(100)
    scores = quintile_scores(values)
    assert [scores.count(s) for s in range(1, 6)] == [20, 20, 20, 20, 20]
    assert scores[int(np.argmin(values))] == 1
    assert scores[int(np.argmax(values))] == 5
    assert quintile_scores([10, 20, 30, 40, 50]) == [1, 2, 3, 4, 5]
    assert quintile_scores([10, 20, 30, 40, 50], higher_is_better=False) == [5, 4, 3, 2, 1]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=60))
def test_quintiles_are_monotone_equal_for_ties_and_from_1_to_5(values: list[int]) -> None:
    for higher_is_better in (True, False):
        scores = quintile_scores(values, higher_is_better=higher_is_better)
        assert all(1 <= s <= 5 for s in scores)
        by_value = dict(zip(values, scores, strict=True))
        assert len(set(zip(values, scores, strict=True))) == len(by_value)  # one score per value
        ascending = [by_value[v] for v in sorted(by_value)]
        assert ascending == sorted(ascending, reverse=not higher_is_better)


def test_quintiles_of_tiny_and_flat_populations() -> None:
    assert quintile_scores([]) == []
    assert quintile_scores([7]) == [3]  # nothing to compare with: neutral
    assert quintile_scores([5, 5, 5]) == [3, 3, 3]
    assert quintile_scores([1, 2]) == [1, 5]
    assert quintile_scores([1, 2, 2]) == [1, 3, 3]  # a tie gets the score of its lowest-ranked member


def test_the_many_one_order_customers_all_get_the_lowest_frequency_score() -> None:
    orders = [1] * 60 + [2] * 25 + [3] * 10 + [9] * 5
    scores = quintile_scores(orders)
    assert set(scores[:60]) == {1}
    assert scores[60:] == sorted(scores[60:])
    assert scores[-1] == 5


def test_rfm_leaves_out_customers_without_orders_and_scores_within_the_rest() -> None:
    scores = rfm_scores(
        ["ana", "bia", "caio", "duda"],
        recency_days=[2, 40, 400, 0],
        frequency=[9, 3, 1, 0],
        monetary_minor=[90_000, 15_000, 4_000, 0],
    )
    assert set(scores) == {"ana", "bia", "caio"}
    assert (scores["ana"].r, scores["ana"].f, scores["ana"].m) == (5, 5, 5)
    assert scores["ana"].group is RfmGroup.champions
    assert (scores["caio"].r, scores["caio"].f, scores["caio"].m) == (1, 1, 1)
    assert scores["caio"].group is RfmGroup.lost
    alone = rfm_scores([1], recency_days=[30], frequency=[2], monetary_minor=[5_000])
    assert alone[1].group is RfmGroup.need_attention  # neutral 3, 3, 3
    assert rfm_scores([], recency_days=[], frequency=[], monetary_minor=[]) == {}


def test_every_rfm_group_is_reached_by_a_handcrafted_customer() -> None:
    wanted = {
        "champion": ((5, 5, 5), RfmGroup.champions),
        "loyal": ((3, 5, 4), RfmGroup.loyal),
        "potential": ((5, 3, 2), RfmGroup.potential_loyalist),
        "new": ((5, 1, 1), RfmGroup.new),
        "promising": ((4, 1, 2), RfmGroup.promising),
        "attention": ((3, 3, 3), RfmGroup.need_attention),
        "drowsy": ((3, 2, 1), RfmGroup.about_to_sleep),
        "at_risk": ((2, 4, 3), RfmGroup.at_risk),
        "cant_lose": ((1, 5, 5), RfmGroup.cant_lose_them),
        "hibernating": ((2, 1, 2), RfmGroup.hibernating),
        "lost": ((1, 1, 1), RfmGroup.lost),
    }
    # 101 customers with distinct values: the one ranked i-th from the worst (0..100) scores
    # 1 + 5 * i // 100, so ranks 20 * (score - 1) + k, k < 20, give each handcrafted customer its scores;
    # fillers take the ranks left over.
    names = [*wanted, *(f"filler{i}" for i in range(101 - len(wanted)))]
    ranks: list[list[int]] = []
    for dimension in range(3):
        taken = [20 * (scores[dimension] - 1) + k for k, (scores, _) in enumerate(wanted.values())]
        ranks.append(taken + [i for i in range(101) if i not in taken])
    result = rfm_scores(
        names,
        recency_days=[100 - i for i in ranks[0]],
        frequency=[1 + i for i in ranks[1]],
        monetary_minor=[1_000 * (1 + i) for i in ranks[2]],
    )
    for name, (scores, group) in wanted.items():
        assert (result[name].r, result[name].f, result[name].m) == scores
        assert result[name].group is group
    assert {s.group for s in result.values()} == set(RfmGroup)


def test_rfm_grid_rounds_the_fm_mean_down_and_covers_every_group() -> None:
    groups = {rfm_group(r, f, m) for r, f, m in itertools.product(range(1, 6), repeat=3)}
    assert groups == set(RfmGroup)
    assert rfm_group(5, 4, 5) is RfmGroup.champions  # FM 4.5 -> 4
    assert rfm_group(5, 3, 4) is RfmGroup.potential_loyalist  # FM 3.5 -> 3
    assert rfm_group(5, 1, 2) is RfmGroup.new  # FM 1.5 -> 1
    assert rfm_group(1, 4, 5) is RfmGroup.at_risk
    with pytest.raises(ValueError, match="1 to 5"):
        rfm_group(0, 3, 3)


# Inputs


def test_purchase_history_counts_purchase_days_as_the_paper() -> None:
    def at(day: int, hour: int = 12) -> datetime:
        return datetime(2026, 3, day, hour, tzinfo=UTC)

    history = purchase_history(
        [at(1), at(1, 18), at(5), at(11), at(11, 9)], [1_000, 500, 2_000, 3_000, 1_000], now=at(31)
    )
    assert (history.x, history.t_x, history.age) == (2, 10.0, 30.0)  # three purchase days
    assert history.average_value == 3_000.0  # day 5: 2,000; day 11: 4,000
    assert history.last_order_at == at(11)
    single = purchase_history([at(1)], [1_000], now=at(1, 20))
    assert (single.x, single.t_x, single.age, single.average_value) == (0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="at least one order"):
        purchase_history([], [], now=at(1))


# BG/NBD


def test_bgnbd_recovers_the_generating_parameters(fitted: BgNbdParams) -> None:
    # About 3.5 standard errors at this size (measured over 20 seeds: 1.8%, 2.6%, 6.3%, 9.3%).
    assert fitted.r == pytest.approx(CDNOW.r, rel=0.08)
    assert fitted.alpha == pytest.approx(CDNOW.alpha, rel=0.10)
    assert fitted.a == pytest.approx(CDNOW.a, rel=0.25)
    assert fitted.b == pytest.approx(CDNOW.b, rel=0.35)
    # a and b trade off against each other; the mean rate and mean dropout probability are sharper.
    assert fitted.r / fitted.alpha == pytest.approx(CDNOW.r / CDNOW.alpha, rel=0.05)
    assert fitted.a / (fitted.a + fitted.b) == pytest.approx(CDNOW.a / (CDNOW.a + CDNOW.b), rel=0.12)


def test_bgnbd_fit_is_a_maximum_of_the_likelihood(population: Simulated, fitted: BgNbdParams) -> None:
    data = (population.x, population.t_x, population.age)
    best = bgnbd_log_likelihood(fitted, *data)
    assert best >= bgnbd_log_likelihood(CDNOW, *data)
    for name in ("r", "alpha", "a", "b"):
        for factor in (0.99, 1.01):
            nudged = BgNbdParams(**{**vars(fitted), name: getattr(fitted, name) * factor})
            assert bgnbd_log_likelihood(nudged, *data) < best


def test_bgnbd_reproduces_the_paper_example_in_weeks_or_days() -> None:
    # Fader, Hardie & Lee (2005), section 5: x = 2, t_x = 30.43, T = 38.86 weeks; lifetimes agrees.
    weeks = BgNbdParams(r=0.243, alpha=4.414, a=0.793, b=2.426)
    assert expected_purchases(weeks, 39, [2], [30.43], [38.86])[0] == pytest.approx(1.226028, rel=1e-6)
    assert expected_purchases(CDNOW, 39 * 7, [2], [30.43 * 7], [38.86 * 7])[0] == pytest.approx(
        1.226028, rel=1e-6
    )
    assert p_alive(CDNOW, [2], [30.43 * 7], [38.86 * 7])[0] == pytest.approx(0.726579, rel=1e-5)


def test_expected_purchases_match_what_the_simulated_customers_did_next(population: Simulated) -> None:
    expected = expected_purchases(CDNOW, HOLDOUT, population.x, population.t_x, population.age)
    assert expected.sum() == pytest.approx(population.holdout.sum(), rel=0.05)
    for x in (0, 1, 2):  # and customer by customer kind, not just in total
        group = population.x == x
        assert expected[group].sum() == pytest.approx(population.holdout[group].sum(), rel=0.12)
    assert expected_purchases(CDNOW, 0, population.x, population.t_x, population.age).max() == 0.0
    few = expected_purchases(CDNOW, 30, [3], [100], [200])[0]
    assert 0 < few < expected_purchases(CDNOW, 60, [3], [100], [200])[0]


def test_p_alive_is_one_without_repeat_purchases_and_falls_with_silence(population: Simulated) -> None:
    alive = p_alive(CDNOW, population.x, population.t_x, population.age)
    assert np.all(alive[population.x == 0] == 1.0)
    assert np.all((alive > 0.0) & (alive <= 1.0))
    assert np.all(alive[population.x > 0] < 1.0)
    silence = p_alive(CDNOW, [4] * 4, [270, 200, 100, 10], [273] * 4)
    assert np.all(np.diff(silence) < 0)
    # With many purchases the closed forms must stay finite (no 0 * inf).
    heavy = expected_purchases(CDNOW, 360, [2_000], [272], [273])
    assert np.isfinite(heavy[0])
    assert heavy[0] > 0


def test_expected_purchases_integrate_numerically_where_the_closed_form_fails() -> None:
    # Frequent buyers (alpha of one day), a long horizon and a large b take 2F1 beyond floating point;
    # the references come from mpmath at 50 digits.
    params = BgNbdParams(r=0.5, alpha=1.0, a=1.5, b=1_000.0)
    got = expected_purchases(params, 360, [0, 5], [0, 15], [0, 30])
    assert list(got) == pytest.approx([135.2631923855738, 57.265534297570554], rel=1e-8)


def test_bgnbd_needs_enough_customers_and_repeat_customers() -> None:
    few = simulate(19, seed=1)
    assert fit_bgnbd(few.x, few.t_x, few.age) is None
    assert fit_bgnbd([0] * 100, [0] * 100, [200] * 100) is None
    assert fit_bgnbd([1] * 4 + [0] * 96, [50] * 4 + [0] * 96, [200] * 100) is None
    # Everyone alike, nobody seen leaving: the likelihood has no finite maximum.
    assert fit_bgnbd([x % 5 + 1 for x in range(50)], [100] * 50, [100] * 50) is None
    small = simulate(60, seed=3)
    assert fit_bgnbd(small.x, small.t_x, small.age) is not None


def simulate_without_dropout(n: int, seed: int) -> Simulated:
    """Customers who never leave (the NBD model): what a generator without churn produces."""
    rng = np.random.default_rng(seed)
    rate = rng.gamma(CDNOW.r * 4, 1.0 / CDNOW.alpha, n)
    age = WINDOW - rng.uniform(0.0, COHORT, n)
    x = rng.poisson(rate * age)
    xr = np.maximum(x, 1)
    t_x = np.where(x > 0, age * rng.beta(xr, 1), 0.0)  # the last of x uniform times in (0, age]
    holdout = rng.poisson(rate * HOLDOUT)
    return Simulated(x.astype(np.float64), t_x, age, holdout.astype(np.float64), np.zeros(n))


def test_bgnbd_without_anyone_leaving_is_the_no_dropout_limit() -> None:
    population = simulate_without_dropout(20_000, seed=11)
    params = fit_bgnbd(population.x, population.t_x, population.age)
    assert params is not None
    assert not params.dropout
    assert params.r == pytest.approx(CDNOW.r * 4, rel=0.1)
    assert params.alpha == pytest.approx(CDNOW.alpha, rel=0.1)
    assert set(p_alive(params, population.x, population.t_x, population.age)) == {1.0}
    expected = expected_purchases(params, HOLDOUT, population.x, population.t_x, population.age)
    assert float(expected.sum()) == pytest.approx(float(population.holdout.sum()), rel=0.03)
    # The limit is the supremum of the full model's likelihood: nudging the dropout in from 0 only lowers it.
    best = bgnbd_log_likelihood(params, population.x, population.t_x, population.age)
    for a, b in ((0.01, 100.0), (0.1, 10.0)):
        nudged = BgNbdParams(r=params.r, alpha=params.alpha, a=a, b=b)
        assert bgnbd_log_likelihood(nudged, population.x, population.t_x, population.age) < best
    first = datetime(2026, 1, 1, tzinfo=UTC)
    (prediction,) = predict(
        params, None, x=[3], t_x=[100], age=[200], average_value=[0], last_order_at=[first]
    )
    assert prediction.churn_probability == 0.0
    assert prediction.expected_orders == pytest.approx(360 * (params.r + 3) / (params.alpha + 200))


def test_bgnbd_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="t_x"):
        p_alive(CDNOW, [1], [20], [10])
    with pytest.raises(ValueError, match="repeat purchases"):
        p_alive(CDNOW, [-1], [0], [10])
    with pytest.raises(ValueError, match="one value per customer"):
        p_alive(CDNOW, [1, 2], [0], [10])


# Gamma-Gamma


def test_gamma_gamma_recovers_the_generating_parameters(population: Simulated) -> None:
    fitted = fit_gamma_gamma(population.x, population.average_value)
    assert fitted is not None
    # About 3.5 standard errors (measured over 20 seeds: 5.5%, 2.5%, 7.9%; the mean spend 0.9%).
    assert fitted.p == pytest.approx(CDNOW_SPEND.p, rel=0.2)
    assert fitted.q == pytest.approx(CDNOW_SPEND.q, rel=0.1)
    assert fitted.v == pytest.approx(CDNOW_SPEND.v, rel=0.3)
    mean = CDNOW_SPEND.p * CDNOW_SPEND.v / (CDNOW_SPEND.q - 1)
    assert fitted.p * fitted.v / (fitted.q - 1) == pytest.approx(mean, rel=0.04)
    data = (population.x, population.average_value)
    assert gamma_gamma_log_likelihood(fitted, *data) >= gamma_gamma_log_likelihood(CDNOW_SPEND, *data)


def test_expected_average_value_shrinks_a_customers_own_average_towards_the_tenants() -> None:
    tenant = CDNOW_SPEND.p * CDNOW_SPEND.v / (CDNOW_SPEND.q - 1)
    values = expected_average_value(CDNOW_SPEND, [0, 1, 5, 100], [9_999, 10_000, 10_000, 10_000])
    assert values[0] == pytest.approx(tenant)  # no repeat purchase: the tenant's mean, own value unused
    assert tenant < values[1] < values[2] < values[3] < 10_000
    assert values[3] == pytest.approx(10_000, rel=0.02)


def test_gamma_gamma_needs_enough_repeat_customers_and_a_finite_mean() -> None:
    assert fit_gamma_gamma([2] * 19 + [0] * 50, [1_000.0] * 69) is None
    heavy_tail = np.exp(np.random.default_rng(3).normal(7.0, 2.5, 300))
    assert fit_gamma_gamma([1] * 300, heavy_tail) is None  # fitted q <= 1: no finite mean spend


# Both


def test_predict_matches_lifetimes_customer_lifetime_value() -> None:
    # lifetimes 0.11.3: GammaGammaFitter.customer_lifetime_value(BetaGeoFitter with CDNOW, ..., time=12,
    # discount_rate=0.01, freq="D") and conditional_expected_number_of_purchases_up_to_time(360, ...).
    last = datetime(2026, 1, 1, tzinfo=UTC)
    predictions = predict(
        CDNOW,
        CDNOW_SPEND,
        x=[0, 2, 10, 1, 30],
        t_x=[0, 150, 300, 10, 200],
        age=[200, 250, 310, 365, 365],
        average_value=[0, 3_500, 2_000, 5_000, 1_200],
        last_order_at=[last] * 5,
    )
    assert [p.clv_minor for p in predictions] == [1_047, 4_604, 14_688, 636, 0]
    orders = [p.expected_orders for p in predictions]
    assert orders == pytest.approx([0.3160264, 1.3946755, 7.5498038, 0.1486820, 6.959826e-05], rel=1e-6)


def test_clv_grows_with_frequency() -> None:
    xs = list(range(21))
    predictions = predict(
        CDNOW,
        CDNOW_SPEND,
        x=xs,
        t_x=[365] * 21,
        age=[365] * 21,
        average_value=[5_000] * 21,
        last_order_at=[datetime(2026, 1, 1, tzinfo=UTC)] * 21,
    )
    clv = [p.clv_minor for p in predictions if p.clv_minor is not None]
    assert len(clv) == len(xs)
    assert clv == sorted(clv)
    assert len(set(clv)) == len(clv)


def test_churn_and_next_order_date() -> None:
    last = datetime(2026, 5, 1, tzinfo=UTC)
    x, t_x, age = [0, 3, 3], [0, 200, 20], [100, 210, 210]
    predictions = predict(CDNOW, None, x=x, t_x=t_x, age=age, average_value=[0] * 3, last_order_at=[last] * 3)
    churn = [p.churn_probability for p in predictions]
    assert churn == pytest.approx(list(1 - p_alive(CDNOW, x, t_x, age)))
    assert churn[0] == 0.0
    assert churn[1] is not None
    assert churn[2] is not None
    assert 0 < churn[1] < churn[2] < 1
    gap = (CDNOW.alpha + 210) / (CDNOW.r + 3)  # inverse of the posterior mean rate, days
    assert predictions[1].next_order_at == last + timedelta(days=gap)
    assert all(p.clv_minor is None for p in predictions)  # no spend model, no CLV


def test_predict_without_a_purchase_model_predicts_nothing() -> None:
    predictions = predict(
        None, CDNOW_SPEND, x=[1], t_x=[10], age=[20], average_value=[1_000], last_order_at=[datetime.now(UTC)]
    )
    assert [(p.churn_probability, p.expected_orders, p.clv_minor, p.next_order_at) for p in predictions] == [
        (None, None, None, None)
    ]
