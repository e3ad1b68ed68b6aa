"""CNAN-AT behaviour the paper's equations pin down."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from crossctr.data.dataset import Batch
from crossctr.models import CNAN, CNANConfig

SMALL = dict(shared_dim=4, specific_dim=2, attention_hidden=(4, 2), deep=(8, 4))
CARDS = [7, 5, 9]


def _batch(n: int = 24) -> Batch:
    g = torch.Generator().manual_seed(3)
    x = torch.stack([torch.randint(0, c, (n,), generator=g) for c in CARDS], 1)
    return Batch(x, torch.arange(n) % 3, torch.randint(0, 2, (n,), generator=g).float())


def _model(**kw) -> CNAN:
    torch.manual_seed(0)
    return CNAN(CNANConfig(**{**SMALL, **kw}), CARDS, 3)


def test_private_network_of_a_domain_only_touches_its_rows() -> None:
    m, b = _model(), _batch()
    before = m(b).logits.detach()
    with torch.no_grad():
        for p in m.private[1].parameters():
            p.add_(0.5)
    after = m(b).logits.detach()
    d1 = b.domain == 1
    assert torch.equal(before[~d1], after[~d1])
    assert not torch.allclose(before[d1], after[d1])


def test_logit_is_shared_head_plus_private_head() -> None:
    m, b = _model(), _batch()
    e = m.embedding(b.features, b.domain)
    o_c, _, _ = m.shared(e)
    expected = []
    for i in range(len(b)):  # one row at a time, as the paper writes y^d
        k = int(b.domain[i])
        o_k, _, _ = m.private[k](e[i : i + 1])
        w = m.heads.weight[k]
        H = o_c.shape[1]
        expected.append(o_c[i] @ w[:H] + o_k[0] @ w[H:] + m.heads.bias[k])
    assert torch.allclose(m(b).logits, torch.stack(expected), atol=1e-5)


def test_adversarial_term_is_negative_entropy_and_leaves_discriminator_alone() -> None:
    m, b = _model(adversarial="entropy", discriminator_step=True), _batch()
    out = m(b)
    o_c = m.shared(m.embedding(b.features, b.domain))[0]
    p = F.softmax(m.discriminator(o_c), -1)
    assert torch.allclose(out.aux_losses["adv"], (p * p.log()).sum(-1).mean(), atol=1e-6)
    out.aux_losses["adv"].backward(retain_graph=True)
    assert m.discriminator.weight.grad is None or m.discriminator.weight.grad.abs().sum() == 0
    assert m.shared.deep.net[0].weight.grad.abs().sum() > 0  # ...but does move the shared network
    m.zero_grad()
    out.aux_losses["disc"].backward()  # D's own step never moves the shared network
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.shared.parameters())
    assert m.discriminator.weight.grad.abs().sum() > 0


def test_literal_paper_reading_lets_adversarial_term_move_discriminator() -> None:
    m, b = _model(adversarial="entropy", discriminator_step=False), _batch()
    out = m(b)
    assert "disc" not in out.aux_losses
    out.aux_losses["adv"].backward()
    assert m.discriminator.weight.grad.abs().sum() > 0


def test_domain_loss_is_sum_of_per_domain_means() -> None:
    m, b = _model(), _batch(25)  # 9 / 8 / 8 rows: unequal domain sizes
    e = m.embedding(b.features, b.domain)
    total = 0.0
    for k in range(3):
        rows = b.domain == k
        o_k = m.private[k](e[rows])[0]
        total = total + F.cross_entropy(m.discriminator(o_k), b.domain[rows])
    assert torch.allclose(m(b).aux_losses["domain"], total, atol=1e-5)


def test_ablations_remove_what_they_name() -> None:
    cnan1 = _model(specific_dim=0)
    assert cnan1.embedding.out_dim == 4
    assert cnan1.embedding.specific is None
    cnan2 = _model(attention=False)
    assert cnan2.shared.attention is None
    assert "attention_private" not in cnan2(_batch()).extras
    full = _model()
    assert full(_batch()).extras["attention_private"].shape == (24, 3)


def test_wasserstein_critics_and_features_train_on_separate_terms() -> None:
    m, b = _model(adversarial="wasserstein"), _batch(30)
    out = m(b)
    out.aux_losses["adv"].backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.critic_shared.parameters())
    assert m.shared.deep.net[0].weight.grad.abs().sum() > 0
    m.zero_grad()
    out.aux_losses["critic"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.shared.parameters())
    assert m.critic_shared[1].net[0].weight.grad.abs().sum() > 0


def test_wasserstein_estimate_and_penalty_by_hand() -> None:
    from crossctr.layers.wasserstein import Critic, gradient_penalty

    c = Critic(2, hidden=3)
    with torch.no_grad():  # a linear critic f(x) = 2 x_0 (ReLU stays in its linear part for x > 0)
        c.net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        c.net[0].bias.zero_()
        c.net[2].weight.copy_(torch.tensor([[2.0, 0.0, 0.0]]))
        c.net[2].bias.zero_()
    p = torch.tensor([[3.0, 1.0], [5.0, 0.0]])
    q = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
    assert torch.allclose(c.distance(p, q), torch.tensor(2 * (4.0 - 1.0)))
    assert torch.allclose(gradient_penalty(c, p, q), torch.tensor((2.0 - 1.0) ** 2))  # |∇f| = 2 everywhere between


def test_private_row_buckets_are_few_and_cover_the_rows() -> None:
    from crossctr.layers.fast import _bucket

    sizes = [_bucket(n) for n in range(1, 4097)]
    assert all(s >= n for n, s in zip(range(1, 4097), sizes, strict=False))
    assert len(set(sizes)) == 9 + 15  # 1, 2, 4, ..., 256, then 512, 768, ..., 4096
    assert _bucket(3) == 4 and _bucket(256) == 256 and _bucket(257) == 512 and _bucket(4096) == 4096


def test_padding_the_private_rows_changes_no_output_nor_gradient(monkeypatch) -> None:
    import crossctr.layers.fast as cnan_mod  # where the private towers' row padding lives

    b = _batch(37)  # 13 / 12 / 12 rows per domain: each padded to 16
    results = []
    for bucket in (cnan_mod._bucket, lambda n: n):
        monkeypatch.setattr(cnan_mod, "_bucket", bucket)
        m = _model()
        out = m(b)
        loss = F.binary_cross_entropy_with_logits(out.logits, b.label) + sum(out.aux_losses.values())
        loss.backward()
        results.append(
            (
                out.logits.detach(),
                out.extras["attention_private"],
                {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None},
            )
        )
    (la, aa, ga), (lb, ab, gb) = results
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(aa, ab, rtol=1e-6, atol=1e-7)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-5, atol=1e-7, msg=name)


def test_private_layers_keep_the_last_sizes_of_deep() -> None:
    m = _model(deep=(8, 6, 4), private_layers=1)
    assert [mod.out_features for mod in m.shared.deep.net if isinstance(mod, torch.nn.Linear)] == [8, 6, 4]
    assert [mod.out_features for mod in m.private[0].deep.net if isinstance(mod, torch.nn.Linear)] == [4]
    assert m(_batch()).logits.shape == (24,)
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="private_layers 3 is more than the 2 layers"):
        CNANConfig(**SMALL, private_layers=3)


def test_layer_norm_keeps_padding_harmless_and_batch_norm_runs_unpadded(monkeypatch) -> None:
    import crossctr.layers.fast as cnan_mod  # where the private towers' row padding lives

    b = _batch(37)
    for norm in ("layer", "batch"):
        outs = []
        for bucket in (cnan_mod._bucket, lambda n: n):
            monkeypatch.setattr(cnan_mod, "_bucket", bucket)
            outs.append(_model(norm=norm)(b).logits.detach())  # training mode: batch statistics for "batch"
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)


def test_cnan_plus_is_the_same_model_under_crossctrs_defaults() -> None:
    from crossctr.models import CNANPlusConfig, build_model, parse_model_config

    cfg = parse_model_config({"name": "cnan_plus", **SMALL})
    assert isinstance(cfg, CNANPlusConfig) and cfg.norm == "layer" and cfg.private_layers == 1
    m = build_model(cfg, CARDS, 3)
    assert type(m) is CNAN  # export and serving treat it as CNAN-AT
    assert any(isinstance(mod, torch.nn.LayerNorm) for mod in m.shared.deep.net)
    paper = parse_model_config({"name": "cnan", **SMALL})
    assert paper.norm is None and paper.private_layers is None  # the paper's model stays as specified
