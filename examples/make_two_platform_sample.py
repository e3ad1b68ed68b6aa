"""Write a tiny two-platform rating log in the layout real cross-platform logs come in.

    python examples/make_two_platform_sample.py [--out examples/two-platform]

Two platforms of crossctr's click simulator (A becomes `book`, B `music`) are written the way a
public two-platform rating dataset ships: one tab-separated file per platform, no header,
`user_id <TAB> item_id <TAB> rating` with ratings 1-5, a comment line on top. Users keep one id
on both platforms (the same person); items are numbered 1..N on each platform independently, so
`book` item 17 and `music` item 17 are different items that share an id, as in real logs. A
click becomes a rating of 4 or 5, no click 1, 2 or 3, so the label rule `>= 4` gives the click
back. `dataset.yaml` beside the files reads them as they are (see the README, "Your own data").

Everything is seeded: the same command writes the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from crossctr.data.simulator import SimulatorConfig, simulate

HERE = Path(__file__).resolve().parent
PLATFORMS = {"A": ("book", 3000), "B": ("music", 1200)}  # simulator platform -> (name, rows kept)
SEED = 14

DATASET_YAML = """\
# Two platforms, one header-less TSV file each (made by examples/make_two_platform_sample.py).
name: two-platform-sample
sources:                                   # one entry per file (or glob); every row gets its domain
  - {path: raw/book.dat, domain: book}
  - {path: raw/music.dat, domain: music}
format: {kind: csv, delimiter: "\\t", header: false, columns: [user_id, item_id, rating], comment: "#"}
label: {column: rating, positive: ">= 4"}  # a 4 or 5 star rating is a positive
features:
  - {name: user_id, kind: categorical, group: personal}               # one person on both platforms
  - {name: item_id, kind: categorical, group: item, per_domain: true} # book 17 is not music 17
split: {kind: random, seed: 0}
"""


def main(out: Path = HERE / "two-platform") -> None:
    rng = np.random.default_rng(SEED)
    n_users = 2_000
    table, _ = simulate(SimulatorConfig(rows=40_000, seed=SEED, n_users=n_users, n_items=1_500))
    # One activity level per person, on both platforms: heavy users are heavy everywhere (what
    # makes a shared user id shared behaviour, and what `crossctr inspect` looks for).
    activity = rng.lognormal(0.0, 1.0, n_users)
    (out / "raw").mkdir(parents=True, exist_ok=True)
    for platform, (name, keep) in PLATFORMS.items():
        rows = table.filter(pc.equal(table.column("platform"), platform))
        user_index = np.array([int(u.removeprefix("user_")) for u in rows.column("user_id").to_pylist()])
        weight = activity[user_index] / activity[user_index].sum()
        rows = rows.take(np.sort(rng.choice(rows.num_rows, size=min(keep, rows.num_rows), replace=False, p=weight)))
        users = [u.removeprefix("user_") for u in rows.column("user_id").to_pylist()]
        items = np.array([int(i.removeprefix("item_")) for i in rows.column("item_id").to_pylist()])
        renumber = rng.permutation(items.max() + 1) + 1  # this platform's own item numbering, from 1
        click = rows.column("click").to_numpy()
        rating = np.where(click == 1, rng.integers(4, 6, len(click)), rng.integers(1, 4, len(click)))
        lines = [f"# {name}: user_id<TAB>item_id<TAB>rating (1-5), made by examples/make_two_platform_sample.py"]
        lines += [f"{u}\t{i}\t{r}" for u, i, r in zip(users, renumber[items], rating)]
        (out / "raw" / f"{name}.dat").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "dataset.yaml").write_text(DATASET_YAML, encoding="utf-8")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "two-platform", help="folder for raw/*.dat and dataset.yaml")
    main(parser.parse_args().out)
