"""M3oE: shared experts mixed by domain gates plus domain experts, with learned balance weights.

Paper: Z. Zhang, S. Liu, J. Yu, Q. Cai, X. Zhao, C. Zhang, Z. Liu, Q. Liu, H. Zhao, L. Hu,
P. Jiang, K. Gai, "M3oE: Multi-Domain Multi-Task Mixture-of Experts Recommendation
Framework", SIGIR 2024.

A bottom network (a STAR layer, then Linear → LayerNorm → ReLU, plus a skip branch) feeds
three views: shared experts mixed by each domain's gate, domain experts fused with their
domain-level balance, and (in the paper) task experts. Two learned weights set how much of
the domain view each row takes and how much a domain borrows from the others (the paper's
AutoML-searched structure weights):
    e       = e_c ⊕ e_d                                    shared ⊕ domain-specific embeddings (as CNAN-AT)
    x       = e_1 ⊕ … ⊕ e_F
    h       = NB(x (W ⊙ W_d) + b + b_d) + NB'(x)           STAR layer (layers.star), NB = Linear→LN→ReLU
    S       = Σ_k g^d_k(⊘h) S_k(h),  g^d = softmax(W_g^d ⊘h)   shared experts, gate of the row's domain
    D̃       = σ(a_bal) D_d(h) + (1 − σ(a_bal))/(N − 1) Σ_{j≠d} D_j(h)   domain balance (layers.m3oe)
    logit   = Tower_d(S + σ(a_exp) · D̃)                    per-domain tower, ending in a linear logit
⊘ is stop-gradient: the gates read the bottom's output without moving it, as in the
Scenario-Wise-Rec implementation. The paper finds a_bal, a_exp by a bi-level (validation-set)
search; as Scenario-Wise-Rec, they are trained with the rest here (σ of a free scalar, no
temperature). With `tasks: T` (the dataset's extra labels) every (domain, task) pair has its
gate and tower, and the paper's task view joins the sum: task experts T_t balanced as the
domain ones, over the click and the T extra tasks,
    logit_t = Tower_{d,t}(S_t + σ(a_exp) · D̃ + σ(a_exp,t) · T̃_t),
    T̃_t = σ(a_bal,t) T_t + (1 − σ(a_bal,t))/T · Σ_{j≠t} T_j
(task 0 is the click). Without `tasks` there is no task view, as Scenario-Wise-Rec's
single-task M3oE. Every expert, gate and tower runs as a stacked parameter set: no loop over them.

Defaults are Scenario-Wise-Rec's (Li et al., KDD 2024 benchmark) MovieLens setting, where
M3oE is the best public model on one domain: fcn_dims [128, 64, 64, 32] = STAR layer 128,
bottom 64, experts (64, 32), towers (32,); 4 shared experts, one expert per domain; both
balance logits start at 1 (σ(1) ≈ 0.73). Its STAR layer draws both W and W_d Xavier-uniform;
the zoo's STAR layer starts W_d at 1 (the STAR paper), so at initialisation every domain
shares the bottom. `attention_hidden` non-empty puts CNAN-AT's feature attention unit (paper
eq. 1) on the embeddings; M3oE has none. Each row's gate weights leave in `extras["gates"]`.

Example:
    >>> import torch
    >>> from crossctr.data.batch import Batch
    >>> m = M3oE(M3oEConfig(shared_dim=4, specific_dim=2, star=(8, 6), deep=(6, 4), tower=(4,)), [5, 7], 3)
    >>> m(Batch(torch.tensor([[3, 4], [1, 2]]), torch.tensor([0, 2]), torch.tensor([1.0, 0.0]))).logits.shape
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from crossctr.data.batch import Batch
from crossctr.layers.experts import SoftmaxGates, StackedMLP, take_domain
from crossctr.layers.m3oe import StackedNormMLP, balance_domains, norm_block
from crossctr.layers.star import StarLinear
from crossctr.models.base import ModelOutput, register
from crossctr.models.embedded import EmbeddedConfig, EmbeddedInput

__all__ = ["M3oEConfig", "M3oE"]


class M3oEConfig(EmbeddedConfig):
    name: Literal["m3oe"] = "m3oe"
    star: tuple[int, int] = (128, 64)  # Scenario-Wise-Rec: STAR layer width, then the bottom's output size
    n_experts: int = Field(default=4, ge=1)  # Scenario-Wise-Rec: 4 shared experts
    # Scenario-Wise-Rec: every expert's hidden sizes (shared and domain)
    deep: tuple[int, ...] = Field(default=(64, 32), min_length=1)
    tower: tuple[int, ...] = (32,)  # Scenario-Wise-Rec: each domain's tower, then a linear logit
    balance_init: float = 1.0  # Scenario-Wise-Rec's bal_d: σ(1) ≈ 0.73 of the domain view from the own domain
    expert_weight_init: float = 1.0  # Scenario-Wise-Rec's exp_d: the domain view enters with σ(1) ≈ 0.73
    # M3oE normalises with LayerNorm (Scenario-Wise-Rec's code): the zoo's BatchNorm switch is refused, not ignored.
    batch_norm: Literal[False] | None = None
    # Multi-task: the dataset's extra labels (schema `tasks`), scored beside the click; the task
    # view's balance and weight start as the domain view's (Scenario-Wise-Rec: bal_t = exp_t = 1).
    tasks: int | None = Field(default=None, ge=1)


@register("m3oe", M3oEConfig)
class M3oE(EmbeddedInput, nn.Module):
    def __init__(self, config: M3oEConfig, cardinalities: Sequence[int], n_domains: int) -> None:
        super().__init__()
        self.config = config
        in_dim = len(cardinalities) * self._build_input(config, cardinalities, n_domains)
        width, bottom = config.star
        self.star = StarLinear(in_dim, width, n_domains)  # x (W ⊙ W_d) + b + b_d
        self.star_out = norm_block(width, bottom)
        self.skip = norm_block(in_dim, bottom)
        self.experts = StackedNormMLP(config.n_experts, bottom, config.deep)  # shared S_k
        self.domain_experts = StackedNormMLP(n_domains, bottom, config.deep)  # D_j, one per domain
        self.n_domains, self.n_tasks = n_domains, 1 + (config.tasks or 0)  # task 0: the click
        NT = n_domains * self.n_tasks  # one gate and one tower per (domain, task), domain-major
        self.gates = SoftmaxGates(bottom, NT, config.n_experts)
        self.balance_logit = nn.Parameter(torch.tensor(float(config.balance_init)))  # a_bal
        self.expert_logit = nn.Parameter(torch.tensor(float(config.expert_weight_init)))  # a_exp
        self.task_experts: StackedNormMLP | None = None
        if config.tasks:
            self.task_experts = StackedNormMLP(self.n_tasks, bottom, config.deep)  # T_t
            self.task_balance_logit = nn.Parameter(torch.tensor(float(config.balance_init)))  # a_bal,t
            self.task_expert_logit = nn.Parameter(torch.tensor(float(config.expert_weight_init)))  # a_exp,t
        H = self.experts.out_dim
        self.towers = StackedNormMLP(NT, H, config.tower) if config.tower else None
        self.heads = StackedMLP(NT, config.tower[-1] if config.tower else H, (1,), activate_last=False)

    def forward(self, batch: Batch) -> ModelOutput:
        d = batch.domain
        e, extras = self._embed(batch)  # (B, F, K), attention-weighted when the model has the unit
        x = e.flatten(1)  # (B, F*K)
        h = self.star_out(self.star(x, d)) + self.skip(x)  # (B, S)
        B, N, T = h.shape[0], self.n_domains, self.n_tasks
        g = take_domain(self.gates(h.detach()).view(B, N, T, -1), d)  # (B, T, E) the row's domain's gates, ⊘h
        shared = torch.einsum("bte,beh->bth", g, self.experts(h))  # (B, T, H)
        domain = balance_domains(self.domain_experts(h), d, torch.sigmoid(self.balance_logit))  # (B, H)
        fused = shared + torch.sigmoid(self.expert_logit) * domain.unsqueeze(1)  # (B, T, H)
        if self.task_experts is not None:
            view = self.task_experts(h)  # (B, T, H) every task expert
            w = torch.sigmoid(self.task_balance_logit)
            u = (1.0 - w) / (T - 1)  # T >= 2 here: the click and at least one extra task
            view = (w - u) * view + u * view.sum(1, keepdim=True)  # (B, T, H) T̃_t for every task t
            fused = fused + torch.sigmoid(self.task_expert_logit) * view
        f = (
            fused.unsqueeze(1).expand(B, N, T, fused.shape[-1]).reshape(B, N * T, -1)
        )  # (B, N*T, H) tower (n, t) reads task t
        t = self.towers(f) if self.towers is not None else f  # (B, N*T, ·)
        out = take_domain(self.heads(t).view(B, N, T), d)  # (B, T) the row's domain's towers
        extras["gates"] = g[:, 0].detach()  # (B, E) the click's gate
        return ModelOutput(out[:, 0], {}, extras, out[:, 1:] if T > 1 else None)
