"""Ready-made segment rules (`GET /v1/segment-templates`): copy one into `POST /v1/segments` as it is, or
adjust it first. Every template is a valid rule of the language (the tests parse and evaluate each one in
both evaluators)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.segmentation.rules import RFM_GROUPS


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    description: str
    rule: dict[str, Any]


# What each RFM group means (the profile service's R x FM grid; 5 is the best score).
_RFM = {
    "champions": ("Champions", "Bought very recently, buy often and spend the most."),
    "loyal": ("Loyal", "Buy often and spend well; bought fairly recently."),
    "potential_loyalist": ("Potential loyalists", "Recent customers with average frequency and spend."),
    "new": ("New", "Bought very recently, for the first time or almost."),
    "promising": ("Promising", "Bought recently, but not often and not much yet."),
    "need_attention": ("Need attention", "Average recency, frequency and spend."),
    "about_to_sleep": ("About to sleep", "Below-average recency; few and small orders."),
    "at_risk": ("At risk", "Used to buy often and spend well, but not for a long time."),
    "cant_lose_them": ("Can't lose them", "Were among the best customers; no purchase for a long time."),
    "hibernating": ("Hibernating", "A long time since the last purchase; few and small orders."),
    "lost": ("Lost", "The lowest recency, frequency and spend."),
}
assert set(_RFM) == set(RFM_GROUPS)

TEMPLATES: tuple[Template, ...] = (
    *(
        Template(
            id=f"rfm_{group}",
            name=f"RFM: {_RFM[group][0]}",
            description=_RFM[group][1],
            rule={"field": "rfm_group", "op": "eq", "value": group},
        )
        for group in RFM_GROUPS
    ),
    Template(
        id="one_time_buyers",
        name="One-time buyers",
        description="Exactly one counted order: candidates for a second-purchase campaign.",
        rule={"field": "orders_count", "op": "eq", "value": 1},
    ),
    Template(
        id="abandoned_cart_7d",
        name="Abandoned cart, last 7 days",
        description="Abandoned a cart in the last 7 days.",
        rule={"field": "cart_abandoned_at", "op": "within_last_days", "value": 7},
    ),
    Template(
        id="high_value_at_risk",
        name="High value at risk",
        description="Top-two monetary quintiles with a churn probability of 50% or more.",
        rule={
            "all": [
                {"field": "rfm_m", "op": "gte", "value": 4},
                {"field": "churn_probability", "op": "gte", "value": 0.5},
            ]
        },
    ),
    Template(
        id="birthday_this_month",
        name="Birthday this month",
        description="Born in the current month (of the date the membership is evaluated).",
        rule={"field": "birth_month", "op": "is_current_month"},
    ),
    Template(
        id="replenishment_due",
        name="Replenishment due",
        description="The next order is expected within 7 days.",
        rule={"field": "next_order_at", "op": "within_next_days", "value": 7},
    ),
    Template(
        id="inactive_180d",
        name="Inactive for 180 days",
        description="Bought before, but no order and no visit in the last 180 days.",
        rule={
            "all": [
                {"field": "last_order_at", "op": "more_than_days_ago", "value": 180},
                {"not": {"field": "last_seen_at", "op": "within_last_days", "value": 180}},
            ]
        },
    ),
)
