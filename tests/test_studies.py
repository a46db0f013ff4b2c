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

def test_c2lip_experiment_trains_every_row_and_reads_them_with_the_probe(tmp_path):
    pm.execute_notebook(str(EXP/'05_c2lip.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                        parameters=dict(progress=False, out_dir=str(tmp_path), head_rows=['standard', 'C2LIP']))
    m = json.loads((tmp_path/'metrics.json').read_text())
    rows = {'pretrained', 'standard', 'NegCLIP-style', 'C2LIP', 'C2LIP w/o XAC', 'C2LIP w/o NPC', 'C2LIP (code labels)'}
    assert set(m['table']) == rows and all(m['table'][r]['zs AUC']['n'] == 2 for r in rows)
    assert m['table']['pretrained']['zs AUC']['std'] == 0.0                     # one backbone, replicated over seeds
    kinds = ('replace-att', 'replace-obj', 'replace-rel', 'swap-att', 'swap-obj', 'add-att')
    assert {f'probe {s}/{k}' for s in ('seen', 'unseen') for k in kinds} <= set(m['table']['C2LIP'])
    for s in ('seen', 'unseen'):                                                 # a bag of words cannot tell a swap
        assert m['controls'][f'bag of words ({s})']['swap-att'] == .5 and m['controls'][f'chance ({s})']['swap-obj'] == .5
    assert {'retrieval i2t_R@1', 'retrieval t2i_R@5'} <= set(m['table']['standard']) and set(m['heads']['csp']) == {'standard', 'C2LIP'}
    for name, c in m['checks'].items():
        assert c['verdict'] in ('holds', 'fails') or c['verdict'].startswith('not resolved'), (name, c)
    h = [json.loads(l) for l in (tmp_path/'runs'/'C2LIP'/'seed1'/'history.jsonl').read_text().splitlines()]
    assert {'train_contrastive', 'train_npc', 'train_xac'} <= set(h[0])
    h = [json.loads(l) for l in (tmp_path/'runs'/'C2LIP_wo_XAC'/'seed0'/'history.jsonl').read_text().splitlines()]
    assert 'train_xac' not in h[0] and 'train_npc' in h[0]
    assert (tmp_path/'evals'/'NegCLIP-style'/'seed1'/'metrics.json').is_file()
    p = json.loads((tmp_path/'runs'/'C2LIP_code_labels'/'seed0'/'parameters.json').read_text())
    assert p['multi_positive'] is False and p['npc'] == 1.0

def test_c2lip_experiment_runs_on_a_caption_csv_by_parameter(tmp_path):
    "The real-data path: the training corpus is an open_clip-style CSV; the world still gives the probe and the floor."
    import numpy as np
    from PIL import Image
    (tmp_path/'img').mkdir(); lines = ['filepath\ttitle']
    for i, (c, rgb) in enumerate([('red', (220, 30, 30)), ('blue', (30, 30, 220))] * 4):
        a = np.full((32, 32, 3), 128, np.uint8); a[8:24, 8:24] = rgb; Image.fromarray(a).save(tmp_path/'img'/f'{i}.png')
        lines.append(f'img/{i}.png\tA photo of a {c} square on a table.')
    (tmp_path/'train.csv').write_text('\n'.join(lines) + '\n')
    (tmp_path/'sc').mkdir()                                                     # SugarCrepe's layout over the same images
    for kind in ('swap_att', 'add_obj'):
        (tmp_path/'sc'/f'{kind}.json').write_text(json.dumps({str(i): {'filename': f'{i}.png', 'caption': 'a red square',
                                                                       'negative_caption': 'a blue square'} for i in range(3)}))
    pm.execute_notebook(str(EXP/'05_c2lip.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                        parameters=dict(progress=False, out_dir=str(tmp_path/'out'), corpus=str(tmp_path/'train.csv'),
                                        seeds=[0], head_rows=[], finetune={'epochs': 1, 'batch_size': 4},
                                        sugarcrepe=str(tmp_path/'sc'), coco_images=str(tmp_path/'img')))
    m = json.loads((tmp_path/'out'/'metrics.json').read_text())
    assert m['corpus'] == str(tmp_path/'train.csv') and m['table']['C2LIP']['zs AUC']['n'] == 1
    assert not any(k.startswith('retrieval') for k in m['table']['C2LIP'])      # no held-out scenes for a CSV corpus
    assert {'probe sugarcrepe/swap-att', 'probe sugarcrepe/add-obj'} <= set(m['table']['C2LIP'])
    assert 'blind LM (sugarcrepe)' not in m['controls'] and m['controls']['chance (sugarcrepe)']['add-obj'] == .5
    p = json.loads((tmp_path/'out'/'runs'/'C2LIP'/'seed0'/'parameters.json').read_text())
    assert p['root'] == str(tmp_path/'train.csv') and p['img_key'] == 'filepath'
