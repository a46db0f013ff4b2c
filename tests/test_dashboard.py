"""The prototype dashboard headless (no browser): every control changes the figures as it should, UMAP runs only when
it must, bad run directories fail with the path, failures stay in the widget; the exploration notebook runs on a run."""
import shutil
from pathlib import Path
import json
import numpy as np, papermill as pm, pytest, torch
from plotly.callbacks import Points
import czsl_workbench.dashboard as dashboard
from czsl_workbench.dashboard import (PrototypeDashboard, RunSnapshots, RunDirError, umap_projection, primitive_samples,
                                      prototype_similarity, PALETTE)
from czsl_workbench.runs import RunDir, load_snapshot

def list_snapshots(run): return list(RunDir(run).snapshots().values())

EXP = Path(__file__).resolve().parents[1]/'nbs'/'experiments'
K = 3

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A two-epoch ClusPro run (K=3) on the tiny embedded world with the random micro CLIP, made once for the module."
    from czsl_workbench.synthetic import world_path
    from czsl_workbench.backbones import create_backbone
    from czsl_workbench.fit import fit_method
    import czsl_workbench.methods
    run = tmp_path_factory.mktemp('dash')/'run'
    bb = create_backbone('czsl-vit-micro', device='cpu', freeze=True)
    fit_method('cluspro', bb, world_path(size='tiny', progress=False), run, seed=0, epochs=2, batch_size=16, K=K, progress=False, device='cpu')
    return run

@pytest.fixture
def snap(run): return load_snapshot(list_snapshots(run)[-1])

@pytest.fixture
def umap_calls(monkeypatch):
    "Counts the UMAP fits (the real ones still run)."
    calls, fit = [], dashboard._umap_fit
    monkeypatch.setattr(dashboard, '_umap_fit', lambda *a, **k: calls.append(a[1:]) or fit(*a, **k))
    return calls

def cache_files(run): return sorted(p.name for p in (run/'dashboard_cache').glob('*.pt'))
def colours(fig): return list(fig.data[1].marker.color)

def test_builds_from_run(run, snap):
    d = PrototypeDashboard.from_run(run)
    f, p = d.fig, d.primitive.value
    idx = primitive_samples(snap, 'attr', p)
    assert d.last_error is None and d.epoch.value == 1 and list(d.epoch.options) == [0, 1] and d.kind.value == 'attr'
    assert [t.name for t in f.data] == ['other samples', 'samples', 'prototypes', 'selected']
    assert p == int(torch.bincount(snap['attr_idx']).argmax()) and f"<b>{snap['attrs'][p]}</b>" in f.layout.title.text
    assert len(f.data[1].x) == len(idx) and len(f.data[2].x) == K and len(f.data[0].x) == len(snap['attr_emb']) - len(idx)
    assert colours(f) == [PALETTE[a] for a in snap['attr_assign'][idx].tolist()]
    assert list(d.counts_fig.data[0].y) == snap['attr_counts'][p].tolist()
    np.testing.assert_allclose(np.array(d.sim_fig.data[0].z), prototype_similarity(snap, 'attr', p).numpy(), atol=1e-6)
    assert 'NMI' in d.quality.value and 'purity' in d.quality.value
    assert len(d.overview_fig.data[1].x) == len(snap['attrs']) * K and len(d.overview_fig.data[2].x) == K
    assert 'umap_e001_attr_nn15_md0.1_rs0.pt' in cache_files(run)
    assert d.primitive.description == 'primitive' and 'czsl-primitive' in d.primitive._dom_classes

def test_projection_is_cached_on_disk(run, umap_calls):
    snaps = RunSnapshots(run)
    a = umap_projection(snaps, 0, 'obj', n_neighbors=6, min_dist=0.2)
    b = umap_projection(RunSnapshots(run), 0, 'obj', n_neighbors=6, min_dist=0.2)     # a fresh reader: from disk
    assert len(umap_calls) == 1 and not a['from_cache'] and b['from_cache']
    np.testing.assert_array_equal(a['xy'], b['xy'])
    assert a['path'] == run/'dashboard_cache'/'umap_e000_obj_nn6_md0.2_rs0.pt' and a['xy'].shape == (a['n_samples'] + 12 * K, 2)
    assert not [p for p in (run/'dashboard_cache').iterdir() if p.name.endswith('.tmp')]

def test_colour_by_restyles_without_umap(run, snap, umap_calls):
    d = PrototypeDashboard.from_run(run); f = d.fig
    idx, x, before = primitive_samples(snap, 'attr', d.primitive.value), np.array(f.data[1].x), cache_files(run)
    assert [v for _, v in d.colour_by.options] == ['prototype', 'partner', 'mode', 'seen']
    d.colour_by.value = 'seen'
    assert colours(f) == [PALETTE[0] if s else PALETTE[1] for s in snap['seen'][idx].tolist()]
    assert set(f.data[2].marker.color) == {'#333333'} and 'seen pair' in d.legend.value
    d.colour_by.value = 'partner'
    assert colours(f) == [PALETTE[o] for o in snap['obj_idx'][idx].tolist()]
    d.colour_by.value = 'mode'
    modes = snap['attr_mode'].unique().tolist()
    assert colours(f) == [PALETTE[modes.index(m)] for m in snap['attr_mode'][idx].tolist()]
    d.colour_by.value = 'prototype'
    assert colours(f) == [PALETTE[a] for a in snap['attr_assign'][idx].tolist()] and list(f.data[2].marker.color) == PALETTE[:K]
    np.testing.assert_array_equal(np.array(f.data[1].x), x)
    assert umap_calls == [] and cache_files(run) == before and d.last_error is None

def test_primitive_change_and_search(run, snap, umap_calls):
    d = PrototypeDashboard.from_run(run); f = d.fig; xy = d.view['proj']['xy']; S = d.view['proj']['n_samples']
    q = next(v for _, v in d.primitive.options if v != d.primitive.value)
    d.primitive.value = q
    idx = primitive_samples(snap, 'attr', q).numpy()
    assert f"<b>{snap['attrs'][q]}</b>" in f.layout.title.text and len(f.data[1].x) == len(idx)
    np.testing.assert_allclose(np.array(f.data[1].x), xy[idx, 0]); np.testing.assert_allclose(np.array(f.data[2].x), xy[S + q * K + np.arange(K), 0])
    assert list(d.counts_fig.data[0].y) == snap['attr_counts'][q].tolist()
    np.testing.assert_allclose(np.array(d.overview_fig.data[2].y), xy[S + q * K + np.arange(K), 1])
    d.search.value = 'dot'
    assert [l.split(' (')[0] for l, _ in d.primitive.options] == ['dotted'] and '<b>dotted</b>' in f.layout.title.text
    d.search.value = 'no such thing'
    assert len(d.primitive.options) == len(snap['attrs']) and 'no attribute matches' in d.status.value
    assert umap_calls == [] and d.last_error is None

def test_epoch_change(run, snap):
    d = PrototypeDashboard.from_run(run); f = d.fig; p = d.primitive.value
    s0, x1 = load_snapshot(list_snapshots(run)[0]), np.array(f.data[2].x)
    d.epoch.value = 0
    assert 'epoch 0' in f.layout.title.text and d.view['epoch'] == 0 and d.primitive.value == p and d.last_error is None
    assert list(d.counts_fig.data[0].y) == s0['attr_counts'][p].tolist() != snap['attr_counts'][p].tolist()
    assert 'umap_e000_attr_nn15_md0.1_rs0.pt' in cache_files(run)
    d.epoch.value = 1
    assert 'from the cache' in d.status.value
    np.testing.assert_allclose(np.array(f.data[2].x), x1)

def test_kind_change(run, snap):
    d = PrototypeDashboard.from_run(run); f = d.fig
    d.kind.value = 'obj'
    o = d.primitive.value; idx = primitive_samples(snap, 'obj', o)
    assert [l.split(' (')[0] for l, _ in d.primitive.options] == snap['objs']
    assert f"object <b>{snap['objs'][o]}</b>" in f.layout.title.text and len(f.data[1].x) == len(idx) and len(f.data[2].x) == K
    assert [l for l, _ in d.colour_by.options][1] == 'paired attribute' and len(d.overview_fig.data[1].x) == len(snap['objs']) * K
    d.colour_by.value = 'partner'
    assert colours(f) == [PALETTE[a] for a in snap['attr_idx'][idx].tolist()]
    d.kind.value = 'attr'
    assert d.colour_by.value == 'partner' and colours(f) == [PALETTE[o] for o in snap['obj_idx'][primitive_samples(snap, 'attr', d.primitive.value)].tolist()]

def test_recompute_writes_a_new_cache_file_and_recolouring_does_not(run, umap_calls):
    d = PrototypeDashboard.from_run(run); f = d.fig
    n, x = len(cache_files(run)), np.array(f.data[1].x)
    d.n_neighbors.value, d.min_dist.value = 4, 0.5
    assert len(cache_files(run)) == n and umap_calls == [] and 'press Recompute' in d.status.value
    np.testing.assert_array_equal(np.array(f.data[1].x), x)
    d.recompute.click()
    assert umap_calls == [(4, 0.5, 0)] and len(cache_files(run)) == n + 1 and 'umap_e001_attr_nn4_md0.5_rs0.pt' in cache_files(run)
    assert d.umap_params == (4, 0.5) and not np.allclose(np.array(f.data[1].x), x) and 'computed in' in d.status.value
    d.colour_by.value = 'seen'; d.primitive.value = d.primitive.options[0][1]
    assert len(umap_calls) == 1 and len(cache_files(run)) == n + 1
    d.recompute.click()                                                      # same parameters: read back
    assert len(umap_calls) == 1 and 'from the cache' in d.status.value

def test_click_shows_the_thumbnail(run, snap):
    d = PrototypeDashboard.from_run(run)
    assert d.thumb.value == b'' and d.thumb.layout.display == 'none'
    d.fig.data[1]._dispatch_on_click(Points(point_inds=[1], trace_name='samples', trace_index=1), None)   # what plotly does on a click
    j = int(d.points[1])
    assert d.selected == j and d.thumb.value[:4] == b'\x89PNG' and len(d.thumb.value) > 100 and d.thumb.layout.display != 'none'
    assert ' '.join(snap['pairs'][int(snap['pair_idx'][j])]) in d.caption.value and snap['split'][j] in d.caption.value
    assert len(d.fig.data[3].x) == 1
    assert d.select_point(0) == int(d.points[0])
    with pytest.raises(IndexError, match='not one of the'): d.select_point(10_000)
    d.primitive.value = next(v for _, v in d.primitive.options if v != d.primitive.value)
    assert d.thumb.value == b'' and len(d.fig.data[3].x) == 0

def test_missing_image_is_a_caption_not_an_error(run, tmp_path):
    s = load_snapshot(list_snapshots(run)[-1]); s['image'] = [str(tmp_path/'gone.png')] * len(s['image'])
    RunDir(tmp_path/'r').save_snapshot(1, s)
    d = PrototypeDashboard.from_run(tmp_path/'r'); d.select_point(0)
    assert d.thumb.value == b'' and 'gone.png' in d.caption.value

def test_undecodable_image_is_a_caption_not_an_error(run, tmp_path):
    (tmp_path/'bad.png').write_bytes(b'not a png')
    s = load_snapshot(list_snapshots(run)[-1]); s['image'] = [str(tmp_path/'bad.png')] * len(s['image'])
    RunDir(tmp_path/'r').save_snapshot(1, s)
    d = PrototypeDashboard.from_run(tmp_path/'r'); d.select_point(0)
    assert d.thumb.value == b'' and 'cannot decode image' in d.caption.value and 'bad.png' in d.caption.value

@pytest.mark.parametrize('case', ['missing', 'empty', 'truncated', 'garbage', 'not a snapshot', 'wrong keys'])
def test_bad_run_directory(run, tmp_path, case):
    bad = tmp_path/'bad_run'; snaps = bad/'snapshots'
    if case != 'missing': snaps.mkdir(parents=True)
    good = (run/'snapshots'/'epoch_001.pt').read_bytes()
    target = snaps/'epoch_001.pt'
    if case == 'truncated': target.write_bytes(good[:len(good) // 2])
    if case == 'garbage': target.write_bytes(b'not a torch file at all')
    if case == 'not a snapshot': torch.save([1, 2, 3], target)
    if case == 'wrong keys': torch.save({'epoch': 1, 'attrs': ['a']}, target)
    with pytest.raises(RunDirError) as e: PrototypeDashboard.from_run(bad)
    assert str(target if case not in ('missing', 'empty') else bad) in str(e.value)
    assert isinstance(e.value, ValueError)

def test_failure_in_recompute_is_shown_not_raised(run, monkeypatch):
    d = PrototypeDashboard.from_run(run); x, params = np.array(d.fig.data[1].x), d.umap_params
    def boom(*a, **k): raise RuntimeError('UMAP exploded')
    monkeypatch.setattr(dashboard, 'umap_projection', boom)
    d.n_neighbors.value = 9
    d.recompute.click()                                                      # does not raise
    assert 'UMAP exploded' in d.status.value and d.last_error == 'RuntimeError: UMAP exploded'
    assert d.umap_params == params and d.progress.layout.visibility == 'hidden'
    np.testing.assert_array_equal(np.array(d.fig.data[1].x), x)
    monkeypatch.undo()
    d.colour_by.value = 'seen'; assert d.fig.data[1].marker.color                 # still alive

def test_corrupt_snapshot_of_another_epoch_shows_the_path_and_keeps_the_view(run, tmp_path):
    r = tmp_path/'run'; shutil.copytree(run/'snapshots', r/'snapshots')
    d = PrototypeDashboard.from_run(r)
    f0 = r/'snapshots'/'epoch_000.pt'; torch.save({'epoch': 0}, f0)        # a valid file that is not a snapshot
    d.epoch.value = 0
    assert str(f0) in d.status.value and 'RunDirError' in d.last_error
    assert d.epoch.value == 1 and d.view['epoch'] == 1 and 'epoch 1' in d.fig.layout.title.text

def test_no_message_leaves_a_trace_property_undefined(run, monkeypatch):
    "plotly's widget model stores batch_update's placeholder for untouched traces literally: every update names a value."
    import plotly.basewidget as bw
    from plotly.basedatatypes import Undefined
    from plotly.serializers import _py_to_js
    from ipywidgets.widgets.widget import _remove_buffers
    sent, send = [], bw.BaseFigureWidget._send_update_msg
    def spy(self, restyle_data, relayout_data, trace_indexes=None, **kw):
        sent.append(restyle_data)
        _, _, buffers = _remove_buffers({'m': _py_to_js(restyle_data, None)})       # what the comm sends: numpy as binary buffers
        assert all(memoryview(b).contiguous for b in buffers), 'a non-contiguous array cannot be sent to the browser'
        return send(self, restyle_data, relayout_data, trace_indexes, **kw)
    monkeypatch.setattr(bw.BaseFigureWidget, '_send_update_msg', spy)
    monkeypatch.setattr(bw.BaseFigureWidget, '_send_restyle_msg', lambda *a, **k: pytest.fail('a restyle outside _update'))
    d = PrototypeDashboard.from_run(run)
    d.colour_by.value = 'seen'; d.primitive.value = next(v for _, v in d.primitive.options if v != d.primitive.value)
    d.select_point(0); d.kind.value = 'obj'; d.epoch.value = 0
    assert len(sent) > 10 and d.last_error is None
    assert not [k for r in sent for k, vals in r.items() if any(v is Undefined for v in vals)]
    assert d.fig.data[0].marker.color == '#d9d9d9' and d.fig.data[3].marker.color == 'black'

def test_constructor_arguments(run, snap):
    d = PrototypeDashboard.from_run(run, epoch=0, kind='obj', primitive='star', colour_by='seen', n_neighbors=8, min_dist=0.25)
    assert (d.epoch.value, d.kind.value, d.colour_by.value, d.umap_params) == (0, 'obj', 'seen', (8, 0.25))
    assert d.primitive.value == snap['objs'].index('star') and '<b>star</b>' in d.fig.layout.title.text
    with pytest.raises(ValueError, match="'mauve' is not one of the attributes"): PrototypeDashboard.from_run(run, primitive='mauve')
    with pytest.raises(ValueError, match=r'epochs: \[0, 1\]'): PrototypeDashboard.from_run(run, epoch=5)
    with pytest.raises(ValueError, match='colour_by'): PrototypeDashboard.from_run(run, colour_by='size')

def test_exploration_notebook_on_a_run(run, tmp_path):
    out = tmp_path/'explore.ipynb'
    nb = pm.execute_notebook(str(EXP/'02_explore_run.ipynb'), str(out), progress_bar=False, cwd=str(tmp_path),
                             parameters=dict(run_dir=str(run), kind='obj', primitive='star', out_dir=str(tmp_path/'figs')))
    outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
    assert sum('image/png' in o.get('data', {}) for o in outputs) >= 2
    text = ''.join(o.get('text', '') for o in outputs) + ''.join(str(o.get('data', {}).get('text/plain', '')) for o in outputs)
    assert 'star' in text and str(run) in text
    assert sorted(p.name for p in (tmp_path/'figs').iterdir()) == ['metrics.json', 'overview_obj_e001.png', 'star_obj_e001.png']
    m = json.loads((tmp_path/'figs'/'metrics.json').read_text())                      # what a sweep over runs collects
    assert (m['kind'], m['primitive'], m['epoch'], m['run_dir']) == ('obj', 'star', 1, str(run))
    assert set(m['separation']) == {'within', 'between'} and -1 <= m['separation']['between'] <= 1
    assert any('application/vnd.jupyter.widget-view+json' in o.get('data', {}) for o in outputs)      # the live dashboard

def test_exploration_notebook_headless_record_is_small(run, tmp_path):
    "`live=False`: the same static record without widgets, so papermill stores no widget JavaScript in the notebook."
    out = tmp_path/'explore.ipynb'
    nb = pm.execute_notebook(str(EXP/'02_explore_run.ipynb'), str(out), progress_bar=False, cwd=str(tmp_path),
                             parameters=dict(run_dir=str(run), live=False, colour_by='seen', epoch=0))
    outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
    assert sum('image/png' in o.get('data', {}) for o in outputs) >= 2 and 'widgets' not in nb.metadata
    assert out.stat().st_size < 2_000_000, out.stat().st_size
