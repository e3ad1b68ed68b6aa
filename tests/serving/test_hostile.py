"""Hostile clients: no request body, however broken, gets a 5xx or an answer without {"error": ...}.

Each case below got a 500 (or a 400 with FastAPI's {"detail": ...}) before the service read its
bodies with `parse_body`; the fuzz test at the end sends any JSON value in any field.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # starlette >= 1.10 prefers httpx2 for its TestClient; httpx still works
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from crossctr.serving.app import MAX_DEPTH, ServeLimits, create_app, parse_body

LIMITS = ServeLimits(max_body_bytes=20_000, max_rows=50)
ROW = {"site": "B", "brand": "b3", "price": 0.25, "user": "u17"}
RANK = {"domain": "A", "context": {"user": "u"}, "items": [{"brand": "b", "price": 1.0}]}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def client(run_dir: Path) -> TestClient:
    # raise_server_exceptions=False: a bug shows as the 500 a real client would get
    with TestClient(create_app(run_dir, engine="torch", limits=LIMITS), raise_server_exceptions=False) as c:
        yield c


def _post(client: TestClient, path: str, body: str | bytes, headers: dict[str, str] = JSON):
    return client.post(path, content=body.encode() if isinstance(body, str) else body, headers=headers)


def _error(r, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    return body["error"]


def _score(row_json: str) -> str:
    return '{"rows": [' + row_json + "]}"


# ---- non-finite numbers: 422 naming the field, wherever they are ----


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("field", ["brand", "site", "price", "ref"])  # categorical, domain, numeric, ride-along
def test_non_finite_number_in_a_row_is_422_naming_the_field(client, token: str, field: str) -> None:
    row = json.dumps({**ROW, field: "@"}).replace('"@"', token)
    msg = _error(_post(client, "/v1/score", _score(row)), 422)
    assert msg.startswith(f"rows[0].{field}: ") and "is not a JSON number" in msg


@pytest.mark.parametrize("token", ["NaN", "Infinity", "1e999"])
def test_non_finite_domain_top_k_and_item_value_in_rank_are_422(client, token: str) -> None:
    for where, body in [
        ("domain", json.dumps({**RANK, "domain": "@"})),
        ("top_k", json.dumps({**RANK, "top_k": "@"})),
        ("items[0].ref", json.dumps({**RANK, "items": [{"brand": "b", "price": 1.0, "ref": "@"}]})),
        ("context.price", json.dumps({**RANK, "context": {"user": "u", "price": "@"}})),
    ]:
        assert _error(_post(client, "/v1/rank", body.replace('"@"', token)), 422).startswith(f"{where}: ")


def test_huge_integers(client) -> None:
    big = "1" + "0" * 400
    msg = _error(_post(client, "/v1/score", _score(json.dumps({**ROW, "price": "@"}).replace('"@"', big))), 422)
    assert (
        msg
        == "rows[0].price: Value error, a numeric feature takes a number within +-1.8e308, got an integer of 401 digits"
    )
    msg = _error(_post(client, "/v1/score", _score(json.dumps({**ROW, "site": "@"}).replace('"@"', big))), 422)
    assert msg.startswith("rows[0].site: Input should be 'A', 'B' or 'C'")
    # a huge integer is a category like any other (unseen: OOV); as top_k it means "all"
    assert _post(client, "/v1/score", _score(json.dumps({**ROW, "brand": "@"}).replace('"@"', big))).status_code == 200
    r = _post(client, "/v1/rank", json.dumps({**RANK, "top_k": "@"}).replace('"@"', big))
    assert r.status_code == 200 and len(r.json()["items"]) == 1
    # past Python's int/str limit the body is refused as JSON, not with a traceback
    msg = _error(_post(client, "/v1/score", _score(json.dumps({**ROW, "price": "@"}).replace('"@"', "9" * 5000))), 422)
    assert msg.startswith("body is not valid JSON here: an integer literal has more than")


# ---- bodies that are not JSON text ----


def test_non_utf8_body_is_400_with_error(client) -> None:
    msg = _error(_post(client, "/v1/score", b'{"rows": [{"site": "\xff\xfe"}]}'), 400)
    assert msg == "body is not UTF-8 text (byte 0xff at position 20); send JSON encoded as UTF-8"


def test_deeply_nested_bodies_are_400_with_error(client, run_dir: Path) -> None:
    with TestClient(
        create_app(run_dir, engine="torch"), raise_server_exceptions=False
    ) as default_limits:  # 200 kB fits 1 MiB
        assert "too deeply" in _error(
            _post(default_limits, "/v1/score", "[" * 100_000 + "]" * 100_000), 400
        )  # past the parser's recursion
    assert "too deeply" in _error(_post(client, "/v1/rank", '{"items": ' + "[" * 5000), 400)
    deep = "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5)  # parses, but is refused before validation or echo
    msg = _error(
        _post(
            client,
            "/v1/rank",
            json.dumps({**RANK, "items": [{"brand": "b", "price": 1, "ref": "@"}]}).replace('"@"', deep),
        ),
        400,
    )
    assert msg.startswith("items[0].ref[0]") and f"more than {MAX_DEPTH} levels" in msg
    shallow = "[" * 10 + "]" * 10  # a nested ride-along value is echoed as sent
    r = _post(
        client,
        "/v1/rank",
        json.dumps({**RANK, "items": [{"brand": "b", "price": 1, "ref": "@"}]}).replace('"@"', shallow),
    )
    assert r.status_code == 200 and r.json()["items"][0]["item"]["ref"] == json.loads(shallow)


def test_lone_surrogates_are_400_and_pairs_are_text(client) -> None:
    for field in ("brand", "ref"):
        msg = _error(
            _post(client, "/v1/score", _score(json.dumps({**ROW, field: "@"}).replace('"@"', '"x\\ud800"'))), 400
        )
        assert msg.startswith(f"rows[0].{field}: ") and "surrogate" in msg
    msg = _error(_post(client, "/v1/score", '{"rows": [{"\\udfff": 1}]}'), 400)
    assert "key" in msg and "surrogate" in msg
    assert (
        _post(
            client, "/v1/score", _score(json.dumps({**ROW, "brand": "@"}).replace('"@"', '"\\ud83d\\ude00"'))
        ).status_code
        == 200
    )


def test_wrong_content_type_unknown_path_and_method_get_error_bodies(client) -> None:
    assert "Content-Type: application/json" in _error(
        _post(client, "/v1/score", json.dumps({"rows": [ROW]}), {"content-type": "text/plain"}), 422
    )
    assert "the service answers" in _error(client.get("/v1/nope"), 404)
    assert "the service answers" in _error(client.get("/v1/rank"), 405)
    assert _error(_post(client, "/v1/score", "NaN"), 422).startswith("body: NaN is not a JSON number")


def test_parse_body_accepts_what_json_does() -> None:
    assert parse_body(b'{"rows": [{"a": 1e308, "b": -0.0, "c": null, "d": "\\u00e9"}]}') == {
        "rows": [{"a": 1e308, "b": -0.0, "c": None, "d": "é"}]
    }
    with pytest.raises(json.JSONDecodeError):
        parse_body(b'{"rows": [')


def test_scores_unchanged_by_the_strict_reader(client, predictor, tiny_table) -> None:
    rows = tiny_table(30, seed=11).drop_columns(["click"]).to_pylist()
    got = np.asarray(_post(client, "/v1/score", json.dumps({"rows": rows})).json()["scores"])
    import pyarrow as pa

    assert np.max(np.abs(got - predictor.predict(pa.Table.from_pylist(rows)))) < 1e-6


# ---- fuzz: any JSON value in any field ----

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**64), 10**400, 0]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e-320]),
    st.text(max_size=12),
    st.sampled_from(["A", "B", "C", "b3", "u17", "", "\x00", "\ud800", "é" * 3]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)
_FIELDS = ["site", "brand", "price", "user"]
_CATEGORY = st.one_of(st.none(), st.text(max_size=8), st.integers(), st.sampled_from(["b3", "u17", 10**400]))
_VALID = {  # what the contract accepts, odd values included: these must score
    "site": st.sampled_from(["A", "B", "C"]),
    "brand": _CATEGORY,
    "user": _CATEGORY,
    "price": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**300), 10**300)),
}


@st.composite
def _row(draw: st.DrawFn) -> dict:
    """A valid row, then none, one or two of its fields dropped or replaced by any JSON value."""
    row = {f: draw(_VALID[f]) for f in _FIELDS}
    if draw(st.booleans()):
        row["ref"] = draw(_VALUES)  # a ride-along value
    spoilt = draw(st.sampled_from([0, 0, 0, 1, 2]))  # mostly valid rows, so scoring is fuzzed too
    for f in draw(st.lists(st.sampled_from(_FIELDS), min_size=spoilt, max_size=spoilt, unique=True)):
        if draw(st.booleans()):
            del row[f]
        else:
            row[f] = draw(_VALUES)
    return row


_SCORE = st.one_of(
    _VALUES,
    st.fixed_dictionaries(
        {"rows": st.one_of(st.lists(_row(), min_size=1, max_size=4), _VALUES)}, optional={"extra": _VALUES}
    ),
    st.fixed_dictionaries({"rows": st.lists(_row(), min_size=1, max_size=4)}),
)
_RANK = st.one_of(
    _VALUES,
    st.fixed_dictionaries(
        {
            "domain": st.sampled_from(["A", "B", "C"]),
            "items": st.lists(_row(), min_size=1, max_size=4),
            "context": _row(),
        }
    ),
    st.fixed_dictionaries(
        {
            "domain": st.one_of(st.sampled_from(["A", "B", "C"]), _VALUES),
            "items": st.one_of(st.lists(_row(), max_size=4), _VALUES),
        },
        optional={"context": st.one_of(_row(), _VALUES), "top_k": st.one_of(st.integers(-2, 5), _VALUES)},
    ),
)


def _check(r) -> None:
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code == 200:
        scores = body["scores"] if "scores" in body else [it["score"] for it in body["items"]]
        assert all(isinstance(p, float) and 0.0 <= p <= 1.0 and math.isfinite(p) for p in scores)
    else:
        assert 400 <= r.status_code < 500 and isinstance(body.get("error"), str) and body["error"], body


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    path=st.sampled_from(["/v1/score", "/v1/rank"]),
    score=_SCORE,
    rank=_RANK,
    mangle=st.sampled_from(["none", "none", "none", "cut", "byte"]),
    at=st.integers(0, 10_000),
)
def test_fuzz_any_json_in_any_field_is_2xx_or_4xx(client, path: str, score, rank, mangle: str, at: int) -> None:
    body = json.dumps(score if path == "/v1/score" else rank, allow_nan=True).encode("utf-8", "surrogatepass")
    if mangle == "cut":
        body = body[: at % (len(body) + 1)]
    elif mangle == "byte" and body:
        i = at % len(body)
        body = body[:i] + bytes([at % 256]) + body[i + 1 :]
    _check(_post(client, path, body))


# ---- the load test's hostile requests get the answers it expects ----


def test_load_test_hostile_requests_get_their_4xx(client, predictor, monkeypatch) -> None:
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "load_test.py"
    spec = importlib.util.spec_from_file_location("load_test", path)
    load_test = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "load_test", load_test)  # its dataclasses look their module up
    spec.loader.exec_module(load_test)  # type: ignore[union-attr]
    pool = load_test.build_pool(predictor, 2, 5, LIMITS.max_rows, 1 << 20, seed=0)
    assert len(pool["hostile"]) >= 25
    for req in pool["hostile"]:
        if len(req.body) > LIMITS.max_body_bytes:
            continue  # the 100k-deep body: this client's limit is 20 kB (test_deeply_nested_bodies sends it at 1 MiB)
        r = client.post(req.path, content=req.body, headers=req.headers)
        assert load_test.check(req, r.status_code, r.json()), (req.body[:80], r.status_code, r.text)
    for req in pool["rank"] + pool["score"]:  # and the valid ones still score right
        r = client.post(req.path, content=req.body, headers=req.headers)
        assert load_test.check(req, r.status_code, r.json()), r.text
