"""The MIND news-click sample (Scenario-Wise-Rec's 8,000 rows) as a multi-domain crossctr dataset.

Real impressions with real click labels (about 4.5 % positives), one domain per news
category: news (rich), lifestyle, sports, finance. The CSV carries no timestamp, so the
rows are split at random, stratified by domain and label (every split of every domain
keeps its share of the few positives), and the split is written into a `split` column.

Example:
    >>> write_mind_dataset("data/mind-sample", "cache/mind")  # doctest: +SKIP
    PosixPath('cache/mind/dataset.yaml')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossctr.data.io import DataError, read_table
from crossctr.data.movielens import SPLIT_FRACTIONS, SPLITS, domain_summary, write_dataset_folder

__all__ = ["MIND_FILE", "MIND_DOMAINS", "load_mind_sample", "stratified_split", "write_mind_dataset"]

MIND_FILE = "mind_sample.csv"
# Scenario-Wise-Rec's domain order (news=0, lifestyle=1, sports=2, finance=3); news is the rich one.
MIND_DOMAINS = ("news", "lifestyle", "sports", "finance")
COLUMNS = ("User_ID", "News_ID", "label", "Category", "SubCategory")
# (name, group, min_count): almost every user appears once, so user ids seen once go to OOV.
FEATURES = (("User_ID", "personal", 2), ("News_ID", "item", 2), ("SubCategory", "item", 1))


def load_mind_sample(root: str | Path) -> pa.Table:
    """Read `mind_sample.csv` (a folder holding it, or the file itself) and check its columns.

    Raises:
        DataError: the file is missing, lacks a column, has labels other than 0/1, or a
            category outside MIND_DOMAINS.
    """
    path = Path(root)
    if path.is_dir():
        path = path / MIND_FILE
    table = read_table(path, list(COLUMNS))
    label = table.column("label").combine_chunks()
    if not pa.types.is_integer(label.type) or label.null_count or not pc.all(pc.is_in(label, pa.array([0, 1]))).as_py():
        raise DataError(f"{path}: column 'label' must hold only 0 and 1")
    cat = table.column("Category").combine_chunks().cast(pa.string())
    known = pc.is_in(cat, pa.array(MIND_DOMAINS)).fill_null(False)
    if not pc.all(known).as_py():
        other = sorted(set(pc.filter(cat, pc.invert(known)).drop_null().to_pylist()))
        raise DataError(f"{path}: column 'Category' holds {other[:5]}; expected only {list(MIND_DOMAINS)}")
    return table


def stratified_split(strata: np.ndarray, seed: int = 0) -> np.ndarray:
    """Split index per row (0 train, 1 valid, 2 test), 80/10/10 within every stratum.

    Each stratum is permuted with one seeded generator; its first round(0.8 n) rows train,
    the next round(0.1 n) validate, the rest test.
    """
    rng = np.random.default_rng(seed)
    which = np.full(len(strata), 2, dtype=np.int8)
    for s in np.unique(strata):
        rows = rng.permutation(np.flatnonzero(strata == s))
        n_train = round(SPLIT_FRACTIONS[0] * len(rows))
        n_valid = round(SPLIT_FRACTIONS[1] * len(rows))
        which[rows[:n_train]] = 0
        which[rows[n_train : n_train + n_valid]] = 1
    return which


def write_mind_dataset(root: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Write out_dir/data.parquet, dataset.yaml and stats.json from the MIND sample.

    Args:
        root: the folder holding mind_sample.csv (or the CSV itself).
        out_dir: created if needed; existing files of the same names are replaced.
        seed: seed of the stratified random split.

    Returns:
        The path of dataset.yaml.
    """
    table = load_mind_sample(root)
    domain = table.column("Category").combine_chunks().cast(pa.string())
    label = table.column("label").to_numpy().astype(np.int8)
    dom_id = pc.index_in(domain, pa.array(MIND_DOMAINS)).to_numpy(zero_copy_only=False)
    which = stratified_split(dom_id * 2 + label, seed)
    out = pa.table(
        {
            "domain": domain,
            "label": pa.array(label),
            "split": pa.array(SPLITS).take(pa.array(which)),
            **{name: table.column(name).combine_chunks().cast(pa.string()) for name, _, _ in FEATURES},
        }
    )
    name = "mind-sample"
    schema: dict[str, Any] = {
        "name": name,
        "path": "data.parquet",
        "label": "label",
        "domain": {"column": "domain", "values": list(MIND_DOMAINS)},
        "features": [{"name": n, "kind": "categorical", "group": g, "min_count": m} for n, g, m in FEATURES],
        "split": {"kind": "column", "column": "split"},
    }
    stats = {
        "name": name,
        "source": "MIND (Microsoft News Dataset) 8,000-row sample from Scenario-Wise-Rec; label = clicked",
        "split": {"kind": "random, stratified by domain and label", "seed": seed, "fractions": list(SPLIT_FRACTIONS)},
        "rows": out.num_rows,
        "positive_rate": round(float(label.mean()), 4),
        "per_domain": domain_summary(out, list(MIND_DOMAINS), user_column="User_ID"),
    }
    return write_dataset_folder(Path(out_dir), out, schema, stats)
