"""The dashboard workload: what an agency dashboard sends for one client.

Every query is plain SQL that both adlake (DataFusion over Flight SQL) and
DuckDB accept unchanged, so the two engines answer the very same text. Each
query has a total `ORDER BY`, so answers compare row by row.

Dates are fixed by the dataset's `--end-date`, never by the wall clock, so a
run next year asks the same questions of the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

# Ratios are computed from sums at the grain asked for, never averaged, in
# floating point and NULL when the denominator is zero (the semantic layer's
# rule, docs in shared/DESIGN.md section 4).
RATIOS = """
    CAST(sum(clicks) AS DOUBLE) / NULLIF(sum(impressions), 0) AS ctr,
    CAST(sum(spend) AS DOUBLE) / NULLIF(sum(clicks), 0) AS cpc,
    CAST(sum(spend) AS DOUBLE) / NULLIF(sum(conversions), 0) AS cpa,
    CAST(sum(conversion_value) AS DOUBLE) / NULLIF(CAST(sum(spend) AS DOUBLE), 0) AS roas"""

TOTALS = """
    sum(spend) AS spend,
    sum(impressions) AS impressions,
    sum(clicks) AS clicks,
    sum(conversions) AS conversions,
    sum(conversion_value) AS conversion_value"""


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    sql: str
    # "client": sent with the one-client token; "agency": with the all-clients token.
    scope: str
    # The same question as a gRPC `QueryMetrics` request (protobuf JSON form),
    # or None where the metric layer has no such shape.
    metric_request: dict | None = None


def lit(d: date) -> str:
    return f"DATE '{d.isoformat()}'"


def dashboard(client: str, campaign_id: str, end: date) -> list[Query]:
    """The dashboard queries for `client` ending at `end` (inclusive).

    `campaign_id` is the campaign the ad-level drill-down opens (the harness
    picks the client's top campaign of the last 30 days).
    """
    c = client.replace("'", "''")
    camp = campaign_id.replace("'", "''")
    last30 = end - timedelta(days=30)  # exclusive lower bound: 30 days
    last60 = end - timedelta(days=60)
    last90 = end - timedelta(days=90)
    last7 = end - timedelta(days=7)
    last365 = end - timedelta(days=365)
    e = lit(end)
    queries = [
        Query(
            "kpi_30d_vs_prev",
            "KPI totals, last 30 days against the 30 before",
            f"""SELECT CASE WHEN date > {lit(last30)} THEN 'current' ELSE 'previous' END AS period,{TOTALS},{RATIOS}
FROM ad_performance
WHERE client_id = '{c}' AND date > {lit(last60)} AND date <= {e}
GROUP BY 1
ORDER BY 1""",
            "client",
        ),
        Query(
            "trend_90d_by_platform",
            "90-day daily trend by platform",
            f"""SELECT date, platform,{TOTALS},{RATIOS}
FROM ad_performance
WHERE client_id = '{c}' AND date > {lit(last90)} AND date <= {e}
GROUP BY date, platform
ORDER BY date, platform""",
            "client",
        ),
        Query(
            "top_campaigns_30d",
            "top 20 campaigns by spend, last 30 days, with CTR/CPC/CPA/ROAS",
            f"""SELECT platform, campaign_id, campaign_name,{TOTALS},{RATIOS}
FROM ad_performance
WHERE client_id = '{c}' AND date > {lit(last30)} AND date <= {e}
GROUP BY platform, campaign_id, campaign_name
ORDER BY spend DESC, platform, campaign_id
LIMIT 20""",
            "client",
        ),
        Query(
            "campaign_ads_7d",
            "ad-level breakdown of one campaign, last 7 days",
            f"""SELECT ad_group_id, ad_group_name, ad_id, ad_name,{TOTALS},{RATIOS}
FROM ad_performance
WHERE client_id = '{c}' AND campaign_id = '{camp}' AND date > {lit(last7)} AND date <= {e}
GROUP BY ad_group_id, ad_group_name, ad_id, ad_name
ORDER BY spend DESC, ad_id""",
            "client",
        ),
        Query(
            "blended_roas_90d",
            "blended ROAS (Shopify revenue / ad spend) by day, last 90 days",
            f"""WITH ads AS (
    SELECT date, sum(spend) AS ad_spend
    FROM ad_performance
    WHERE client_id = '{c}' AND date > {lit(last90)} AND date <= {e}
    GROUP BY date
), shop AS (
    SELECT date, sum(total_price) AS revenue, count(*) AS orders
    FROM orders
    WHERE client_id = '{c}' AND date > {lit(last90)} AND date <= {e}
    GROUP BY date
)
SELECT ads.date, ads.ad_spend, shop.revenue, shop.orders,
    CAST(shop.revenue AS DOUBLE) / NULLIF(CAST(ads.ad_spend AS DOUBLE), 0) AS blended_roas
FROM ads LEFT JOIN shop ON ads.date = shop.date
ORDER BY ads.date""",
            "client",
        ),
        Query(
            "year_by_month",
            "the last 365 days by month (a year of daily files)",
            f"""SELECT CAST(date_trunc('month', date) AS DATE) AS month,{TOTALS},{RATIOS}
FROM ad_performance
WHERE client_id = '{c}' AND date > {lit(last365)} AND date <= {e}
GROUP BY 1
ORDER BY 1""",
            "client",
        ),
        Query(
            "agency_spend_by_client_30d",
            "agency-wide spend by client, last 30 days (all-clients scope)",
            f"""SELECT client_id,{TOTALS},{RATIOS}
FROM ad_performance
WHERE date > {lit(last30)} AND date <= {e}
GROUP BY client_id
ORDER BY client_id""",
            "agency",
        ),
    ]
    requests = metric_requests(campaign_id, end)
    return [replace(q, metric_request=requests.get(q.name)) for q in queries]


KPIS = ["spend", "impressions", "clicks", "conversions", "conversion_value", "ctr", "cpc", "cpa", "roas"]


def metric_requests(campaign_id: str, end: date) -> dict[str, dict]:
    """The dashboard's questions as gRPC `QueryMetrics` requests (the caller's
    token decides the client, as over Flight SQL). Same date ranges as the
    SQL; the KPI query asks for the comparison period instead of a CASE.
    The answers are not compared with DuckDB's (other shape, converted
    money); the harness checks that each one has rows."""

    def days(n: int) -> dict:
        start = end - timedelta(days=n - 1)
        return {"absolute": {"start": start.isoformat(), "end": end.isoformat()}}

    requests = {
        "kpi_30d_vs_prev": {"metrics": KPIS, "dateRange": days(30), "comparison": "COMPARISON_PREVIOUS_PERIOD"},
        "trend_90d_by_platform": {"metrics": KPIS, "dimensions": ["date", "platform"], "dateRange": days(90)},
        "top_campaigns_30d": {
            "metrics": KPIS,
            "dimensions": ["platform", "campaign_id", "campaign_name"],
            "dateRange": days(30),
            "orderBy": [{"column": "spend", "descending": True}],
            "limit": 20,
        },
        "campaign_ads_7d": {
            "metrics": KPIS,
            "dimensions": ["ad_group_id", "ad_group_name", "ad_id", "ad_name"],
            "dateRange": days(7),
            "filter": {
                "condition": {"dimension": "campaign_id", "operator": "FILTER_OPERATOR_EQUALS", "values": [campaign_id]}
            },
        },
        "blended_roas_90d": {
            "metrics": ["spend", "shopify_revenue", "orders", "blended_roas"],
            "dimensions": ["date"],
            "dateRange": days(90),
        },
        "agency_spend_by_client_30d": {"metrics": KPIS, "dimensions": ["client_id"], "dateRange": days(30)},
    }
    # A client's accounts may bill in several currencies; the metric layer
    # refuses to add them up unconverted, so every request converts to USD
    # through fx_rates (the SQL above sums the raw amounts).
    return {name: {**r, "reportingCurrency": "USD"} for name, r in requests.items()}


def top_campaign_sql(client: str, end: date) -> str:
    """The campaign the drill-down opens: the client's top spender of the last 30 days."""
    c = client.replace("'", "''")
    return f"""SELECT campaign_id FROM ad_performance
WHERE client_id = '{c}' AND date > {lit(end - timedelta(days=30))} AND date <= {lit(end)}
GROUP BY campaign_id ORDER BY sum(spend) DESC, campaign_id LIMIT 1"""
