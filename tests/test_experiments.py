"Sweeps of experiment notebooks on real Dask clusters: local processes, an explicit scheduler address, failures, resume."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from czsl_workbench.experiments import (ParameterError, experiment_notebook, plan_sweep, sweep, run_notebook, RunFailed,
                                        is_finished)

ROOT = Path(__file__).resolve().parents[1]
EXP = ROOT/'nbs'/'experiments'
CLI = [sys.executable, '-c', 'from czsl_workbench.experiments import run_cli; run_cli()']

TOY = '''import os, time
if fail: raise ValueError(f'asked to fail with K={K}')
if kill_worker: os.kill(os.getppid(), 9)      # the kernel's parent is the process that runs the notebook
time.sleep(sleep)
metrics = {'AUC': round(0.1 + 0.02 * K, 4), 'pid': os.getpid(), 'omp': os.environ.get('OMP_NUM_THREADS')}'''

@pytest.fixture
def toy(tmp_path):
    return experiment_notebook(tmp_path/'toy.ipynb', dict(K=1, lr=1e-3, fail=False, kill_worker=False, sleep=0.0), TOY, 'Toy')

def read(p): return json.loads(Path(p).read_text())

def cli(*args, cwd=None, timeout=600):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)

def test_local_cluster_sweep_with_a_failure_then_resume(toy, tmp_path):
    out = tmp_path/'sweep'
    r = cli(toy, '--out', out, '--grid', 'K=1,2,3', 'fail=false,true', '-p', 'sleep', '0.3', '--workers', '2')
    assert r.returncode == 1, r.stdout + r.stderr
    assert '6 run(s): 3 done (0 skipped as already finished), 3 failed' in r.stdout
    assert 'FAILED K=2_fail=True_sleep=0.3: ValueError: asked to fail with K=2' in r.stdout
    runs = sorted(p for p in out.iterdir() if p.is_dir())
    assert len(runs) == 6
    done = [p for p in runs if 'fail=False' in p.name]
    assert [read(p/'metrics.json')['AUC'] for p in done] == [0.12, 0.14, 0.16]
    info = [read(p/'run.json') for p in done]
    assert {i['state'] for i in info} == {'done'} and all(i['seconds'] > 0.3 for i in info)
    # the runs executed in worker processes, not in this one, with one OMP thread each (2 cores / 2 workers at most)
    assert all(int(i['worker'].rsplit(':', 1)[1]) != os.getpid() for i in info)
    assert {read(p/'metrics.json')['omp'] for p in done} == {str(max(1, (os.cpu_count() or 1) // 2))}
    failed = out/'K=3_fail=True_sleep=0.3'
    assert read(failed/'run.json')['state'] == 'failed' and not (failed/'metrics.json').exists()
    assert 'ValueError' in (failed/'executed.ipynb').read_text()                     # the error cell is kept
    assert read(out/'sweep.json')['states']['K=1_fail=False_sleep=0.3']['state'] == 'done'
    mtimes = {p: (p/'metrics.json').stat().st_mtime_ns for p in done}
    # the same command again: finished runs skipped, failed ones executed again with the first attempt kept
    r = cli(toy, '--out', out, '--grid', 'K=1,2,3', 'fail=false,true', '-p', 'sleep', '0.3', '--workers', '2')
    assert r.returncode == 1 and '3 skipped as already finished' in r.stdout, r.stdout
    assert {p: (p/'metrics.json').stat().st_mtime_ns for p in done} == mtimes
    assert read(failed/'attempts'/'001'/'run.json')['state'] == 'failed' and read(failed/'run.json')['attempt'] == 2
    # only the finished part of the grid: exit 0; --force runs it again and keeps the old metrics under attempts/
    r = cli(toy, '--out', out, '--grid', 'K=1,2', '-p', 'fail', 'false', '-p', 'sleep', '0.3', '--force', '--workers', '2')
    assert r.returncode == 0, r.stdout + r.stderr
    assert read(out/'K=1_fail=False_sleep=0.3'/'attempts'/'001'/'metrics.json')['AUC'] == 0.12

def test_interrupted_run_is_not_taken_for_finished(toy, tmp_path):
    "A run killed after the notebook wrote metrics.json but before run.json said done is executed again, old files moved aside."
    out = tmp_path/'s'
    (run,) = plan_sweep(toy, {'K': 2})
    d = out/run['name']; d.mkdir(parents=True)
    (d/'metrics.json').write_text('{"AUC": 999}')
    (d/'run.json').write_text(json.dumps(dict(state='running', parameters=run['parameters'])))
    assert not is_finished(d, run['parameters'])
    t = sweep(toy, out, {'K': 2}, workers=1, progress=False)
    assert t.state.tolist() == ['done'] and not t.skipped[0]
    assert read(d/'metrics.json')['AUC'] == 0.14 and read(d/'attempts'/'001'/'metrics.json')['AUC'] == 999

def test_killed_worker_fails_only_its_run(toy, tmp_path):
    t = sweep(toy, tmp_path/'k', grid={'kill_worker': [False, True], 'K': [1, 2]}, workers=2, progress=False)
    st = dict(zip(t.name, t.state))
    assert st == {'K=1_kill_worker=False': 'done', 'K=2_kill_worker=False': 'done', 'K=1_kill_worker=True': 'failed',
                  'K=2_kill_worker=True': 'failed'}, t
    err = read(tmp_path/'k'/'K=1_kill_worker=True'/'run.json')['error']
    assert 'worker running it died' in err or 'kernel died' in err, err

def test_bad_parameters_fail_before_anything_runs(toy, tmp_path):
    out = tmp_path/'never'
    cases = [(['-p', 'k', '3'], "toy.ipynb has no parameter 'k' (did you mean 'K'?)"),
             (['-p', 'K', 'three'], "parameter 'K' of toy.ipynb takes an int (default 1); got 'three'"),
             (['--grid', 'lr=0.1,fast'], "parameter 'lr' of toy.ipynb takes a float (default 0.001); got 'fast'"),
             (['-p', 'out_dir', '/tmp'], 'out_dir is set by the runner')]
    for args, msg in cases:
        r = cli(toy, '--out', out, *args)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
    r = cli(tmp_path/'missing.ipynb', '--out', out)
    assert r.returncode != 0 and 'missing.ipynb does not exist' in r.stderr
    assert not out.exists()

def _no_out_dir(tmp_path):
    "A user's own notebook: no out_dir parameter, it writes metrics.json where it runs."
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('a = 1'),
                                         nbformat.v4.new_code_cell("import json, os\njson.dump({'a': a, 'cwd': os.getcwd()}, open('metrics.json', 'w'))")])
    nb.cells[0].metadata['tags'] = ['parameters']; nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    p = tmp_path/'no_out.ipynb'; nbformat.write(nb, p); return p

def test_a_notebook_without_out_dir_runs_in_its_run_folder(tmp_path):
    nb = _no_out_dir(tmp_path)
    m = run_notebook(nb, tmp_path/'run', {'a': 3}, progress=False)
    assert m == {'a': 3, 'cwd': str((tmp_path/'run').resolve())} and read(tmp_path/'run'/'run.json')['state'] == 'done'
    with pytest.raises(ParameterError, match='out_dir is set by the runner'): plan_sweep(nb, {'out_dir': '/tmp'})

def test_run_notebook_raises_with_the_executed_notebook(toy, tmp_path):
    assert run_notebook(toy, tmp_path/'a', {'K': 5}, progress=False)['AUC'] == 0.2
    with pytest.raises(RunFailed, match=r'ValueError: asked to fail with K=1.*executed.ipynb'):
        run_notebook(toy, tmp_path/'b', {'fail': True}, progress=False)

@pytest.fixture
def dask_cluster(tmp_path):
    "A scheduler and two single-thread workers started as processes; stopped by their PIDs."
    sf = tmp_path/'scheduler.json'
    common = dict(cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sched = subprocess.Popen([sys.executable, '-m', 'distributed.cli.dask_scheduler', '--host', '127.0.0.1', '--port', '0',
                              '--no-dashboard', '--scheduler-file', str(sf)], **common)
    procs = [sched]
    try:
        end = time.time() + 60
        while not sf.exists() and time.time() < end: time.sleep(0.2)
        assert sf.exists(), 'the scheduler did not start'
        time.sleep(0.3)
        procs.append(subprocess.Popen([sys.executable, '-m', 'distributed.cli.dask_worker', '--scheduler-file', str(sf),
                                       '--nworkers', '2', '--nthreads', '1', '--no-dashboard'], **common))
        address = read(sf)['address']
        from distributed import Client
        with Client(address, timeout='30s') as c: c.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            try: os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError: pass
        for p in reversed(procs):
            try: p.wait(20)
            except subprocess.TimeoutExpired: os.killpg(p.pid, signal.SIGKILL); p.wait(10)
        assert all(p.poll() is not None for p in procs)

def test_sweep_on_an_explicit_scheduler(toy, tmp_path, dask_cluster):
    r = cli(toy, '--out', tmp_path/'remote', '--grid', 'K=1,2,3,4', '--scheduler', dask_cluster)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '4 run(s): 4 done' in r.stdout
    info = [read(p/'run.json') for p in sorted((tmp_path/'remote').glob('K=*'))]
    assert [i['state'] for i in info] == ['done'] * 4
    assert len({i['worker'] for i in info}) >= 1 and all(int(i['worker'].rsplit(':', 1)[1]) != os.getpid() for i in info)

def test_unreachable_scheduler_is_named(toy, tmp_path):
    r = cli(toy, '--out', tmp_path/'x', '--scheduler', 'tcp://127.0.0.1:9', timeout=120)
    assert r.returncode != 0 and 'cannot reach the Dask scheduler at tcp://127.0.0.1:9' in r.stderr, r.stderr

def test_sweep_of_the_zero_shot_experiment(tmp_path):
    "The real experiment notebook, tiny parameters: 4 runs on a local cluster, metrics beside each executed notebook."
    from czsl_workbench.synthetic import world_path
    from czsl_workbench.methods.pretrain import pretrained_backbone
    pretrained_backbone(world_path('tiny', progress=False), progress=False, model_name='czsl-vit-micro', epochs=1)   # cached for the workers
    t = sweep(EXP/'00_zero_shot.ipynb', tmp_path/'zs', grid={'template': ['a photo of {attr} {obj}', '{attr} {obj}'],
                                                             'open_world': [False, True]}, workers=2, progress=False)
    assert t.state.tolist() == ['done'] * 4, t.error.tolist()
    m = {n: read(tmp_path/'zs'/n/'metrics.json') for n in t.name}
    assert set(m) == {'template=a-photo-of-attr-obj_open_world=False', 'template=a-photo-of-attr-obj_open_world=True',
                      'template=attr-obj_open_world=False', 'template=attr-obj_open_world=True'}
    for n, v in m.items():
        assert v['open_world'] == n.endswith('True') and 0 <= v['AUC'] <= 1
        assert (tmp_path/'zs'/n/'executed.ipynb').is_file() and read(tmp_path/'zs'/n/'parameters.json')['world_size'] == 'tiny'
    # open world scores every attribute-object pair: more candidates, never a higher best unseen accuracy
    for tpl in ('a-photo-of-attr-obj', 'attr-obj'):
        assert m[f'template={tpl}_open_world=True']['best_unseen'] <= m[f'template={tpl}_open_world=False']['best_unseen'] + 1e-9

def test_ctrl_c_marks_unfinished_runs_failed(toy, tmp_path):
    "SIGINT to czsl-run: exit 130, the unfinished runs marked failed as interrupted (no metrics.json), sweep.json says so."
    out = tmp_path/'int'
    args = [toy, '--out', out, '--grid', 'K=1,2', '-p', 'sleep', '60', '--workers', '2']
    # a terminal delivers Ctrl-C as SIGINT; a test run from a background job inherits SIGINT ignored, so restore Python's handler
    cli_int = [sys.executable, '-c', 'import signal; signal.signal(signal.SIGINT, signal.default_int_handler); '
                                     'from czsl_workbench.experiments import run_cli; run_cli()']
    p = subprocess.Popen([*cli_int, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + 120
    while time.time() < end and not all((out/f'K={k}_sleep=60.0'/'run.json').is_file() for k in (1, 2)): time.sleep(0.3)
    time.sleep(3)                                                                         # both kernels are executing
    p.send_signal(signal.SIGINT); _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and 'interrupted: 2 run(s) did not finish' in err, err[-2000:]
    for k in (1, 2):
        d = out/f'K={k}_sleep=60.0'
        info = read(d/'run.json')
        assert info['state'] == 'failed' and info['error'].startswith('interrupted') and not (d/'metrics.json').exists(), info
        assert not is_finished(d, info['parameters'])                                     # the same command runs it again
    assert 'interrupted' in read(out/'sweep.json')

def test_bad_notebooks_and_options_fail_before_anything_runs(toy, tmp_path):
    import nbformat
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('a = 1')])
    nbformat.write(nb, tmp_path/'untagged.ipynb')
    with pytest.raises(ParameterError, match="untagged.ipynb has no cell tagged 'parameters'"): plan_sweep(tmp_path/'untagged.ipynb')
    nb.cells[0].source, nb.cells[0].metadata['tags'] = 'a = (', ['parameters']
    nbformat.write(nb, tmp_path/'syntax.ipynb')
    with pytest.raises(ParameterError, match='parameters cell of .*syntax.ipynb is not valid Python'): plan_sweep(tmp_path/'syntax.ipynb')
    (tmp_path/'corrupt.ipynb').write_text('{not json')
    with pytest.raises(ParameterError, match='corrupt.ipynb is not a readable notebook'): plan_sweep(tmp_path/'corrupt.ipynb')
    with pytest.raises(ParameterError, match="grid values of 'K' must be a non-empty list"): plan_sweep(toy, grid={'K': 3})
    (tmp_path/'afile').write_text('x')
    with pytest.raises(ParameterError, match='is a file, not a folder'): sweep(toy, tmp_path/'afile', progress=False)
    with pytest.raises(ParameterError, match='workers must be at least 1; got 0'): sweep(toy, tmp_path/'w', workers=0, progress=False)
    assert not (tmp_path/'w').exists()
