"The demo path end to end (tiny world, micro CLIP) and the zero-shot experiment notebook's bad input."
import json, os, subprocess, sys
from pathlib import Path
import papermill as pm, pytest

EXP = Path(__file__).resolve().parents[1]/'nbs'/'experiments'

def test_demo_cli_smoke(tmp_path):
    "czsl-demo runs world -> pretraining -> executed experiment notebook -> metrics, offline."
    r = subprocess.run(['czsl-demo', '--out', str(tmp_path/'demo'), '--size', 'tiny', '--model', 'czsl-vit-micro',
                        '--pretrain-epochs', '1', '--seeds', '0', '--epochs', '1'], capture_output=True, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'}, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path/'demo'/'zero_shot'
    m = json.loads((run/'metrics.json').read_text())
    for k in ('closed_seen_acc', 'closed_unseen_acc', 'chance', 'best_seen', 'best_unseen', 'best_hm', 'AUC', 'attr_acc', 'obj_acc'):
        assert 0 <= m[k] <= 1, (k, m[k])
    assert json.loads((run/'parameters.json').read_text())['pretrain']['model_name'] == 'czsl-vit-micro'
    s = json.loads((tmp_path/'demo'/'demo_summary.json').read_text())
    assert set(s['times']) == {'world_s', 'pretrain_s', 'experiment_s', 'cluspro_s', 'docs_s'} and (run/'executed.ipynb').exists()
    assert 'executed notebooks:' in r.stdout and 'zero-shot on the test split' in r.stdout
    assert json.loads((run/'run.json').read_text())['state'] == 'done'                  # run by the experiment runner
    # the demo ends with the documentation site: the book and both executed experiment notebooks, linked from the index
    site = Path(s['docs']); assert site == tmp_path/'demo'/'site'/'index.html' and site.is_file()
    assert f'file://{site}' in r.stdout
    index = site.read_text()
    assert 'zero_shot' in index and 'cluspro' in index and '01_cluspro' in index
    assert len(list(site.parent.rglob('*.html'))) >= 20
    cp = json.loads((tmp_path/'demo'/'cluspro'/'metrics.json').read_text())
    assert cp['rows'] == ['CLIP zero-shot', 'CSP', 'ClusPro', 'ClusPro w/o PCL', 'ClusPro w/o PDL',
                                                  'ClusPro K=1', 'ClusPro w/o proto. losses']
    assert set(cp['tables']['closed world']) == set(cp['rows']) and set(cp['tables']) == {'closed world', 'open world'} and 'ClusPro' in cp['prototype_quality']
    assert 'ClusPro w/o proto. losses' in r.stdout and any(v in r.stdout for v in ('HOLDS', 'FAILS', 'NOT RESOLVED AT 1 SEED'))
    assert 'paired differences of test AUC' in r.stdout and all('comparisons' in cp and 'verdict' in e for e in cp['expectations'].values())

def test_zero_shot_notebook_bad_dataset_path(tmp_path):
    "A wrong dataset root fails in the notebook with an error naming the path, and writes no metrics.json."
    with pytest.raises(pm.PapermillExecutionError, match='nowhere'):
        pm.execute_notebook(str(EXP/'00_zero_shot.ipynb'), str(tmp_path/'out.ipynb'), progress_bar=False,
                            parameters=dict(dataset=str(tmp_path/'nowhere'), backbone='czsl-vit-micro', out_dir=str(tmp_path)))
    assert not (tmp_path/'metrics.json').exists() and (tmp_path/'out.ipynb').exists()
