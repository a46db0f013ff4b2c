"Losses: PCL by hand, HSIC against its trace formula, nHSIC's properties, PDL forms, the part-by-part total."
import math, pytest, torch
import torch.nn.functional as F
from czsl_workbench.methods.losses import pcl_loss, sq_dists, median_sigma, gaussian_gram, hsic, nhsic, pdl_loss, total_loss

Z = torch.tensor([[1., 0.], [0., 2.]])                    # two samples on the axes
P = torch.tensor([[3., 0.], [0., 1.], [1., 1.]])          # prototypes: x axis, y axis, diagonal
T = torch.tensor([0, 2])

def test_pcl_hand_2x3():
    # cosines (1, 0, c) and (0, 1, c), c = cos 45 deg; at tau=1: -log(e/(e+1+e^c)) = 0.748573, -log(e^c/(1+e+e^c)) = 1.041466
    assert float(pcl_loss(Z, P, T, tau=1.0)) == pytest.approx(0.895020, abs=1e-5)
    assert float(pcl_loss(Z, P, T, tau=0.1)) == pytest.approx((0.052117 + 2.981050) / 2, abs=1e-5)
    assert float(pcl_loss(7 * Z, 0.5 * P, T, tau=1.0)) == pytest.approx(0.895020, abs=1e-5)   # norms do not matter

def test_pcl_bad_target_names_n():
    with pytest.raises(IndexError, match=r'\[0, 3\)'): pcl_loss(Z, P, torch.tensor([0, 3]))
    with pytest.raises(IndexError, match='N=3'): pcl_loss(Z, P, torch.tensor([-1, 0]))

def test_median_sigma_and_gram_by_hand():
    tri = torch.tensor([[0., 0.], [3., 0.], [0., 4.]])     # distances 3, 4, 5
    assert float(median_sigma(tri)) == pytest.approx(4.0)
    assert float(median_sigma(torch.ones(6, 3))) == pytest.approx(1e-2)          # all distances 0: the floor
    K = gaussian_gram(tri)                                                        # sigma = 4
    assert float(K[0, 1]) == pytest.approx(math.exp(-9 / 32)) and float(K[1, 2]) == pytest.approx(math.exp(-25 / 32))
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1))
    iu = torch.triu_indices(40, 40, 1)
    assert float(median_sigma(x)) == pytest.approx(float(torch.cdist(x, x)[iu[0], iu[1]].median()), rel=1e-5)
    assert not median_sigma(x.clone().requires_grad_()).requires_grad

def test_hsic_matches_trace_formula():
    a, b = 0.2, 0.6                                        # 2x2: HSIC = (1-a)(1-b)/4
    assert float(hsic(torch.tensor([[1., a], [a, 1.]]), torch.tensor([[1., b], [b, 1.]]))) == pytest.approx(0.08, abs=1e-7)
    g = torch.Generator().manual_seed(2)
    Kx, Ky = gaussian_gram(torch.randn(30, 4, generator=g)), gaussian_gram(torch.randn(30, 4, generator=g))
    H = torch.eye(30) - 1 / 30
    assert float(hsic(Kx, Ky)) == pytest.approx(float(torch.trace(Kx @ H @ Ky @ H) / 900), abs=1e-7)

def test_nhsic_properties():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 8, generator=g), torch.randn(128, 8, generator=g)
    assert float(nhsic(x, x)) == pytest.approx(1.0, abs=1e-6)
    assert float(nhsic(x, 3 * x)) == pytest.approx(1.0, abs=1e-5)                 # rows are normalised
    assert float(nhsic(x, y)) == pytest.approx(float(nhsic(y, x)), abs=1e-6)
    assert float(nhsic(x, torch.tanh(2 * x))) > 0.8 > 0.15 > float(nhsic(x, y))   # measured: 0.886 and 0.078
    assert float(nhsic(x, torch.ones(128, 8))) == 0.0                             # constant input: 0, not NaN
    assert nhsic(x.double(), y.double()).dtype == torch.float64

def test_pdl_forms_and_gradients():
    g = torch.Generator().manual_seed(3)
    za, zo = (torch.randn(32, 8, generator=g).requires_grad_() for _ in range(2))
    pa, po = torch.randn(32, 8, generator=g), torch.randn(32, 8, generator=g)
    with torch.no_grad():
        assert float(pdl_loss(za, zo, pa, po)) == pytest.approx(float(nhsic(za, po) + 0.5 * nhsic(zo, pa)), abs=1e-6)
        assert float(pdl_loss(za, za)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match='both p_a and p_o'): pdl_loss(za, zo, p_a=pa)
    loss = pdl_loss(za, zo, pa, po) + pcl_loss(za, torch.cat([pa, po]), torch.arange(32))
    loss.backward()
    for t in (za, zo): assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0

def test_total_loss_by_hand():
    ce, pcl, pdl = (torch.tensor(v, requires_grad=True) for v in (2., 3., 5.))
    out = total_loss({'ce': ce, 'pcl': pcl, 'pdl': pdl}, {'pcl': 0.2, 'pdl': 0.0})
    assert out['loss'].item() == pytest.approx(2.6) and [float(out[k]) for k in ('ce', 'pcl', 'pdl')] == [2., 3., 5.]
    out['loss'].backward()
    assert float(pcl.grad) == pytest.approx(0.2) and float(ce.grad) == 1.0 and pdl.grad is None
    assert float(total_loss({'ce': torch.tensor(1.), 'pdl': torch.tensor(float('nan'))}, {'pdl': 0})['loss']) == 1.0
