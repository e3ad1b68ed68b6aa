"""A seeded multi-platform e-commerce click simulator: the dataset that ships with crossctr.

Why it exists: the paper's logs (Qiu et al., section 3) are private, yet the whole pipeline,
from schema to per-domain AUC and the attention heatmap of Figure 4, has to run out of the
box and be testable. The simulator builds a small world that has the paper's structure and
*knows its own truth*:

* three platforms in the paper's size proportion A : B : C = 56,000 : 4,900 : 350;
  A has a wide audience, B attracts high-income users, C low-income users;
* the five feature groups of section 3.3 (item statistics, query-item statistics, price,
  brand, personal) plus context ids, with realistic noise and missing values;
* a hidden click model whose logit is a platform bias, a part shared by all platforms
  (item popularity, query-item relevance, user propensity, user x category affinity) and a
  platform-specific part: brand matters most on high-end B, cheapness most on low-end C,
  both moderately on A. A model trained on A alone is therefore off for B and C, while the
  shared part is what lets joint training help the tiny platform C.

The planted truth (raw weights and, per platform, the spread each feature group adds to the
logit) is returned next to the table, so tests can check that a model's attention ranks
brand above price on B and price above brand on C, as Figure 4 of the paper reports.

Example:
    >>> table, truth = simulate(SimulatorConfig(rows=40_000, seed=1))
    >>> table.num_rows, sorted(truth["rows"].items())
    (40000, [('A', 36571), ('B', 3200), ('C', 229)])
    >>> truth["importance"]["B"]["brand"] > truth["importance"]["B"]["price"]
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

__all__ = [
    "PLATFORMS",
    "PAPER_SIZES",
    "MIN_PLATFORM_ROWS",
    "FEATURE_GROUPS",
    "SimulatorConfig",
    "min_rows",
    "platform_row_counts",
    "simulate",
    "write_simulated_dataset",
]

PLATFORMS = ("A", "B", "C")
# The paper's row counts in millions (section 3); we keep only their proportion.
PAPER_SIZES = {"A": 56_000, "B": 4_900, "C": 350}
# Below this a platform cannot be split into train / valid / test days with both labels present.
MIN_PLATFORM_ROWS = 200

DATASET_NAME = "simulated-ecommerce"
DATA_FILE = "data.parquet"
SCHEMA_FILE = "dataset.yaml"
PLANTED_FILE = "planted.json"

# Labels for the ordinal categorical columns, lowest first.
PRICE_LEVELS = ("low", "mid", "high", "premium")
BRAND_TIERS = ("economy", "standard", "premium", "luxury")
PURCHASE_POWER = ("low", "mid", "high")
GENDERS = ("F", "M")

SALES_WINDOWS = (1, 3, 7, 15, 30)  # the "N days sales" of the paper's section 3.3
HISTORY_DAYS = max(SALES_WINDOWS)  # days of item history simulated before day 1


@dataclass(frozen=True)
class SimulatorConfig:
    """Size and randomness of the simulated world; validated on construction."""

    rows: int = 300_000  # all platforms together, split in the paper's proportion
    seed: int = 0
    days: int = 14  # the `day` column runs 1..days; the last 2 days test, the 2 before validate
    n_users: int = 20_000  # ~15 rows per user at 300k rows: enough repeats to learn user ids
    n_items: int = 5_000  # ~60 impressions per item at 300k rows
    n_brands: int = 300
    n_queries: int = 1_000
    n_categories: int = 20  # every query and item belongs to one category
    missing_rate: float = 0.05  # share of rows (or users) whose optional fields are null

    def __post_init__(self) -> None:
        minimum = min_rows()
        if self.rows < minimum:
            raise ValueError(
                f"SimulatorConfig.rows must be at least {minimum} so that every platform gets "
                f"{MIN_PLATFORM_ROWS} rows in the paper's proportion {PAPER_SIZES}; got rows={self.rows}"
            )
        if self.days < 5:
            raise ValueError(
                f"SimulatorConfig.days must be at least 5 (train days, 2 valid and 2 test days); got {self.days}"
            )
        if self.n_categories < 1:
            raise ValueError(f"SimulatorConfig.n_categories must be at least 1; got {self.n_categories}")
        for name in ("n_items", "n_queries"):
            if getattr(self, name) < self.n_categories:
                raise ValueError(
                    f"SimulatorConfig.{name} must be at least n_categories={self.n_categories} so every "
                    f"category has one; got {getattr(self, name)}"
                )
        for name in ("n_users", "n_brands"):
            if getattr(self, name) < 1:
                raise ValueError(f"SimulatorConfig.{name} must be at least 1; got {getattr(self, name)}")
        if not 0.0 <= self.missing_rate <= 0.5:
            raise ValueError(f"SimulatorConfig.missing_rate must be in [0, 0.5]; got {self.missing_rate}")

    @property
    def valid_start(self) -> int:
        return self.days - 3

    @property
    def test_start(self) -> int:
        return self.days - 1


# ---------------------------------------------------------------------------------------------
# The hidden click model. Shared weights act the same on every platform; the brand and price
# weights are what makes the platforms differ (paper Figure 4: brand on B, price on C, A between).


@dataclass(frozen=True)
class _ClickWeights:
    bias: tuple[float, float, float] = (-1.95, -1.75, -2.05)  # per platform; overall CTR ~0.2
    item_popularity: float = 0.6
    query_item_relevance: float = 0.7
    user_propensity: float = 0.5
    user_category_affinity: float = 0.5
    category: float = 0.25  # spread of per-category click biases
    brand: tuple[float, float, float] = (0.7, 1.5, 0.1)  # weight on brand quality per platform
    price: tuple[float, float, float] = (0.7, 0.1, 1.5)  # weight on cheapness per platform


WEIGHTS = _ClickWeights()


def min_rows() -> int:
    """Smallest total row count that gives every platform MIN_PLATFORM_ROWS rows."""
    total = sum(PAPER_SIZES.values())
    n = math.ceil(MIN_PLATFORM_ROWS * total / min(PAPER_SIZES.values()))
    while min(platform_row_counts(n).values()) < MIN_PLATFORM_ROWS:  # guards against rounding
        n += 1
    return n


def platform_row_counts(rows: int) -> dict[str, int]:
    """Split `rows` over the platforms in the paper's proportion (largest remainder rounding)."""
    total = sum(PAPER_SIZES.values())
    exact = [rows * PAPER_SIZES[p] / total for p in PLATFORMS]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(PLATFORMS)), key=lambda k: (counts[k] - exact[k], k))
    for k in by_remainder[: rows - sum(counts)]:
        counts[k] += 1
    return dict(zip(PLATFORMS, counts, strict=False))


# ---------------------------------------------------------------------------------------------
# The world: users, brands, items, queries. Hidden traits are standard normal unless noted.


@dataclass(frozen=True)
class _World:
    income: np.ndarray  # (U,)
    propensity: np.ndarray  # (U,) how click-happy a user is
    affinity: np.ndarray  # (U, n_categories)
    platform_mix: np.ndarray  # (U, 3) each user's share of rows on each platform, rows sum to 1
    age: np.ndarray  # (U,) float years, NaN where the profile lacks it
    gender: np.ndarray  # (U,) index into GENDERS, -1 where unknown
    purchase_power: np.ndarray  # (U,) index into PURCHASE_POWER
    clicks_7d: np.ndarray  # (U,)
    brand_quality: np.ndarray  # (n_brands,)
    item_category: np.ndarray  # (I,)
    item_brand: np.ndarray  # (I,)
    item_popularity: np.ndarray  # (I,)
    item_price: np.ndarray  # (I,)
    item_cheapness: np.ndarray  # (I,) minus the price z-score within the item's category
    item_price_level: np.ndarray  # (I,) index into PRICE_LEVELS
    item_vec: np.ndarray  # (I, k) relevance factors
    category_bias: np.ndarray  # (n_categories,)
    query_category: np.ndarray  # (Q,)
    query_weight: np.ndarray  # (Q,) how often each query is issued, sums to 1
    query_vec: np.ndarray  # (Q, k)


RELEVANCE_DIM = 8


def _make_users(rng: np.random.Generator, cfg: SimulatorConfig) -> dict[str, np.ndarray]:
    n = cfg.n_users
    income = rng.standard_normal(n)
    activity = rng.lognormal(0.0, 0.8, n)  # a few heavy shoppers, many light ones
    # A reaches everyone; B draws the rich, C the poor; the exponent sets how sharply.
    mix = np.stack([activity, activity * np.exp(1.5 * income), activity * np.exp(-1.5 * income)], axis=1)
    noisy_income = income + 0.5 * rng.standard_normal(n)  # the profile only approximates income
    missing = rng.random(n) < cfg.missing_rate
    age = np.clip(np.round(rng.normal(34.0, 10.0, n)), 16, 75)
    propensity = rng.standard_normal(n)
    return {
        "income": income,
        "propensity": propensity,
        "affinity": rng.standard_normal((n, cfg.n_categories)),
        "platform_mix": mix / mix.sum(axis=0, keepdims=True),
        "age": np.where(missing, np.nan, age),
        "gender": np.where(rng.random(n) < cfg.missing_rate, -1, rng.integers(0, len(GENDERS), n)),
        "purchase_power": np.digitize(noisy_income, [-0.6, 0.6]),
        "clicks_7d": rng.poisson(np.exp(1.2 + 0.8 * propensity) * np.sqrt(activity)).astype(np.float64),
    }


def _make_items(rng: np.random.Generator, cfg: SimulatorConfig) -> dict[str, np.ndarray]:
    n, n_cat = cfg.n_items, cfg.n_categories
    brand_quality = rng.standard_normal(cfg.n_brands)
    category = rng.permutation(np.arange(n) % n_cat)  # every category gets items
    brand = rng.integers(0, cfg.n_brands, n)
    # Category sets the price scale (socks vs phones); better brands cost more, with noise,
    # so brand and price are related but not the same signal.
    log_base = rng.uniform(np.log(5.0), np.log(2_000.0), n_cat)
    log_price = log_base[category] + 0.3 * brand_quality[brand] + 0.45 * rng.standard_normal(n)
    cheapness = -_zscore_within(log_price, category, n_cat)
    return {
        "brand_quality": brand_quality,
        "item_category": category,
        "item_brand": brand,
        "item_popularity": rng.standard_normal(n),
        "item_price": np.round(np.exp(log_price), 2),
        "item_cheapness": cheapness,
        "item_price_level": _quartile_within(log_price, category),
        "item_vec": rng.standard_normal((n, RELEVANCE_DIM)),
        "category_bias": rng.standard_normal(n_cat),
    }


def _zscore_within(x: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    count = np.maximum(np.bincount(group, minlength=n_groups), 1)
    mean = np.bincount(group, x, n_groups) / count
    var = np.bincount(group, (x - mean[group]) ** 2, n_groups) / count
    return (x - mean[group]) / np.sqrt(np.maximum(var, 1e-12))[group]


def _quartile_within(x: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Index 0..3 of each value's quartile among the values of its own group."""
    order = np.lexsort((x, group))
    sorted_group = group[order]
    start = np.searchsorted(sorted_group, sorted_group, side="left")
    size = np.searchsorted(sorted_group, sorted_group, side="right") - start
    rank = np.empty(len(x), dtype=np.int64)
    rank[order] = np.arange(len(x)) - start
    size_of = np.empty(len(x), dtype=np.int64)
    size_of[order] = size
    return np.minimum(rank * len(PRICE_LEVELS) // size_of, len(PRICE_LEVELS) - 1)


def _make_queries(rng: np.random.Generator, cfg: SimulatorConfig) -> dict[str, np.ndarray]:
    n = cfg.n_queries
    weight = 1.0 / np.arange(1, n + 1) ** 0.9  # Zipf: a few head queries, a long tail
    return {
        "query_category": rng.permutation(np.arange(n) % cfg.n_categories),
        "query_weight": rng.permutation(weight / weight.sum()),
        "query_vec": rng.standard_normal((n, RELEVANCE_DIM)),
    }


def _make_world(rng: np.random.Generator, cfg: SimulatorConfig) -> _World:
    return _World(**_make_users(rng, cfg), **_make_items(rng, cfg), **_make_queries(rng, cfg))


# ---------------------------------------------------------------------------------------------
# Impressions: who searched what on which platform and day, and which item was shown.


def _draw_impressions(rng: np.random.Generator, cfg: SimulatorConfig, world: _World) -> dict[str, np.ndarray]:
    counts = platform_row_counts(cfg.rows)
    platform = np.repeat(np.arange(len(PLATFORMS)), [counts[p] for p in PLATFORMS])
    user = np.concatenate(
        [rng.choice(cfg.n_users, size=counts[p], p=world.platform_mix[:, k]) for k, p in enumerate(PLATFORMS)]
    )
    query = rng.choice(cfg.n_queries, size=cfg.rows, p=world.query_weight)
    item = _item_for_query(rng, world.item_category, world.query_category[query], cfg.n_categories)
    day = rng.integers(1, cfg.days + 1, cfg.rows)
    order = np.argsort(day, kind="stable")  # a log reads in time order
    columns = {"platform": platform, "user": user, "query": query, "item": item, "day": day}
    return {name: values[order] for name, values in columns.items()}


def _item_for_query(
    rng: np.random.Generator, item_category: np.ndarray, category: np.ndarray, n_cat: int
) -> np.ndarray:
    """Show, for each row, an item drawn uniformly from the category of the row's query."""
    items_by_category = np.argsort(item_category, kind="stable")
    size = np.bincount(item_category, minlength=n_cat)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    pick = (rng.random(len(category)) * size[category]).astype(np.int64)
    return items_by_category[start[category] + pick]


# ---------------------------------------------------------------------------------------------
# Observed statistics: noisy counts driven by the hidden traits, as a log pipeline would compute.


def _item_stats(
    rng: np.random.Generator, cfg: SimulatorConfig, world: _World, item: np.ndarray, day: np.ndarray
) -> dict[str, np.ndarray]:
    """Trailing-window sales and 7-day CTR of each row's item, up to the day before the row."""
    n_cols = HISTORY_DAYS + cfg.days  # column j holds day j - HISTORY_DAYS + 1
    pop = world.item_popularity[:, None]
    sales = rng.poisson(np.exp(0.3 + 0.9 * pop), (cfg.n_items, n_cols))
    shows = rng.poisson(np.exp(2.5 + 0.3 * pop), (cfg.n_items, n_cols))
    clicks = rng.binomial(shows, 1.0 / (1.0 + np.exp(1.6 - 0.7 * pop)))
    # Prefix sums turn every window into two lookups: the window [t-N, t-1] is cum[t+H-1] - cum[t+H-1-N].
    end = day + HISTORY_DAYS - 1
    out = {}
    cum_sales = _prefix_sum(sales)
    for n in SALES_WINDOWS:
        out[f"item_sales_{n}d"] = (cum_sales[item, end] - cum_sales[item, end - n]).astype(np.float64)
    cum_shows, cum_clicks = _prefix_sum(shows), _prefix_sum(clicks)
    shows_7d = cum_shows[item, end] - cum_shows[item, end - 7]
    clicks_7d = cum_clicks[item, end] - cum_clicks[item, end - 7]
    out["item_ctr_7d"] = np.where(shows_7d > 0, clicks_7d / np.maximum(shows_7d, 1), np.nan)
    return out


def _prefix_sum(daily: np.ndarray) -> np.ndarray:
    return np.concatenate([np.zeros((daily.shape[0], 1), dtype=np.int64), np.cumsum(daily, axis=1)], axis=1)


def _query_item_stats(
    rng: np.random.Generator, cfg: SimulatorConfig, relevance: np.ndarray, popularity: np.ndarray
) -> dict[str, np.ndarray]:
    """Sales of the item under this query over trailing windows, and its 7-day CTR there.

    Drawn per row as nested increments, so 1d <= 3d <= ... <= 30d always holds. A share of
    rows are new query-item pairs with no history at all: their statistics are null.
    """
    rate = np.exp(-0.8 + 0.9 * relevance + 0.3 * popularity)  # sales per day
    out, total, prev = {}, np.zeros(len(rate)), 0
    for n in SALES_WINDOWS:
        total = total + rng.poisson(rate * (n - prev))
        out[f"qi_sales_{n}d"] = total
        prev = n
    shows = rng.poisson(np.exp(1.5 + 0.3 * popularity) * 7)
    clicks = rng.binomial(shows, 1.0 / (1.0 + np.exp(1.4 - 0.8 * relevance)))
    out["qi_ctr_7d"] = np.where(shows > 0, clicks / np.maximum(shows, 1), np.nan)
    new_pair = rng.random(len(rate)) < cfg.missing_rate
    return {k: np.where(new_pair, np.nan, v.astype(np.float64)) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Clicks.


def _logit_parts(world: _World, rows: dict[str, np.ndarray], relevance: np.ndarray) -> dict[str, np.ndarray]:
    """Each feature group's additive contribution to the click logit of every row."""
    w, p, u, i = WEIGHTS, rows["platform"], rows["user"], rows["item"]
    category = world.item_category[i]
    brand_w, price_w = np.asarray(w.brand)[p], np.asarray(w.price)[p]
    return {
        "item_stats": w.item_popularity * world.item_popularity[i],
        "query_item": w.query_item_relevance * relevance,
        "price": price_w * world.item_cheapness[i],
        "brand": brand_w * world.brand_quality[world.item_brand[i]],
        "personal": w.user_propensity * world.propensity[u] + w.user_category_affinity * world.affinity[u, category],
        "context": w.category * world.category_bias[category],
    }


def _relevance(world: _World, query: np.ndarray, item: np.ndarray) -> np.ndarray:
    # A dot product of latent factors, scaled to unit variance, so relevance needs no Q x I table.
    return np.einsum("nk,nk->n", world.query_vec[query], world.item_vec[item]) / np.sqrt(RELEVANCE_DIM)


def _importance(parts: dict[str, np.ndarray], platform: np.ndarray) -> dict[str, dict[str, float]]:
    """Per platform, the standard deviation of each group's logit contribution on its rows."""
    return {
        name: {group: round(float(np.std(value[platform == k])), 4) for group, value in parts.items()}
        for k, name in enumerate(PLATFORMS)
    }


# ---------------------------------------------------------------------------------------------
# Assembly.


def simulate(config: SimulatorConfig) -> tuple[pa.Table, dict[str, Any]]:
    """Simulate the click log; return it with the planted truth (weights, importance, row counts).

    The same config gives a byte-identical table: all randomness flows from one
    `np.random.default_rng(config.seed)` in a fixed order.
    """
    rng = np.random.default_rng(config.seed)
    world = _make_world(rng, config)
    rows = _draw_impressions(rng, config, world)
    relevance = _relevance(world, rows["query"], rows["item"])
    parts = _logit_parts(world, rows, relevance)
    logit = np.asarray(WEIGHTS.bias)[rows["platform"]] + sum(parts.values())
    click = (rng.random(config.rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    item_stats = _item_stats(rng, config, world, rows["item"], rows["day"])
    qi_stats = _query_item_stats(rng, config, relevance, world.item_popularity[rows["item"]])
    table = _to_table(world, rows, click, item_stats, qi_stats)
    truth = {
        "platforms": list(PLATFORMS),
        "rows": platform_row_counts(config.rows),
        "ctr": {p: round(float(click[rows["platform"] == k].mean()), 4) for k, p in enumerate(PLATFORMS)},
        "importance": _importance(parts, rows["platform"]),
        "weights": dataclasses.asdict(WEIGHTS) | {"platform_order": list(PLATFORMS)},
        "config": dataclasses.asdict(config),
    }
    return table, truth


def _strings(labels: list[str] | tuple[str, ...], index: np.ndarray) -> pa.Array:
    """Map integer codes to string labels in C++ (fast at 1M rows); a negative code becomes null."""
    codes = pa.array(index, type=pa.int64(), mask=index < 0)
    return pa.array(list(labels), type=pa.string()).take(codes)


def _numbers(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=np.float64)
    return pa.array(values, type=pa.float64(), mask=np.isnan(values))


def _ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}_{k}" for k in range(n)]


def _to_table(
    world: _World,
    rows: dict[str, np.ndarray],
    click: np.ndarray,
    item_stats: dict[str, np.ndarray],
    qi_stats: dict[str, np.ndarray],
) -> pa.Table:
    u, i, q = rows["user"], rows["item"], rows["query"]
    brand = world.item_brand[i]
    tier = np.digitize(world.brand_quality, [-0.67, 0.0, 0.67])  # quartiles of a standard normal
    columns: dict[str, pa.Array] = {
        "platform": _strings(PLATFORMS, rows["platform"]),
        "day": pa.array(rows["day"], type=pa.int64()),
        "click": pa.array(click, type=pa.int64()),
        **{k: _numbers(v) for k, v in item_stats.items()},
        **{k: _numbers(v) for k, v in qi_stats.items()},
        "item_price": _numbers(world.item_price[i]),
        "price_level": _strings(PRICE_LEVELS, world.item_price_level[i]),
        "item_brand": _strings(_ids("brand", len(world.brand_quality)), brand),
        "brand_tier": _strings(BRAND_TIERS, tier[brand]),
        "user_id": _strings(_ids("user", len(world.income)), u),
        "user_clicks_7d": _numbers(world.clicks_7d[u]),
        "user_purchase_power": _strings(PURCHASE_POWER, world.purchase_power[u]),
        "user_age": _numbers(world.age[u]),
        "user_gender": _strings(GENDERS, world.gender[u]),
        "item_id": _strings(_ids("item", len(world.item_category)), i),
        "query_id": _strings(_ids("query", len(world.query_category)), q),
        "item_category": _strings(_ids("cat", len(world.category_bias)), world.item_category[i]),
    }
    return pa.table(columns)


# Feature group of every feature column, in the order the schema lists them.
FEATURE_GROUPS: dict[str, list[str]] = {
    "item_stats": [f"item_sales_{n}d" for n in SALES_WINDOWS] + ["item_ctr_7d"],
    "query_item": [f"qi_sales_{n}d" for n in SALES_WINDOWS] + ["qi_ctr_7d"],
    "price": ["item_price", "price_level"],
    "brand": ["item_brand", "brand_tier"],
    "personal": ["user_id", "user_clicks_7d", "user_purchase_power", "user_age", "user_gender"],
    "context": ["item_id", "query_id", "item_category"],
}
# Ids seen once in train carry no learnable signal; sending them to OOV keeps the tables small.
_MIN_COUNT = {"user_id": 2, "item_id": 2}


def _schema_dict(table: pa.Table, config: SimulatorConfig) -> dict[str, Any]:
    features = []
    for group, names in FEATURE_GROUPS.items():
        for name in names:
            if pa.types.is_floating(table.schema.field(name).type):
                features.append({"name": name, "kind": "numeric", "group": group, "buckets": 10})
            else:
                min_count = _MIN_COUNT.get(name, 1)
                features.append({"name": name, "kind": "categorical", "group": group, "min_count": min_count})
    return {
        "name": DATASET_NAME,
        "path": DATA_FILE,
        "label": "click",
        "domain": {"column": "platform", "values": list(PLATFORMS)},
        "features": features,
        "split": {"kind": "time", "column": "day", "valid_start": config.valid_start, "test_start": config.test_start},
    }


def write_simulated_dataset(out_dir: str | Path, config: SimulatorConfig) -> Path:
    """Write data.parquet, dataset.yaml and planted.json into `out_dir`; return the YAML path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, truth = simulate(config)
    pq.write_table(table, out / DATA_FILE)
    schema_path = out / SCHEMA_FILE
    schema_path.write_text(yaml.safe_dump(_schema_dict(table, config), sort_keys=False), encoding="utf-8")
    (out / PLANTED_FILE).write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return schema_path
