"""Trust in shared artefacts, checked across real processes: one backbone per configuration whatever the thread count,
shared caches built once under concurrency, a killed build never taken as done, no code run when opening a run."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest, torch

PRETRAIN = '''
import json, sys, torch
from czsl_workbench.synthetic import world_path
from czsl_workbench.methods.pretrain import pretrained_backbone, pretrain_clip
opts = json.loads(sys.argv[1]); out = opts.pop('out', None)
if 'set_threads' in opts: torch.set_num_threads(opts.pop('set_threads'))
world = world_path(opts.pop('world', 'tiny'), progress=False)
bb = pretrain_clip(world, out, progress=False, device='cpu', **opts) if out else pretrained_backbone(world, progress=False, device='cpu', **opts)
print(json.dumps(dict(sha256=bb.sha256, folder=bb.name, threads_after=torch.get_num_threads())))
'''

def env(cache, **kw): return {**os.environ, 'CZSL_CACHE': str(cache), 'HF_HUB_OFFLINE': '1', **{k: str(v) for k, v in kw.items()}}

def run_py(code, arg, e, timeout=600):
    r = subprocess.run([sys.executable, '-c', code, json.dumps(arg)], capture_output=True, text=True, env=e, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])

MICRO = dict(model_name='czsl-vit-micro', epochs=1, batch_size=16)

def test_the_same_backbone_whatever_the_thread_count(tmp_path, isolated_cache):
    "Fresh processes with OMP_NUM_THREADS 1 and 2 (and torch.set_num_threads(2)) build the same weights; threads=None does not."
    same = [run_py(PRETRAIN, {**MICRO, 'out': str(tmp_path/f'run{n}'), **extra}, env(isolated_cache, OMP_NUM_THREADS=n))
            for n, extra in ((1, {}), (2, {}), (2, {'set_threads': 2}))]
    assert len({r['sha256'] for r in same}) == 1, same
    assert same[2]['threads_after'] == 2                                       # the caller's setting is given back
    free = [run_py(PRETRAIN, {**MICRO, 'threads': None, 'out': str(tmp_path/f'free{n}')}, env(isolated_cache, OMP_NUM_THREADS=n))
            for n in (1, 2)]
    assert free[0]['sha256'] != free[1]['sha256']                              # the control: the cause is real
    rec = json.loads((tmp_path/'run1'/'model'/'build.json').read_text())
    assert (rec['threads'], rec['sha256'], rec['parameters']['threads']) == (1, same[0]['sha256'], 1)

def test_two_processes_on_an_empty_cache_build_one_world_and_one_backbone(tmp_path):
    "Started together on a bare cache, both get the same complete world and backbone; one built them, the other waited."
    cache = tmp_path/'cache'
    ps = [subprocess.Popen([sys.executable, '-c', PRETRAIN, json.dumps({**MICRO, 'epochs': 3})], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env(cache)) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in ps]
    assert all(p.returncode == 0 for p in ps), [o[1][-2000:] for o in outs]
    res = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert res[0] == res[1]
    assert 'waiting for another process to finish building' in outs[0][0] + outs[1][0]
    assert len(list((cache/'worlds').iterdir())) == 1 and len(list((cache/'backbones').iterdir())) == 1
    (bdir,) = (cache/'backbones').iterdir()
    assert (bdir/'metrics.json').is_file() and not list(cache.rglob('*.tmp'))

def test_a_build_killed_half_way_is_resumed_not_taken_as_done(tmp_path, isolated_cache):
    "SIGKILL while training: the folder holds checkpoints but no metrics.json; the next call finishes it, same weights."
    cache, opts = tmp_path/'cache', dict(model_name='czsl-vit-micro', epochs=15, batch_size=8)
    p = subprocess.Popen([sys.executable, '-c', PRETRAIN, json.dumps(opts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(cache))
    t0 = time.time()
    while not list(cache.glob('backbones/*/checkpoints/last.pt')):
        assert p.poll() is None and time.time() - t0 < 300, 'the build ended before it could be killed'
        time.sleep(0.05)
    time.sleep(0.3); p.send_signal(signal.SIGKILL); p.wait()
    (bdir,) = (cache/'backbones').iterdir()
    assert not (bdir/'metrics.json').exists() and not (bdir/'model'/'build.json').exists()
    from czsl_workbench.runs import RunDir
    assert not RunDir(bdir).finished()
    resumed = run_py(PRETRAIN, opts, env(cache))
    fresh = run_py(PRETRAIN, opts, env(tmp_path/'fresh'))                      # the same configuration, never interrupted
    assert resumed['sha256'] == fresh['sha256'] and RunDir(bdir).finished()

FEATURES = '''
import json, sys, time, torch
from czsl_workbench.data import FeatureCache
c = FeatureCache(sys.argv[1] and json.loads(sys.argv[1])['dir'])
def slow(): time.sleep(2); return {'image': torch.arange(6.).view(3, 2) * 2}
t = c.get_or_compute({'backbone': 'b@1', 'what': 'x'}, slow)
print(json.dumps(dict(hits=c.hits, misses=c.misses, values=t['image'].tolist())))
'''

def test_two_processes_compute_a_feature_cache_entry_once(tmp_path, isolated_cache):
    ps = [subprocess.Popen([sys.executable, '-c', FEATURES, json.dumps({'dir': str(tmp_path/'features')})], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env(isolated_cache)) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in ps]
    assert all(p.returncode == 0 for p in ps), [o[1][-2000:] for o in outs]
    res = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert sorted((r['hits'], r['misses']) for r in res) == [(0, 1), (1, 0)] and res[0]['values'] == res[1]['values']
    assert len(list((tmp_path/'features').glob('*.pt'))) == 1 and not list((tmp_path/'features').glob('*.tmp'))

UMAP = '''
import json, sys, time
import czsl_workbench.dashboard as dashboard
calls = []
def fake_fit(X, n_neighbors, min_dist, random_state):
    calls.append(1); time.sleep(2); return X[:, :2]
dashboard._umap_fit = fake_fit
p = dashboard.umap_projection(dashboard.RunSnapshots(sys.argv[1] and json.loads(sys.argv[1])['run']), 0, 'attr')
print(json.dumps(dict(fits=len(calls), from_cache=p['from_cache'], first=p['xy'][0].tolist())))
'''

def test_two_dashboards_compute_a_projection_once(tmp_path, isolated_cache):
    from czsl_workbench.runs import RunDir
    S, K, D = 6, 2, 4
    snap = dict(attrs=['red', 'blue'], objs=['circle'], pairs=[('red', 'circle'), ('blue', 'circle')], train_pairs=[('red', 'circle')],
                root='/data/toy', attr_prototypes=torch.randn(2, K, D), obj_prototypes=torch.randn(1, K, D), attr_counts=torch.ones(2, K),
                obj_counts=torch.ones(1, K), attr_emb=torch.randn(S, D), obj_emb=torch.randn(S, D), attr_idx=torch.tensor([0, 1] * 3),
                obj_idx=torch.zeros(S, dtype=torch.long), pair_idx=torch.tensor([0, 1] * 3), seen=torch.tensor([True, False] * 3),
                attr_assign=torch.zeros(S, dtype=torch.long), obj_assign=torch.zeros(S, dtype=torch.long), split=['train'] * S,
                image=['a.png'] * S, sample_index=torch.arange(S))
    RunDir(tmp_path/'run').save_snapshot(0, snap)
    ps = [subprocess.Popen([sys.executable, '-c', UMAP, json.dumps({'run': str(tmp_path/'run')})], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env(isolated_cache)) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in ps]
    assert all(p.returncode == 0 for p in ps), [o[1][-2000:] for o in outs]
    res = sorted((json.loads(o[0].strip().splitlines()[-1]) for o in outs), key=lambda r: r['fits'])
    assert [(r['fits'], r['from_cache']) for r in res] == [(0, True), (1, False)] and res[0]['first'] == res[1]['first']

def test_opening_a_run_never_runs_its_pickled_code(tmp_path):
    "A checkpoint with a pickled object in it is refused on resume, and the object's code never runs."
    from czsl_workbench.data import make_czsl_fixture
    from czsl_workbench.backbones import create_backbone
    from czsl_workbench.fit import fit_method
    from czsl_workbench.runs import RunDir, RunDirError
    import czsl_workbench.methods
    marker = tmp_path/'pwned'
    root = make_czsl_fixture(tmp_path/'ds', [('red', 'circle'), ('blue', 'heart')], [('red', 'circle')], [('red', 'circle'), ('blue', 'circle')],
                             n_per_pair=2, image_size=32)
    bb = create_backbone('czsl-vit-micro', device='cpu', freeze=True)
    kw = dict(epochs=2, batch_size=2, progress=False, device='cpu')
    fit_method('csp', bb, root, tmp_path/'run', **kw)                          # a run someone hands over, stopped early:
    (tmp_path/'run'/'metrics.json').unlink()                                   # its parameters match, its last.pt is bad
    for d in (tmp_path/'run', tmp_path/'orphan'):
        payload = textwrap.dedent(f'''
            import torch
            class Payload:
                def __reduce__(self): return (open, ({str(marker)!r}, 'w'))
            torch.save({{'model': {{}}, 'epoch': 0, 'history': [], 'opt': Payload()}}, {str(d/'checkpoints'/'last.pt')!r})''')
        (d/'checkpoints').mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, '-c', payload], check=True)
    with pytest.raises(RunDirError, match='holds pickled objects besides tensors'):
        fit_method('csp', bb, root, tmp_path/'run', **kw)
    with pytest.raises(RunDirError, match='holds checkpoints but no parameters.json'):   # a bare checkpoint: never opened
        fit_method('csp', bb, root, tmp_path/'orphan', **kw)
    assert not marker.exists() and (tmp_path/'run'/'checkpoints'/'last.pt').is_file()
