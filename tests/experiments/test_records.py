"""The typed records: every results.jsonl and report.json ever published parses and writes back unchanged;
the experiments package has no import cycle and render does not import the runner."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import crossctr.experiments
from crossctr.experiments.records import RESULTS_FILE, Report, ResultsFile, RunRecord

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "results"
RESULTS = sorted(PUBLISHED.glob(f"*/{RESULTS_FILE}"))
REPORTS = sorted(PUBLISHED.glob("*/report.json"))


def test_there_are_published_results_to_check() -> None:
    assert len(RESULTS) >= 10 and len(REPORTS) == len(RESULTS)


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.parent.name)
def test_every_published_results_file_parses_and_round_trips(path: Path, caplog) -> None:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = ResultsFile(path).read()
    assert len(records) == len(lines) and not caplog.records  # no line dropped as unreadable
    for line, rec in zip(lines, records, strict=False):
        assert rec.to_json() == json.loads(line)  # an old record keeps its fields: none added, none lost
    assert all(isinstance(r.test["overall"].auc, float) for r in records if r.test and r.test.get("overall"))


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.parent.name)
def test_every_published_report_parses_and_writes_back_in_the_same_order(path: Path) -> None:
    doc = json.loads(path.read_text())
    report = Report.model_validate(doc)
    assert json.dumps(report.to_json(), indent=2) == json.dumps(doc, indent=2)


def test_a_record_round_trips_and_a_copy_keeps_its_shape(tmp_path, caplog) -> None:
    line = RESULTS[0].read_text().splitlines()[0]
    rec = RunRecord.model_validate_json(line)
    old = rec.model_copy(update={"key": "x/all/s0"})
    old.__pydantic_fields_set__.discard("epochs_run")  # a record written before epochs_run was kept
    results = ResultsFile(tmp_path / RESULTS_FILE)
    results.append(rec)
    results.append(old)
    with open(results.path, "a") as f:
        f.write('{"key": "cut/short')  # a crash mid-line
    with open(results.path, "a") as f:
        f.write('\n{"key": "y/all/s0", "valid_mean_auc": "high"}\n')  # not a run record
    back = results.latest()
    assert list(back) == [rec.key, "x/all/s0"] and back[rec.key] == rec
    assert "epochs_run" not in back["x/all/s0"].to_json() and back["x/all/s0"].epochs_run is None
    assert [r.message.split(" (")[0].split(" is ")[1] for r in caplog.records] == ["not valid JSON", "not a run record"]


def test_records_reject_unknown_fields() -> None:
    doc = json.loads(RESULTS[0].read_text().splitlines()[0])
    with pytest.raises(ValueError, match="valid_mean_acu"):
        RunRecord.model_validate({**doc, "valid_mean_acu": 0.7})


def _imports(path: Path, package: str) -> set[str]:
    """The crossctr.experiments modules `path` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        found |= {n.split(".")[2] for n in names if n.startswith(package + ".")}
    return found


def test_no_import_cycle_in_the_experiments_package_and_render_reads_records_only() -> None:
    package = crossctr.experiments.__name__
    folder = Path(crossctr.experiments.__file__).parent
    graph = {p.stem: _imports(p, package) - {p.stem} for p in folder.glob("*.py") if p.stem != "__init__"}
    assert graph["render"] <= {"choice", "grid", "records", "search"} and "runner" not in graph["render"]
    assert not (
        {"runner", "render", "scheduler"} & (graph["records"] | graph["choice"] | graph["search"] | graph["grid"])
    )
    assert graph["scheduler"] == set()  # scheduling knows nothing of runs or records
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"import cycle: {' -> '.join([*path, node])}"
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, (*path, node))
        done.add(node)

    for module in sorted(graph):
        visit(module, ())
