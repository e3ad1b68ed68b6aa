"""HTTP scoring service over a run folder or an ONNX export (FastAPI, served by uvicorn).

    POST /v1/score   {"rows": [{"<domain column>": "A", "<feature>": value, ...}, ...]}
                     -> {"scores": [p_1, ...], "model_version": ...}
    POST /v1/rank    {"domain": "A", "context": {<user/query features>}, "items": [{<item features>}, ...], "top_k": 10}
                     -> {"items": [{"index": i, "score": p, "item": {...}}, ...] best first, ...}
    GET  /healthz    liveness
    GET  /v1/model   schema, domains, version, engine, test metrics, limits

A rank row is the context merged with one item (an item's value wins over the context's) in
the request's domain. Every feature must be present in each row (null means missing and gets
the missing id); categorical values are strings or integers, numeric values numbers; unseen
categories score (OOV id). Every answer that is not 200 has the body {"error": "..."} (plus
"detail" for validation errors), and no client input gets a 5xx:
    422  unknown domain, missing feature, wrong type, too many rows, invalid JSON, and a
         non-finite number anywhere in the body (NaN, Infinity, -Infinity, or a literal beyond
         +-1.8e308): JSON has no such numbers, and the message names where it was
    400  a body that is not UTF-8, holds a lone UTF-16 surrogate escape (not Unicode), or nests
         arrays / objects deeper than `MAX_DEPTH`
    413  a body over the size limit (refused before it is parsed)
    404 / 405  an unknown path or method
The model is loaded once, when the app is built; the rows of one request are encoded and scored
in one batch. Nothing pickled is loaded.

Example:
    >>> from fastapi.testclient import TestClient                      # doctest: +SKIP
    >>> client = TestClient(create_app("runs/demo/cnan"))                # doctest: +SKIP
    >>> client.get("/healthz").json()                                   # doctest: +SKIP
    {'status': 'ok'}
"""

# No `from __future__ import annotations` here: the request models are built per app from the
# run's schema, and FastAPI must see them as objects in the endpoint signatures.

import json
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import (
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
    with_config,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from typing_extensions import TypedDict

import crossctr
from crossctr.data.io import DataError
from crossctr.schema import DatasetSchema
from crossctr.serving.export import ServingModel, load_serving_model

__all__ = ["ServeLimits", "create_app", "rows_to_table", "BodySizeLimit", "parse_body", "MAX_DEPTH"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 1 << 20  # 1 MiB: ~2,000 rows of a 30-feature log; larger bodies get 413 unparsed
    max_rows: int = 1000  # rows of /v1/score, items of /v1/rank: one request is one batch


MAX_DEPTH = 32  # nesting of arrays / objects in a body: a request needs 3, ride-along item values get the rest


# ---- request bodies: strict JSON ----

_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800-\udfff escapes: the only way a lone surrogate gets into a str
_JSON_TOKEN = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # how the value was written (or overflowed to)
_NON_FINITE = (
    "is not a JSON number (JSON has no NaN or Infinity, and a literal beyond "
    "+-1.8e308 overflows); send a finite number, or null for a missing value"
)


def _short(v: Any, n: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"


def _unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_body(body: bytes) -> Any:
    """A request body as JSON, or an `HTTPException` saying what is wrong with it (never a 5xx).

    Stricter than `json.loads`: UTF-8 only; NaN, Infinity and overflowing literals are refused
    wherever they appear (422, located); no lone surrogates (400: the value is not Unicode and
    could not be encoded back); at most `MAX_DEPTH` levels of nesting (400; a body nested
    100,000 deep stops the parser's recursion, which is caught). Invalid JSON syntax raises
    `json.JSONDecodeError`, which FastAPI turns into a 422 naming the character.

    Example:
        >>> parse_body(b'{"rows": [{"price": 1.5}]}')
        {'rows': [{'price': 1.5}]}
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise HTTPException(
            400,
            f"body is not UTF-8 text (byte 0x{body[err.start]:02x} "
            f"at position {err.start}); send JSON encoded as UTF-8",
        ) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise HTTPException(
            400, f"body nests arrays / objects too deeply for the parser; at most {MAX_DEPTH} levels are accepted"
        ) from None
    except json.JSONDecodeError:
        raise
    except ValueError:  # an integer literal past Python's int/str conversion limit (4,300 digits by default)
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
        raise HTTPException(
            422, f"body is not valid JSON here: an integer literal has more than {limit} digits"
        ) from None
    _check_values(value, strings=_SURROGATE.search(body) is not None)
    return value


def _check_values(value: Any, strings: bool) -> None:
    """Walk the parsed body without recursion: depth, non-finite numbers, and (when the body has
    surrogate escapes) strings that are not Unicode."""

    def scalar(v: Any, path: tuple[Any, ...]) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise HTTPException(422, f"{_where(path)}: {_JSON_TOKEN.get(str(v), v)} {_NON_FINITE}")
        if strings and isinstance(v, str) and not _unicode(v):
            raise HTTPException(
                400,
                f"{_where(path)}: {_short(v)} holds a lone UTF-16 surrogate "
                "(\\ud800-\\udfff), which is not Unicode; send valid text",
            )

    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        obj, path = stack.pop()
        if not isinstance(obj, dict | list):
            scalar(obj, path)
            continue
        if len(path) >= MAX_DEPTH:
            raise HTTPException(
                400,
                f"{_where(path)}: body nests arrays / objects more than {MAX_DEPTH} levels deep; send flatter values",
            )
        for k, v in obj.items() if isinstance(obj, dict) else enumerate(obj):
            if strings and isinstance(k, str) and not _unicode(k):
                raise HTTPException(
                    400,
                    f"{_where(path)}: key {_short(k)} holds a lone UTF-16 "
                    "surrogate, which is not Unicode; send valid text",
                )
            if isinstance(v, dict | list):
                stack.append((v, (*path, k)))
            else:
                scalar(v, (*path, k))


class _StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_body(await self.body())
        return self._json


class _StrictJSONRoute(APIRoute):
    """Routes whose JSON bodies are read by `parse_body` (FastAPI's documented custom-route hook)."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_StrictJSONRequest(request.scope, request.receive))

        return route


# ---- request validation ----


def _categorical(v: Any) -> str | None:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)  # 7 and "7" are one category, as in training (validate_table casts to string)
    raise ValueError(f"a categorical feature takes a string, an integer or null, got {type(v).__name__} {_short(v)}")


def _numeric(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        try:
            x = float(v)
        except OverflowError:  # an integer like 10**400
            raise ValueError(
                f"a numeric feature takes a number within +-1.8e308, got an integer of {len(str(abs(v)))} digits"
            ) from None
        if not math.isfinite(x):
            raise ValueError(f"a numeric feature takes a finite number or null, got {v}: send null for a missing value")
        return x
    raise ValueError(f"a numeric feature takes a number or null, got {type(v).__name__} {_short(v)}")


Categorical = Annotated[
    str | None, PlainValidator(_categorical), WithJsonSchema({"type": ["string", "integer", "null"]})
]
Numeric = Annotated[float | None, PlainValidator(_numeric), WithJsonSchema({"type": ["number", "null"]})]


def _row_type(schema: DatasetSchema) -> Any:
    """A TypedDict of one raw row: the domain column plus every feature, all required."""
    fields: dict[str, Any] = {schema.domain.column: Literal[tuple(schema.domain.values)]}
    for column, numeric in schema.raw_feature_columns().items():  # a crossed feature's own columns
        fields[column] = Numeric if numeric else Categorical
    # functional form, so that any column name is a key; its fields are known only at run time
    row = TypedDict("Row", fields)  # type: ignore[misc]  # mypy wants a literal dict of fields
    return with_config(ConfigDict(extra="ignore"))(row)  # ids and other columns may ride along


def rows_to_table(rows: list[dict[str, Any]], schema: DatasetSchema) -> pa.Table:
    """Validated rows -> an Arrow table with the types `validate_table` produces."""
    cols = {schema.domain.column: pa.array([r[schema.domain.column] for r in rows], pa.string())}
    for column, numeric in schema.raw_feature_columns().items():
        cols[column] = pa.array([r[column] for r in rows], pa.float64() if numeric else pa.string())
    return pa.table(cols)


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _message(e: dict[str, Any]) -> str:
    loc = tuple(e.get("loc", ()))
    if e.get("type") == "json_invalid":
        at = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"body is not valid JSON{at}: {(e.get('ctx') or {}).get('error', e.get('msg', ''))}"
    return f"{_where(loc)}: {e.get('msg', '')}"


def _error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    shown = "; ".join(_message(e) for e in errors[:5])
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    # Echo scalar inputs only (an echoed request body could be a megabyte), and only as JSON can
    # hold them: a non-finite float as its text, a long string or integer cut short.
    detail = [
        {
            k: _echo(v) if k == "input" else v
            for k, v in e.items()
            if k in ("loc", "msg", "type") or (k == "input" and not isinstance(v, dict | list))
        }
        for e in errors[:50]
    ]
    return {"error": shown + more, "detail": jsonable_encoder(detail)}


def _echo(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1 << 53:
        return _short(v)
    if isinstance(v, str) and (len(v) > 200 or not _unicode(v)):
        return _short(v.encode("utf-8", "backslashreplace").decode("utf-8"), 200)
    return v if v is None or isinstance(v, str | int | float | bool) else _short(v)


# ---- body size limit, before any parsing ----


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 without being parsed.

    A declared Content-Length over the limit is refused at once; a chunked body is counted
    as it arrives. The rest of a refused body is read and dropped (up to 16 times the limit)
    so the client sees the 413 instead of a reset connection.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await JSONResponse(
                    {"error": f"Content-Length {declared.decode(errors='replace')!r} is not a number"}, 400
                )(scope, receive, send)
                return
            if size > self.max_bytes:
                await self._drain(receive)
                await self._refuse(scope, receive, send, size)
                return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                if more:
                    await self._drain(receive)
                await self._refuse(scope, receive, send, None)
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive: Any) -> None:
        """Read and drop the rest of a body; never call it once the last chunk was received."""
        seen = 0
        while seen <= 16 * self.max_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, size: int | None) -> None:
        what = f"{size} bytes" if size is not None else "over the limit"
        msg = (
            f"request body is {what}; the limit is {self.max_bytes} "
            "bytes (serve --max-body-bytes): send fewer rows per request"
        )
        await JSONResponse({"error": msg}, 413, headers={"Connection": "close"})(scope, receive, send)


# ---- the app ----


def _model_info(model: ServingModel, limits: ServeLimits) -> dict[str, Any]:
    schema = model.engine.encoder.schema
    cfg = model.config
    info: dict[str, Any] = {
        "source": model.source,
        "kind": model.kind,
        "engine": model.engine.name,
        "version": {
            "model": model.version,
            "trained_with_crossctr": cfg.get("crossctr_version"),
            "service_crossctr": crossctr.__version__,
        },
        "model": cfg.get("model"),
        "strategy": (cfg.get("run") or {}).get("strategy"),
        "members": cfg.get("members"),
        "route": cfg.get("route"),
        "schema": {
            "label": schema.label,
            "domain": {"column": schema.domain.column, "values": list(schema.domain.values)},
            "features": [{"name": f.name, "kind": f.kind.value, "group": f.group} for f in schema.features],
        },
        "domains": list(schema.domain.values),
        "metrics": {"test": model.metrics.get("test"), "valid": model.metrics.get("valid")},
        "limits": {"max_rows": limits.max_rows, "max_body_bytes": limits.max_body_bytes},
    }
    if model.manifest is not None:
        info["export"] = {k: model.manifest.get(k) for k in ("format", "opset", "graph", "parity", "source_run")}
    return info


def create_app(
    source: ServingModel | str | Path,
    engine: Literal["auto", "onnx", "torch"] = "auto",
    limits: ServeLimits = ServeLimits(),
    threads: int | None = None,
) -> FastAPI:
    """Build the service; the model (a `ServingModel`, a run folder or an ONNX export) is loaded here, once."""
    model = source if isinstance(source, ServingModel) else load_serving_model(source, engine, threads)
    eng = model.engine
    schema = eng.encoder.schema
    dom_col = schema.domain.column
    Row = _row_type(schema)
    # Row, Domain and the request models are types made at run time from the schema: mypy sees variables
    rows_adapter: TypeAdapter[list[dict[str, Any]]] = TypeAdapter(list[Row])  # type: ignore[valid-type]  # run-time type
    Domain = Literal[tuple(schema.domain.values)]  # type: ignore[valid-type]  # run-time type
    Rows = Annotated[list[Row], Field(min_length=1, max_length=limits.max_rows)]  # type: ignore[valid-type]  # same
    Items = Annotated[list[dict[str, Any]], Field(min_length=1, max_length=limits.max_rows)]
    strict = ConfigDict(extra="forbid")
    ScoreRequest = create_model("ScoreRequest", __config__=strict, rows=(Rows, ...))
    RankRequest = create_model(
        "RankRequest",
        __config__=strict,
        domain=(Domain, ...),
        context=(dict[str, Any], Field(default_factory=lambda: {})),
        items=(Items, ...),
        top_k=(int | None, Field(default=None, ge=1)),
    )
    info = _model_info(model, limits)

    app = FastAPI(title="crossctr scoring service", version=crossctr.__version__)
    app.router.route_class = _StrictJSONRoute  # before any route is added
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_body_bytes)
    app.state.model = model
    paths = "GET /healthz, GET /v1/model, POST /v1/score, POST /v1/rank"

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if [tuple(e.get("loc", ())) for e in errors] == [("body",)] and isinstance(errors[0].get("input"), bytes):
            kind = request.headers.get("content-type", "no Content-Type")
            return JSONResponse(
                {"error": f"body sent as {kind}: send a JSON object with Content-Type: application/json"},
                status_code=422,
            )
        return JSONResponse(_error_body(errors), status_code=422)

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = str(exc.detail)
        if exc.status_code in (404, 405):
            msg = f"{request.method} {request.url.path}: {msg}; the service answers {paths}"
        return JSONResponse({"error": msg}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:  # a bug of ours, never the client's input
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); the service log has the traceback"}, status_code=500
        )

    def score_rows(rows: list[dict[str, Any]]) -> np.ndarray:
        enc = eng.encode(rows_to_table(rows, schema), "request")  # one batch: every row of the request
        return eng.score(enc.features.numpy(), enc.domain.numpy())

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    def model_info() -> dict[str, Any]:
        return info

    @app.post("/v1/score")
    def score(req: ScoreRequest) -> dict[str, Any]:  # type: ignore[valid-type]  # a run-time model
        prob = score_rows(req.rows)  # type: ignore[attr-defined]  # its fields are made at run time
        return {"scores": prob.tolist(), "model_version": model.version}

    @app.post("/v1/rank")
    def rank(req: RankRequest) -> dict[str, Any]:  # type: ignore[valid-type]  # a run-time model
        # req's fields are made at run time too (hence attr-defined below)
        merged = [{**req.context, **item, dom_col: req.domain} for item in req.items]  # type: ignore[attr-defined]
        try:
            rows = rows_adapter.validate_python(merged)
        except ValidationError as err:
            raise RequestValidationError(_rank_errors(err, req.context, req.items)) from None  # type: ignore[attr-defined]
        prob = score_rows(rows)
        order = np.argsort(-prob, kind="stable")[: req.top_k]  # type: ignore[attr-defined]  # best first, ties by position
        items = [{"index": int(i), "score": float(prob[i]), "item": req.items[i]} for i in order]  # type: ignore[attr-defined]
        return {"domain": req.domain, "items": items, "model_version": model.version}  # type: ignore[attr-defined]

    return app


def _rank_errors(err: ValidationError, context: dict[str, Any], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Errors of merged rows, located where the value came from (an item or the context)."""
    out: list[dict[str, Any]] = []
    missing: dict[str, list[int]] = {}  # feature -> items without it
    seen_context = set()
    for e in err.errors():
        i, name = e["loc"][0], e["loc"][1] if len(e["loc"]) > 1 else None
        if e["type"] == "missing":
            missing.setdefault(str(name), []).append(int(i))
        elif name in items[i]:  # type: ignore[index]  # loc[0] of a list's row error is its int index
            out.append({**e, "loc": ("body", "items", i, name)})
        elif name not in seen_context:  # a bad context value fails every row; say it once
            seen_context.add(name)
            out.append({**e, "loc": ("body", "context", name)})
    for name, where in missing.items():
        msg = f"feature {name!r} is missing: give it in context or in every item"
        if len(where) == len(items):
            out.append({"loc": ("body", "context", name), "msg": msg, "type": "missing"})
        else:
            out.extend({"loc": ("body", "items", i, name), "msg": msg, "type": "missing"} for i in where)
    return out
