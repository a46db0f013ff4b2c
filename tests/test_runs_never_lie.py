"""Issue 25, replayed: every way the bad-input sweep made the run store lie, on the tiny world with a random micro CLIP.
Each case refuses cleanly (one line, exit 2) or behaves as the rules say, and no finished run's files change."""
import hashlib, json, shutil, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from czsl_workbench.core import TRACEBACK_ENV, call_command, lock_held
from czsl_workbench.synthetic import world_path
from czsl_workbench.runs import RunDir, RUN_LOCK
from czsl_workbench.fit import fit_method
from czsl_workbench.train import Callback, NonFiniteLossError
from czsl_workbench.backbones import create_backbone
from czsl_workbench.experiments import experiment_notebook, sweep, is_finished, plan_sweep
from czsl_workbench.results import collect_results, results_cli
from czsl_workbench.methods import fit_cli

FIT = [sys.executable, '-c', 'from czsl_workbench.methods import fit_cli; fit_cli()']

@pytest.fixture(scope='module')
def world(): return world_path('tiny', progress=False)

@pytest.fixture(autouse=True)
def no_tracebacks(monkeypatch): monkeypatch.delenv(TRACEBACK_ENV, raising=False)

@pytest.fixture(scope='module')
def finished(world, tmp_path_factory):
    "A finished 2-epoch ClusPro run folder (the one every case below is tried on, copied)."
    out = tmp_path_factory.mktemp('fin')/'run'
    code, stdout, err = call_command(fit_cli, fit_args(world, out, '-o', 'epochs', '2'))
    assert code == 0 and 'cluspro finished' in stdout, err
    return out

def fit_args(world, out, *more, method='cluspro'):
    return [method, '--data', str(world), '--out', str(out), '--backbone', 'czsl-vit-micro', '--no-progress',
            *map(str, more)]

def files(d) -> dict:
    "{relative path: md5} of every file of a run (the empty lock file aside)."
    return {str(f.relative_to(d)): hashlib.md5(f.read_bytes()).hexdigest() for f in sorted(Path(d).rglob('*'))
            if f.is_file() and f.name != RUN_LOCK}

def one_line_error(code, out, err) -> str:
    assert code == 2 and out == '' and err.count('\n') == 1 and err.startswith('czsl-fit: error: '), (code, out, err)
    return err[len('czsl-fit: error: '):-1]

def copy(src, dst): shutil.copytree(src, dst); return dst

def test_case1_other_parameters_into_a_finished_folder_are_refused(world, finished, tmp_path):
    run = copy(finished, tmp_path/'run'); before = files(run)
    msg = one_line_error(*call_command(fit_cli, fit_args(world, run, '-o', 'epochs', '2', '-o', 'lr', '0.5',
                                                         '--seed', '7')))
    assert (f'{run} holds a cluspro run made with other parameters '
            '(seed: 0 there, 7 asked; lr: 0.001 there, 0.5 asked)') in msg
    assert '--restart' in msg and files(run) == before
    code, out, _ = call_command(fit_cli, fit_args(world, run, '-o', 'epochs', '2'))   # the same run: reused, untouched
    assert code == 0 and 'already finished with these parameters' in out and files(run) == before

def test_case1_an_experiment_re_executed_with_another_lr_cannot_reuse_the_old_run(world, tmp_path):
    "The experiments name run folders by row and seed and call fit_method: the folder's binding refuses the reuse."
    bb = create_backbone('czsl-vit-micro', device='cpu', freeze=True)
    folder = tmp_path/'out'/'runs'/'csp'/'seed0'
    first = fit_method('csp', bb, world, folder, epochs=1, lr=1e-3, progress=False)
    before = files(folder)
    with pytest.raises(ValueError, match=r'lr: 0.001 there, 0.5 asked'):
        fit_method('csp', bb, world, folder, epochs=1, lr=0.5, progress=False)
    assert files(folder) == before
    assert fit_method('csp', bb, world, folder, epochs=1, lr=1e-3, progress=False) == first

def test_case2_another_method_into_a_finished_folder_names_the_method(world, finished, tmp_path):
    run = copy(finished, tmp_path/'run'); before = files(run)
    msg = one_line_error(*call_command(fit_cli, fit_args(world, run, method='csp')))
    assert "holds a cluspro run made with other parameters (method: 'cluspro' there, 'csp' asked (and " in msg
    assert files(run) == before and json.loads((run/'parameters.json').read_text())['method'] == 'cluspro'

def test_restart_moves_the_old_run_aside_whole(world, finished, tmp_path):
    run = copy(finished, tmp_path/'run'); before = files(run)
    code, out, err = call_command(fit_cli, fit_args(world, run, '-o', 'epochs', '1', '--seed', '7', '--restart'))
    assert code == 0 and f'moved to {run}/attempts/001' in out, err
    assert files(run/'attempts'/'001') == before
    p, m = RunDir(run).read_parameters(), RunDir(run).read_metrics()
    assert (p['seed'], p['epochs'], m['seed'], m['epochs_run']) == (7, 1, 7, 1)
    assert len(RunDir(run).read_history()) == 1                       # the new run's history, not the old one's

def _start(world, out, *opts):
    return subprocess.Popen([*FIT, *fit_args(world, out, *opts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)

def _wait_for_lock(run, proc, timeout=120):
    t = time.time()
    while not lock_held(run/RUN_LOCK):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < timeout; time.sleep(0.05)

def test_case3_two_writers_one_folder(world, tmp_path):
    "The second writer waits for the first and then applies the rule: another lr is refused, the same run is reused."
    run = tmp_path/'run'
    a = _start(world, run, '-o', 'epochs', '6', '-o', 'lr', '1e-3')
    _wait_for_lock(run, a)
    code, out, err = call_command(fit_cli, fit_args(world, run, '-o', 'epochs', '6', '-o', 'lr', '1e-3', '--no-wait'))
    assert code == 2 and 'another process holds' in err, (out, err)
    b = _start(world, run, '-o', 'epochs', '6', '-o', 'lr', '1e-2')
    c = _start(world, run, '-o', 'epochs', '6', '-o', 'lr', '1e-3')
    (ao, ae), (bo, be), (co, ce) = a.communicate(timeout=300), b.communicate(timeout=300), c.communicate(timeout=300)
    assert a.returncode == 0 and 'cluspro finished' in ao, ae
    assert b.returncode == 2 and 'lr: 0.001 there, 0.01 asked' in be, (bo, be)
    assert c.returncode == 0 and 'already finished with these parameters' in co, (co, ce)
    p, m, h = RunDir(run).read_parameters(), RunDir(run).read_metrics(), RunDir(run).read_history()
    assert (p['lr'], p['epochs'], m['method'], m['epochs_run'], len(h)) == (1e-3, 6, 'cluspro', len(h), m['epochs_run'])

@pytest.mark.parametrize('name,value,msg', [
    ('epochs', '-3', 'option epochs of cluspro must be >=1; got -3'),
    ('epochs', 'abc', "option epochs of cluspro takes an int; got 'abc'"),
    ('lr', 'abc', "option lr of cluspro takes a finite number; got 'abc'"),
    ('epochs', '1.5', "option epochs of cluspro takes an int; got '1.5'"),
    ('K', '0', 'option K of cluspro must be >=1; got 0'),
    ('lr', 'nan', 'option lr of cluspro takes a finite number; got nan'),
    ('batch_size', '0', 'option batch_size of cluspro must be >=1; got 0')])
def test_case4_option_values_are_checked_before_anything_runs(world, tmp_path, name, value, msg):
    out = tmp_path/'run'
    assert one_line_error(*call_command(fit_cli, fit_args(world, out, '-o', name, value))) == msg
    assert not out.exists()

def test_case4_a_diverging_lr_stops_with_the_advice(world, tmp_path):
    out = tmp_path/'run'
    msg = one_line_error(*call_command(fit_cli, fit_args(world, out, '-o', 'epochs', '2', '-o', 'lr', '1e12')))
    assert msg.startswith(f'training diverged in {out}: ') and 'no epoch had finished, so no checkpoint was kept' in msg
    assert 'lower the learning rate (lr 1e+12)' in msg and not (out/'metrics.json').exists()

class Poison(Callback):
    "Make the model's weights NaN once epoch `at` begins (a divergence in the middle of a run)."
    def __init__(self, at): self.at = at
    def before_epoch(self):
        if self.learn.training and self.learn.epoch == self.at:
            with torch.no_grad():
                for p in self.learn.model.parameters():
                    if p.requires_grad: p.fill_(float('nan'))

def test_non_finite_training_stops_at_once_and_keeps_the_last_good_checkpoint(world, tmp_path):
    bb = create_backbone('czsl-vit-micro', device='cpu', freeze=True)
    with pytest.raises(NonFiniteLossError) as e:
        fit_method('csp', bb, world, tmp_path/'run', epochs=3, progress=False, cbs=[Poison(1)])
    msg = str(e.value)
    assert 'non-finite training loss at epoch 1, batch 0' in msg and 'the last good epoch is kept in' in msg, msg
    ck = RunDir(tmp_path/'run').load_checkpoint('last')
    assert ck['epoch'] == 0 and all(torch.isfinite(v).all() for v in ck['model'].values() if v.is_floating_point())

def test_case5_czsl_run_reruns_a_truncated_metrics_json_and_keeps_it(tmp_path):
    nb = experiment_notebook(tmp_path/'toy.ipynb', dict(K=1), "metrics = {'AUC': 0.1 * K}", 'Toy')
    out = tmp_path/'sweep'
    sweep(nb, out, {'K': 2}, workers=1, progress=False)
    (run,) = plan_sweep(nb, {'K': 2}); d = out/run['name']
    (d/'metrics.json').write_text('{"AUC": 0.2')                            # a copy cut short
    assert not is_finished(d, run['parameters'])
    t = sweep(nb, out, {'K': 2}, workers=1, progress=False)
    assert t.state.tolist() == ['done'] and not t.skipped[0]
    assert json.loads((d/'metrics.json').read_text()) == {'AUC': 0.2}
    assert (d/'attempts'/'001'/'metrics.json').read_text() == '{"AUC": 0.2'   # the cut file is kept, not overwritten

class Kill(Callback):
    "Stop the process's run after epoch `at` was saved (as a Ctrl-C or a killed job would)."
    order = 50
    def __init__(self, at): self.at = at
    def after_train_valid(self):
        if self.learn.epoch == self.at: raise KeyboardInterrupt

def test_case5_czsl_results_lists_an_interrupted_run(world, tmp_path):
    bb = create_backbone('czsl-vit-micro', device='cpu', freeze=True)
    fit_method('csp', bb, world, tmp_path/'runs'/'done', epochs=1, progress=False)
    with pytest.raises(KeyboardInterrupt):
        fit_method('csp', bb, world, tmp_path/'runs'/'stopped', epochs=3, progress=False, cbs=[Kill(1)])
    code, out, err = call_command(results_cli, [str(tmp_path/'runs')])
    assert code == 0, err
    assert '2 runs: 1 done, 1 interrupted' in out
    assert ('interrupted: stopped: no metrics.json: 2 epoch(s) done, checkpoints/last.pt kept; '
            'the same command resumes it') in out
    t = collect_results(tmp_path/'runs').set_index('run')
    assert t.state.to_dict() == {'done': 'done', 'stopped': 'interrupted'}
    m = fit_method('csp', bb, world, tmp_path/'runs'/'stopped', epochs=3, progress=False)   # the same call resumes it
    assert m['epochs_run'] == 3 and collect_results(tmp_path/'runs').state.tolist() == ['done', 'done']

def test_case1_the_experiment_notebook_re_executed_with_another_lr(world, tmp_path):
    "01_cluspro re-executed into the same out_dir with another lr fails on the first row it would have reused."
    from czsl_workbench.experiments import run_notebook, RunFailed, experiments_dir
    nb = experiments_dir()/'01_cluspro.ipynb'
    p = dict(dataset=str(world), backbone='czsl-vit-micro', seeds=[0], epochs=1, methods=['CSP'], open_world=False,
             progress=False)
    first = run_notebook(nb, tmp_path/'exp', p, progress=False)
    run = tmp_path/'exp'/'runs'/'csp'/'seed0'; before = files(run)
    with pytest.raises(RunFailed, match=r'holds a csp run made with other parameters \(lr: 0.001 there, 0.5 asked\)'):
        run_notebook(nb, tmp_path/'exp', {**p, 'lr': 0.5}, progress=False)
    assert files(run) == before
    assert run_notebook(nb, tmp_path/'exp', p, progress=False)['tables'] == first['tables']   # the same: reused
