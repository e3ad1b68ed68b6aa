"""Layers CNAN-AT and its baselines are built from, each small and tested on its own."""

from __future__ import annotations

from crossctr.layers.attention import AttentionUnit
from crossctr.layers.cross import CrossNetwork
from crossctr.layers.embedding import FeatureEmbedding
from crossctr.layers.fm import FactorizationMachine
from crossctr.layers.grl import GradientReversal, grad_reverse
from crossctr.layers.heads import DomainHeads
from crossctr.layers.mlp import MLP, Activation, make_activation
from crossctr.layers.wide import WideLinear

__all__ = [
    "Activation",
    "AttentionUnit",
    "CrossNetwork",
    "DomainHeads",
    "FactorizationMachine",
    "FeatureEmbedding",
    "GradientReversal",
    "MLP",
    "WideLinear",
    "grad_reverse",
    "make_activation",
]
