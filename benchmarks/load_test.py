"""Load test of `crossctr serve`: concurrent clients on loopback, answers checked against Predictor.

    .venv/bin/python benchmarks/load_test.py runs/demo/cnan --seconds 20 --clients 16

Starts the service in a subprocess on 127.0.0.1 (a free port), then runs `--clients` async
httpx clients for `--seconds` (at most 120 s and `--max-requests` requests), each sending a
mix of requests:
    rank       POST /v1/rank with `--candidates` items (the figure that matters: p50/p99)
    score      POST /v1/score with 20 rows
    malformed  unknown domain, missing feature, wrong type, bad JSON, too many rows, top_k 0 (422)
    hostile    what a hostile client sends: NaN / Infinity / 1e400 in a categorical field, as the
               domain, as top_k, in a numeric field and in a ride-along item value, an integer
               like 10**400 in a numeric field (422); a body that is not UTF-8, JSON nested
               100,000 deep, a lone surrogate escape (400); a body without a JSON content type
               (422); an unknown path (404)
    oversized  a body over the service's size limit (413)
Every answer is checked: rank and score results against `Predictor` (the run's PyTorch
members) on the same rows, |diff| < 1e-5, ranks sorted best first; malformed, hostile and
oversized requests must get their 4xx with an {"error": ...} body. It reports requests/s,
latency percentiles, the count of 5xx answers, of wrong scores (a 200 whose scores differ from
Predictor's) and of wrong answers of any kind (all must be 0), and, for the same rank request
scored in this process without HTTP, the latency of each engine, so the service's overhead is
visible. Prints a Markdown table and writes JSON (`--out`). Exit status 1 if any 5xx or wrong
answer. Traffic goes to the loopback address only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from crossctr.data.encoders import CategoricalEncoder
from crossctr.inference import Predictor
from crossctr.schema import DatasetSchema, FeatureKind
from crossctr.serving.app import rows_to_table
from crossctr.serving.export import load_serving_model

TOLERANCE = 1e-5
MAX_SECONDS = 120.0  # a bound on any run, whatever --seconds says
MIX = {"rank": 0.60, "score": 0.10, "malformed": 0.10, "hostile": 0.15, "oversized": 0.05}
CONTEXT_GROUPS = ("personal", "user")  # feature groups sent once per rank request (plus query_* features)


@dataclass
class Request:
    kind: str
    path: str
    body: bytes
    expect_status: int
    expected: np.ndarray | None = None  # scores by row / item index, for 200 answers
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})


@dataclass
class Outcome:
    kind: str
    status: int  # 0: no HTTP answer (transport error)
    seconds: float
    correct: bool
    wrong_scores: bool = False  # a scoring request answered 200 with scores other than Predictor's


# ---- request pool ----


def _value(rng: random.Random, enc: Any, kind: FeatureKind) -> Any:
    u = rng.random()
    if u < 0.02:
        return None  # missing
    if kind is FeatureKind.NUMERIC:
        b = enc.boundaries_
        lo, hi = (b[0], b[-1]) if b else (0.0, 1.0)
        return rng.uniform(lo - 0.5 * abs(lo) - 1, hi + 0.5 * abs(hi) + 1)
    assert isinstance(enc, CategoricalEncoder)
    if u < 0.07 or not enc.vocab_:
        return f"unseen-{rng.randrange(10**6)}"  # OOV
    return enc.vocab_[rng.randrange(len(enc.vocab_))]


def _context_features(schema: DatasetSchema) -> list[str]:
    ctx = [f.name for f in schema.features if f.group in CONTEXT_GROUPS or f.name.startswith("query")]
    return ctx or [schema.features[0].name]


def build_pool(
    predictor: Predictor, n_rank: int, candidates: int, max_rows: int, max_body: int, seed: int
) -> dict[str, list[Request]]:
    rng = random.Random(seed)
    schema = predictor.encoder.schema
    encs = predictor.encoder.encoders_
    dom_col = schema.domain.column
    ctx_names = _context_features(schema)
    item_names = [f.name for f in schema.features if f.name not in ctx_names]

    def row_values(names: list[str]) -> dict[str, Any]:
        return {f.name: _value(rng, encs[f.name], f.kind) for f in schema.features if f.name in names}

    def expected(rows: list[dict[str, Any]]) -> np.ndarray:
        return predictor.predict(rows_to_table(rows, schema))

    pool: dict[str, list[Request]] = {k: [] for k in MIX}
    for i in range(n_rank):
        domain = rng.choice(schema.domain.values)
        context = row_values(ctx_names)
        items = [
            {"ref": f"sku-{i}-{j}", **row_values(item_names)} for j in range(candidates)
        ]  # "ref" rides along unused
        merged = [{**context, **it, dom_col: domain} for it in items]
        body = {"domain": domain, "context": context, "items": items}
        pool["rank"].append(Request("rank", "/v1/rank", json.dumps(body).encode(), 200, expected(merged)))
    for _ in range(max(4, n_rank // 4)):
        rows = [{dom_col: rng.choice(schema.domain.values), **row_values(schema.feature_names)} for _ in range(20)]
        pool["score"].append(Request("score", "/v1/score", json.dumps({"rows": rows}).encode(), 200, expected(rows)))

    good = {dom_col: schema.domain.values[0], **row_values(schema.feature_names)}
    first, numeric = (
        schema.features[0].name,
        next((f.name for f in schema.features if f.kind is FeatureKind.NUMERIC), None),
    )
    bad_rows = [
        {**good, dom_col: "no-such-domain"},  # unknown domain
        {k: v for k, v in good.items() if k != first},  # missing feature
        {**good, first: [1, 2]},  # wrong type
    ]
    if numeric:
        bad_rows.append({**good, numeric: "not-a-number"})
    for row in bad_rows:
        pool["malformed"].append(Request("malformed", "/v1/score", json.dumps({"rows": [row]}).encode(), 422))
    pool["malformed"].append(Request("malformed", "/v1/score", b'{"rows": [{"', 422))  # bad JSON
    too_many = json.dumps({"rows": [good] * (max_rows + 1)}).encode()
    if len(too_many) <= max_body:
        pool["malformed"].append(Request("malformed", "/v1/score", too_many, 422))
    rank0 = json.loads(pool["rank"][0].body)
    pool["malformed"].append(Request("malformed", "/v1/rank", json.dumps({**rank0, "top_k": 0}).encode(), 422))
    pool["malformed"].append(
        Request("malformed", "/v1/rank", json.dumps({**rank0, "domain": "no-such-domain"}).encode(), 422)
    )
    pool["oversized"].append(Request("oversized", "/v1/score", b'{"rows": [' + b" " * (max_body + 1024) + b"]}", 413))
    pool["hostile"] = hostile_requests(schema, good, rank0, max_body)
    return pool


def hostile_requests(
    schema: DatasetSchema, good: dict[str, Any], rank0: dict[str, Any], max_body: int
) -> list[Request]:
    """The malformed inputs that got a 5xx (or a 4xx without an "error") before: each with the 4xx it must get."""
    dom_col = schema.domain.column
    categorical = next((f.name for f in schema.features if f.kind is not FeatureKind.NUMERIC), None)
    numeric = next((f.name for f in schema.features if f.kind is FeatureKind.NUMERIC), None)
    out: list[Request] = []

    def put(body: dict[str, Any], token: str) -> bytes:  # a value json.dumps will not write, put in as raw JSON text
        return json.dumps(body).replace('"@@"', token).encode()

    for token in ("NaN", "Infinity", "-Infinity", "1e400"):
        fields = [dom_col] + [f for f in (categorical, numeric) if f]
        out += [Request("hostile", "/v1/score", put({"rows": [{**good, f: "@@"}]}, token), 422) for f in fields]
        out.append(Request("hostile", "/v1/rank", put({**rank0, "domain": "@@"}, token), 422))
        out.append(Request("hostile", "/v1/rank", put({**rank0, "top_k": "@@"}, token), 422))
        items = [dict(it) for it in rank0["items"]]
        items[0]["ref"] = "@@"
        out.append(Request("hostile", "/v1/rank", put({**rank0, "items": items}, token), 422))
    if numeric:
        out.append(Request("hostile", "/v1/score", put({"rows": [{**good, numeric: "@@"}]}, "1" + "0" * 400), 422))
    raw = json.dumps({"rows": [good]}).encode()
    out.append(Request("hostile", "/v1/score", raw.replace(b'"rows"', b'"r\xff\xfeows"'), 400))  # not UTF-8
    deep = b"[" * 100_000 + b"]" * 100_000
    if len(deep) <= max_body:
        out.append(Request("hostile", "/v1/score", deep, 400))
    out.append(
        Request("hostile", "/v1/score", put({"rows": [{**good, (categorical or dom_col): "@@"}]}, '"\\ud800"'), 400)
    )  # lone surrogate
    out.append(Request("hostile", "/v1/score", raw, 422, headers={"content-type": "text/plain"}))
    out.append(Request("hostile", "/v1/nope", raw, 404))
    return out


# ---- checking answers ----


def check(req: Request, status: int, payload: Any) -> bool:
    if status != req.expect_status:
        return False
    if status != 200:
        return isinstance(payload, dict) and isinstance(payload.get("error"), str) and bool(payload["error"])
    return scores_right(req, payload)


def scores_right(req: Request, payload: Any) -> bool:
    """A 200's scores against Predictor's on the same rows (rank: also the order)."""
    assert req.expected is not None
    if not isinstance(payload, dict):
        return False
    if req.kind == "score":
        got = np.asarray(payload["scores"], dtype=np.float64)
        return got.shape == req.expected.shape and bool(np.max(np.abs(got - req.expected)) < TOLERANCE)
    items = payload["items"]
    idx = np.array([it["index"] for it in items])
    got = np.array([it["score"] for it in items], dtype=np.float64)
    return (
        len(items) == len(req.expected)
        and sorted(idx.tolist()) == list(range(len(req.expected)))
        and bool(np.all(np.diff(got) <= 0))  # best first
        and bool(np.max(np.abs(got - req.expected[idx])) < TOLERANCE)
    )


# ---- the load ----


async def client_loop(
    client: httpx.AsyncClient,
    pool: dict[str, list[Request]],
    deadline: float,
    budget: list[int],
    seed: int,
    out: list[Outcome],
) -> None:
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        req = rng.choice(pool[rng.choices(kinds, weights)[0]])
        t0 = time.perf_counter()
        try:
            r = await client.post(req.path, content=req.body, headers=req.headers)
            status = r.status_code
            try:
                payload = r.json()
            except ValueError:
                payload = None
        except httpx.HTTPError:
            status, payload = 0, None
        dt = time.perf_counter() - t0
        wrong_scores = status == 200 and req.expected is not None and not scores_right(req, payload)
        out.append(Outcome(req.kind, status, dt, status != 0 and check(req, status, payload), wrong_scores))


async def run_load(
    base_url: str, pool: dict[str, list[Request]], clients: int, seconds: float, max_requests: int
) -> tuple[list[Outcome], float]:
    out: list[Outcome] = []
    budget = [max_requests]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, limits=limits) as client:
        t0 = time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(client_loop(client, pool, deadline, budget, 1000 + i, out) for i in range(clients)))
        return out, time.perf_counter() - t0


# ---- the service ----


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(source: Path, port: int, engine: str, max_rows: int, max_body: int, log: Any) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "crossctr",
        "serve",
        str(source),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--engine",
        engine,
        "--max-rows",
        str(max_rows),
        "--max-body-bytes",
        str(max_body),
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(base_url: str, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with status {proc.returncode} before it was healthy")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the service was not healthy after {timeout:.0f} s")


# ---- in-process figures for the same request ----


def in_process(source: Path, engine: str, req: Request, seconds: float) -> dict[str, Any]:
    """Latency of one rank request without HTTP: rows -> table -> encode -> score -> sort."""
    model = load_serving_model(source, engine, threads=1)  # type: ignore[arg-type]  # as `serve` runs it
    eng = model.engine
    schema = eng.encoder.schema
    body = json.loads(req.body)
    dom_col = schema.domain.column

    def once() -> np.ndarray:
        rows = [{**body["context"], **it, dom_col: body["domain"]} for it in body["items"]]
        enc = eng.encode(rows_to_table(rows, schema), "in-process")
        p = eng.score(enc.features.numpy(), enc.domain.numpy())
        return np.argsort(-p, kind="stable")

    once()
    times = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        once()
        times.append(time.perf_counter() - t)
    return {"engine": eng.name, **_latency(times), "requests_per_s": len(times) / sum(times)}


def _latency(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


# ---- main ----


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="Run folder: the reference scores come from its PyTorch members.")
    ap.add_argument(
        "--serve",
        type=Path,
        default=None,
        help="Folder the service loads (default: run_dir; may be an ONNX export of it).",
    )
    ap.add_argument("--engine", default="auto", choices=["auto", "onnx", "torch"])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--max-rows", type=int, default=1000)
    ap.add_argument("--max-body-bytes", type=int, default=1 << 20)
    ap.add_argument("--in-process-seconds", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/load_test.json"))
    args = ap.parse_args(argv)
    seconds = min(args.seconds, MAX_SECONDS)
    source = args.serve or args.run_dir

    predictor = Predictor.load(args.run_dir)
    pool = build_pool(predictor, 32, args.candidates, args.max_rows, args.max_body_bytes, args.seed)
    rank_req = pool["rank"][0]

    # In-process first, while nothing else of ours runs.
    local = {}
    for engine in ("torch", "onnx"):
        try:
            local[engine] = in_process(args.run_dir, engine, rank_req, args.in_process_seconds)
        except Exception as err:  # onnxruntime missing, say: report and go on
            local[engine] = {"engine": engine, "error": f"{type(err).__name__}: {err}"}

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = start_service(source, port, args.engine, args.max_rows, args.max_body_bytes, log)
        try:
            startup = wait_healthy(base_url, proc)
            info = httpx.get(f"{base_url}/v1/model", timeout=10).json()
            outcomes, wall = asyncio.run(run_load(base_url, pool, args.clients, seconds, args.max_requests))
        except BaseException:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    by_kind = {k: [o for o in outcomes if o.kind == k] for k in MIX}
    n5xx = sum(o.status >= 500 for o in outcomes)
    wrong = sum(not o.correct for o in outcomes if o.status != 0)
    wrong_scores = sum(o.wrong_scores for o in outcomes)
    transport = sum(o.status == 0 for o in outcomes)
    report = {
        "service": {
            "source": source.name,
            "engine": info.get("engine"),
            "model_version": info["version"]["model"],
            "startup_s": startup,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "note": "client and service share the machine",
        },
        "load": {
            "seconds": wall,
            "clients": args.clients,
            "candidates": args.candidates,
            "requests": len(outcomes),
            "requests_per_s": len(outcomes) / wall,
        },
        "by_kind": {
            k: {
                "requests": len(v),
                "requests_per_s": len(v) / wall,
                **_latency([o.seconds for o in v]),
                "wrong": sum(not o.correct for o in v if o.status != 0),
            }
            for k, v in by_kind.items()
        },
        "hostile_share": len(by_kind["hostile"]) / max(len(outcomes), 1),
        "hostile_cases": len(pool["hostile"]),
        "status_5xx": n5xx,
        "wrong_scores": wrong_scores,
        "wrong_answers": wrong,
        "transport_errors": transport,
        "in_process_rank": local,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    r = report["by_kind"]["rank"]
    lines = [
        f"service: {source.name}, engine {report['service']['engine']}, {args.clients} clients, {wall:.1f} s, "
        f"{os.cpu_count()} CPUs (shared with the clients)",
        "",
        "| measure | requests | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
        f"| HTTP, all kinds | {len(outcomes)} | {len(outcomes) / wall:.1f} | | |",
    ]
    for k, v in report["by_kind"].items():
        label = f"HTTP /v1/rank, {args.candidates} candidates" if k == "rank" else f"HTTP {k}"
        lines.append(
            f"| {label} | {v['requests']} | {v['requests_per_s']:.1f} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} |"
        )
    for engine, v in local.items():
        if "error" in v:
            lines.append(f"| in-process rank, engine {engine} | - | - | {v['error']} | |")
        else:
            lines.append(
                f"| in-process rank, engine {engine}, 1 caller | {v['n']} | {v['requests_per_s']:.1f} | "
                f"{v['p50_ms']:.1f} | {v['p99_ms']:.1f} |"
            )
    hostile = report["by_kind"]["hostile"]["requests"]
    lines += [
        "",
        f"hostile requests: {hostile} of {len(outcomes)} "
        f"({100 * report['hostile_share']:.0f} %, {len(pool['hostile'])} distinct cases)",
        f"5xx answers: {n5xx}   wrong scores: {wrong_scores}   wrong answers: {wrong}   transport errors: "
        f"{transport}   (rank p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms)",
        f"json: {args.out}",
    ]
    print("\n".join(lines))
    return 1 if (n5xx or wrong or transport) else 0


if __name__ == "__main__":
    sys.exit(main())
