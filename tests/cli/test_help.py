"""The CLI's help is generated from the registries and documents every option."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from crossctr.cli import cli
from crossctr.data.registry import DATASETS
from crossctr.experiments.grid import packaged_experiments
from crossctr.models import REGISTRY


def _help(*args: str) -> str:
    r = CliRunner().invoke(cli, [*args, "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.output


def test_experiment_help_lists_every_experiment_and_dataset() -> None:
    text = _help("experiment")
    assert packaged_experiments(), "no packaged experiments found"
    for name in packaged_experiments():
        assert f"\n  {name} " in text, name
    for name in DATASETS:
        assert name in text, name


def test_dataset_and_train_help_list_the_registries() -> None:
    text = _help("dataset")
    for name in DATASETS:
        assert f"\n  {name} " in text, name
    text = _help("train")
    for name in REGISTRY:
        assert name in text, name
    for name in ("joint", "self_train", "src_only", "finetune"):
        assert name in text


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        out.append((f"{prefix}{name}", cmd))
        if isinstance(cmd, click.Group):
            out += _commands(cmd, f"{prefix}{name} ")
    return out


@pytest.mark.parametrize("name,command", _commands(cli), ids=[n for n, _ in _commands(cli)])
def test_every_option_has_help(name: str, command: click.Command) -> None:
    bare = [p.opts[0] for p in command.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not bare, f"crossctr {name}: options without help text: {bare}"
    assert (command.help or "").strip(), f"crossctr {name} has no help text"


@pytest.mark.parametrize("name", ["demo", "train", "predict", "prepare", "inspect", "experiment"])
def test_long_commands_can_hide_progress(name: str) -> None:
    assert "--no-progress" in _help(name)
