"""The two studies of the embedded world, on tiny parameters: the headroom experiment (floor, ceiling, CSP with paired
verdicts) and the prototype study (a sweep of the ClusPro experiment read back, with the most and least faithful runs)."""
import json, math
from pathlib import Path
import papermill as pm

EXP = Path(__file__).resolve().parents[1]/'nbs'/'experiments'

def test_headroom_experiment_reports_three_baselines_with_verdicts(tmp_path):
    pm.execute_notebook(str(EXP/'03_headroom.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                        parameters=dict(seeds=[0, 1], progress=False, out_dir=str(tmp_path), probe={'epochs': 2}, csp={'epochs': 2}))
    m = json.loads((tmp_path/'metrics.json').read_text())
    assert set(m['table']) == {'zero-shot', 'linear probe (ceiling)', 'CSP'} and m['table']['CSP']['AUC']['n'] == 2
    assert m['table']['linear probe (ceiling)']['U']['mean'] == 0.0             # the probe never names an unseen pair
    assert m['table']['zero-shot']['S']['std'] == 0.0                           # zero-shot does not depend on the seed
    for name, c in m['checks'].items():
        assert c['verdict'] in ('holds', 'fails') or c['verdict'].startswith('not resolved'), (name, c)
    d = m['comparisons']['probe - zero-shot (S)']
    assert d['n'] == 2 and math.isclose(d['mean'], m['table']['linear probe (ceiling)']['S']['mean'] - m['table']['zero-shot']['S']['mean'], abs_tol=1e-9)
    assert {'world_s', 'backbone_s', 'features_s', 'clip_s', 'linear-probe_s', 'csp_s'} <= set(m['times'])
    assert (tmp_path/'runs'/'linear-probe'/'seed1'/'metrics.json').is_file()

def test_prototype_study_reads_a_sweep_and_draws_the_extremes(tmp_path):
    pm.execute_notebook(str(EXP/'04_prototype_study.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                        parameters=dict(out_dir=str(tmp_path)))
    m = json.loads((tmp_path/'metrics.json').read_text())
    assert m['n_runs'] == 8 and set(m['varying']) == {'alpha', 'K', 'seeds'}          # 2 alphas x 2 Ks x 2 seeds
    auc = m['table']['AUC']
    assert len(auc) == 4 and all(r['n'] == 2 for r in auc) and {r['K'] for r in auc} == {'1', '2'}
    assert all(r['mean'] == 0.0 for r in m['table']['NMI'] if r['K'] == '1')       # one prototype: nothing to split
    assert set(m['faithful']) == {'most', 'least'} and m['faithful']['most']['nmi'] >= m['faithful']['least']['nmi']
    assert list((tmp_path/'explore'/'most').glob('*.png')) and all(v['verdict'] for v in m['prototypes_vs_kmeans'].values())
