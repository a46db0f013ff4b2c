"""The studies of the embedded world, on tiny parameters: the headroom experiment (floor, ceiling, CSP with paired
verdicts), the prototype study (a sweep of the ClusPro experiment read back, with the most and least faithful runs),
the C2LIP experiment (every backbone-training row read by the probe) and the CLIP-PZSL experiment (every row per
candidate setting, on the world and on a GBU split)."""
import json, math, re
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

def test_c2lip_experiment_names_bad_rows(tmp_path):
    import pytest
    for params, msg in ((dict(rows=['standard', 'CLIP++']), "unknown rows ['CLIP++']"),
                        (dict(rows=['pretrained', 'standard'], head_rows=['C2LIP']), "head_rows ['C2LIP'] are not in rows")):
        with pytest.raises(pm.PapermillExecutionError, match=re.escape(msg)):
            pm.execute_notebook(str(EXP/'05_c2lip.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                                parameters=dict(progress=False, out_dir=str(tmp_path), **params))
        assert not (tmp_path/'metrics.json').exists()

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

def test_pzsl_experiment_runs_every_row_per_setting_and_checks_the_expectations(tmp_path):
    import torch
    from czsl_workbench.runs import RunDir
    pm.execute_notebook(str(EXP/'06_pzsl.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                        parameters=dict(progress=False, out_dir=str(tmp_path), qs='[0.1, 0.3]', ablation_qs='[0.3]'))   # as plain papermill -p passes them
    m = json.loads((tmp_path/'metrics.json').read_text())
    assert set(m['table']) == {f'{k} q={q}' for k in ('uniform', 'confusable') for q in (0.1, 0.3)}
    assert set(m['table']['uniform q=0.1']) == {'zero-shot', 'supervised', 'naive', 'CLIP-PZSL'}     # ablations at q=.3 only
    assert set(m['table']['confusable q=0.3']) == {'zero-shot', 'supervised', 'naive', 'CLIP-PZSL', 'w/o mining', 'soft attention', 'PiCO'}
    zs = m['table']['uniform q=0.1']['zero-shot']
    assert zs['test ZSL']['n'] == 2 and zs['test ZSL']['std'] == 0.0                 # nothing trained: the seed does not matter
    assert m['table']['confusable q=0.3']['zero-shot'] == zs                          # one run serves every setting
    assert m['table']['uniform q=0.3']['supervised']['disamb_last'] == {**m['table']['uniform q=0.3']['supervised']['disamb_last'], 'mean': 1.0, 'std': 0.0}
    runs = tmp_path/'runs'
    for s in (0, 1):                                                                  # naive: uniform weights that never move,
        st = torch.load(RunDir(runs/'uniform'/'q0.1'/'naive'/f'seed{s}').checkpoint_path('last'), weights_only=False)['model']
        mm = json.loads((runs/'uniform'/'q0.1'/'naive'/f'seed{s}'/'metrics.json').read_text())   # ties split: E[1/|S|]
        assert math.isclose(mm['disamb_last'], float((1 / st['cands'].sum(1).float()).mean()), abs_tol=1e-6)
        pz = json.loads((runs/'uniform'/'q0.1'/'CLIP-PZSL'/f'seed{s}'/'metrics.json').read_text())
        assert pz['candidates']['seed'] == mm['candidates']['seed'] and pz['candidates']['mean'] == mm['candidates']['mean']   # paired sets
    assert all(len(c) == 3 and all(0 <= x <= 1 for x in c) for cs in m['disambiguation'].values() for c in cs.values())  # start + 2 epochs
    assert set(m['checks']) == {f'{t} ({k} q={q})' for t in ('CLIP-PZSL > naive on test H_cs', 'disambiguation rises')
                                for k in ('uniform', 'confusable') for q in (0.1, 0.3)}
    for name, c in m['checks'].items():
        assert c['verdict'] in ('holds', 'fails') or c['verdict'].startswith('not resolved'), (name, c)
    d = m['comparisons']['CLIP-PZSL - PiCO (uniform q=0.3, test H_cs)']
    t = m['table']['uniform q=0.3']
    assert d['n'] == 2 and math.isclose(d['mean'], t['CLIP-PZSL']['test H_cs']['mean'] - t['PiCO']['test H_cs']['mean'], abs_tol=1e-9)
    assert 'CLIP-PZSL - PiCO (uniform q=0.1, test H_cs)' not in m['comparisons']
    assert m['candidates']['uniform q=0.3']['mean'] > m['candidates']['uniform q=0.1']['mean'] > 1
    assert {'train_disamb', 'train_entropy', 'val_H_cs', 'val_ZSL'} <= set(RunDir(runs/'uniform'/'q0.3'/'CLIP-PZSL'/'seed1').read_history()[0])
    p = json.loads((runs/'confusable'/'q0.3'/'soft_attention'/'seed0'/'parameters.json').read_text())
    assert (p['assign'], p['candidates'], p['q'], p['row'], p['setting']) == ('soft', 'confusable', 0.3, 'soft attention', 'confusable q=0.3')
    assert json.loads((runs/'supervised'/'seed1'/'parameters.json').read_text())['q'] == 0.0

def test_pzsl_experiment_names_bad_parameters(tmp_path):
    import pytest
    for params, msg in ((dict(rows=['CLIP-PZSL', 'oracle']), "unknown rows ['oracle']"),
                        (dict(rows=['naive']), 'keep it in rows'),
                        (dict(dataset='gbu', backbone='czsl-vit-micro'), "needs split_dir"),
                        (dict(dataset='cub'), "unknown dataset 'cub'"),
                        (dict(dataset='gbu', split_dir='CUB', image_root='images'), "backbone='pretrained-synthetic' needs dataset='synthetic'"),
                        (dict(kinds=['uniform', 'nearest']), "unknown candidate kinds ['nearest']"),
                        (dict(seeds='[0, 1'), "parameter 'seeds' of 06_pzsl.ipynb takes a list (default [0, 1]); got '[0, 1'")):
        with pytest.raises(pm.PapermillExecutionError, match=re.escape(msg)):
            pm.execute_notebook(str(EXP/'06_pzsl.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                                parameters=dict(progress=False, out_dir=str(tmp_path), **params))
        assert not (tmp_path/'metrics.json').exists()

def write_gbu_fixture(d, image_root, n_per_class=4):
    "A GBU split of 6 classes in xlsa17's layout (3 train, 1 val, 2 unseen), with coloured images under `image_root`."
    import numpy as np
    from PIL import Image
    from scipy.io import savemat
    names = ['001.Red_Bird', '002.Green_Bird', '003.Blue_Bird', '004.Yellow_Bird', '005.Purple_Bird', '006.Cyan_Bird']
    rgb = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (220, 220, 30), (160, 30, 200), (30, 200, 200)]
    rng = np.random.default_rng(0); files, labels = [], []
    for c, (n, col) in enumerate(zip(names, rgb)):
        for i in range(n_per_class):
            rel = Path('images')/n/f'{n}_{i}.png'; (image_root/rel).parent.mkdir(parents=True, exist_ok=True)
            a = np.clip(np.array(col)[None, None] + rng.normal(0, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(image_root/rel); files.append(f'/BS/xlsa17/work/CUB_200_2011/{rel.as_posix()}'); labels.append(c + 1)
    loc = lambda cs, pick: np.array([[i + 1] for i, l in enumerate(labels) if l in cs and pick(i % n_per_class)])
    d.mkdir(parents=True, exist_ok=True)
    savemat(d/'res101.mat', dict(features=rng.normal(size=(2048, len(labels))), labels=np.array(labels, dtype=np.float64)[:, None],
                                 image_files=np.array([[f] for f in files], dtype=object)))
    savemat(d/'att_splits.mat', dict(att=rng.random((5, 6)), allclasses_names=np.array([[n] for n in names], dtype=object),
                                     trainval_loc=loc({1, 2, 3, 4}, lambda i: i > 0), test_seen_loc=loc({1, 2, 3, 4}, lambda i: i == 0),
                                     test_unseen_loc=loc({5, 6}, lambda i: True), train_loc=loc({1, 2, 3}, lambda i: i > 0),
                                     val_loc=loc({4}, lambda i: i > 0)))

def test_pzsl_experiment_runs_on_a_gbu_split_by_parameter(tmp_path):
    "The real-data path: a GBU split read with its authors' image paths mapped onto an image root, an open_clip backbone."
    write_gbu_fixture(tmp_path/'CUB', tmp_path/'CUB_200_2011')
    pm.execute_notebook(str(EXP/'06_pzsl.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                        parameters=dict(progress=False, out_dir=str(tmp_path/'out'), dataset='gbu', split_dir=str(tmp_path/'CUB'),
                                        image_root=str(tmp_path/'CUB_200_2011'), backbone='czsl-vit-micro', seeds=[0], qs=[0.5],
                                        train={'epochs': 1}, rows=['zero-shot', 'naive', 'CLIP-PZSL']))
    m = json.loads((tmp_path/'out'/'metrics.json').read_text())
    assert (m['problem']['source'], m['problem']['classes'], m['problem']['seen']) == ('gbu', 6, 3)
    assert set(m['table']) == {'uniform q=0.5', 'confusable q=0.5'} and set(m['table']['uniform q=0.5']) == {'zero-shot', 'naive', 'CLIP-PZSL'}
    assert m['table']['uniform q=0.5']['CLIP-PZSL']['test H_cs']['n'] == 1 and m['checks']['disambiguation rises (uniform q=0.5)']['verdict'] == 'not resolved at 1 seed'
    p = json.loads((tmp_path/'out'/'runs'/'confusable'/'q0.5'/'CLIP-PZSL'/'seed0'/'parameters.json').read_text())
    assert p['root'] == str(tmp_path/'CUB') and p['candidates'] == 'confusable'
