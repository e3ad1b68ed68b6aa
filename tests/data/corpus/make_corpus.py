"""Regenerate the bad-input corpus: `python tests/data/corpus/make_corpus.py` (files are committed).

Every case is a folder with a dataset.yaml and the data files it points at; README.md lists
what each case must produce. The base table is valid: 24 rows, explicit train / valid / test
split, both label classes in every split of both domains, so that only the planted problem
can fail.
"""

from __future__ import annotations

import gzip
import io
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

HERE = Path(__file__).resolve().parent

SCHEMA = {
    "name": "corpus",
    "path": "log.csv",
    "label": "click",
    "domain": {"column": "site", "values": ["A", "B"]},
    "features": [
        {"name": "brand", "kind": "categorical"},
        {"name": "price", "kind": "numeric", "buckets": 4},
    ],
    "split": {"kind": "column", "column": "split"},
}


def base() -> dict[str, list]:
    split = ["train"] * 12 + ["valid"] * 6 + ["test"] * 6
    site = ["A", "B"] * 12
    click = [0, 0, 1, 1] * 6  # every (split, domain) gets a 0 and a 1
    brand = ["x", "y", "z"] * 8
    price = [float(i % 7) + 0.5 for i in range(24)]
    return {"site": site, "click": click, "brand": brand, "price": price, "split": split}


def csv_text(cols: dict[str, list]) -> str:
    names = list(cols)
    lines = [",".join(names)]
    for i in range(len(cols[names[0]])):
        lines.append(",".join("" if cols[n][i] is None else str(cols[n][i]) for n in names))
    return "\n".join(lines) + "\n"


def case(name: str, schema_over: dict | None = None) -> Path:
    d = HERE / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    schema = {k: v for k, v in {**SCHEMA, **(schema_over or {})}.items() if v is not None}
    (d / "dataset.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))
    return d


def main() -> None:
    b = base()
    d = case("missing_column")
    (d / "log.csv").write_text(csv_text({k: v for k, v in b.items() if k != "price"}))

    d = case("extra_column")
    (d / "log.csv").write_text(csv_text({**b, "note": ["n"] * 24}))

    d = case("wrong_type")
    (d / "log.csv").write_text(csv_text({**b, "click": ["yes" if c else "no" for c in b["click"]]}))

    d = case("label_outside")
    click = list(b["click"])
    click[4], click[9] = 2, -1
    (d / "log.csv").write_text(csv_text({**b, "click": click}))

    d = case("label_missing")
    click = list(b["click"])
    click[6] = None
    (d / "log.csv").write_text(csv_text({**b, "click": click}))

    d = case("unknown_domain")
    site = list(b["site"])
    site[2] = "Z"
    (d / "log.csv").write_text(csv_text({**b, "site": site}))

    d = case("empty_file")
    (d / "log.csv").write_bytes(b"")

    d = case("header_only")
    (d / "log.csv").write_text(",".join(b) + "\n")

    d = case("corrupt_parquet", {"path": "log.parquet"})
    buf = io.BytesIO()
    pq.write_table(pa.table(b), buf)
    data = buf.getvalue()
    (d / "log.parquet").write_bytes(data[: len(data) // 2])  # cut half way: no footer

    d = case("ragged_row")
    lines = csv_text(b).splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0]  # data row 3 loses its last field
    (d / "log.csv").write_text("\n".join(lines) + "\n")

    d = case("shards_columns", {"path": "shards"})
    (d / "shards").mkdir()
    t = pa.table(b)
    pq.write_table(t.slice(0, 12), d / "shards" / "part-0.parquet")
    pq.write_table(t.slice(12).drop_columns(["brand"]), d / "shards" / "part-1.parquet")

    d = case("shards_types", {"path": "shards/part-*.parquet"})
    (d / "shards").mkdir()
    codes = [i % 3 for i in range(24)]
    t = pa.table({**b, "brand": pa.array(codes, pa.int64())})
    pq.write_table(t.slice(0, 12), d / "shards" / "part-0.parquet")
    t2 = t.slice(12).set_column(2, "brand", pa.array([float(c) for c in codes[12:]], pa.float64()))
    pq.write_table(t2, d / "shards" / "part-1.parquet")

    d = case("non_utf8")
    brand = list(b["brand"])
    brand[5] = "caf\u00e9"
    (d / "log.csv").write_bytes(csv_text({**b, "brand": brand}).encode("latin-1"))

    d = case("numeric_all_nan")
    (d / "log.csv").write_text(csv_text({**b, "price": [None] * 24}))

    d = case("constant_categorical")
    (d / "log.csv").write_text(csv_text({**b, "brand": ["x"] * 24}))

    d = case("no_valid_positives")
    click = list(b["click"])
    for i in range(12, 18):
        if b["site"][i] == "B":
            click[i] = 0
    (d / "log.csv").write_text(csv_text({**b, "click": click}))

    d = case("valid")  # the clean base: prepares without a warning
    (d / "log.csv").write_text(csv_text(b))

    # --- cases where `crossctr train` (in memory) and `crossctr prepare` (streaming) used to disagree
    d = case("label_true_false")  # accepted by both: true/false are 1/0, as in a Parquet boolean column
    (d / "log.csv").write_text(csv_text({**b, "click": ["true" if c else "false" for c in b["click"]]}))

    d = case("categorical_all_empty")  # an empty cell is missing: no value at all, refused as constant
    (d / "log.csv").write_text(csv_text({**b, "brand": [""] * 24}))

    d = case("no_train_positives")  # domain B has no positive label in train
    click = list(b["click"])
    for i in range(12):
        if b["site"][i] == "B":
            click[i] = 0
    (d / "log.csv").write_text(csv_text({**b, "click": click}))

    d = case("duplicate_columns")  # `brand` twice in the header
    lines = csv_text(b).splitlines()
    lines = [ln + "," + ln.split(",")[2] for ln in lines]
    (d / "log.csv").write_text("\n".join(lines) + "\n")

    # --- more inputs that must get the same verdict everywhere
    d = case("empty_categorical_cells")  # a few empty brand cells: missing values, accepted
    brand = list(b["brand"])
    brand[3] = brand[8] = ""
    (d / "log.csv").write_text(csv_text({**b, "brand": brand}))

    d = case("bom_crlf")  # a UTF-8 byte-order mark and Windows line ends: read as the valid case
    (d / "log.csv").write_bytes(b"\xef\xbb\xbf" + csv_text(b).replace("\n", "\r\n").encode())

    d = case("parquet_named_csv")  # a Parquet file named .csv: said to be Parquet, not an encoding problem
    pq.write_table(pa.table(b), d / "log.csv")

    d = case("gzip_named_csv")  # a gzip-compressed CSV named .csv
    (d / "log.csv").write_bytes(gzip.compress(csv_text(b).encode(), mtime=0))

    d = case("duplicate_columns_parquet", {"path": "log.parquet"})  # a Parquet file with `brand` twice
    t = pa.table(b)
    pq.write_table(
        pa.Table.from_arrays([*t.columns, t.column("brand")], names=[*t.column_names, "brand"]), d / "log.parquet"
    )

    d = case(
        "headerless_sources",
        {  # two header-less files, one per domain, and a label rule
            "path": None,
            "sources": [{"path": "raw/a.dat", "domain": "A"}, {"path": "raw/b.dat", "domain": "B"}],
            "domain": {"values": ["A", "B"]},
            "format": {
                "kind": "csv",
                "delimiter": "\t",
                "header": False,
                "columns": ["stars", "brand", "price", "split"],
                "comment": "#",
            },
            "label": {"column": "stars", "positive": ">= 4"},
        },
    )
    (d / "raw").mkdir()
    stars = [4 + i % 2 if c else 1 + i % 3 for i, c in enumerate(b["click"])]
    for dom, name in (("A", "a.dat"), ("B", "b.dat")):
        rows = [
            f"{stars[i]}\t{b['brand'][i]}\t{b['price'][i]}\t{b['split'][i]}" for i in range(24) if b["site"][i] == dom
        ]
        (d / "raw" / name).write_text("# stars<TAB>brand<TAB>price<TAB>split\n" + "\n".join(rows) + "\n")


def huge_cell(d: Path, cell_bytes: int = 10 << 20) -> Path:
    """A case made at test time (not committed: 10 MB): one brand cell of
    `cell_bytes` bytes. Accepted by both readers."""
    d.mkdir(parents=True, exist_ok=True)
    brand = list(base()["brand"])
    brand[4] = "h" * cell_bytes
    (d / "dataset.yaml").write_text(yaml.safe_dump(SCHEMA, sort_keys=False))
    (d / "log.csv").write_text(csv_text({**base(), "brand": brand}))
    return d / "dataset.yaml"


def symlink_loop(d: Path) -> Path:
    """A case made at test time: `log.csv` is a symbolic link to itself."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "dataset.yaml").write_text(yaml.safe_dump(SCHEMA, sort_keys=False))
    (d / "log.csv").symlink_to("log.csv")
    return d / "dataset.yaml"


GENERATED = {"huge_cell": huge_cell, "symlink_loop": symlink_loop}  # case -> writer(folder) -> dataset.yaml


if __name__ == "__main__":
    main()
