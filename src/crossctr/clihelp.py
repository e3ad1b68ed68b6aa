"""Command help that names what the registries hold (experiments, datasets, models), so it
never goes stale (the progress-bar rule every long command shares is in crossctr.progress).

Help texts carry placeholders such as `<DATASETS>`; `RegistryCommand` fills them when the help
is shown (the registries import torch and the data loaders, which a plain command need not
wait for).
"""

from __future__ import annotations

import re
import typing
from importlib import resources
from typing import Any

import click
import yaml

__all__ = ["RegistryCommand", "registry_names"]


def _experiments() -> dict[str, str]:
    """Packaged experiment name -> the first sentence of its description."""
    out = {}
    for p in sorted(resources.files("crossctr.experiments").iterdir(), key=lambda p: p.name):
        if p.name.endswith(".yaml"):
            try:
                about = str((yaml.safe_load(p.read_text(encoding="utf-8")) or {}).get("description", ""))
            except yaml.YAMLError:
                about = ""
            first = " ".join(about.split()).replace("et al. ", "et al.\0").split(". ")[0].replace("\0", " ").rstrip(".")
            out[p.name[: -len(".yaml")]] = first if len(first) <= 64 else first[:63].rstrip() + "…"
    return out


def registry_names() -> dict[str, list[str]]:
    """What each placeholder lists: experiments, datasets, models, strategies."""
    from crossctr.data.registry import DATASETS
    from crossctr.models import REGISTRY
    from crossctr.training.strategies import StrategyConfig

    union = typing.get_args(typing.get_args(StrategyConfig)[0])  # Annotated[Union[...], Field] -> the strategy models
    strategies = [m.model_fields["name"].default for m in union]
    return {
        "EXPERIMENTS": list(_experiments()),
        "DATASETS": list(DATASETS),
        "MODELS": sorted(REGISTRY),
        "STRATEGIES": strategies,
    }


def _fill(text: str | None, values: dict[str, str]) -> str | None:
    """Replace each <KEY>; a multi-line value takes the indentation of its placeholder's line."""
    if text is None:
        return None
    for key, value in values.items():

        def indented(m: re.Match[str], value: str = value) -> str:
            return "\n".join(m.group(1) + line for line in value.split("\n"))

        text = re.sub(rf"(?m)^([ \t]*)<{key}>", indented, text)
        text = text.replace(f"<{key}>", value)
    return text


class RegistryCommand(click.Command):
    """A click command whose help placeholders (<EXPERIMENTS>, <EXPERIMENT_LIST>, <DATASETS>,
    <DATASET_LIST>, <MODELS>, <STRATEGIES>) are filled from the registries when help is shown."""

    def format_help(self, ctx: click.Context, formatter: Any) -> None:
        from crossctr.data.registry import describe

        names = registry_names()
        values = {k: ", ".join(v) for k, v in names.items()}
        # \b keeps click from re-wrapping the lists into one paragraph
        values["EXPERIMENT_LIST"] = "\b\n" + "\n".join(f"{n:<12} {about}" for n, about in _experiments().items())
        values["DATASET_LIST"] = "\b\n" + "\n".join(f"{n:<24} {about}" for n, about in describe().items())
        self.help = _fill(self.help, values)
        for param in self.params:
            if isinstance(param, click.Option):
                param.help = _fill(param.help, values)
        super().format_help(ctx, formatter)
