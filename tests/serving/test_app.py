"""The HTTP service: every endpoint's happy path, every validation error, agreement with Predictor."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

with warnings.catch_warnings():  # starlette >= 1.10 prefers httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from crossctr.serving.app import ServeLimits, create_app

LIMITS = ServeLimits(max_body_bytes=20_000, max_rows=50)
ROW = {"site": "B", "brand": "b3", "price": 0.25, "user": "u17"}


@pytest.fixture(scope="module", params=["torch", "onnx-export"])
def client(request, run_dir: Path, export_dir: Path) -> TestClient:
    """The service on the run folder (PyTorch engine) and on its ONNX export (onnxruntime)."""
    if request.param == "torch":
        app = create_app(run_dir, engine="torch", limits=LIMITS)
    else:
        app = create_app(export_dir, limits=LIMITS)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def torch_client(run_dir: Path) -> TestClient:
    with TestClient(create_app(run_dir, engine="torch", limits=LIMITS)) as c:
        yield c


def _rows(tiny_table, n: int = 40, seed: int = 3) -> list[dict]:
    return tiny_table(n, seed=seed).drop_columns(["click"]).to_pylist()


# ---- happy paths ----


def test_healthz(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_model_reports_schema_domains_version_metrics(client, run_dir: Path) -> None:
    info = client.get("/v1/model").json()
    assert info["domains"] == ["A", "B", "C"]
    assert info["schema"]["domain"] == {"column": "site", "values": ["A", "B", "C"]}
    assert [f["name"] for f in info["schema"]["features"]] == ["brand", "price", "user"]
    assert info["schema"]["features"][1]["kind"] == "numeric"
    assert info["metrics"]["test"] == json.loads((run_dir / "metrics.json").read_text())["test"]
    assert info["version"]["model"] and info["version"]["trained_with_crossctr"]
    assert info["model"]["name"] == "cnan" and info["route"] == {"A": "joint", "B": "joint", "C": "joint"}
    assert info["limits"] == {"max_rows": 50, "max_body_bytes": 20_000}
    assert str(run_dir.parent) not in json.dumps(info), "folder names only, no machine paths"


def test_score_agrees_with_predictor(client, predictor, tiny_table) -> None:
    rows = _rows(tiny_table)
    rows[0]["brand"] = "never-seen"  # OOV still scores
    rows[1]["price"] = None  # missing gets its own id
    rows[2]["user"] = 123  # an integer category is the string "123"
    r = client.post("/v1/score", json={"rows": rows})
    assert r.status_code == 200, r.text
    got = np.array(r.json()["scores"])
    table = pa.Table.from_pylist([{**row, "user": str(row["user"])} for row in rows])
    assert np.max(np.abs(got - predictor.predict(table))) < 1e-5
    assert r.json()["model_version"] == client.get("/v1/model").json()["version"]["model"]


def test_rank_sorts_items_by_score(client, predictor) -> None:
    items = [{"brand": f"b{i}", "price": (i - 10) / 4, "item_id": f"sku{i}"} for i in range(20)]
    r = client.post("/v1/rank", json={"domain": "C", "context": {"user": "u7"}, "items": items})
    assert r.status_code == 200, r.text
    out = r.json()["items"]
    assert len(out) == 20 and r.json()["domain"] == "C"
    scores = [o["score"] for o in out]
    assert scores == sorted(scores, reverse=True)
    assert {o["item"]["item_id"] for o in out} == {f"sku{i}" for i in range(20)}
    table = pa.Table.from_pylist(
        [{"site": "C", "user": "u7", **{k: v for k, v in it.items() if k != "item_id"}} for it in items]
    )
    want = predictor.predict(table)
    for o in out:
        assert abs(o["score"] - want[o["index"]]) < 1e-5
        assert o["item"] == items[o["index"]]
    top = client.post("/v1/rank", json={"domain": "C", "context": {"user": "u7"}, "items": items, "top_k": 3}).json()[
        "items"
    ]
    assert [o["index"] for o in top] == [o["index"] for o in out[:3]]


def test_rank_item_value_overrides_context(client) -> None:
    a = client.post(
        "/v1/rank",
        json={"domain": "A", "context": {"user": "u1", "brand": "b1", "price": 0.0}, "items": [{"brand": "b2"}]},
    ).json()
    b = client.post(
        "/v1/rank", json={"domain": "A", "context": {"user": "u1", "price": 0.0}, "items": [{"brand": "b2"}]}
    ).json()
    assert a["items"][0]["score"] == b["items"][0]["score"]


# ---- validation errors: 4xx that say what is wrong ----


def _error(r, status: int) -> str:
    assert r.status_code == status, r.text
    return r.json()["error"]


def test_unknown_domain(torch_client) -> None:
    assert "rows[0].site: Input should be 'A', 'B' or 'C'" in _error(
        torch_client.post("/v1/score", json={"rows": [{**ROW, "site": "Z"}]}), 422
    )
    assert "domain: Input should be 'A', 'B' or 'C'" in _error(
        torch_client.post(
            "/v1/rank", json={"domain": "Z", "context": {"user": "u"}, "items": [{"brand": "b", "price": 1}]}
        ),
        422,
    )


def test_missing_feature(torch_client) -> None:
    row = {k: v for k, v in ROW.items() if k != "price"}
    assert "rows[0].price: Field required" in _error(torch_client.post("/v1/score", json={"rows": [row]}), 422)
    msg = _error(torch_client.post("/v1/score", json={"rows": [ROW, row]}), 422)
    assert msg.startswith("rows[1].price: Field required")
    # rank: missing everywhere is said once, at the context; missing in one item, at that item
    msg = _error(
        torch_client.post("/v1/rank", json={"domain": "A", "context": {}, "items": [{"brand": "b", "price": 1}] * 3}),
        422,
    )
    assert msg == "context.user: feature 'user' is missing: give it in context or in every item"
    msg = _error(
        torch_client.post(
            "/v1/rank",
            json={"domain": "A", "context": {"user": "u"}, "items": [{"brand": "b", "price": 1}, {"brand": "b"}]},
        ),
        422,
    )
    assert msg == "items[1].price: feature 'price' is missing: give it in context or in every item"


@pytest.mark.parametrize(
    "field,value,expect",
    [
        ("price", "1.5", "rows[0].price: Value error, a numeric feature takes a number or null, got str '1.5'"),
        ("price", True, "rows[0].price: Value error, a numeric feature takes a number or null, got bool True"),
        (
            "brand",
            2.5,
            "rows[0].brand: Value error, a categorical feature takes a string, an integer or null, got float 2.5",
        ),
        (
            "brand",
            {"a": 1},
            "rows[0].brand: Value error, a categorical feature takes a string, an integer or null, got dict",
        ),
        ("site", 1, "rows[0].site: Input should be 'A', 'B' or 'C'"),
    ],
)
def test_wrong_type(torch_client, field, value, expect) -> None:
    assert expect in _error(torch_client.post("/v1/score", json={"rows": [{**ROW, field: value}]}), 422)


def test_wrong_type_in_rank_is_located_in_item_or_context(torch_client) -> None:
    msg = _error(
        torch_client.post(
            "/v1/rank", json={"domain": "A", "context": {"user": "u", "price": "x"}, "items": [{"brand": "b"}] * 4}
        ),
        422,
    )
    assert (
        msg == "context.price: Value error, a numeric feature takes a number or null, got str 'x'"
    )  # once, not per item
    msg = _error(
        torch_client.post(
            "/v1/rank",
            json={
                "domain": "A",
                "context": {"user": "u"},
                "items": [{"brand": "b", "price": 1}, {"brand": [1], "price": 1}],
            },
        ),
        422,
    )
    assert msg.startswith("items[1].brand: Value error, a categorical feature")


def test_too_many_rows_and_empty_requests(torch_client) -> None:
    assert "rows: List should have at most 50 items" in _error(
        torch_client.post("/v1/score", json={"rows": [ROW] * 51}), 422
    )
    assert "rows: List should have at least 1 item" in _error(torch_client.post("/v1/score", json={"rows": []}), 422)
    items = [{"brand": "b", "price": 1}] * 51
    assert "items: List should have at most 50 items" in _error(
        torch_client.post("/v1/rank", json={"domain": "A", "context": {"user": "u"}, "items": items}), 422
    )
    assert "top_k: Input should be greater than or equal to 1" in _error(
        torch_client.post("/v1/rank", json={"domain": "A", "context": {"user": "u"}, "items": items[:2], "top_k": 0}),
        422,
    )


def test_malformed_bodies(torch_client) -> None:
    msg = _error(
        torch_client.post("/v1/score", content=b'{"rows": [', headers={"content-type": "application/json"}), 422
    )
    assert msg.startswith("body is not valid JSON")
    assert "rowz: Extra inputs are not permitted" in _error(
        torch_client.post("/v1/score", json={"rows": [ROW], "rowz": 1}), 422
    )
    assert "rows: Input should be a valid list" in _error(torch_client.post("/v1/score", json={"rows": ROW}), 422)
    assert torch_client.get("/v1/score").status_code == 405


def test_body_over_limit_is_413_before_parsing(torch_client) -> None:
    big = b'{"rows": [' + b"x" * 30_000  # not JSON either: it must never reach the parser
    msg = _error(torch_client.post("/v1/score", content=big, headers={"content-type": "application/json"}), 413)
    assert "request body is 30010 bytes; the limit is 20000 bytes" in msg

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b"y" * 4000

    assert "the limit is 20000 bytes" in _error(
        torch_client.post("/v1/rank", content=chunks(), headers={"content-type": "application/json"}), 413
    )
    # just under the limit passes through to validation
    ok = {"rows": [ROW] * 50}
    assert len(json.dumps(ok)) < 20_000 and torch_client.post("/v1/score", json=ok).status_code == 200
