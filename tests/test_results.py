"czsl-results: run folders of a sweep (and training folders) collected into one table, CSV/parquet/HTML and figures."
import json, os, subprocess, sys
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from czsl_workbench.results import (ResultsError, find_runs, flatten_metrics, collect_results, headline_metrics,
                                    metric_columns, figure_axes, metric_summary, read_curve, results_figures, write_results,
                                    results_cli, show_results, compact_table, status_counts)

ROOT = Path(__file__).resolve().parents[1]
METHODS, KS, SEEDS = ('csp', 'cluspro'), (1, 3, 5), (0, 1)
FAILED = 'K=7_method=cluspro_seed=0'

def auc_of(method, K, seed):
    "The test AUC written for a grid point: grows with K for ClusPro, flat for CSP; seed 1 is 0.01 higher."
    return round((0.1 + 0.02*K if method == 'cluspro' else 0.15) + 0.01*seed, 4)

def stats(auc, curve=True):
    "A fit_method-style stats dict."
    s = dict(AUC=auc, best_hm=0.5 + auc, best_seen=0.8, best_unseen=0.3 + auc, attr_acc=0.6, obj_acc=0.7,
             closed_seen_acc=0.75, closed_unseen_acc=0.4, n_images=120, n_pairs=40)
    if curve: s['curve'] = dict(seen=[0.8, 0.6, 0.0], unseen=[0.0, 0.2, 0.3 + auc])
    return s

def write_run(d, params, state='done', error=None, metrics=None, run_json=True, seconds=60.0):
    d.mkdir(parents=True)
    (d/'parameters.json').write_text(json.dumps(params))
    if run_json:
        (d/'run.json').write_text(json.dumps(dict(name=d.name, notebook='exp.ipynb', overrides=params, state=state, error=error,
            started='2026-01-01T10:00:00', finished=None if state == 'running' else '2026-01-01T10:01:00',
            seconds=seconds, worker='w0', attempt=1)))
        (d/'executed.ipynb').write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
        (d/'run.log').write_text('log\n')
    if metrics is not None: (d/'metrics.json').write_text(json.dumps(metrics))

@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
    "method × K × seed done runs, one failed run, one running run, a nested training folder, an attempts/ copy."
    out = tmp_path_factory.mktemp('sweep')
    names = []
    for m in METHODS:
        for K in KS:
            for s in SEEDS:
                names.append(n := f'K={K}_method={m}_seed={s}')
                write_run(out/n, dict(method=m, K=K, seed=s, lr=0.001, layers=[2, 2], opts={'b': 1, 'a': None}),
                          metrics=dict(method=m, seed=s, train_s=1.5, epochs_run=3, best_epoch=2, val=stats(0.1),
                                       test=stats(auc_of(m, K, s)), test_ow=stats(0.05)), seconds=10.0*K + s)
    names.append(FAILED)
    write_run(out/FAILED, dict(method='cluspro', K=7, seed=0, lr=0.001, layers=[2, 2], opts={'b': 1, 'a': None}),
              state='failed', error='ValueError: bad K')
    names.append('running_one')
    write_run(out/'running_one', dict(method='csp', K=1, seed=9, lr=0.001, layers=[2, 2], opts={'b': 1, 'a': None}), state='running',
              seconds=None)
    lock = FileLock(str(out/'running_one'/'.lock'), is_singleton=False); lock.acquire()   # its worker holds it while it runs
    (out/'sweep.json').write_text(json.dumps(dict(notebook='exp.ipynb', parameters={}, grid={}, runs=names + ['not_yet'])))
    inner = out/'K=3_method=cluspro_seed=0'/'runs'/'cluspro'/'seed0'
    write_run(inner, dict(method='cluspro', K=3, seed=0), metrics=dict(method='cluspro', seed=0, train_s=2.0, test=stats(0.42)),
              run_json=False)
    (inner/'checkpoints').mkdir(); (inner/'history.jsonl').write_text('{"epoch": 0}\n')
    attempt = out/'K=1_method=csp_seed=0'/'attempts'/'1'                       # inside a run anyway
    write_run(attempt, dict(method='csp', K=1, seed=0), state='failed', error='old')
    write_run(out/'old'/'attempts'/'1', dict(method='csp', K=1, seed=0), state='failed', error='old')   # not inside a run
    yield out
    lock.release()

@pytest.fixture(scope='module')
def table(sweep): return collect_results(sweep)

def row(df, run): return df.set_index('run').loc[run]


def test_find_runs(sweep):
    runs = [r.relative_to(sweep).as_posix() for r in find_runs(sweep)]
    grid = sorted(f'K={K}_method={m}_seed={s}' for m in METHODS for K in KS for s in SEEDS)
    assert runs == sorted(grid + [FAILED, 'running_one'])        # no nested training folder, no attempts/
    with pytest.raises(FileNotFoundError, match='nope'): find_runs(sweep/'nope')
    assert find_runs(sweep/'old') == []


def test_flatten_metrics():
    d = {'method': 'csp', 'n': 3, 'ok': True, 'none': None, 'test': {'AUC': 0.25, 'curve': {'seen': [0.8, 0.1], 'unseen': [0.0, 0.5]}},
         'deep': {'a': {'b': {'c': 1.5}}}, 'names': ['x', 'y'], 'matrix': [[1, 2], [3, 4]], 'empty': {}}
    assert flatten_metrics(d) == {'method': 'csp', 'n': 3, 'ok': True, 'none': None, 'test/AUC': 0.25, 'deep/a/b/c': 1.5,
                                  'names': '["x","y"]'}
    assert flatten_metrics({'a': {'b': 1}}, sep='.') == {'a.b': 1}


def test_table_shape_states_columns_values(table):
    assert table.shape[0] == 14
    assert list(table.columns[:10]) == ['run', 'state', 'error', 'seconds', 'method', 'K', 'seed', 'lr', 'layers', 'opts']
    assert table.state.value_counts().to_dict() == {'done': 12, 'failed': 1, 'running': 1}
    r = row(table, 'K=5_method=cluspro_seed=1')
    assert (r.state, r.method, r.K, r.seed, r.lr, r.seconds) == ('done', 'cluspro', 5, 1, 0.001, 51.0)
    assert (r.layers, r.opts) == ('[2,2]', '{"a":null,"b":1}')                 # non-scalars as compact JSON
    assert r['metrics/test/AUC'] == auc_of('cluspro', 5, 1) and r['metrics/test_ow/AUC'] == 0.05
    assert (r['metrics/method'], r['metrics/seed'], r['metrics/test/n_images'], r['metrics/best_epoch']) == ('cluspro', 1, 120, 2)
    assert not any('curve' in c for c in table.columns)
    f = row(table, FAILED)
    assert (f.state, f.error, f.K) == ('failed', 'ValueError: bad K', 7) and np.isnan(f['metrics/test/AUC'])
    assert pd.isna(row(table, 'running_one').seconds)
    assert table.K.dtype == 'int64' and table['metrics/test/AUC'].dtype == 'float64'
    assert table.attrs['metrics'][:2] == ['metrics/method', 'metrics/seed']
    assert table.attrs['not_started'] == ['not_yet']


def test_varying(table):
    assert table.attrs['varying'] == ['method', 'K', 'seed']        # lr, layers and opts are the same in every run
    assert table.attrs['parameters'] == ['method', 'K', 'seed', 'lr', 'layers', 'opts']


def test_training_folder_alone(sweep):
    inner = sweep/'K=3_method=cluspro_seed=0'/'runs'/'cluspro'/'seed0'
    t = collect_results(inner)
    assert t.shape[0] == 1 and (t.run[0], t.state[0], t.K[0], t['metrics/test/AUC'][0], t['metrics/train_s'][0]) == ('.', 'done', 3, 0.42, 2.0)
    assert pd.isna(t.error[0]) and t.attrs['varying'] == []
    assert read_curve(inner) == dict(seen=[0.8, 0.6, 0.0], unseen=[0.0, 0.2, 0.72])


def test_folder_of_training_runs_and_clashing_names(tmp_path):
    write_run(tmp_path/'a', dict(method='csp', seconds=5, state='x', K=1), metrics=dict(AUC=0.2, best_hm=0.3), run_json=False)
    write_run(tmp_path/'b', dict(method='csp', seconds=5, state='x', K='auto'), state='running')
    t = collect_results(tmp_path)
    assert t.state.tolist() == ['done', 'interrupted']                       # says running, but no process holds it
    assert {'parameters/seconds', 'parameters/state'} <= set(t.columns) and t['parameters/seconds'].tolist() == [5, 5]
    assert t.K.tolist() == ['1', 'auto'] and t.attrs['varying'] == ['K']         # mixed kinds become strings
    assert headline_metrics(t) == ['metrics/AUC', 'metrics/best_hm']
    t.to_parquet(tmp_path/'t.parquet')                                           # stays parquet-writable


def test_corrupt_json(tmp_path):
    for n in ('a', 'b', 'c', 'd'): write_run(tmp_path/n, dict(method='csp', K=1), metrics=dict(AUC=0.1))
    (tmp_path/'b'/'metrics.json').write_text('{"AUC": 0.')
    (tmp_path/'c'/'parameters.json').write_text('[1, 2]')
    (tmp_path/'d'/'run.json').write_bytes(b'\xff\xfe')
    t = collect_results(tmp_path)
    assert t.state.tolist() == ['done', 'corrupt', 'corrupt', 'corrupt']
    assert 'b/metrics.json' in t.error[1] and 'c/parameters.json' in t.error[2] and 'expected a JSON object' in t.error[2]
    assert 'd/run.json' in t.error[3]
    assert t['metrics/AUC'].tolist()[0] == 0.1 and t['metrics/AUC'].tolist()[2:] == [0.1, 0.1]
    assert t.attrs['varying'] == []                   # the corrupt parameters.json is not a value of its own


def test_headline_and_metric_columns(table):
    assert headline_metrics(table) == ['metrics/test/AUC', 'metrics/test/best_hm', 'metrics/test/best_seen', 'metrics/test/best_unseen']
    deep = pd.DataFrame({'metrics/tables/closed/ClusPro/AUC': [0.3], 'metrics/tables/AUC': [0.2], 'metrics/x/best_hm': ['a']})
    assert headline_metrics(deep) == ['metrics/tables/AUC']                     # shortest; a string column is not a metric
    assert metric_columns(table, ['AUC', 'metrics/val/AUC', 'AUC']) == ['metrics/test/AUC', 'metrics/val/AUC']
    with pytest.raises(ResultsError, match="no numeric metric 'acc'"): metric_columns(table, 'acc')


def test_figure_data_equals_hand_computed(table, sweep):
    assert figure_axes(table) == ('K', 'method')
    figs = results_figures(table, sweep)
    assert [f.layout.meta['kind'] for f in figs] == ['metrics', 'intervals', 'curves', 'status']
    auc_traces = [t for t in figs[0].data if t.xaxis == 'x']
    assert [t.name for t in auc_traces] == ['cluspro', 'csp']
    for t in auc_traces:
        assert list(t.x) == [1, 3, 5]
        for i, K in enumerate(KS):
            v = [auc_of(t.name, K, s) for s in SEEDS]
            assert np.isclose(t.y[i], np.mean(v)) and np.isclose(t.error_y.array[i], np.std(v, ddof=1))
    cl = auc_traces[0]
    assert np.allclose(cl.y, [0.125, 0.165, 0.205]) and np.allclose(cl.error_y.array, [0.00707107]*3)
    assert len(figs[0].data) == 8                                               # 4 headline metrics × 2 methods
    iv = figs[1].data[0]                                                        # one point per configuration, its interval
    i = list(iv.y).index('method=cluspro, K=5'); v = [auc_of('cluspro', 5, s) for s in SEEDS]
    half = 12.7062047 * np.std(v, ddof=1) / np.sqrt(2)
    assert np.isclose(iv.x[i], np.mean(v)) and np.isclose(iv.error_x.array[i], half) and np.isclose(iv.error_x.arrayminus[i], half)
    assert len(iv.y) == 6
    curves = figs[2].data
    assert len(curves) == 12 and {c.name for c in curves} == set(table.run[table.state == 'done'])
    c = next(c for c in curves if c.name == 'K=5_method=cluspro_seed=1')
    assert list(c.x) == [0.0, 0.2, 0.3 + auc_of('cluspro', 5, 1)] and list(c.y) == [0.8, 0.6, 0.0]
    assert 'K=5_method=cluspro_seed=1' in c.hovertemplate and c.legendgroup == 'cluspro'
    assert c.line.color == next(t for t in auc_traces if t.name == 'cluspro').marker.color
    st = figs[3].data[0]
    assert list(st.x) == ['done', 'failed', 'running', 'not started'] and list(st.y) == [12, 1, 1, 1]


def test_figure_options(table, sweep):
    s = metric_summary(table, 'metrics/test/AUC', 'seed', None)                 # x = seed, everything else averaged
    v0 = [auc_of(m, K, 0) for m in METHODS for K in KS]
    assert s.seed.tolist() == [0, 1] and np.isclose(s['mean'][0], np.mean(v0)) and np.isclose(s['std'][0], np.std(v0, ddof=1))
    figs = results_figures(table, sweep, metric='best_hm', x='seed', colour='method')
    assert figs[0].layout.meta['metrics'] == ['metrics/test/best_hm'] and list(figs[0].data[0].x) == [0, 1]
    k1 = table[table.K == 1].copy(); k1.attrs = {**table.attrs, 'varying': ['method', 'seed']}
    bars = results_figures(k1, sweep)[0]                                         # no numeric x (but seeds) varies: bars
    assert bars.data[0].type == 'bar' and [t.name for t in bars.data[:2]] == ['cluspro', 'csp']
    with pytest.raises(ResultsError, match="x 'lr2' is not a column"): results_figures(table, sweep, x='lr2')
    with pytest.raises(ResultsError, match="no numeric metric"): results_figures(table, sweep, metric='nope')


def test_write_results_round_trip_and_html(table, sweep, tmp_path):
    paths = write_results(sweep, out=tmp_path/'report')
    assert sorted(paths) == ['plotly.min.js', 'results.csv', 'results.html', 'results.parquet']
    assert all(p.parent == tmp_path/'report' for p in paths.values())
    keys = ['run', 'state', 'error', 'seconds', 'method', 'K', 'seed', 'layers', 'metrics/test/AUC', 'metrics/val/n_images']
    for back in (pd.read_csv(paths['results.csv']), pd.read_parquet(paths['results.parquet'])):
        pd.testing.assert_frame_equal(back[keys], table[keys], check_dtype=False)
    assert pd.read_parquet(paths['results.parquet']).attrs['varying'] == ['method', 'K', 'seed']
    page = paths['results.html'].read_text()
    rel = os.path.relpath(sweep, tmp_path/'report')
    assert 'ValueError: bad K' in page and f'href="{rel}/{FAILED}/executed.ipynb"' in page
    assert '<script src="plotly.min.js"></script>' in page and 'https://cdn' not in page and 'cdn.plot.ly' not in page
    assert paths['plotly.min.js'].stat().st_size > 1_000_000
    assert '14 runs: 12 done, 1 failed, 1 running, 1 not started' in page and page.count('class="plotly-graph-div"') == 4
    assert 'How sure: test/AUC over seeds' in page and page.count('>holds<') == 5
    assert not list((tmp_path/'report').glob('.*.tmp'))                        # nothing half-written left behind
    p2 = write_results(sweep)                                                   # default: beside the runs
    assert p2['results.html'] == sweep/'results.html' and f'href="{FAILED}/executed.ipynb"' in p2['results.html'].read_text()
    assert len(collect_results(sweep)) == 14                                    # the written files are not runs


def test_degenerate_cases(tmp_path, sweep):
    empty = tmp_path/'empty'; empty.mkdir()
    t = collect_results(empty)
    assert t.empty and list(t.columns) == ['run', 'state', 'error', 'seconds'] and results_figures(t, empty) == []
    assert results_figures(t, empty, metric='AUC', x='K') == []
    paths = write_results(empty)
    assert 'plotly.min.js' not in paths and 'No runs found' in paths['results.html'].read_text()
    assert pd.read_parquet(paths['results.parquet']).empty
    one = tmp_path/'one'; write_run(one/'r', dict(method='csp', K=1, seed=0), metrics=dict(test=stats(0.3, curve=False)))
    t = collect_results(one)
    figs = results_figures(t, one)
    assert [f.layout.meta['kind'] for f in figs] == ['metrics', 'status']      # no curves
    assert list(figs[0].data[0].x) == ['r'] and list(figs[0].data[0].y) == [0.3]
    write_results(one)
    failed = tmp_path/'failed'; write_run(failed/'r', dict(K=1), state='failed', error='boom')
    figs = results_figures(collect_results(failed), failed)
    assert [f.layout.meta['kind'] for f in figs] == ['status']                 # no done runs
    assert status_counts(collect_results(failed)) == {'failed': 1}
    write_results(failed)


def test_show_results_and_compact_table(table, sweep, capsys):
    assert list(compact_table(table).columns) == ['run', 'state', 'method', 'K', 'seed', 'metrics/test/AUC', 'metrics/test/best_hm',
                                                  'metrics/test/best_seen', 'metrics/test/best_unseen']
    show_results(sweep, metric='AUC')                                           # outside IPython: printed
    out = capsys.readouterr().out
    assert 'K=5_method=cluspro_seed=1' in out and 'metrics/test/AUC' in out


def test_cli_in_process(sweep, tmp_path, capsys):
    assert results_cli([str(sweep), '--out', str(tmp_path), '--metric', 'AUC', '--colour', 'method']) is None
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ['run', 'state', 'method', 'K', 'seed', 'metrics/test/AUC']
    assert f'failed: {FAILED}: ValueError: bad K' in out and str(tmp_path/'results.html') in out
    with pytest.raises(SystemExit) as e: results_cli([str(sweep), '--x', 'nope'])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('czsl-results: error: ') and "x 'nope' is not a column" in err, err


def _cli(*args):
    return subprocess.run([sys.executable, '-c', 'from czsl_workbench.results import results_cli; results_cli()', *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])})

def test_cli_subprocess(sweep, tmp_path):
    r = _cli(sweep, '--out', tmp_path/'o')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f'{sweep}: 14 runs: 12 done, 1 failed, 1 running, 1 not started'
    assert lines[1].split()[:5] == ['run', 'state', 'method', 'K', 'seed'] and 'K=5_method=cluspro_seed=1' in r.stdout
    assert (tmp_path/'o'/'results.html').is_file() and str(tmp_path/'o'/'results.parquet') in r.stdout
    r = _cli(tmp_path/'missing')
    assert r.returncode == 2 and 'missing' in r.stderr and 'does not exist' in r.stderr and not r.stdout


def test_intervals_over_seeds_and_paired_verdicts(table, sweep):
    "The seed table and the paired comparisons, by hand: two seeds per configuration, the same seed offset everywhere."
    from czsl_workbench.results import seed_table, paired_table
    st = seed_table(table).set_index(['method', 'K'])
    assert list(st.n) == [2] * 6
    for m in METHODS:
        for K in KS:
            v = [auc_of(m, K, s) for s in SEEDS]; r = st.loc[(m, str(K))]
            assert np.isclose(r['mean'], np.mean(v)) and np.isclose(r['std'], np.std(v, ddof=1))
            assert np.isclose(r.ci_high - r['mean'], 12.7062047 * np.std(v, ddof=1) / np.sqrt(2))
    pt = paired_table(table).set_index(['method', 'K'])
    assert pt.attrs['baseline'] == {'method': 'cluspro', 'K': '5'} and list(pt.verdict) == ['holds'] * 5
    assert np.isclose(pt.loc[('csp', '3')].difference, auc_of('cluspro', 5, 0) - auc_of('csp', 3, 0))
    one = table[table.seed == 0].copy(); one.attrs = table.attrs                    # one seed each: nothing is resolved
    assert set(paired_table(one).verdict) == {'not resolved at 1 seed'}
    r = subprocess.run([sys.executable, '-c', 'from czsl_workbench.results import results_cli; results_cli()', str(sweep),
                        '--out', str(sweep.parent/'cli_report'), '--baseline', 'method=csp', '--baseline', 'K=5'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'paired over the seeds both ran, method=csp, K=5 minus each other configuration' in r.stdout and 'fails' in r.stdout
