"Prototype bank: state survives a state_dict round trip, NaN never reaches the buffers, equipartition on padded batches."
import io, math, warnings
import pytest, torch
from czsl_workbench.methods.prototypes import PrototypeBank, group_by_label, sinkhorn, csot, kmeans
from czsl_workbench.metrics import cluster_quality

def modes_batch(gen, B=96, n=3, n_modes=2, D=16):
    "Samples of `n` primitives, each with `n_modes` well-separated unit-vector modes in D dims."
    centres = torch.nn.functional.normalize(torch.randn(n, n_modes, D, generator=torch.Generator().manual_seed(0)), dim=-1)
    lab, m = torch.randint(0, n, (B,), generator=gen), torch.randint(0, n_modes, (B,), generator=gen)
    return centres[lab, m] + 0.05 * torch.randn(B, D, generator=gen), lab, m

@pytest.mark.parametrize('solver', ['sinkhorn', 'csot', 'argmax'])
def test_state_dict_round_trip(solver):
    torch.manual_seed(0); gen = torch.Generator().manual_seed(1)
    bank = PrototypeBank(3, K=2, dim=16, mu=0.9, solver=solver)
    for _ in range(5): bank(*modes_batch(gen)[:2])
    assert bank.counts.sum().item() == 5 * 96 and bank.initialized.all()
    torch.testing.assert_close(bank.prototypes.norm(dim=-1), torch.ones(3, 2))
    buf = io.BytesIO(); torch.save(bank.state_dict(), buf); buf.seek(0)
    back = PrototypeBank(3, K=2, dim=16, mu=0.9, solver=solver); back.load_state_dict(torch.load(buf))
    for k in ('prototypes', 'initialized', 'counts'): assert torch.equal(getattr(back, k), getattr(bank, k)), k
    x, l, _ = modes_batch(gen)
    la, pa = bank.assign(x, l); lb, pb = back.assign(x, l)
    assert torch.equal(la, lb) and torch.equal(pa, pb)

def test_nan_features_do_not_corrupt_prototypes():
    torch.manual_seed(0); gen = torch.Generator().manual_seed(2)
    x, l, _ = modes_batch(gen, B=40)
    x[:5] = float('nan'); x[5, 3] = float('inf')                     # 6 bad rows, in the very first batch
    bank = PrototypeBank(3, K=2, dim=16, mu=0.9)
    with pytest.warns(UserWarning, match='6 of 40 feature rows are not finite'): local = bank(x, l)
    assert torch.isfinite(bank.prototypes).all() and bank.initialized.all()
    assert bank.counts.sum().item() == 34                            # only the finite rows count
    assert local.shape == (40,) and local.min() >= 0 and local.max() < 2
    _, plan = bank.assign(x, l)
    assert (plan[:6] == 0).all() and torch.allclose(plan[6:].sum(1), torch.ones(34))
    before = bank.prototypes.clone()
    with pytest.warns(UserWarning, match='40 of 40'): bank(torch.full((40, 16), float('nan')), l)
    assert torch.equal(bank.prototypes, before)

def test_equipartition_on_padded_batch():
    g = torch.Generator().manual_seed(3)
    labels = torch.tensor([0] * 8 + [1] * 4 + [3] * 12)[torch.randperm(24, generator=g)]
    scores = torch.rand(24, 4, generator=g) * 2 - 1
    sc, mask, groups, pos = group_by_label(scores, labels)
    assert groups.tolist() == [0, 1, 3] and sc.shape == (3, 12, 4) and torch.equal(sc.flatten(0, 1)[pos], scores)
    n = torch.tensor([8., 4., 12.])
    Q = sinkhorn(sc, mask, eps=0.1, n_iter=1000)
    torch.testing.assert_close(Q.sum(1), (n / 4)[:, None].expand(3, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(Q.sum(2), mask.float()); assert (Q[~mask] == 0).all()
    feats = torch.randn(24, 5, generator=g)
    G = csot(sc, group_by_label(feats, labels)[0], mask, kappa=1.0, partial=False, n_inner=300)
    torch.testing.assert_close(G.sum(1), (n / 4)[:, None].expand(3, 4), atol=1e-3, rtol=0)
    assert (G[~mask] == 0).all()

def test_structure_term_keeps_near_duplicates_together():
    "Over random problems, pairs of near-identical samples share a prototype more often with kappa > 0."
    g = torch.Generator().manual_seed(4)
    same = {0.: 0, 2.: 0}
    for _ in range(40):
        f = torch.randn(8, 6, generator=g); f[1] = f[0] + 0.01 * torch.randn(6, generator=g)
        P = torch.rand(8, 2, generator=g) * 0.4 + 0.3
        for k in same: same[k] += int(csot(P, f, kappa=k).argmax(1)[:2].unique().numel() == 1)
    assert same[2.] >= same[0.] + 5, same                             # 30 against 17 with these seeds

def test_kmeans_and_bank_find_the_modes():
    torch.manual_seed(0); gen = torch.Generator().manual_seed(5)
    x, l, m = modes_batch(gen, B=300)
    assert cluster_quality(kmeans(x, l, 2), l, m)['nmi'] == 1.0
    bank = PrototypeBank(3, K=2, dim=16, mu=0.8)
    for _ in range(20): bank(*modes_batch(gen)[:2])
    q = cluster_quality(bank.eval()(x, l), l, m)
    assert q['nmi'] == 1.0 and q['purity'] == 1.0 and sorted(q['per_group']) == [0, 1, 2]
