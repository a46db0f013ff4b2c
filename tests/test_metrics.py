"The CZSL evaluator: hand-worked numbers, bit-for-bit agreement with czsl's loop, streaming, feasibility, ZSL/GZSL, bad input."
import math, random, warnings
import numpy as np, pytest, torch
from czsl_workbench.metrics import (CZSLEvaluator, reference_evaluate, feasibility_mask, feasibility_affine,
                                    FEASIBILITY_MASKING, synthetic_scores, synthetic_split, class_mean_accuracy,
                                    zsl_accuracy, gzsl_accuracy, choose_gamma, MAX_BIAS)

KEYS = ('best_seen', 'best_unseen', 'best_hm', 'AUC', 'biasterm', 'hm_seen', 'hm_unseen', 'attr_acc', 'obj_acc')

@pytest.fixture(autouse=True, scope='module')
def one_thread():
    "Many small tensor ops: one thread is faster and steadier on a shared 2-core machine."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def same(fast, ref):
    "Every protocol number identical (bit for bit), NaN matching NaN."
    for k in KEYS:
        a, b = fast[k], ref[k]
        assert a == b or (math.isnan(a) and math.isnan(b)), f'{k}: fast {a!r} != reference {b!r}'

# ---------------------------------------------------------------- a world small enough to work out by hand
PAIRS = [('blue', 'circle'), ('blue', 'square'), ('red', 'circle'), ('red', 'square'), ('red', 'star')]
TRAIN = [('blue', 'circle'), ('red', 'square')]
TEST = [('blue', 'circle'), ('blue', 'square'), ('red', 'circle')]
HAND = torch.tensor([[0.9, 0.5, 0.1, 0.3, 0.95],       # seen, true blue circle: right unless unseen pairs are boosted
                     [0.2, 0.6, 0.1, 0.5, 0.0],        # seen, true red square: right once bias < -0.1
                     [0.7, 0.4, 0.2, 0.1, 0.0],        # unseen blue square: margin 0.3
                     [0.3, 0.1, 0.8, 0.6, 0.0]])       # unseen red circle: margin -0.2
HAND_Y = torch.tensor([0, 3, 1, 2])

def test_hand_worked():
    # biases (-0.2001, 0.2999) then 1e3: seen (1, 1/2, 0), unseen (0, 1/2, 1); AUC 0.5; HM 0.5 at bias 0.2999;
    # unbiased predictions blue circle, blue square, blue circle, red circle: attr 3/4, obj 3/4.
    ev = CZSLEvaluator(PAIRS, TRAIN, TEST)
    for st in (ev.evaluate(HAND, HAND_Y), reference_evaluate(HAND, HAND_Y, PAIRS, TRAIN, TEST)):
        assert st['best_seen'] == 1 and st['best_unseen'] == 1
        assert st['AUC'] == pytest.approx(0.5) and st['best_hm'] == pytest.approx(0.5)
        assert st['hm_seen'] == 0.5 and st['hm_unseen'] == 0.5
        assert st['biasterm'] == pytest.approx(0.2999, abs=1e-6)
        assert st['attr_acc'] == 0.75 and st['obj_acc'] == 0.75
    st = ev.evaluate(HAND, HAND_Y)
    assert st.curve.seen.tolist() == [1, 0.5, 0] and st.curve.unseen.tolist() == [0, 0.5, 1]
    assert st.curve.bias[-1] == MAX_BIAS and (st['n_seen'], st['n_unseen']) == (2, 2)

def test_train_pair_in_test_split_counts_as_seen():
    # image 0's pair (blue, circle) is both a train and a test pair: it is a seen image
    st = CZSLEvaluator(PAIRS, TRAIN, TEST).evaluate(HAND, HAND_Y)
    assert st['n_seen'] == 2

def test_no_correct_unseen_gives_auc_zero():
    S = HAND.clone(); S[2, 1] = S[3, 2] = 0.0              # no unseen image right even at bias 1e3
    ev = CZSLEvaluator(PAIRS, TRAIN, TEST)
    st = ev.evaluate(S, HAND_Y)
    assert st['AUC'] == 0.0 and st['biasterm'] == 1e3 and st['best_unseen'] == 0.0 and len(st.curve.bias) == 1
    same(st, reference_evaluate(S, HAND_Y, PAIRS, TRAIN, TEST))

def test_empty_image_sets_are_nan_with_a_warning():
    ev = CZSLEvaluator(PAIRS, TRAIN, TEST)
    with pytest.warns(UserWarning, match='no unseen images'): st = ev.evaluate(HAND[:2], HAND_Y[:2])
    assert st['best_seen'] == 0.0 and st['n_unseen'] == 0
    for k in ('best_unseen', 'AUC', 'best_hm', 'hm_seen', 'hm_unseen', 'biasterm'): assert math.isnan(st[k]), k
    assert st['attr_acc'] == 0.5 and st['obj_acc'] == 1.0   # unbiased: blue circle (right), blue square (obj right)
    with pytest.warns(UserWarning, match='no seen images'): st = ev.evaluate(HAND[2:], HAND_Y[2:])
    assert st['best_unseen'] == 1.0
    for k in ('best_seen', 'AUC', 'best_hm', 'hm_seen', 'hm_unseen', 'biasterm'): assert math.isnan(st[k]), k

# ---------------------------------------------------------------- fast == reference, bit for bit
def random_case(seed):
    rng = random.Random(seed)
    na, no = rng.randint(2, 12), rng.randint(2, 14)
    n_seen = rng.randint(1, max(1, na * no // 2))
    n_eu = rng.randint(0, na * no - n_seen); n_vo = rng.randint(0, na * no - n_seen - n_eu)
    cw, ow, tr, te = synthetic_split(na, no, n_seen, rng.randint(0, n_seen), n_eu, n_vo, seed=seed)
    te = te or tr[:1]
    open_world = rng.random() < 0.4
    pairs = ow if open_world else cw
    S, y = synthetic_scores(rng.randint(2, 250), pairs, tr, te, signal=rng.uniform(0, 4), seen_bias=rng.uniform(-1, 2),
                            decimals=rng.choice([None, 0, 1, 2]), seed=seed)     # decimals: ties everywhere
    if rng.random() < 0.3: S = S * 100 + 20                                      # CLIP-like logits
    return pairs, tr, te, open_world, S, y, rng

@pytest.mark.parametrize('block', range(6))
def test_fast_equals_reference_random(block):
    n_cmp = 0
    for seed in range(block * 50, block * 50 + 50):
        pairs, tr, te, ow, S, y, rng = random_case(seed)
        ev = CZSLEvaluator(pairs, tr, te, open_world=ow)
        seen = ev.seen_mask[y]
        if seen.all() or not seen.any(): continue
        kw, Sref = {}, S
        if ow and rng.random() < 0.5:
            f = torch.rand(len(pairs), generator=torch.Generator().manual_seed(seed)); f[ev.seen_mask] = 0
            th, m = rng.choice([0.3, 0.0, -0.1, 0.7]), rng.choice(FEASIBILITY_MASKING)
            Sref, kw = feasibility_mask(S, f, th, ev.seen_mask, m), dict(feasibility=f, threshold=th, masking=m)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            same(ev.evaluate(S, y, chunk_size=rng.randint(1, 64), **kw), reference_evaluate(Sref, y, pairs, tr, te, open_world=ow))
        n_cmp += 1
    assert n_cmp >= 30

@pytest.mark.parametrize('seed', range(8))
def test_float32_ties_at_large_bias(seed):
    "Scores 3e-5 apart: equal after adding the bias in float32 (not in float64); the lowest index must win, as in topk."
    g = torch.Generator().manual_seed(seed)
    cw, ow, tr, te = synthetic_split(9, 10, 30, 10, 30, 10, seed=seed)
    pairs, open_world = (ow, True) if seed % 2 else (cw, False)
    ev = CZSLEvaluator(pairs, tr, te, open_world=open_world)
    _, y = synthetic_scores(200, pairs, tr, te, seed=seed)
    S = 25 + torch.randint(0, 6, (200, len(pairs)), generator=g).float() * 3e-5
    S[torch.arange(200), y] += torch.randint(0, 3, (200,), generator=g).float() * 4e-5
    S[:, ev.seen_mask] += 1e-4 * (seed % 3)
    same(ev.evaluate(S, y), reference_evaluate(S, y, pairs, tr, te, open_world=open_world))

def test_topk_tie_rule_still_holds():
    "The fast path relies on CPU topk(1) returning the lowest tied index from 64 columns on; fail loudly if torch changes it."
    rows = torch.randint(0, 3, (3000, 300), generator=torch.Generator().manual_seed(0)).float()
    for P in (64, 100, 300):
        first = (rows[:, :P] == rows[:, :P].amax(1, keepdim=True)).float().argmax(1)
        assert torch.equal(rows[:, :P].topk(1, dim=1).indices[:, 0], first)

def test_mit_sized_closed_world_and_labels_outside_closed_world():
    cw, ow, tr, te = synthetic_split(30, 40, 300, 100, 100, 80, seed=7)
    ev = CZSLEvaluator(cw, tr, te)
    S, y = synthetic_scores(1500, cw, tr, te, signal=2.5, decimals=1, seed=7)
    val_only = torch.tensor([ev.pair2idx[p] for p in cw if p not in set(tr) | set(te)])
    y[:20] = val_only[:20]                                        # pairs this phase's closed world masks out
    with pytest.warns(UserWarning, match="outside this phase's closed world"): st = ev.evaluate(S, y)
    same(st, reference_evaluate(S, y, cw, tr, te))

# ---------------------------------------------------------------- streaming == in memory
def test_streaming_sources_agree(tmp_path):
    cw, ow, tr, te = synthetic_split(70, 75, 400, 100, 300, seed=3)          # 5,250 pairs: several 64-column blocks
    ev = CZSLEvaluator(ow, tr, te, open_world=True)
    S, y = synthetic_scores(200, ow, tr, te, signal=3, decimals=1, seed=3)
    full = ev.evaluate(S, y)
    same(full, reference_evaluate(S, y, ow, tr, te, open_world=True))
    mm = np.lib.format.open_memmap(tmp_path/'s.npy', mode='w+', dtype=np.float32, shape=tuple(S.shape))
    mm[:] = S.numpy(); mm.flush(); del mm
    for src, kw in [(lambda a, b: S[a:b], dict(chunk_size=7)), ((S[a:a + 33] for a in range(0, 200, 33)), {}),
                    (np.load(tmp_path/'s.npy', mmap_mode='r'), dict(chunk_size=64)), (S.double().numpy(), {}),
                    (S, dict(chunk_size=1))]:
        st = ev.evaluate(src, y, **kw)
        same(st, full); assert np.array_equal(st.curve.seen, full.curve.seen)
    f = torch.rand(len(ow), generator=torch.Generator().manual_seed(1)); f[ev.seen_mask] = 0
    for m in FEASIBILITY_MASKING:
        st = ev.evaluate(lambda a, b: S[a:b], y, feasibility=f, threshold=0.4, masking=m, chunk_size=50)
        same(st, reference_evaluate(feasibility_mask(S, f, 0.4, ev.seen_mask, m), y, ow, tr, te, open_world=True))

def test_scores_are_not_modified():
    cw, ow, tr, te = synthetic_split(10, 10, 30, 10, 30, seed=0)
    ev = CZSLEvaluator(ow, tr, te, open_world=True)
    S, y = synthetic_scores(50, ow, tr, te, seed=0); S0 = S.clone()
    ev.evaluate(S, y); ev.evaluate(S, y, feasibility=torch.rand(len(ow)), threshold=0.5)
    assert torch.equal(S, S0)

# ---------------------------------------------------------------- feasibility
def test_feasibility_masking_semantics():
    S = torch.tensor([[-1.0, -2.0, -5.0, -3.0]]); f = torch.tensor([0.0, 0.9, 0.1, 0.5]); seen = torch.tensor([True, False, False, False])
    assert feasibility_mask(S, f, 0.3, seen).tolist() == [[-1., -2., 0., -3.]]     # CSP: infeasible -> 0 (promoted here)
    assert feasibility_mask(S, f, -0.5, seen).tolist() == [[-2., -2., -5., -3.]]   # threshold <= 0 doubles seen logits
    assert feasibility_mask(S, f, 0.3, seen, 'hard').tolist() == [[-1., -2., -1., -3.]]
    assert feasibility_mask(S, f, 0.3, seen, 'neg_inf').tolist() == [[-1., -2., -math.inf, -3.]]
    for m in FEASIBILITY_MASKING:
        a, c = feasibility_affine(f, 0.3, seen, m); assert torch.equal(S * a + c, feasibility_mask(S, f, 0.3, seen, m))
    # the comparison is float32, as in CSP: 0.1 in float32 passes a threshold of 0.1000000015
    assert feasibility_mask(torch.ones(1, 2), torch.tensor([0.1, 0.1]), 0.1000000015, torch.tensor([False, False])).tolist() == [[1., 1.]]

def test_choose_threshold_matches_a_csp_loop():
    cw, ow, tr, te = synthetic_split(12, 12, 40, 15, 40, seed=5)
    ev = CZSLEvaluator(ow, tr, te, open_world=True)
    S, y = synthetic_scores(300, ow, tr, te, signal=1.5, seed=5)
    g = torch.Generator().manual_seed(5); feas = torch.rand(len(ow), generator=g); feas[ev.seen_mask] = 0
    S[:, feas < 0.3] += 1.0                                         # infeasible pairs are distractors
    best = ev.choose_threshold(S, y, feas, n_thresholds=12)
    # CSP's loop, written out with the reference evaluator
    ths = np.linspace(float((feas + ev.seen_mask * 10.).min()), float((feas - ev.seen_mask * 10.).max()), num=12)
    best_auc, best_th = 0., -10
    for th in ths:
        auc = reference_evaluate(feasibility_mask(S, feas, th, ev.seen_mask), y, ow, tr, te, open_world=True)['AUC']
        if auc > best_auc: best_auc, best_th = auc, th
    assert best['threshold'] == float(best_th) and best['AUC'] == best_auc and len(best['table']) == 12
    assert best['AUC'] > ev.evaluate(S, y)['AUC']

# ---------------------------------------------------------------- ZSL / GZSL
Z = torch.tensor([[0.9, 0.2, 0.1], [0.5, 0.6, 0.1], [0.8, 0.7, 0.1], [0.6, 0.2, 0.5], [0.1, 0.3, 0.4]])
ZL = torch.tensor([0, 0, 1, 2, 2])

def test_zsl_gzsl_by_hand():
    assert zsl_accuracy(Z[2:], ZL[2:], [1, 2]) == 1.0                      # among unseen classes: all right
    r = gzsl_accuracy(Z, ZL, [0])                                           # S = 1/2, U = mean(0, 1/2), H = 1/3
    assert r['S'] == 0.5 and r['U'] == 0.25 and r['H'] == pytest.approx(1 / 3)
    r = gzsl_accuracy(Z, ZL, [0], gamma=0.15)                               # calibrated stacking: U = 1, H = 2/3
    assert r['S'] == 0.5 and r['U'] == 1.0 and r['H'] == pytest.approx(2 / 3)
    assert class_mean_accuracy(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 1, 1])) == 0.75   # (1 + 1/2) / 2
    assert class_mean_accuracy(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 1, 1, 1])) == 1.0

def test_choose_gamma_uses_validation_only():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (400,), generator=g); S = torch.randn(400, 10, generator=g)
    S[torch.arange(400), y] += 2.0; S[:, :5] += 1.5                        # classes 0-4 seen and over-confident
    gamma, table = choose_gamma(S, y, list(range(5)))
    assert gamma > 0 and dict(table)[gamma] == max(h for _, h in table)
    assert gzsl_accuracy(S, y, list(range(5)), gamma)['H'] > gzsl_accuracy(S, y, list(range(5)))['H']

# ---------------------------------------------------------------- bad input
def test_bad_input_errors_name_the_problem():
    ev = CZSLEvaluator(PAIRS, TRAIN, TEST)
    bad = HAND.clone(); bad[1, 2] = float('nan')
    with pytest.raises(ValueError, match='first at row 1, column 2'): ev.evaluate(bad, HAND_Y)
    bad[1, 2] = -float('inf')
    with pytest.raises(ValueError, match='NaN/inf'): ev.evaluate(bad, HAND_Y)
    with pytest.raises(ValueError, match='NaN/inf'): ev.evaluate(lambda a, b: bad[a:b], HAND_Y, chunk_size=1)
    with pytest.raises(ValueError, match='4 columns but the evaluator has 5 pairs'): ev.evaluate(HAND[:, :4], HAND_Y)
    with pytest.raises(ValueError, match='4 rows but there are 3 pair_labels'): ev.evaluate(HAND, HAND_Y[:3])
    with pytest.raises(ValueError, match='returned 1 rows instead of 2'): ev.evaluate(lambda a, b: HAND[a:a + 1], HAND_Y, chunk_size=2)
    with pytest.raises(ValueError, match='score blocks have 3 rows'): ev.evaluate(iter([HAND[:3]]), HAND_Y)
    with pytest.raises(ValueError, match=r'pair_labels\[3\] = 7 is out of range for 5 pairs'): ev.evaluate(HAND, torch.tensor([0, 3, 1, 7]))
    with pytest.raises(ValueError, match=r'pair_labels\[0\] = -1 is out of range'): ev.evaluate(HAND, [-1, 3, 1, 2])
    with pytest.raises(ValueError, match='must be integer'): ev.evaluate(HAND, HAND_Y.float())
    with pytest.raises(ValueError, match='no images'): ev.evaluate(HAND[:0], HAND_Y[:0])
    with pytest.raises(ValueError, match='2-D'): ev.evaluate(HAND[0], HAND_Y[:1])
    with pytest.raises(ValueError, match=r"duplicate: \('red', 'circle'\) at positions 2 and 5"):
        CZSLEvaluator(PAIRS + [('red', 'circle')], TRAIN, TEST)
    with pytest.raises(ValueError, match=r"eval_pairs has 1 pair\(s\) that are not in `pairs`, e.g. \('red', 'moon'\)"):
        CZSLEvaluator(PAIRS, TRAIN, TEST + [('red', 'moon')])
    with pytest.raises(ValueError, match='train_pairs has 1 pair'): CZSLEvaluator(PAIRS, TRAIN + [('green', 'star')], TEST)
    with pytest.raises(ValueError, match='train_pairs is empty'): CZSLEvaluator(PAIRS, [], TEST)
    with pytest.raises(ValueError, match=r"pairs\[1\] = 'bluesquare' is not an \(attr, obj\) pair"):
        CZSLEvaluator([('blue', 'circle'), 'bluesquare'], TRAIN[:1], [])
    with pytest.raises(ValueError, match='give both'): ev.evaluate(HAND, HAND_Y, feasibility=torch.ones(5))
    with pytest.raises(ValueError, match=r'one score per pair \(5\)'): ev.evaluate(HAND, HAND_Y, feasibility=torch.ones(4), threshold=0.)
    with pytest.raises(ValueError, match='masking must be one of'): ev.evaluate(HAND, HAND_Y, feasibility=torch.ones(5), threshold=0., masking='zero')
    with pytest.raises(ValueError, match='threshold must be a finite'): ev.evaluate(HAND, HAND_Y, feasibility=torch.ones(5), threshold=float('nan'))
    with pytest.raises(ValueError, match='not an unseen class'): zsl_accuracy(Z, ZL, [1, 2])
    with pytest.raises(ValueError, match=r'labels\[4\] = 3 is out of range for 3 classes'): gzsl_accuracy(Z, torch.tensor([0, 0, 1, 2, 3]), [0])
    with pytest.raises(ValueError, match='NaN/inf'): gzsl_accuracy(Z.masked_fill(Z > .85, float('nan')), ZL, [0])
    with pytest.raises(ValueError, match='5 rows but there are 4 labels'): gzsl_accuracy(Z, ZL[:4], [0])
