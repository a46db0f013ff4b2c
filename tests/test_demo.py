"The demo path end to end (tiny world, micro CLIP) and the zero-shot experiment notebook's bad input."
import json, os, re, subprocess, sys
from pathlib import Path
import papermill as pm, pytest

EXP = Path(__file__).resolve().parents[1]/'nbs'/'experiments'

def test_demo_cli_tour(tmp_path):
    """czsl-demo's tour on the tiny world and the micro CLIP, from an empty cache of its own: world, backbone, the four
    experiments with the tour's rows, their progress lines, the summary and the site, and nothing on stderr."""
    out = tmp_path/'demo'
    r = subprocess.run(['czsl-demo', '--out', str(out), '--size', 'tiny', '--model', 'czsl-vit-micro', '--pretrain-epochs', '1'],
                       capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1', 'CZSL_CACHE': str(tmp_path/'cache')})   # bare, whatever ran before
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stderr == '', r.stderr[-3000:]                                    # no warnings, no progress bars
    # the zero-shot floor, with the demo's backbone
    m = json.loads((out/'zero_shot'/'metrics.json').read_text())
    for k in ('closed_seen_acc', 'closed_unseen_acc', 'chance', 'best_seen', 'best_unseen', 'best_hm', 'AUC', 'attr_acc', 'obj_acc'):
        assert 0 <= m[k] <= 1, (k, m[k])
    assert json.loads((out/'zero_shot'/'parameters.json').read_text())['pretrain']['model_name'] == 'czsl-vit-micro'
    # each method's experiment ran the tour's rows with one seed, through the experiment runner
    cp = json.loads((out/'cluspro'/'metrics.json').read_text())
    assert cp['rows'] == ['CLIP zero-shot', 'CSP', 'ClusPro', 'ClusPro (frozen)']
    assert set(cp['tables']) == {'closed world', 'open world', 'open world, calibrated'}
    assert all(v['n'] == 1 for v in cp['tables']['closed world'].values())
    assert (out/'cluspro'/'runs'/'cluspro'/'seed0'/'history.jsonl').is_file() and not (out/'cluspro'/'runs'/'csp'/'seed1').exists()
    c2 = json.loads((out/'c2lip'/'metrics.json').read_text())
    assert set(c2['table']) == {'pretrained', 'standard', 'C2LIP'} and c2['table']['C2LIP']['zs AUC']['n'] == 1 and c2['heads'] == {}
    assert {'probe seen/swap-att', 'retrieval i2t_R@1'} <= set(c2['table']['standard']) and 'C2LIP >= standard on swap-att (seen)' in c2['checks']
    pz = json.loads((out/'pzsl'/'metrics.json').read_text())
    assert set(pz['table']) == {'uniform q=0.3'} and set(pz['table']['uniform q=0.3']) == {'zero-shot', 'naive', 'CLIP-PZSL'}
    assert 'CLIP-PZSL > naive on test H_cs (uniform q=0.3)' in pz['checks']
    for name in ('zero_shot', 'cluspro', 'c2lip', 'pzsl'):
        assert json.loads((out/name/'run.json').read_text())['state'] == 'done' and (out/name/'executed.ipynb').is_file()
    # the summary
    s = json.loads((out/'demo_summary.json').read_text())
    assert s['preset'] == 'tour' and set(s['experiments']) == {'zero_shot', 'cluspro', 'c2lip', 'pzsl'}
    assert set(s['times']) == {'world_s', 'pretrain_s', 'zero_shot_s', 'cluspro_s', 'c2lip_s', 'pzsl_s', 'docs_s', 'total_s'}
    assert s['experiments']['cluspro']['summary'].startswith('test AUC, closed world: CLIP zero-shot 0.')
    # progress: the stages in order, a line per run start and end with its headline, epoch lines, no papermill bar
    lines = r.stdout.splitlines()
    stages = [l.split(']')[0] + ']' for l in lines if re.match(r'\[\d/7\] ', l)]
    assert stages == [f'[{i}/7]' for i in range(1, 8)], stages
    assert any(re.fullmatch(r' +pretraining czsl-vit-micro, seed 0: train loss \d\.\d{3}  \(\d+ s\)', l) for l in lines)      # built here: bare cache
    assert '      CSP, seed 0: training, 10 epochs' in lines and any(re.match(r' +epoch 1/10  val AUC \d\.\d{3}  \(', l) for l in lines)
    assert any(re.fullmatch(r' +ClusPro \(frozen\), seed 0: test AUC \d\.\d{3}  \(.*\)', l) for l in lines)
    assert any(re.fullmatch(r' +C2LIP, seed 0: probe swap-att \d\.\d{3}, zero-shot AUC \d\.\d{3}', l) for l in lines)
    assert any(re.fullmatch(r' +CLIP-PZSL \(uniform q=0\.3\), seed 0: test H \(calibrated\) \d\.\d{3}  \(.*\)', l) for l in lines)
    assert 'Executing' not in r.stdout and 'arning' not in r.stdout
    # beside the records: the tiny world shares no run with them, and its pixels are not compared with the default's
    assert '      no run here has the parameters of a run of nbs/records/01_cluspro_default.ipynb' in lines
    assert not any('pixels' in l for l in lines)
    # the demo ends with the site: the book, the records and the four executed notebooks, linked from the index
    site = Path(s['docs']); assert site == out/'site'/'index.html' and site.is_file() and f'file://{site}' in lines[-1]
    index = site.read_text()
    assert all(f'runs/demo/{n}.html' in index for n in ('zero_shot', 'cluspro', 'c2lip', 'pzsl')) and 'records/05_c2lip_default.html' in index
    assert len(list(site.parent.rglob('*.html'))) >= 20

def test_zero_shot_notebook_bad_dataset_path(tmp_path):
    "A wrong dataset root fails in the notebook with an error naming the path, and writes no metrics.json."
    with pytest.raises(pm.PapermillExecutionError, match='nowhere'):
        pm.execute_notebook(str(EXP/'00_zero_shot.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                            parameters=dict(dataset=str(tmp_path/'nowhere'), backbone='czsl-vit-micro', out_dir=str(tmp_path)))
    assert not (tmp_path/'metrics.json').exists() and (tmp_path/'out.ipynb').exists()
