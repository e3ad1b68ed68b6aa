"""MovieLens (GroupLens ml-1m and ml-100k) as multi-domain crossctr datasets.

The raw files are read from where the user keeps them (their licence forbids
redistribution) and turned into a dataset folder: `data.parquet` + `dataset.yaml`
(+ `stats.json`), so every model and experiment runs on MovieLens through the same
`crossctr.data.dataset.prepare` pipeline as on any click log.

* label: rating >= 4 (1 = "liked"). With `tasks=True` a second label `rating5`
  (rating == 5, "loved") is written and declared as a task, for multi-task training.
* domains: user age groups, so every user lies in exactly one domain and items are
  shared across domains. `rich-poor` has one data-rich and two data-poor domains
  (ML-1M: 778,095 / 194,903 / 27,211 rows); `age3` is the Scenario-Wise-Rec grouping
  (ML-1M: 210,747 / 395,556 / 393,906 rows). ML-100K ages (years) are mapped to the
  ML-1M age codes first, so the same groupings apply.
* features: user profile (`personal`), movie attributes (`item`), time of the rating
  (`context`), and user / movie / genre statistics (`user_stats`, `item_stats`) computed
  on the training split only; valid and test rows get the training statistics, and users
  or movies unseen in training get null (their own "missing" id after encoding). A training
  row's positive rates come from the other folds of a 5-fold partition of the training rows
  (out-of-fold target encoding), so no row's own label is ever in its features.
* split: random 80/10/10 with a seed, or by time (global timestamp quantiles 80/10/10),
  written into a `split` column that the YAML names (`split: {kind: column}`), so the
  statistics and the split the trainer uses can never disagree.

Example:
    >>> raw = load_ml1m("data/movielens-1m")  # doctest: +SKIP
    >>> table = build_movielens_table(raw, domains="rich-poor", split="random")  # doctest: +SKIP
    >>> write_movielens_dataset("data/movielens-1m", "cache/ml1m")  # doctest: +SKIP
    PosixPath('cache/ml1m/dataset.yaml')
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from crossctr.data.io import DataError
from crossctr.schema import DatasetSchema

__all__ = [
    "AGE_CODES",
    "DOMAIN_GROUPINGS",
    "SPLIT_FRACTIONS",
    "FEATURES",
    "load_ml1m",
    "load_ml100k",
    "age_code",
    "assign_split",
    "build_movielens_table",
    "build_benchmark_table",
    "BENCHMARK_FEATURES",
    "movielens_schema",
    "write_movielens_dataset",
    "domain_summary",
    "write_dataset_folder",
]

logger = logging.getLogger(__name__)

Version = Literal["1m", "100k"]
Grouping = Literal["rich-poor", "age3"]
SplitKind = Literal["random", "time"]
FeatureSet = Literal["full", "benchmark"]

# ML-1M age codes (GroupLens README): the lower bound of each range, 1 = under 18.
AGE_CODES = (1, 18, 25, 35, 45, 50, 56)

# Domain name -> age codes, in the order that fixes domain ids 0..N-1.
DOMAIN_GROUPINGS: dict[str, dict[str, tuple[int, ...]]] = {
    # One data-rich and two data-poor domains, like the paper's platforms A / B / C.
    "rich-poor": {"18-44": (18, 25, 35), "45+": (45, 50, 56), "under-18": (1,)},
    # The age grouping Scenario-Wise-Rec (KDD'24 benchmark) uses for ML-1M.
    "age3": {"under-25": (1, 18), "25-34": (25,), "35+": (35, 45, 50, 56)},
}

SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# ML-1M occupation codes 0..20 (GroupLens README), written as names so reports read well.
OCCUPATIONS_1M = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
# ML-100K genre flags of u.item, in the order of u.genre (alphabetical, like ML-1M's lists).
# fmt: off
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
    "Western",
)
# fmt: on
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# (name, kind, group, min_count) of every feature column, in schema order.
FEATURES: tuple[tuple[str, str, str, int], ...] = (
    ("user_id", "categorical", "personal", 1),  # every user has >= 20 ratings
    ("gender", "categorical", "personal", 1),
    ("age", "categorical", "personal", 1),
    ("occupation", "categorical", "personal", 1),
    ("zip_prefix", "categorical", "personal", 1),  # first 3 characters: a region, not a street
    ("user_count", "numeric", "user_stats", 1),
    ("user_pos_rate", "numeric", "user_stats", 1),
    ("movie_id", "categorical", "item", 2),  # a movie rated once in train carries no signal
    ("genre", "categorical", "item", 1),
    ("genre_2", "categorical", "item", 1),
    ("year", "numeric", "item", 1),
    ("movie_count", "numeric", "item_stats", 1),
    ("movie_pos_rate", "numeric", "item_stats", 1),
    ("genre_pos_rate", "numeric", "item_stats", 1),
    ("hour", "categorical", "context", 1),
    ("weekday", "categorical", "context", 1),
)
LABEL = "label"
RATING5 = "rating5"  # the second label of the multi-task variant
DOMAIN = "domain"
SPLIT = "split"
DATA_FILE = "data.parquet"
SCHEMA_FILE = "dataset.yaml"
STATS_FILE = "stats.json"
_SEP = "\x1f"  # ASCII unit separator: stands in for the two-character `::`, which pyarrow cannot split on


# ---------------------------------------------------------------------------------------------
# Reading the raw files.


def _parse(
    path: Path,
    data: bytes,
    names: list[str],
    types: dict[str, pa.DataType],
    delimiter: str,
    encoding: str,
    layout: str,
    required: list[str] | None = None,
) -> pa.Table:
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(column_names=names, encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False, escape_char=False),
            convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise DataError(f"{path}: cannot be read as `{layout}`: {err}") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows (expected `{layout}`)")
    for name in names if required is None else required:
        if table.column(name).null_count:
            raise DataError(f"{path}: column {name!r} of `{layout}` is empty on {table.column(name).null_count} rows")
    return table


def _read_file(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise DataError(f"{path}: file not found; {what}")
    return path.read_bytes()


def _read_dat(path: Path, names: list[str], types: dict[str, pa.DataType], encoding: str = "utf8") -> pa.Table:
    """Read an ML-1M `::`-separated file."""
    layout = "::".join(names)
    data = _read_file(path, f"the ML-1M folder needs it (`{layout}`, no header)")
    if _SEP.encode() in data:
        raise DataError(f"{path}: holds the control character \\x1f; not a GroupLens `{layout}` file")
    return _parse(path, data.replace(b"::", _SEP.encode()), names, types, _SEP, encoding, layout)


def _rating_files(root: Path) -> list[Path]:
    """`ratings.dat`, or its parts `ratings.part01.dat` ... in order when the file was split."""
    whole = root / "ratings.dat"
    if whole.is_file():
        return [whole]
    parts = sorted(root.glob("ratings.part*.dat"))
    numbers = []
    for p in parts:
        m = re.fullmatch(r"ratings\.part(\d+)\.dat", p.name)
        if m is None:
            raise DataError(
                f"{p}: unexpected file name; rating parts are named ratings.part01.dat, ratings.part02.dat, ..."
            )
        numbers.append(int(m.group(1)))
    if not parts:
        raise DataError(
            f"{whole}: file not found, and no parts ratings.part01.dat ... either; "
            "point at the unzipped GroupLens ml-1m folder"
        )
    order = np.argsort(numbers)
    parts, numbers = [parts[i] for i in order], sorted(numbers)
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        raise DataError(
            f"{root}: rating parts {missing} are missing (found parts {numbers}); the ratings would be incomplete"
        )
    return parts


def load_ml1m(root: str | Path) -> pa.Table:
    """Read the GroupLens ml-1m folder into one row per rating, joined with user and movie.

    Reads `ratings.dat` (or its parts `ratings.part01.dat` ... concatenated in order),
    `users.dat` and `movies.dat` (latin-1), all `::`-separated without header.

    Returns:
        A table with columns user_id, movie_id (int32), rating (int8), timestamp (int64,
        Unix seconds), gender, age (ML-1M age code, int16), occupation (name), zip, title,
        genres (`|`-separated), in the original rating order.

    Raises:
        DataError: a file is missing or cannot be parsed, or ratings name unknown users or movies.
    """
    root = Path(root)
    start = time.perf_counter()
    rtypes = {"user_id": pa.int32(), "movie_id": pa.int32(), "rating": pa.int8(), "timestamp": pa.int64()}
    parts = [_check_stars(_read_dat(p, list(rtypes), rtypes), p) for p in _rating_files(root)]
    ratings = pa.concat_tables(parts)
    utypes = {
        "user_id": pa.int32(),
        "gender": pa.string(),
        "age": pa.int16(),
        "occupation": pa.int16(),
        "zip": pa.string(),
    }
    users = _read_dat(root / "users.dat", list(utypes), utypes, encoding="latin-1")
    occ = users.column("occupation").to_numpy()
    bad = (occ < 0) | (occ >= len(OCCUPATIONS_1M))
    if bad.any():
        raise DataError(
            f"{root / 'users.dat'}: occupation codes must be 0..20; found {sorted(set(occ[bad].tolist()))[:5]}"
        )
    users = users.set_column(3, "occupation", pa.array(OCCUPATIONS_1M).take(pa.array(occ)))
    _check_ages(users.column("age").to_numpy(), root / "users.dat", "age codes")
    mtypes = {"movie_id": pa.int32(), "title": pa.string(), "genres": pa.string()}
    movies = _read_dat(root / "movies.dat", list(mtypes), mtypes, encoding="latin-1")
    table = _join(ratings, users, movies, root / "users.dat", root / "movies.dat")
    logger.info("read %s: %d ratings in %.1fs", root, table.num_rows, time.perf_counter() - start)
    return table


def age_code(years: np.ndarray) -> np.ndarray:
    """Map ages in years to the ML-1M age codes (1: <18, 18: 18-24, ..., 56: 56+)."""
    codes = np.asarray(AGE_CODES)
    return codes[np.searchsorted(codes[1:], np.asarray(years), side="right")]


def load_ml100k(root: str | Path) -> pa.Table:
    """Read the GroupLens ml-100k folder (u.data, u.user, u.item) like `load_ml1m`.

    Ages in years become ML-1M age codes (`age_code`), so the same domain groupings apply;
    the genre flags of u.item become a `|`-separated `genres` string in u.genre order.
    """
    root = Path(root)
    rtypes = {"user_id": pa.int32(), "movie_id": pa.int32(), "rating": pa.int8(), "timestamp": pa.int64()}
    path = root / "u.data"
    ratings = _parse(
        path,
        _read_file(path, "the ML-100K folder needs it"),
        list(rtypes),
        rtypes,
        "\t",
        "utf8",
        "user id \\t item id \\t rating \\t timestamp",
    )
    _check_stars(ratings, path)
    utypes = {
        "user_id": pa.int32(),
        "age": pa.int16(),
        "gender": pa.string(),
        "occupation": pa.string(),
        "zip": pa.string(),
    }
    path = root / "u.user"
    users = _parse(
        path,
        _read_file(path, "the ML-100K folder needs it"),
        list(utypes),
        utypes,
        "|",
        "latin-1",
        "user id|age|gender|occupation|zip code",
    )
    years = users.column("age").to_numpy()
    if (years < 0).any():
        raise DataError(f"{path}: ages must be non-negative years; found {sorted(set(years[years < 0].tolist()))[:5]}")
    users = users.set_column(1, "age", pa.array(age_code(years).astype(np.int16)))
    users = users.select(["user_id", "gender", "age", "occupation", "zip"])
    names = ["movie_id", "title", "release_date", "video_release_date", "imdb_url", *GENRES_100K]
    mtypes = {"movie_id": pa.int32(), **{g: pa.int8() for g in GENRES_100K}}
    path = root / "u.item"
    items = _parse(
        path,
        _read_file(path, "the ML-100K folder needs it"),
        names,
        mtypes,
        "|",
        "latin-1",
        "movie id|title|release date|video release date|IMDb URL|19 genre flags",
        required=["movie_id", *GENRES_100K],
    )
    flags = np.stack([items.column(g).to_numpy() for g in GENRES_100K], axis=1).astype(bool)  # (M, 19)
    genres = ["|".join(g for g, on in zip(GENRES_100K, row, strict=False) if on) or None for row in flags]
    movies = pa.table(
        {"movie_id": items.column("movie_id"), "title": items.column("title"), "genres": pa.array(genres, pa.string())}
    )
    return _join(ratings, users, movies, root / "u.user", root / "u.item")


def _check_ages(ages: np.ndarray, path: Path, what: str) -> None:
    bad = ~np.isin(ages, AGE_CODES)
    if bad.any():
        raise DataError(f"{path}: {what} must be one of {list(AGE_CODES)}; found {sorted(set(ages[bad].tolist()))[:5]}")


def _check_stars(ratings: pa.Table, path: Path) -> pa.Table:
    stars = ratings.column("rating").to_numpy()
    bad = (stars < 1) | (stars > 5)
    if bad.any():
        rows = ", ".join(str(i + 1) for i in np.flatnonzero(bad)[:5])
        raise DataError(f"{path}: ratings must be 1..5 stars; rows {rows} hold {sorted(set(stars[bad].tolist()))[:5]}")
    return ratings


def _lookup(keys: np.ndarray, rated: np.ndarray, source: Path, what: str) -> np.ndarray:
    """Row of `keys` for every id in `rated`; an id missing from `keys` is a DataError."""
    if len(np.unique(keys)) != len(keys):
        raise DataError(f"{source}: {what} ids must be unique")
    if keys.min() < 0 or rated.min() < 0:
        raise DataError(f"{source}: {what} ids must be non-negative")
    size = int(max(keys.max(), rated.max())) + 1
    pos = np.full(size, -1, dtype=np.int64)
    pos[keys] = np.arange(len(keys))
    out = pos[rated]
    if (out < 0).any():
        unknown = sorted(set(rated[out < 0].tolist()))
        raise DataError(f"{source}: ratings name {len(unknown)} {what} ids it does not list, e.g. {unknown[:5]}")
    return out


def _join(ratings: pa.Table, users: pa.Table, movies: pa.Table, users_path: Path, movies_path: Path) -> pa.Table:
    r = ratings.combine_chunks()
    uid, mid = r.column("user_id").to_numpy(), r.column("movie_id").to_numpy()
    u = pa.array(_lookup(users.column("user_id").to_numpy(), uid, users_path, "user"))
    m = pa.array(_lookup(movies.column("movie_id").to_numpy(), mid, movies_path, "movie"))
    cols = {name: r.column(name) for name in ("user_id", "movie_id", "rating", "timestamp")}
    for name in ("gender", "age", "occupation", "zip"):
        cols[name] = users.column(name).take(u)
    for name in ("title", "genres"):
        cols[name] = movies.column(name).take(m)
    return pa.table(cols)


# ---------------------------------------------------------------------------------------------
# From ratings to a multi-domain click table.


def assign_split(timestamp: np.ndarray, kind: SplitKind = "random", seed: int = 0) -> np.ndarray:
    """Split index per row (0 train, 1 valid, 2 test) in the proportions SPLIT_FRACTIONS.

    `random`: a seeded permutation, so the fractions are exact. `time`: global timestamp
    quantiles; rows of one second never straddle a boundary, so the fractions are close
    to, not exactly, 80/10/10.
    """
    n = len(timestamp)
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    n_train = round(SPLIT_FRACTIONS[0] * n)
    n_valid = round(SPLIT_FRACTIONS[1] * n)
    which = np.full(n, 2, dtype=np.int8)
    if kind == "random":
        order = np.random.default_rng(seed).permutation(n)
        which[order[:n_train]] = 0
        which[order[n_train : n_train + n_valid]] = 1
    elif kind == "time":
        ts = np.sort(np.asarray(timestamp))
        valid_start, test_start = ts[min(n_train, n - 1)], ts[min(n_train + n_valid, n - 1)]
        which[timestamp < test_start] = 1
        which[timestamp < valid_start] = 0
    else:
        raise ValueError(f"split must be 'random' or 'time', got {kind!r}")
    return which


def _domain_of_age(ages: np.ndarray, grouping: str) -> tuple[np.ndarray, tuple[str, ...]]:
    if grouping not in DOMAIN_GROUPINGS:
        raise ValueError(f"domains must be one of {sorted(DOMAIN_GROUPINGS)}, got {grouping!r}")
    groups = DOMAIN_GROUPINGS[grouping]
    table = np.full(max(AGE_CODES) + 1, -1, dtype=np.int64)
    for k, codes in enumerate(groups.values()):
        table[list(codes)] = k
    return table[ages], tuple(groups)


N_FOLDS = 5  # out-of-fold target statistics on training rows


def _train_stat(keys: np.ndarray, label: np.ndarray, train: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the training count and positive rate of its key; NaN where the key has no train rows.

    Valid and test rows get the statistics of all training rows. A training row's rate comes
    from the other folds only (K-fold target encoding): with its own label in, a rarely
    rated key's rate reveals the label; leaving only its own label out (leave-one-out) is
    worse, since within a key the rate is then lower exactly when the label is 1.
    `keys` are non-negative ints, or -1 for "no key" (its rows get NaN).
    """
    has = keys >= 0
    k = np.where(has, keys, 0)
    size = int(k.max()) + 1 if len(k) else 1
    fit = train & has
    y = label.astype(np.float64)
    count = np.bincount(k[fit], minlength=size).astype(np.float64)
    pos = np.bincount(k[fit], weights=y[fit], minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        row_rate = np.where(count[k] > 0, pos[k] / count[k], np.nan)
        fold = np.random.default_rng(seed).integers(0, N_FOLDS, len(k))
        for f in range(N_FOLDS):  # K passes, each vectorised over all rows
            in_f = fit & (fold == f)
            c_out = count - np.bincount(k[in_f], minlength=size)
            p_out = pos - np.bincount(k[in_f], weights=y[in_f], minlength=size)
            row_rate[in_f] = np.where(c_out[k[in_f]] > 0, p_out[k[in_f]] / c_out[k[in_f]], np.nan)
    row_count = count[k]
    row_count[row_count == 0] = np.nan
    row_count[~has] = np.nan
    row_rate[~has] = np.nan
    return row_count, row_rate


def _float(x: np.ndarray) -> pa.Array:
    return pa.array(x, type=pa.float64(), mask=np.isnan(x))


def _blank_to_null(col: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)


def build_movielens_table(
    raw: pa.Table, *, domains: Grouping = "rich-poor", split: SplitKind = "random", seed: int = 0, tasks: bool = False
) -> pa.Table:
    """Turn `load_ml1m` / `load_ml100k` output into the click table a dataset folder holds.

    Columns: domain, label, split, the FEATURES columns and the raw timestamp, one row per
    rating in the original order. Statistic features use the training rows only.
    """
    ages = raw.column("age").to_numpy()
    dom, names = _domain_of_age(ages, domains)
    if (dom < 0).any():
        raise DataError(f"ages {sorted(set(ages[dom < 0].tolist()))} are not ML-1M age codes {list(AGE_CODES)}")
    label = (raw.column("rating").to_numpy() >= 4).astype(np.int8)
    ts = raw.column("timestamp").to_numpy()
    which = assign_split(ts, split, seed)
    train = which == 0

    # Title and genres are movie attributes: parse them once per movie, not once per rating.
    _, first, movie_row = np.unique(raw.column("movie_id").to_numpy(), return_index=True, return_inverse=True)
    first, movie_row = pa.array(first), pa.array(movie_row)
    genres = pc.extract_regex(
        raw.column("genres").take(first).combine_chunks().fill_null(""), r"^(?P<genre>[^|]*)(?:\|(?P<genre_2>[^|]*))?"
    )
    genre = _blank_to_null(genres.field("genre")).take(movie_row)
    genre_2 = _blank_to_null(genres.field("genre_2")).take(movie_row)
    title = raw.column("title").take(first).combine_chunks()
    # A title without "(yyyy)" gives a null struct whose field reads "": both mean no year.
    year = _blank_to_null(pc.extract_regex(title, r".*\((?P<year>\d{4})\)").field("year")).take(movie_row)
    days = ts // 86_400
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    hour = (ts // 3_600) % 24  # UTC: the files carry no time zone

    user_count, user_rate = _train_stat(raw.column("user_id").to_numpy(), label, train, seed)
    movie_count, movie_rate = _train_stat(raw.column("movie_id").to_numpy(), label, train, seed)
    genre_codes = pc.dictionary_encode(genre).indices.fill_null(-1).to_numpy(zero_copy_only=False)
    _, genre_rate = _train_stat(genre_codes.astype(np.int64), label, train, seed)

    columns: dict[str, pa.Array] = {
        DOMAIN: pa.array(names).take(pa.array(dom)),
        LABEL: pa.array(label),
        SPLIT: pa.array(SPLITS).take(pa.array(which)),
        "user_id": raw.column("user_id").combine_chunks(),
        "gender": raw.column("gender").combine_chunks(),
        "age": raw.column("age").combine_chunks(),
        "occupation": raw.column("occupation").combine_chunks(),
        "zip_prefix": pc.utf8_slice_codeunits(raw.column("zip").combine_chunks(), 0, 3),
        "user_count": _float(user_count),
        "user_pos_rate": _float(user_rate),
        "movie_id": raw.column("movie_id").combine_chunks(),
        "genre": genre,
        "genre_2": genre_2,
        "year": year.cast(pa.float64()),
        "movie_count": _float(movie_count),
        "movie_pos_rate": _float(movie_rate),
        "genre_pos_rate": _float(genre_rate),
        "hour": pa.array(hour.astype(np.int8)),
        "weekday": pa.array(WEEKDAYS).take(pa.array(weekday)),
        "timestamp": raw.column("timestamp").combine_chunks(),
    }
    if tasks:
        columns[RATING5] = pa.array((raw.column("rating").to_numpy() == 5).astype(np.int8))
    return pa.table(columns)


# The Scenario-Wise-Rec benchmark's ML-1M input (KDD 2024, its public MovieLens script): the
# raw categorical columns and the first listed genre as `cate_id`, age as its one dense feature
# (here categorical: ML-1M's 7 age codes carry no more order than a 7-value id). Same label
# (rating > 3 is rating >= 4) and a random 80/10/10 split of all rows.
BENCHMARK_FEATURES: tuple[tuple[str, str], ...] = (
    ("user_id", "personal"),
    ("movie_id", "item"),
    ("gender", "personal"),
    ("occupation", "personal"),
    ("zip", "personal"),
    ("cate_id", "item"),
    ("age", "personal"),
)


def build_benchmark_table(raw: pa.Table, *, domains: Grouping = "rich-poor", seed: int = 0) -> pa.Table:
    """The click table with exactly the Scenario-Wise-Rec benchmark's ML-1M features (`BENCHMARK_FEATURES`)."""
    ages = raw.column("age").to_numpy()
    dom, names = _domain_of_age(ages, domains)
    if (dom < 0).any():
        raise DataError(f"ages {sorted(set(ages[dom < 0].tolist()))} are not ML-1M age codes {list(AGE_CODES)}")
    which = assign_split(raw.column("timestamp").to_numpy(), "random", seed)
    genres = raw.column("genres").combine_chunks().fill_null("")
    cate = _blank_to_null(pc.extract_regex(genres, r"^(?P<cate_id>[^|]*)").field("cate_id"))
    return pa.table(
        {
            DOMAIN: pa.array(names).take(pa.array(dom)),
            LABEL: pa.array((raw.column("rating").to_numpy() >= 4).astype(np.int8)),
            SPLIT: pa.array(SPLITS).take(pa.array(which)),
            "user_id": raw.column("user_id").combine_chunks(),
            "movie_id": raw.column("movie_id").combine_chunks(),
            "gender": raw.column("gender").combine_chunks(),
            "occupation": raw.column("occupation").combine_chunks(),
            "zip": raw.column("zip").combine_chunks(),
            "cate_id": cate,
            "age": raw.column("age").combine_chunks(),
        }
    )


def movielens_schema(
    name: str, domains: Grouping = "rich-poor", tasks: bool = False, features: FeatureSet = "full"
) -> dict[str, Any]:
    """The dataset.yaml content for a table from `build_movielens_table`."""
    if domains not in DOMAIN_GROUPINGS:
        raise ValueError(f"domains must be one of {sorted(DOMAIN_GROUPINGS)}, got {domains!r}")
    if features == "benchmark":
        return {
            "name": name,
            "path": DATA_FILE,
            "label": LABEL,
            "domain": {"column": DOMAIN, "values": list(DOMAIN_GROUPINGS[domains])},
            "features": [{"name": f, "kind": "categorical", "group": g} for f, g in BENCHMARK_FEATURES],
            "split": {"kind": "column", "column": SPLIT},
        }
    feature_specs = []
    for fname, kind, group, min_count in FEATURES:
        spec: dict[str, Any] = {"name": fname, "kind": kind, "group": group}
        if kind == "numeric":
            spec["buckets"] = 10
        else:
            spec["min_count"] = min_count
        feature_specs.append(spec)
    return {
        "name": name,
        "path": DATA_FILE,
        "label": LABEL,
        **({"tasks": [RATING5]} if tasks else {}),
        "domain": {"column": DOMAIN, "values": list(DOMAIN_GROUPINGS[domains])},
        "features": feature_specs,
        "split": {"kind": "column", "column": SPLIT},
    }


def domain_summary(table: pa.Table, domain_names: list[str], user_column: str | None = None) -> dict[str, Any]:
    """Rows, positives, positive rate (and distinct users) per domain and per split, for stats.json.

    `table` has the `domain`, `label` and `split` columns every real-data loader writes.
    """
    dom = table.column(DOMAIN).to_numpy(zero_copy_only=False)
    label = table.column(LABEL).to_numpy()
    split = table.column(SPLIT).to_numpy(zero_copy_only=False)
    users = None if user_column is None else table.column(user_column).to_numpy(zero_copy_only=False)
    out: dict[str, Any] = {}
    for d in domain_names:
        m = dom == d
        entry: dict[str, Any] = {
            "rows": int(m.sum()),
            "positives": int(label[m].sum()),
            "positive_rate": round(float(label[m].mean()), 4) if m.any() else None,
        }
        if users is not None:
            entry["users"] = int(len(np.unique(users[m])))
        entry["splits"] = {
            s: {"rows": int((m & (split == s)).sum()), "positives": int(label[m & (split == s)].sum())} for s in SPLITS
        }
        out[d] = entry
    return out


def write_dataset_folder(out_dir: Path, table: pa.Table, schema: dict[str, Any], stats: dict[str, Any]) -> Path:
    """Write data.parquet, stats.json and dataset.yaml (checked by DatasetSchema); return the YAML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_dir / DATA_FILE)
    (out_dir / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    path = out_dir / SCHEMA_FILE
    path.write_text(yaml.safe_dump(schema, sort_keys=False), encoding="utf-8")
    DatasetSchema.from_yaml(path)  # what we wrote must load, or fail here rather than in training
    return path


def write_movielens_dataset(
    root: str | Path,
    out_dir: str | Path,
    *,
    version: Version = "1m",
    domains: Grouping = "rich-poor",
    split: SplitKind = "random",
    seed: int = 0,
    tasks: bool = False,
    features: FeatureSet = "full",
) -> Path:
    """Write out_dir/data.parquet, dataset.yaml and stats.json from a GroupLens folder.

    Args:
        root: the unzipped ml-1m (version "1m") or ml-100k (version "100k") folder.
        out_dir: created if needed; existing files of the same names are replaced.
        version: which MovieLens release `root` holds.
        domains: "rich-poor" (18-44 / 45+ / under-18) or "age3" (under-25 / 25-34 / 35+).
        split: "random" (80/10/10, seeded) or "time" (global timestamp quantiles).
        seed: seed of the random split (ignored by the time split).
        tasks: also write the second label `rating5` (rating == 5) as a multi-task label.
        features: "full" (crossctr's FEATURES) or "benchmark" (the Scenario-Wise-Rec benchmark's
            `BENCHMARK_FEATURES`, random split only, no tasks), to compare with its published numbers.

    Returns:
        The path of dataset.yaml.
    """
    loaders = {"1m": load_ml1m, "100k": load_ml100k}
    if version not in loaders:
        raise ValueError(f"version must be one of {sorted(loaders)}, got {version!r}")
    if features == "benchmark" and (split != "random" or tasks):
        raise ValueError("features='benchmark' is the benchmark's own setting: random split, no tasks")
    raw = loaders[version](root)
    if features == "benchmark":
        table = build_benchmark_table(raw, domains=domains, seed=seed)
    else:
        table = build_movielens_table(raw, domains=domains, split=split, seed=seed, tasks=tasks)
    name = (
        f"movielens-{version}-{domains}-{split}"
        + ("-mt" if tasks else "")
        + ("-bench" if features == "benchmark" else "")
    )
    schema = movielens_schema(name, domains, tasks, features)
    about = "Scenario-Wise-Rec benchmark features; " if features == "benchmark" else ""
    stats = {
        "name": name,
        "source": f"GroupLens MovieLens {version.upper()}; {about}label = rating >= 4"
        + ("; task rating5 = rating == 5" if tasks else ""),
        "domains_by_age_code": {d: list(c) for d, c in DOMAIN_GROUPINGS[domains].items()},
        "split": {"kind": split, "seed": seed if split == "random" else None, "fractions": list(SPLIT_FRACTIONS)},
        "rows": table.num_rows,
        "positive_rate": round(float(table.column(LABEL).to_numpy().mean()), 4),
        "per_domain": domain_summary(table, list(DOMAIN_GROUPINGS[domains]), user_column="user_id"),
    }
    return write_dataset_folder(Path(out_dir), table, schema, stats)
