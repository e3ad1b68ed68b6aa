"""An experiment file (a named grid of the paper's section 3) and its expansion into run specs.

An experiment YAML names methods (model config + training strategy + optional train
overrides), the tables that use them, the seeds, and the hyper-parameters to choose on the
validation split: explicit candidates (`tune:`) or a search space with the same trial budget
for every searched method (`search:`, run with Optuna by `experiments/search.py`). `expand`
turns it, given the dataset's training rows per domain, into run specs with stable keys:

    <method>/<scenario>/s<seed>              cnan_at/A+C/s0
    <method>/<scenario>/f<fraction>/s<seed>  cnan_at/A+C/f0.1/s0  (Table 4: target's train rows subsampled)
    <method>/all/t-<candidate>/s<seed>       cnan_at/all/t-3f2a1c/s0  (tuning candidate or search trial)

Scenarios come from the training rows per domain: `all` (every domain at once) and, with
more than two domains, the richest domain paired with each other domain (`A+B`, `A+C`, the
paper's "A & B", "A & C"). Methods whose per-domain models cannot depend on which other
domains are present (strategies `self_train`, `src_only`) run once, on `all`, and their
per-domain metrics fill every scenario's table.

Example:
    >>> exp = load_experiment("smoke")
    >>> plan = expand(exp, {"A": 900, "B": 90, "C": 9}, seeds=(0,))
    >>> plan.scenarios
    {'all': ('A', 'B', 'C'), 'A+B': ('A', 'B'), 'A+C': ('A', 'C')}
    >>> plan.main[0].key
    'src_only/all/s0'

"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from crossctr.data.dataset import PreparedData
from crossctr.models import parse_model_config
from crossctr.schema import CONFIG_REFERENCE, ConfigError, StrictModel, load_yaml_model, validate_model
from crossctr.training.config import TrainConfig
from crossctr.training.run import RunConfig
from crossctr.training.strategies import JointStrategy, SrcOnlyStrategy, StrategyConfig

__all__ = [
    "ALL",
    "TABLES",
    "Method",
    "Override",
    "Param",
    "Search",
    "Experiment",
    "RunSpec",
    "Plan",
    "load_experiment",
    "packaged_experiments",
    "expand",
    "cell_key",
    "candidate_id",
    "select_candidate",
    "override_from",
    "search_spec",
    "subsample_domain",
    "deep_merge",
]

ALL = "all"  # the scenario with every domain at once
TABLES = ("table1", "table2", "table3", "table4", "figure4")
# Strategies whose model for a domain is trained on that domain's rows (or the source's) only:
# adding or removing other domains cannot change it, so it is trained once, on `all`.
PER_DOMAIN_STRATEGIES = ("self_train", "src_only")
# Order in which phases run: the most informative tables finish first.
PHASES = ("tune", "table3", "table2", "table1", "table4")


def deep_merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Later layers win; nested mappings merge key by key (so {loss_weights: {adv: x}} keeps the other weights)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            if isinstance(v, Mapping) and isinstance(out.get(k), dict):
                out[k] = deep_merge(out[k], v)
            else:
                out[k] = copy.deepcopy(dict(v) if isinstance(v, Mapping) else v)
    return out


class Override(StrictModel):
    """Partial model / train settings laid over a method's own (a tuning candidate)."""

    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


def override_from(values: Mapping[str, Any]) -> Override:
    """Dotted config paths -> an Override: {"train.loss_weights.adv": 0.1} -> train: {loss_weights: {adv: 0.1}}."""
    nested: dict[str, Any] = {"model": {}, "train": {}}
    for path, value in values.items():
        scope, *keys = path.split(".")
        node = nested[scope]
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return Override.model_validate(nested)


class Param(StrictModel):
    """One searched setting: a number in [low, high] (log-uniform with `log`, whole numbers with
    `integer`, on a grid with `step`) or one of `choices`."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False
    choices: tuple[bool | int | float | str | None, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log or self.integer:
                raise ValueError("give either `choices` (a list) or `low` and `high` (a range), not both")
            if not self.choices:
                raise ValueError("`choices` is empty; list at least one value")
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError(f"`choices` lists a value twice: {list(self.choices)}")
            for c in self.choices:
                if isinstance(c, str) and _is_number(c):
                    raise ValueError(
                        f"choice {c!r} is text (YAML reads 1e-5 without a dot as a string); write it as 1.0e-5"
                    )
            return self
        if self.low is None or self.high is None:
            raise ValueError("give `low` and `high` (a range) or `choices` (a list)")
        if not self.low < self.high:
            raise ValueError(f"`low` must be below `high`; got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0; got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("`step` and `log` cannot be combined; drop one")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"`step` must be positive; got {self.step}")
        if self.integer and not all(float(v).is_integer() for v in (self.low, self.high, self.step or 1)):
            raise ValueError(
                "an integer range needs whole low, high and step; got "
                f"low={self.low}, high={self.high}, step={self.step}"
            )
        return self

    def samples(self) -> list[Any]:
        """Values that must all give a valid config: the ends of a range, every choice."""
        if self.choices is not None:
            return list(self.choices)
        assert self.low is not None and self.high is not None
        return [int(self.low), int(self.high)] if self.integer else [self.low, self.high]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


SEARCH_SCOPES = ("model", "train")
DEFAULT_SPACE = "default"  # key of search.space applied to every searched method


class Search(StrictModel):
    """Hyper-parameter search on the validation split, the same trial budget for every searched method.

    Keys of a space are dotted config paths (`train.lr`, `train.loss_weights.adv`,
    `model.dropout`); a method's own space is laid over `default`.
    """

    trials: int  # trials per searched method: the same budget for each
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    # TPE: trials drawn at random before it models the results (Optuna's default, 10, would make
    # a small budget pure random search); None = half the budget, at least one.
    startup_trials: int | None = None
    methods: tuple[str, ...] | Literal["all"] = "all"  # all = every method not under tune and without tune_from
    space: dict[str, dict[str, Param]]

    @model_validator(mode="after")
    def _valid(self) -> Search:
        if self.trials < 1:
            raise ValueError(
                f"trials must be at least 1 (the number of trials every searched method gets); got {self.trials}"
            )
        if self.startup_trials is not None and self.startup_trials < 1:
            raise ValueError(f"startup_trials must be at least 1 or left out; got {self.startup_trials}")
        for owner, space in self.space.items():
            for path in space:
                scope, _, rest = path.partition(".")
                if scope not in SEARCH_SCOPES or not rest:
                    raise ValueError(
                        f"space.{owner}: {path!r} is not a config path; write model.<key> or train.<key> "
                        f"(e.g. train.lr, train.loss_weights.adv)"
                    )
        return self

    @property
    def startup(self) -> int:
        return self.startup_trials if self.startup_trials is not None else max(1, self.trials // 2)


class Method(StrictModel):
    label: str  # row name in the tables
    model: dict[str, Any]  # a model config, e.g. {name: single, network: dcn}
    strategy: StrategyConfig = Field(default_factory=JointStrategy)
    train: dict[str, Any] = Field(default_factory=dict)  # overrides of the experiment's train section
    # Use the settings chosen for another (tuned) method, e.g. ablations keep CNAN-AT's λ's so
    # that only the ablated part differs.
    tune_from: str | None = None

    @property
    def per_domain(self) -> bool:
        return self.strategy.name in PER_DOMAIN_STRATEGIES


class MethodTable(StrictModel):
    methods: tuple[str, ...] = Field(min_length=1)


class FractionTable(StrictModel):
    """Paper Table 4: the target's share of training rows, in the rich + smallest pairing.

    Every field is the experiment file's to give (paper.yaml: self_train against cnan_at at 10/40/70/100%):
    which methods and fractions a table shows is data, not code. The 100% column is the Table 2 (or 3) run.
    """

    baseline: str
    method: str
    fractions: tuple[float, ...]

    @model_validator(mode="after")
    def _fractions(self) -> FractionTable:
        bad = [f for f in self.fractions if not 0 < f <= 1]
        if bad or not self.fractions:
            raise ValueError(f"fractions must be in (0, 1]; got {list(self.fractions)}")
        return self


class AttentionFigure(StrictModel):
    """Paper Figure 4: mean attention weight per feature group per domain, per scenario (the method is the file's to
    name)."""

    method: str
    attention: Literal["private", "shared"] = "private"  # private = each domain's own attention unit


class Tables(StrictModel):
    table1: MethodTable | None = None  # base models x domains (each domain on its own data)
    table2: MethodTable | None = None  # cross-domain methods: rich domain paired with each other domain
    table3: MethodTable | None = None  # cross-domain methods: all domains at once
    table4: FractionTable | None = None
    figure4: AttentionFigure | None = None

    def methods(self, name: str) -> tuple[str, ...]:
        t = getattr(self, name)
        if t is None:
            return ()
        if isinstance(t, MethodTable):
            return t.methods
        if isinstance(t, FractionTable):
            return (t.baseline, t.method)
        return (t.method,)


class Experiment(StrictModel):
    name: str
    description: str = ""
    seeds: tuple[int, ...] = Field(default=(0, 1, 2), min_length=1)
    tune_seed: int = 0  # hyper-parameters are chosen on this seed, all domains, validation split
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig keys shared by every run
    model: dict[str, Any] = Field(default_factory=dict)  # model keys shared by every method (e.g. smaller dims)
    methods: dict[str, Method]
    tables: Tables
    tune: dict[str, tuple[Override, ...]] = Field(default_factory=dict)  # method -> candidates
    search: Search | None = None  # methods -> the same number of searched trials each
    # Published numbers to print beside ours in Table 3 (with an `overall` column):
    # dataset name -> row label -> {domain or "overall": test AUC}. Never trained, never tuned on.
    reference: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)
    reference_source: str = ""  # where the reference numbers come from, printed under the table

    @model_validator(mode="after")
    def _references(self) -> Experiment:
        known = sorted(self.methods)
        for table in TABLES:
            unknown = [m for m in self.tables.methods(table) if m not in self.methods]
            if unknown:
                raise ValueError(f"tables.{table} names unknown method(s) {unknown}; methods: {known}")
        unknown = [m for m in self.tune if m not in self.methods]
        if unknown:
            raise ValueError(f"tune names unknown method(s) {unknown}; methods: {known}")
        if self.search is not None:
            self._check_search(self.search, known)
        tuned = sorted({*self.tune, *self.searched})
        for m, method in self.methods.items():
            if method.tune_from is not None and (method.tune_from not in tuned or m in tuned):
                raise ValueError(
                    f"methods.{m}.tune_from: {method.tune_from!r} must be a method "
                    f"listed under tune or search, and {m!r} must not be; tuned: {tuned}"
                )
        for m, cands in self.tune.items():
            if not cands:
                raise ValueError(f"tune.{m} lists no candidates")
            ids = [candidate_id(c) for c in cands]
            if len(set(ids)) != len(ids):
                raise ValueError(f"tune.{m} lists the same candidate twice")
        t4 = self.tables.table4
        if t4 is not None:
            for m in (t4.baseline, t4.method):
                if self.methods[m].strategy.name == "src_only":
                    raise ValueError(
                        f"tables.table4: {m!r} is Src-only, which never trains "
                        "on the target; a target fraction means nothing for it"
                    )
        return self

    def _check_search(self, search: Search, known: list[str]) -> None:
        if search.methods != "all":
            unknown = [m for m in search.methods if m not in self.methods]
            if unknown:
                raise ValueError(f"search.methods names unknown method(s) {unknown}; methods: {known} (or write `all`)")
            if len(set(search.methods)) != len(search.methods):
                raise ValueError(f"search.methods lists a method twice: {list(search.methods)}")
            both = [m for m in search.methods if m in self.tune]
            if both:
                raise ValueError(
                    f"{both} are under both tune (explicit candidates) and search; keep each method in one of them"
                )
            following = [m for m in search.methods if self.methods[m].tune_from is not None]
            if following:
                raise ValueError(
                    f"{following} take their settings from another method "
                    "(tune_from); drop tune_from or remove them from search.methods"
                )
        searched = self.searched
        if not searched:
            raise ValueError(
                "search: no method to search (every method is under tune "
                "or has tune_from); list search.methods or drop search"
            )
        stray = [k for k in search.space if k != DEFAULT_SPACE and k not in searched]
        if stray:
            raise ValueError(
                f"search.space has entries for {stray}, which are not searched; "
                f"keys: {DEFAULT_SPACE!r} or a searched method {list(searched)}"
            )
        empty = [m for m in searched if not self.search_space(m)]
        if empty:
            raise ValueError(
                f"search: empty space for {empty}; give search.space.{DEFAULT_SPACE} "
                "or search.space.<method> at least one path"
            )

    @property
    def searched(self) -> tuple[str, ...]:
        """Methods whose settings the search chooses, in method order."""
        if self.search is None:
            return ()
        if self.search.methods == "all":
            return tuple(m for m, meth in self.methods.items() if m not in self.tune and meth.tune_from is None)
        return tuple(m for m in self.methods if m in self.search.methods)

    def search_space(self, method: str) -> dict[str, Param]:
        """`method`'s search space: its own entries laid over `default`, sorted by path."""
        assert self.search is not None
        space = {**self.search.space.get(DEFAULT_SPACE, {}), **self.search.space.get(method, {})}
        return dict(sorted(space.items()))

    def check_configs(self, source: str = "experiment") -> None:
        """Every method (with every tuning candidate and searched value) must give a valid model and train config."""
        for name in self.methods:
            for params in self.candidates(name) or (None,):
                model_dict = method_model(self, name, params)
                parse_model_config(model_dict, f"{source}: methods.{name}.model")
                validate_model(
                    TrainConfig, method_train(self, name, params, self.tune_seed), f"{source}: methods.{name}.train"
                )
        for name in self.searched:
            self._check_space(name, source)

    def _check_space(self, method: str, source: str) -> None:
        """Each path of `method`'s space names a setting of its config, and every sample value is valid there."""
        full = {
            "model": parse_model_config(method_model(self, method, None)).model_dump(mode="json"),
            "train": TrainConfig.model_validate(method_train(self, method, None, self.tune_seed)).model_dump(
                mode="json"
            ),
        }
        for path, param in self.search_space(method).items():
            where = f"{source}: search.space path {path!r} of method {method!r}"
            scope, *keys = path.split(".")
            node: Any = full[scope]
            for depth, k in enumerate(keys):
                if not isinstance(node, dict) or k not in node:
                    at = ".".join([scope, *keys[:depth]])
                    have = sorted(node) if isinstance(node, dict) else f"none ({at} is a {type(node).__name__})"
                    raise ConfigError(
                        f"{where}: {k!r} is not a key of {at} for model {full['model']['name']!r}; "
                        f"keys there: {have}; every key: {CONFIG_REFERENCE}"
                    )
                node = node[k]
            for value in param.samples():
                params = override_from({path: value})
                parse_model_config(method_model(self, method, params), f"{where} = {value!r}")
                validate_model(TrainConfig, method_train(self, method, params, self.tune_seed), f"{where} = {value!r}")

    def tuned_by(self, method: str) -> str | None:
        """The method whose tuning or search decides `method`'s settings (itself, its tune_from, or none)."""
        return method if method in self.tune or method in self.searched else self.methods[method].tune_from

    def candidates(self, method: str) -> tuple[Override, ...]:
        """A tuned method's explicit candidates (none for a searched one: the search proposes them)."""
        by = self.tuned_by(method)
        return self.tune[by] if by in self.tune else ()


def method_model(exp: Experiment, method: str, params: Override | None) -> dict[str, Any]:
    return deep_merge(exp.model, exp.methods[method].model, params.model if params else {})


def method_train(exp: Experiment, method: str, params: Override | None, seed: int) -> dict[str, Any]:
    # Start from TrainConfig's own defaults so a partial loss_weights override keeps the other weights.
    base = TrainConfig().model_dump(mode="json")
    return deep_merge(base, exp.train, exp.methods[method].train, params.train if params else {}, {"seed": seed})


def packaged_experiments() -> list[str]:
    """Names of the experiment YAMLs shipped in this package."""
    root = resources.files("crossctr.experiments")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_experiment(name_or_path: str | Path) -> Experiment:
    """A packaged experiment by name (`paper`, `smoke`) or an experiment YAML by path; validated."""
    path = Path(name_or_path)
    if not path.is_file():
        if str(name_or_path) not in packaged_experiments():
            raise ConfigError(
                f"experiment {str(name_or_path)!r}: neither a packaged "
                f"experiment {packaged_experiments()} nor a YAML file"
            )
        path = Path(str(resources.files("crossctr.experiments") / f"{name_or_path}.yaml"))
    exp = load_yaml_model(Experiment, path)
    exp.check_configs(str(path.name))
    return exp


def candidate_id(params: Override) -> str:
    """A short name fixed by the candidate's content: editing the list never mislabels an old record."""
    blob = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:6]


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method on some domains, one seed, perhaps a subsampled target."""

    key: str
    method: str
    scenario: str
    domains: tuple[str, ...]
    seed: int
    phase: str  # one of PHASES: orders runs and tells what made this run necessary
    tables: frozenset[str]  # tables this run fills (for --only)
    fraction: float = 1.0  # share of the target's training rows kept
    target: str | None = None  # domain whose training rows are subsampled
    target_only: bool = False  # Table 4 Self-train: train the target's own model only
    candidate: str | None = None  # tuning candidate id
    params: Override | None = None  # overrides in force: a tuning candidate or the tuned choice
    order: tuple[int, ...] = ()

    def run_config(self, exp: Experiment, dataset: str) -> RunConfig:
        method = exp.methods[self.method]
        strategy: Any = method.strategy
        if self.target_only:
            # Self-train of one domain == the Src-only strategy with that domain as the source:
            # trained and validated on the target's rows only; the other domains' scores are unused.
            strategy = SrcOnlyStrategy(source=self.target)
        return RunConfig.model_validate(  # validated as the constructor would: `model` is a dict to parse
            {
                "dataset": dataset,
                "model": method_model(exp, self.method, self.params),
                "strategy": strategy,
                "train": TrainConfig.model_validate(method_train(exp, self.method, self.params, self.seed)),
                "domains": self.domains,
            }
        )

    def fingerprint(self, exp: Experiment, dataset_id: Mapping[str, Any]) -> str:
        """Hash of everything that decides the run's numbers: two specs with equal hashes are one run."""
        cfg = self.run_config(exp, "")
        # Unset optional settings are left out (exclude_none): a setting added later, whose unset
        # value keeps the old behaviour, does not orphan finished runs; a renamed setting keeps its
        # former key (by_alias), so neither does a rename.
        model = cfg.model.model_dump(mode="json", exclude_none=True, by_alias=True)
        # progress bars, threads, scoring batch size and checkpointing do not change what is learnt
        train = cfg.train.model_dump(
            mode="json",
            exclude={"progress", "threads", "eval_batch_size", "checkpoint_every", "deterministic"},
            exclude_none=True,
        )
        blob = {
            "dataset": dict(dataset_id),
            "domains": list(self.domains),
            "fraction": self.fraction,
            "target": self.target if self.fraction < 1 else None,
            "model": model,
            "strategy": cfg.strategy.model_dump(mode="json"),
            "train": train,
        }
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Plan:
    domains: tuple[str, ...]  # dataset order
    sizes: dict[str, int]  # training rows per domain
    rich: str
    smallest: str
    scenarios: dict[str, tuple[str, ...]]  # name -> domains, `all` first, then pairs
    seeds: tuple[int, ...]
    tune: list[RunSpec] = field(default_factory=list)
    main: list[RunSpec] = field(default_factory=list)
    # searched method -> tables that use its choice; its trials are proposed while the runner runs
    search: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def pairs(self) -> list[str]:
        return [s for s in self.scenarios if s != ALL]

    @property
    def fraction_scenario(self) -> str:
        """Table 4's scenario: the rich domain with the smallest (all domains when there are two)."""
        return scenario_name((self.rich, self.smallest)) if len(self.domains) > 2 else ALL

    def specs(self) -> list[RunSpec]:
        return [*self.tune, *self.main]

    def select(
        self, only: Iterable[str] | None, methods: Iterable[str] | None = None, exp: Experiment | None = None
    ) -> Plan:
        """The runs some table in `only` needs (all runs when `only` is None), of `methods` only when given.

        A method whose settings come from another's tuning or search (`tune_from`) keeps that
        method's tuning runs. `exp` is needed with `methods`.
        """
        plan = self
        if only is not None:
            wanted = set(only)
            unknown = sorted(wanted - set(TABLES))
            if unknown:
                raise ConfigError(f"--only: unknown table(s) {unknown}; choose from {list(TABLES)}")

            def keep(specs: list[RunSpec]) -> list[RunSpec]:
                return [s for s in specs if s.tables & wanted]

            plan = replace(
                plan,
                tune=keep(plan.tune),
                main=keep(plan.main),
                search={m: t for m, t in plan.search.items() if t & wanted},
            )
        if methods is not None:
            if exp is None:
                raise ValueError("Plan.select: pass the experiment with methods")
            chosen = set(methods)
            unknown = sorted(chosen - set(exp.methods))
            if unknown:
                raise ConfigError(f"--methods: unknown method(s) {unknown}; this experiment has {list(exp.methods)}")
            deciders = {exp.tuned_by(m) for m in chosen} - {None}
            plan = replace(
                plan,
                tune=[s for s in plan.tune if s.method in deciders],
                main=[s for s in plan.main if s.method in chosen],
                search={m: t for m, t in plan.search.items() if m in deciders},
            )
        return plan

    def to_json(self) -> dict[str, Any]:
        return {
            "domains": list(self.domains),
            "sizes": self.sizes,
            "rich": self.rich,
            "smallest": self.smallest,
            "scenarios": {k: list(v) for k, v in self.scenarios.items()},
            "seeds": list(self.seeds),
            "runs": [{"key": s.key, "phase": s.phase, "tables": sorted(s.tables)} for s in self.specs()],
            **({"search": {m: sorted(t) for m, t in self.search.items()}} if self.search else {}),
        }


def scenario_name(domains: Sequence[str]) -> str:
    return "+".join(domains)


def _key(method: str, scenario: str, seed: int, fraction: float = 1.0, candidate: str | None = None) -> str:
    parts = [method, scenario]
    if fraction < 1:
        parts.append(f"f{fraction:g}")
    if candidate is not None:
        parts.append(f"t-{candidate}")
    return "/".join([*parts, f"s{seed}"])


def cell_key(exp: Experiment, method: str, scenario: str, seed: int, fraction: float = 1.0) -> str:
    """The key of the run whose metrics fill (method, scenario[, fraction]) for one seed."""
    if fraction < 1:
        return _key(method, scenario, seed, fraction)
    if exp.methods[method].per_domain:
        return _key(method, ALL, seed)
    return _key(method, scenario, seed)


def expand(exp: Experiment, sizes: Mapping[str, int], seeds: Sequence[int] | None = None) -> Plan:
    """Every run the experiment's tables need, on a dataset with `sizes` training rows per domain.

    Main runs of a tuned method carry no `params` yet: the runner fills in the choice once the
    tuning runs have finished. Keys do not depend on that choice.
    """
    domains = tuple(sizes)
    if len(domains) < 2:
        raise ConfigError(f"an experiment needs at least 2 domains; the dataset has {list(domains)}")
    seeds = tuple(exp.seeds if seeds is None else seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct and at least one; got {list(seeds)}")
    rich = max(domains, key=lambda d: sizes[d])  # ties: the first in dataset order
    smallest = min(domains, key=lambda d: sizes[d])
    # Richest first in every scenario, so domain id 0 is the rich domain (the paper's source;
    # CNAN's `wasserstein_source: 0`, FineTune's and Src-only's default source).
    by_size = tuple(sorted(domains, key=lambda d: -sizes[d]))  # stable: ties keep dataset order
    scenarios: dict[str, tuple[str, ...]] = {ALL: by_size}
    if len(domains) > 2:
        for poor in by_size[1:]:
            scenarios[scenario_name((rich, poor))] = (rich, poor)
    plan = Plan(domains, dict(sizes), rich, smallest, scenarios, seeds)
    methods = list(exp.methods)
    seed_rank = {s: i for i, s in enumerate(seeds)}
    specs: dict[str, RunSpec] = {}

    def add(spec: RunSpec) -> None:
        old = specs.get(spec.key)
        if old is None:
            specs[spec.key] = spec
        else:  # one run, several tables: it keeps its earliest place in the order
            specs[spec.key] = replace(old, tables=old.tables | spec.tables, order=min(old.order, spec.order))

    def add_cell(table: str, method: str, scenario: str, seed: int) -> None:
        """The run behind one (method, scenario) cell of Tables 2/3/4 or Figure 4."""
        scen = ALL if exp.methods[method].per_domain else scenario
        phase = "table3" if scen == ALL else "table2"
        j = list(scenarios).index(scen)
        order = (PHASES.index(phase), seed_rank[seed], j, methods.index(method))
        add(
            RunSpec(
                cell_key(exp, method, scenario, seed),
                method,
                scen,
                scenarios[scen],
                seed,
                phase,
                frozenset({table}),
                order=order,
            )
        )

    t = exp.tables
    for s in seeds:
        for m in t.methods("table3"):
            add_cell("table3", m, ALL, s)
        for m in t.methods("table2"):
            for scen in plan.pairs or [ALL]:
                add_cell("table2", m, scen, s)
        if t.figure4 is not None:
            for scen in plan.scenarios:
                add_cell("figure4", t.figure4.method, scen, s)
        for m in t.methods("table1"):
            order = (PHASES.index("table1"), seed_rank[s], 0, methods.index(m))
            add(RunSpec(_key(m, ALL, s), m, ALL, scenarios[ALL], s, "table1", frozenset({"table1"}), order=order))
        if t.table4 is not None:
            scen = plan.fraction_scenario
            for j, f in enumerate(t.table4.fractions):
                for m in (t.table4.baseline, t.table4.method):
                    if f >= 1:  # all of the target's rows: the Table 2 (or 3) run itself
                        add_cell("table4", m, scen, s)
                        continue
                    add(
                        RunSpec(
                            _key(m, scen, s, f),
                            m,
                            scen,
                            scenarios[scen],
                            s,
                            "table4",
                            frozenset({"table4"}),
                            fraction=f,
                            target=smallest,
                            target_only=exp.methods[m].per_domain,
                            order=(PHASES.index("table4"), seed_rank[s], j, methods.index(m)),
                        )
                    )
    # Tuning: every tuned method some table uses (itself or via tune_from); candidates run on all
    # domains with tune_seed.
    for m, cands in exp.tune.items():
        users = {u for u in exp.methods if exp.tuned_by(u) == m}
        used = frozenset(name for name in TABLES if users & set(t.methods(name)))
        if not used:
            continue
        for k, params in enumerate(cands):
            cid = candidate_id(params)
            plan.tune.append(
                RunSpec(
                    _key(m, ALL, exp.tune_seed, candidate=cid),
                    m,
                    ALL,
                    scenarios[ALL],
                    exp.tune_seed,
                    "tune",
                    used,
                    candidate=cid,
                    params=params,
                    order=(0, methods.index(m), k),
                )
            )
    # Search: every searched method some table uses; its trials are asked of Optuna as it runs.
    for m in exp.searched:
        users = {u for u in exp.methods if exp.tuned_by(u) == m}
        used = frozenset(name for name in TABLES if users & set(t.methods(name)))
        if used:
            plan.search[m] = used
    plan.main = sorted(specs.values(), key=lambda s: s.order)
    return plan


def search_spec(exp: Experiment, plan: Plan, method: str, values: Mapping[str, Any], trial: int) -> RunSpec:
    """The run of one search trial: `values` (dotted path -> value) on all domains, seed tune_seed."""
    params = override_from(values)
    cid = candidate_id(params)
    return RunSpec(
        _key(method, ALL, exp.tune_seed, candidate=cid),
        method,
        ALL,
        plan.scenarios[ALL],
        exp.tune_seed,
        "tune",
        plan.search.get(method, frozenset()),
        candidate=cid,
        params=params,
        order=(0, list(exp.methods).index(method), trial),
    )


def select_candidate(valid_auc: Mapping[str, float | None]) -> str | None:
    """The candidate id with the best mean validation AUC; ties go to the first listed; None if none finished."""
    best, best_auc = None, -math.inf
    for cid, auc in valid_auc.items():
        if auc is not None and not math.isnan(auc) and auc > best_auc:
            best, best_auc = cid, auc
    return best


def subsample_domain(data: PreparedData, domain: str, fraction: float, seed: int) -> PreparedData:
    """Keep `fraction` of `domain`'s TRAINING rows (seeded); other domains and valid/test are untouched.

    The rows kept for a smaller fraction are a subset of those kept for a larger one (same
    seed), so Table 4's curve moves only with the amount of data.
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"fraction must be in (0, 1]; got {fraction}")
    names = list(data.schema.domain.values)
    if domain not in names:
        raise ConfigError(f"domain {domain!r} is not one of the dataset's domains {names}")
    train = data.train
    rows = np.flatnonzero(train.domain.numpy() == names.index(domain))
    n_keep = max(1, round(fraction * len(rows)))
    keep_target = np.random.default_rng(seed).permutation(rows)[:n_keep]
    keep = np.ones(len(train), dtype=bool)
    keep[rows] = False
    keep[keep_target] = True
    splits = dict(data.splits)
    splits["train"] = train.select(torch.from_numpy(keep))
    return PreparedData(data.schema, data.encoder, splits)
