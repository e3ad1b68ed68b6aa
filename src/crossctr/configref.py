"""The configuration reference (docs/configuration.md), generated from the pydantic models.

Every key of a dataset YAML, a run config (with each strategy and each registered model) and
an experiment YAML: its type, default, allowed values, and why it exists. The "why" is the
comment written next to the field in the source (the code's own documentation), or, for the
few fields without one, a line from `_WHY` below. Regenerate after changing a config:

    crossctr config-reference --out docs/configuration.md
    python -m crossctr.configref docs/configuration.md

`tests/cli/test_configref.py` regenerates it and fails when the committed file differs.

Example:
    >>> "| `epochs` |" in reference()
    True
"""

from __future__ import annotations

import enum
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["DOC_PATH", "reference", "field_docs", "missing_why", "main"]

DOC_PATH = "docs/configuration.md"

# Why a field exists, for fields whose source carries no comment (keyed "Model.field").
_WHY = {
    "DatasetSchema.name": "names the dataset in logs, reports and cache folders",
    "DatasetSchema.label": "the 0/1 click column the model learns",
    "DatasetSchema.domain": "which column says the platform of a row, and the platforms allowed",
    "DatasetSchema.features": "the columns the model reads, each with how it is encoded",
    "DatasetSchema.split": "how rows are assigned to train / valid / test (encoders are fitted on train only)",
    "DomainSpec.column": "the column holding each row's domain name",
    "FeatureSpec.name": "the column read (for `crossed`: the new feature's name)",
    "FeatureSpec.kind": "how values become ids: vocabulary, buckets, hash, hashed cross or multi-valued",
    "RandomSplit.kind": (
        "rows assigned at random, independently of the domain (each domain splits in about these shares)"
    ),
    "RandomSplit.fractions": "shares of train, valid and test rows",
    "RandomSplit.seed": "the random assignment is reproducible: the same file and seed give the same split",
    "TimeSplit.kind": "rows split by a time column: train on the past, test on the future",
    "TimeSplit.column": "numeric time column (a day or a timestamp)",
    "TimeSplit.valid_start": "first time of the validation rows",
    "TimeSplit.test_start": "first time of the test rows",
    "ColumnSplit.kind": "the file says each row's split",
    "ColumnSplit.column": "column holding train / valid / test",
    "RunConfig.dataset": "a dataset YAML or a prepared folder; a relative path is relative to the run config's folder",
    "RunConfig.model": "the model: `name` picks one of the registered models below, the other keys are its config",
    "RunConfig.strategy": "how the domains' data is used: one joint model, one per domain, source only, or fine-tuned",
    "RunConfig.train": "the fit loop's settings",
    "RunConfig.domains": "train and evaluate on these domains only (a scenario such as the paper's A & C); at least 2",
    "TrainConfig.epochs": "passes over the training rows (early stopping may end sooner)",
    "TrainConfig.batch_size": "rows per optimizer step",
    "TrainConfig.seed": "model initialisation, batch order and dropout: the same seed gives the same run",
    "TrainConfig.device": "`auto` picks CUDA when available",
    "TrainConfig.eval_batch_size": "rows per forward pass when validating and scoring (memory only, same result)",
    "TrainConfig.progress": "progress bars on stderr (also off when stderr is not a terminal)",
    "TrainConfig.loss_weights": (
        "weight of each auxiliary loss a model returns: adv and domain are λ1/2 and λ2/2 "
        "of the paper's loss (not given there: chosen on validation), disc and critic the "
        "discriminator's and critics' own terms; a model loss without a weight is an error"
    ),
    "JointStrategy.name": "one model on every domain's rows (CNAN-AT, DANN, a single network)",
    "SelfTrainStrategy.name": "one model per domain, each trained on that domain's rows only",
    "SrcOnlyStrategy.name": "one model trained on the source domain, scoring every domain",
    "FineTuneStrategy.name": "pretrain on the source domain, then fine-tune on the other domains' rows",
    "Experiment.name": "names the experiment in reports and the default results folder",
    "Experiment.description": "printed at the top of the report",
    "Experiment.seeds": "every run is repeated with each seed; tables show the mean and spread",
    "Experiment.methods": "method key -> what it trains (model, strategy, train overrides)",
    "Experiment.tables": "which methods fill which of the paper's tables",
    "Method.strategy": "as a run config's `strategy`",
    "Tables.table4": "the target's share of training rows, rich + smallest pairing (paper Table 4)",
    "Tables.figure4": "mean attention per feature group per domain (paper Figure 4)",
    "MethodTable.methods": "method keys, one row each",
    "FractionTable.baseline": "the method the target's own model is compared with",
    "FractionTable.method": "the cross-domain method",
    "FractionTable.fractions": "shares of the target's training rows kept",
    "AttentionFigure.method": "the method whose attention is drawn",
    "Override.model": "model keys laid over the method's own",
    "Override.train": "train keys laid over the method's own",
    "Search.sampler": "Optuna's sampler: TPE, or random search",
    "Search.seed": "the sampler's seed: a killed search resumes with the same proposals",
    "Search.space": (
        "method key (or `default`, for every method) -> dotted config path (`train.lr`, "
        "`model.dropout`) -> what is searched"
    ),
    "Param.low": "lower end of a searched number",
    "Param.high": "upper end of a searched number",
    "Param.log": "draw log-uniformly (learning rates, weights spanning decades)",
    "Param.step": "draw on a grid of this step",
    "Param.integer": "draw whole numbers",
    "Param.choices": "draw one of these values instead of a number in [low, high]",
}


def field_docs(model: type[BaseModel], inherited: bool = False) -> dict[str, str]:
    """Field name -> the comment on its line, or the comment lines just above it, in the class source.

    With `inherited`, instead: fields without a comment of their own that sit right under a
    commented field (no blank line between) -> that comment block, which often covers them
    too ("the gradient-penalty weight γ, and a cap on ..." above three fields).
    """
    own: dict[str, str] = {}
    carried: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        pending: list[str] = []
        block = ""
        for line in lines[1:]:
            stripped = line.strip()
            if re.match(r"^\s{4}#", line):
                pending.append(stripped.lstrip("#").strip())
                continue
            m = re.match(r"^\s{4}(\w+)\s*:", line)
            if m and not stripped.startswith(("def ", "@", "class ")) and m.group(1) in cls.model_fields:
                trailing = _trailing_comment(line)
                text = " ".join(pending + ([trailing] if trailing else []))
                if text:
                    own[m.group(1)] = text
                    block = " ".join(pending)
                elif block:
                    carried[m.group(1)] = block
            elif not stripped or not line.startswith("     "):
                block = ""  # a blank line or other code ends the block
            pending = []
    return carried if inherited else own


def _trailing_comment(line: str) -> str:
    """The `# ...` at the end of a code line (not a '#' inside a string)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[i + 1 :].strip()
    return ""


# Last resort, by field name alone: keys that mean the same in every model.
_WHY_ANY = {
    "dropout": "dropout rate after each hidden layer (0 = none)",
    "name": "picks the model",
    "attention": "CNAN-AT's attention unit in front of the network (false: plain embeddings)",
    "attention_hidden": "hidden sizes of the attention unit (CNAN-AT: 64 × 32 × 1)",
    "attention_activation": "activation of the attention unit's hidden layers",
    "cross_layers": "cross layers of the Deep & Cross network",
    "deep": "hidden sizes of the fully connected network",
    "stacking": "stacked: the FCN reads the cross output (eq. 2); parallel: both read the embeddings (DCN)",
    "grl_scale": "gradient-reversal strength of the DANN domain classifier",
    "sparse_embeddings": "row-wise sparse gradients for the embedding tables (large vocabularies)",
    "loss_weights": (
        "weight of each auxiliary loss a model returns (adv, domain: λ1/2, λ2/2 of the paper; disc, "
        "critic: the discriminator's and critics' own terms); a model loss without a weight is an error"
    ),
}


def _why(model: type[BaseModel], name: str, docs: dict[str, str]) -> str:
    """The field's own comment, else `_WHY`, else `_WHY_ANY`, else a comment block just above it."""
    return (
        docs.get(name)
        or _WHY.get(f"{model.__name__}.{name}")
        or _WHY_ANY.get(name)
        or field_docs(model, inherited=True).get(name, "")
    )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "string" if all(isinstance(a, str) for a in args) else " or ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type_name(a) for a in args))
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (tuple, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        if args and len(set(args)) == 1:
            return f"list of {len(args)} {_type_name(args[0])}"
        return "list"
    if origin is dict:
        return (
            f"mapping of {_type_name(args[0])} to {_type_name(args[1])}" if args and args[1] is not Any else "mapping"
        )
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return "string"
        if issubclass(tp, BaseModel):
            return "mapping"
        return {"str": "string", "int": "integer", "float": "number", "bool": "true / false"}.get(
            tp.__name__, tp.__name__
        )
    return str(tp).replace("typing.", "")


def _allowed(field: FieldInfo, subs: list[type[BaseModel]] = ()) -> str:  # type: ignore[assignment]
    """Allowed values: a Literal's or an enum's members, numeric bounds, the variants of a union."""
    parts: list[str] = [v for v in (_variant(m) for m in subs) if v and len(subs) > 1]
    for tp in _flatten(field.annotation):
        if typing.get_origin(tp) is Literal:
            parts += [f"`{a}`" for a in typing.get_args(tp)]
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            parts += [f"`{m.value}`" for m in tp]
        elif tp is type(None) and parts:
            parts.append("null")
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "at least", "max_length": "at most"}
    for meta in field.metadata:
        for attr, word in words.items():
            value = getattr(meta, attr, None)
            if value is not None:
                unit = (" characters" if field.annotation is str else " items") if "length" in attr else ""
                parts.append(f"{word} {value}{unit}")
    return ", ".join(dict.fromkeys(parts))


def _flatten(tp: Any) -> Iterator[Any]:
    if typing.get_origin(tp) in (Union, types.UnionType) or typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        for a in args[:1] if typing.get_origin(tp) is typing.Annotated else args:
            yield from _flatten(a)
    else:
        yield tp


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _submodels(tp: Any) -> list[type[BaseModel]]:
    """Pydantic models a field's annotation holds (a union of them: one per variant); not a field-less
    base such as a typed `model` field's StrictModel (the registered models have sections of their own)."""
    return [t for t in _flatten_containers(tp) if isinstance(t, type) and issubclass(t, BaseModel) and t.model_fields]


def _flatten_containers(tp: Any) -> Iterator[Any]:
    for t in _flatten(tp):
        if typing.get_origin(t) in (tuple, list, dict):
            for a in typing.get_args(t):
                if a is not Ellipsis:
                    yield from _flatten_containers(a)
        else:
            yield t


def _table(
    model: type[BaseModel], prefix: str, skip: tuple[str, ...] = ()
) -> tuple[list[str], list[tuple[str, type[BaseModel]]]]:
    """Markdown rows for `model`'s fields and the nested models to document after it."""
    docs = field_docs(model)
    rows = ["| key | type | default | allowed | why |", "|---|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        subs = _submodels(field.annotation)
        default = _default(field)
        if subs and len(default) > 60:
            default = "see below"
        rows.append(
            f"| `{prefix}{name}` | {_cell(_type_name(field.annotation))} | {_cell(default)} | "
            f"{_cell(_allowed(field, subs))} | {_cell(_why(model, name, docs))} |"
        )
        for sub in subs:
            nested.append((f"{prefix}{name}{_path_suffix(field.annotation)}", sub))
    return rows, nested


def _path_suffix(tp: Any) -> str:
    """How a key path goes on into a container: `[]` per list, `.<key>` per mapping."""
    for t in _flatten(tp):
        origin = typing.get_origin(t)
        if origin in (tuple, list):
            return "[]" + _path_suffix(typing.get_args(t)[0])
        if origin is dict:
            return ".<key>" + _path_suffix(typing.get_args(t)[1])
    return ""


def _section(
    title: str, model: type[BaseModel], prefix: str, level: int = 3, intro: str = "", skip: tuple[str, ...] = ()
) -> list[str]:
    out = [f"{'#' * level} {title}", ""]
    doc = model.__dict__.get("__doc__") or ""
    about = " ".join(doc.split("\n\n")[0].split()) if not intro and ">>>" not in doc.split("\n\n")[0] else ""
    for text in (intro, about):
        if text:
            out += [text, ""]
    rows, nested = _table(model, prefix, skip)
    out += rows + [""]
    done: set[type[BaseModel]] = set()
    for key, sub in nested:
        if sub in done:
            continue
        done.add(sub)
        same = [k for k, m in nested if m is sub]  # e.g. tables.table1 .. table3: one section
        variant = _variant(sub)
        sub_title = ", ".join(f"`{k}`" for k in same) + (f" with {variant}" if variant else "")
        out += _section(sub_title, sub, f"{key}.", level + 1 if level < 4 else level)
    return out


def _variant(model: type[BaseModel]) -> str:
    """`kind: random` for a member of a discriminated union, else ''."""
    for key in ("kind", "name"):
        field = model.model_fields.get(key)
        if field is not None and typing.get_origin(field.annotation) is Literal:
            return f"`{key}: {typing.get_args(field.annotation)[0]}`"
    return ""


def missing_why() -> list[str]:
    """Keys of the documented models that have no "why" (to be fixed with a comment in the source)."""
    missing = []
    for model in _documented_models():
        docs = field_docs(model)
        missing += [f"{model.__name__}.{n}" for n in model.model_fields if not _why(model, n, docs)]
    return missing


def _documented_models() -> list[type[BaseModel]]:
    from crossctr.models import REGISTRY
    from crossctr.schema import DatasetSchema
    from crossctr.training.run import RunConfig

    seen: list[type[BaseModel]] = []

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for field in model.model_fields.values():
            for sub in _submodels(field.annotation):
                walk(sub)

    from crossctr.experiments.grid import Experiment

    documented: list[type[BaseModel]] = [
        DatasetSchema,
        RunConfig,
        *(spec.config for spec in REGISTRY.values()),
        Experiment,
    ]
    for m in documented:
        walk(m)
    return seen


def reference() -> str:
    """docs/configuration.md as text."""
    from crossctr.experiments.grid import Experiment
    from crossctr.models import REGISTRY
    from crossctr.models.base import FORMER_NAMES
    from crossctr.schema import DatasetSchema
    from crossctr.training.run import RunConfig

    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from the pydantic models by `crossctr config-reference "
        "--out docs/configuration.md`; do not edit by hand. -->",
        "",
        "Every key crossctr reads from a dataset YAML, a run config and an experiment YAML: its type, its",
        "default (`required` when it has none), the values it accepts and why it is there. A key that is not",
        "listed is an error that names the keys allowed at that place. Paths: `path:` in a dataset YAML is",
        "relative to the YAML's folder, `dataset:` in a run config is relative to the run config's folder",
        "(both unless absolute).",
        "",
        "## Dataset YAML",
        "",
    ]
    out += _section(
        "Top level",
        DatasetSchema,
        "",
        intro="`crossctr simulate`, `crossctr dataset NAME` and your own data all use this file.",
    )
    out += ["## Run config", "", "`crossctr train --config run.yaml --out RUN` reads it.", ""]
    out += _section("Top level", RunConfig, "")
    out += ["### `model`", "", "`name` picks a registered model; the other keys are that model's config.", ""]
    for name, spec in sorted(REGISTRY.items()):
        former = [f"`name: {old}`" for old, new in sorted(FORMER_NAMES.items()) if new == name]
        also = f" (also read as {', '.join(former)}, its former name)" if former else ""
        title = f"`model` with `name: {name}`{also}"
        out += _section(title, spec.config, "model.", level=4, skip=("name",))
    out += [
        "## Experiment YAML",
        "",
        "`crossctr experiment NAME_OR_YAML` reads it; `methods.*.model` and `train` take the keys above.",
        "",
    ]
    out += _section("Top level", Experiment, "")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m crossctr.configref [OUT]`: write the reference to OUT (default: print it)."""
    args = sys.argv[1:] if argv is None else argv
    text = reference()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
