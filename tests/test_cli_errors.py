"""Every console command: an input it cannot use is one line `PROG: error: ...` on stderr and exit status 2, before
anything is written; a bug keeps its traceback. And czsl-fit without --backbone takes the world's own small CLIP."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
from czsl_workbench.core import ExpectedError, TRACEBACK_ENV
from czsl_workbench.synthetic import synth_cli, world_path
from czsl_workbench.methods.pretrain import pretrain_cli, pretrained_run
from czsl_workbench.experiments import run_cli, experiment_notebook
from czsl_workbench.results import results_cli
from czsl_workbench.docs import docs_cli
from czsl_workbench.backbones import BackboneError, OfflineWeightsError
from czsl_workbench.runs import RunDirError
import czsl_workbench.methods as methods
import czsl_workbench.methods.pretrain as pretrain

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def world(): return world_path('tiny', progress=False)

@pytest.fixture(autouse=True)
def no_tracebacks(monkeypatch):
    "A developer's CZSL_TRACEBACK=1 would turn every one-line error below into a traceback."
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)

def error(capsys, f, prog, *argv) -> str:
    "The message of the one line `f(argv)` prints on stderr; it must exit with status 2 and print nothing else."
    capsys.readouterr()
    with pytest.raises(SystemExit) as e: f([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert e.value.code == 2, (e.value.code, out, err)
    assert out == '' and err.count('\n') == 1 and err.endswith('\n'), (out, err)
    head = f'{prog}: error: '
    assert err.startswith(head) and err[len(head):].strip(), err
    return err[len(head):-1]

def test_the_workbench_errors_are_expected_errors():
    for cls in (BackboneError, OfflineWeightsError):
        assert issubclass(cls, ExpectedError) and issubclass(cls, RuntimeError)
    assert issubclass(RunDirError, ExpectedError) and issubclass(RunDirError, ValueError)

def test_czsl_data(capsys, tmp_path):
    synth = lambda *argv: error(capsys, synth_cli, 'czsl-data', 'synth', *argv)
    full = tmp_path/'full'; full.mkdir(); (full/'thesis.tex').write_text('precious')
    msg = synth('--out', full, '--size', 'tiny', '--no-progress')
    assert str(full) in msg and '--overwrite' in msg and (full/'thesis.tex').read_text() == 'precious'
    out = tmp_path/'w'
    assert "invalid choice: 'huge'" in synth('--out', out, '--size', 'huge')
    assert "unknown world knob(s) ['nope']" in synth('--out', out, '--set', 'nope=1')
    assert "expected KNOB=VALUE, got 'noise_std'" in synth('--out', out, '--set', 'noise_std')
    assert 'required: --out' in synth()
    assert not out.exists()

def test_czsl_pretrain(capsys, tmp_path):
    pre = lambda *argv: error(capsys, pretrain_cli, 'czsl-pretrain', *argv)
    run = tmp_path/'run'
    assert pre('--world', tmp_path/'nope', '--out', run) == f'world folder not found: {tmp_path/"nope"}'
    assert "argument --epochs: invalid int value: 'two'" in pre('--world', tmp_path, '--out', run, '--epochs', 'two')
    assert not run.exists()

def test_czsl_run(capsys, tmp_path):
    sweep = lambda *argv: error(capsys, run_cli, 'czsl-run', *argv)
    toy = experiment_notebook(tmp_path/'toy.ipynb', dict(K=1), "metrics = {'K': K}", 'Toy')
    out = tmp_path/'sweep'
    assert sweep(tmp_path/'missing.ipynb', '--out', out) == f'notebook {tmp_path/"missing.ipynb"} does not exist'
    assert sweep(toy, '--out', out, '-p', 'K', 'three') == \
        "parameter 'K' of toy.ipynb takes an int (default 1); got 'three'"
    assert "--grid takes NAME=V1,V2,...; got 'K:1,2'" in sweep(toy, '--out', out, '--grid', 'K:1,2')
    assert not out.exists()

def test_czsl_results(capsys, tmp_path):
    results = lambda *argv: error(capsys, results_cli, 'czsl-results', *argv)
    assert str(tmp_path/'missing') in results(tmp_path/'missing')
    assert results(tmp_path, '--baseline', 'csp') == "--baseline takes PARAM=VALUE, got ['csp']"
    assert list(tmp_path.iterdir()) == []

def test_czsl_docs(capsys, tmp_path):
    docs = lambda *argv: error(capsys, docs_cli, 'czsl-docs', *argv)
    site = tmp_path/'site'
    assert str(tmp_path/'nowhere') in docs('--nbs', tmp_path/'nowhere', '--out', site)
    assert docs('--nbs', ROOT/'nbs', '--runs', tmp_path/'no-runs', '--out', site) == \
        f'runs folder {tmp_path/"no-runs"} not found'
    assert not site.exists()

def test_czsl_fit(capsys, tmp_path, world):
    run = tmp_path/'run'
    fit = lambda method, data, *argv: error(capsys, methods.fit_cli, 'czsl-fit', method, '--data', data, '--out', run,
                                            *argv)
    assert fit('cluspro', tmp_path/'nope', '--backbone', 'czsl-vit-micro') == f'--data not found: {tmp_path/"nope"}'
    assert fit('csp', world, '--backbone', 'local-dir:/nonexistent') == 'backbone folder not found: /nonexistent'
    assert fit('csp', world, '--backbone', 'ViT-B-23').startswith(
        '--backbone ViT-B-23 is not an open_clip model, a local-dir: or an hf-hub: name; did you mean ViT-B-32')
    assert fit('csp', world, '--backbone', 'czsl-vit-micro', '--pretrained', tmp_path/'w.pt') == \
        f'pretrained checkpoint file not found: {tmp_path/"w.pt"}'
    assert "unknown method 'clusspro'; registered: clip, csp" in fit('clusspro', world)
    assert "unknown option(s) ['epoch'] for csp" in fit('csp', world, '-o', 'epoch', '1')
    assert "argument --amp: invalid choice: 'fp8'" in fit('csp', world, '--amp', 'fp8')
    assert fit('clip-pretrain', world, '--backbone', 'czsl-vit-micro') == \
        'clip-pretrain builds its backbone: no --backbone or --pretrained'
    assert '--pretrained w.pt needs --backbone' in fit('csp', world, '--pretrained', 'w.pt')
    msg = fit('clip-pzsl', tmp_path)                                   # data that is no world: nothing to take one from
    assert f'{tmp_path} is not a generated world' in msg and 'pass --backbone' in msg and 'local-dir:FOLDER' in msg
    assert not run.exists()

def test_a_bug_keeps_its_traceback_and_CZSL_TRACEBACK_shows_one_for_an_expected_error(tmp_path, world, monkeypatch):
    def boom(*a, **k): raise ZeroDivisionError('a bug in the loop')
    monkeypatch.setattr(methods, 'fit_method', boom)
    with pytest.raises(ZeroDivisionError, match='a bug in the loop'):
        methods.fit_cli(['clip-pretrain', '--data', str(world), '--out', str(tmp_path/'run')])
    monkeypatch.setenv(TRACEBACK_ENV, '1')
    with pytest.raises(FileNotFoundError, match='--data not found'):
        methods.fit_cli(['csp', '--data', str(tmp_path/'nope'), '--out', str(tmp_path/'run')])

def command(name, module, function):
    "The console script `name` as installed, else the same function run by this Python."
    exe = shutil.which(name)
    return [exe] if exe else [sys.executable, '-c', f'from {module} import {function}; {function}()']

@pytest.mark.parametrize('args, expected', [
    (command('czsl-fit', 'czsl_workbench.methods', 'fit_cli') + ['cluspro', '--data', '/nonexistent', '--out', '{out}',
                                                                 '--backbone', 'czsl-vit-micro'],
     'czsl-fit: error: --data not found: /nonexistent'),
    (command('czsl-data', 'czsl_workbench.synthetic', 'synth_cli') + ['synth', '--out', '{out}', '--seed', 'x'],
     "czsl-data: error: argument --seed: invalid int value: 'x' (see czsl-data synth --help)")],
    ids=['czsl-fit', 'czsl-data'])
def test_end_to_end_one_line_on_stderr(tmp_path, args, expected):
    out = tmp_path/'out'
    r = subprocess.run([a.format(out=out) for a in args], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert (r.returncode, r.stdout, r.stderr) == (2, '', expected + '\n')
    assert not out.exists()

def test_czsl_fit_takes_the_worlds_own_backbone(capsys, tmp_path, world, monkeypatch):
    "No --backbone on a world other than the default: czsl-vit-tiny pretrained on it once, then taken from the cache."
    monkeypatch.setenv('CZSL_CACHE', str(tmp_path/'cache'))          # an empty cache: the first run pretrains
    cached = pretrained_run(world)
    said = [f"pretraining czsl-vit-tiny on this world's captions once (cached in {cached.path})",
            f"using czsl-vit-tiny pretrained on this world's captions (cached in {cached.path})"]
    for i, line in enumerate(said):
        run = tmp_path/f'csp{i}'
        assert methods.fit_cli(['csp', '--data', str(world), '--out', str(run), '-o', 'epochs', '1', '--no-progress']) \
            is None
        lines = capsys.readouterr().out.splitlines()
        assert f'czsl-fit: no --backbone: {line}' in lines, lines
        assert lines[-1].startswith(f'csp finished: {run}, test AUC '), lines
        backbone = json.loads((run/'parameters.json').read_text())['backbone']
        assert backbone.startswith(f'local-dir:{cached.path/"model"}@'), backbone

def test_the_shipped_backbone_is_named(world, monkeypatch):
    "On the default world with the default options the shipped weights are taken (pretend the tiny world is it)."
    shipped = lambda *a, **k: ('czsl-vit-tiny', 'world-default')
    for m in (pretrain, methods): monkeypatch.setattr(m, 'shipped_tag', shipped)
    said = []
    bb = methods.starting_backbone('csp', world, say=said.append)
    assert bb.ident.startswith('czsl-vit-tiny@world-default-') and bb.pretrained == 'world-default'
    assert said == [f'no --backbone: using the shipped {bb.ident} trained on this world']
