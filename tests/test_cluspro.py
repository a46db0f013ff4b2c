"ClusPro end to end on czsl-layout fixtures: the experiment notebook's real-data path, bad input, a NaN loss."
import json, math
from pathlib import Path
import papermill as pm, pytest, torch
from czsl_workbench.data import make_czsl_fixture
from czsl_workbench.backbones import create_backbone
from czsl_workbench.fit import load_splits, fit_method
from czsl_workbench.methods.cluspro import ClusPro, ClusProConfig, ClusProMethod, LOSS_PRESETS, loss_preset
from czsl_workbench.train import NonFiniteLossError

EXP = Path(__file__).resolve().parents[1]/'nbs'/'experiments'
MIT_LIKE = dict(train_pairs=[('ancient', 'building'), ('wet', 'dog'), ('wet', 'street'), ('sliced', 'apple'), ('ancient', 'dog')],
                val_pairs=[('sliced', 'dog'), ('wet', 'dog')], test_pairs=[('ancient', 'street'), ('wet', 'apple'), ('wet', 'street')])

@pytest.fixture(scope='module')
def mit_like(tmp_path_factory):
    "A czsl-layout dataset with MIT-States-style names and no mode labels."
    return make_czsl_fixture(tmp_path_factory.mktemp('mit')/'mit-states', n_per_pair=6, image_size=32, **MIT_LIKE)

def test_experiment_notebook_runs_on_a_czsl_dataset_by_parameters(mit_like, tmp_path):
    "The MIT-States path (dataset root + open_clip name) on a fixture with the micro backbone: tables, no mode scores."
    pm.execute_notebook(str(EXP/'01_cluspro.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                        parameters=dict(dataset=str(mit_like), backbone='czsl-vit-micro', seeds=[0, 1], epochs=2, batch_size=8,
                                        methods=['CLIP zero-shot', 'CSP', 'Troika', 'ClusPro', 'ClusPro w/o proto. losses'],
                                        progress=False, out_dir=str(tmp_path)))
    m = json.loads((tmp_path/'metrics.json').read_text())
    cw = m['tables']['closed world']
    assert m['rows'] == ['CLIP zero-shot', 'CSP', 'Troika', 'ClusPro', 'ClusPro w/o proto. losses'] and set(cw) == set(m['rows'])
    assert list(m['tables']) == ['closed world', 'open world', 'open world, calibrated']
    assert {'closed world: ClusPro - Troika', 'open world, calibrated: Troika - CSP'} <= set(m['comparisons'])
    assert m['traction']['images'] == 18 and 0 < m['traction']['movement_mean'] < 1      # the fixture's 18 test images
    cal = json.loads((tmp_path/'runs'/'troika'/'seed0'/'metrics.json').read_text())['test_ow_calibrated']
    assert cal['n_pairs'] == 12 and 'threshold' in cal and cal['feasibility'].startswith('czsl-vit-micro')
    assert all(0 <= cw[r][k] <= 1 for r in cw for k in ('S', 'U', 'HM', 'AUC', 'attr', 'obj'))
    assert cw['CLIP zero-shot']['AUC_std'] == 0.0                      # zero-shot does not depend on the seed
    assert m['prototype_quality'] == {} and 'prototype NMI' not in json.dumps(m['expectations'])
    run = tmp_path/'runs'/'cluspro'/'seed1'
    assert len(list((run/'snapshots').glob('epoch_*.pt'))) == 2 and (run/'checkpoints'/'best.pt').exists()
    assert json.loads((run/'parameters.json').read_text())['seed'] == 1

def test_experiment_notebook_unknown_row(mit_like, tmp_path):
    with pytest.raises(pm.PapermillExecutionError, match='ClusPro K=7'):
        pm.execute_notebook(str(EXP/'01_cluspro.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                            parameters=dict(dataset=str(mit_like), backbone='czsl-vit-micro', methods=['ClusPro K=7'], out_dir=str(tmp_path)))
    assert not (tmp_path/'metrics.json').exists()

def test_nan_features_stop_training_with_a_message_and_keep_earlier_results(mit_like, tmp_path):
    "A NaN in the cached training features (the frozen variant): the guard names the loss terms; earlier files stay intact."
    bb = create_backbone('czsl-vit-micro', device='cpu', freeze=True)
    splits = load_splits(bb, mit_like, progress=False)
    kw = dict(data=splits, epochs=1, batch_size=8, K=2, visual='frozen', progress=False, device='cpu')
    good = fit_method(ClusProMethod, bb, mit_like, tmp_path/'good', **kw)
    before = (tmp_path/'good'/'metrics.json').read_bytes()
    splits['train'].feats = splits['train'].feats.clone(); splits['train'].feats[:] = float('nan')
    with pytest.raises(NonFiniteLossError, match='ce_pair=nan'):
        with pytest.warns(UserWarning, match='are not finite; dropped from the prototype update'):
            fit_method(ClusProMethod, bb, mit_like, tmp_path/'bad', **kw)
    assert not (tmp_path/'bad'/'metrics.json').exists()
    assert (tmp_path/'good'/'metrics.json').read_bytes() == before and math.isfinite(good['test']['AUC'])

def test_cluspro_inference_variants_and_unknown_pair(mit_like):
    "'paper' and 'released-code' scores differ as the formulas say; scoring an unknown pair names it."
    bb = create_backbone('czsl-vit-micro', device='cpu', freeze=True)
    sp = load_splits(bb, mit_like, open_world=False, progress=False)
    d = sp['test'].dset
    torch.manual_seed(0)
    m = ClusPro(bb.model, bb.tokenizer, d.attrs, d.objs, d.train_pairs, ClusProConfig(K=2, visual='frozen')).eval()
    S_code = m.scores(sp['test'].feats, d.pairs)
    m.inference = 'paper'; S_paper = m.scores(sp['test'].feats, d.pairs)
    with torch.no_grad():
        img = m.embed_images(sp['test'].feats); txt = m.text_features(m.pair_index(d.pairs)); L = m.branch_logits(img, txt)
    torch.testing.assert_close(S_code - S_paper, L['pair'] - L['pair'].softmax(-1))
    with pytest.raises(KeyError, match="'purple'"): m.scores(sp['test'].feats, [('purple', 'dog')])
    with pytest.raises(ValueError, match="inference must be one of"): ClusProConfig(inference='arxiv')

def test_presets():
    assert loss_preset('paper') == dict(tau=0.1, alpha=0.2, beta=0.5, wd=5e-5)
    assert loss_preset('released-code') == dict(tau=0.07, alpha=0.1, beta=0.0, wd=1e-5)
    p = loss_preset('released-code', alpha=0.3); p['tau'] = 1.0
    assert p['alpha'] == 0.3 and LOSS_PRESETS['released-code'] == dict(tau=0.07, alpha=0.1, beta=0.0, wd=1e-5)
    with pytest.raises(ValueError, match='released-code'): loss_preset('arxiv')
    with pytest.raises(ValueError, match='gamma'): loss_preset('paper', gamma=1.0)

def test_config_fills_the_preset_and_names_bad_values():
    "ClusProConfig is the single source of ClusPro's defaults: presets fill what is left as None; bad values fail on creation."
    c = ClusProConfig(preset='released-code', tau=0.2)
    assert (c.tau, c.alpha, c.beta, c.wd, c.K, c.patience, c.epochs) == (0.2, 0.1, 0.0, 1e-5, 5, 3, 10)
    with pytest.raises(ValueError, match="solver must be one of"): ClusProConfig(solver='greedy')
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['Kk'\]"): ClusProMethod().config(Kk=3)
