"""Every console command: an input it cannot use is one line `PROG: error: ...` on stderr and exit status 2, before
anything is written; a bug keeps its traceback. And czsl-fit without --backbone takes the world's own small CLIP."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch
from czsl_workbench.core import ExpectedError, TRACEBACK_ENV
from czsl_workbench.synthetic import synth_cli, world_path
from czsl_workbench.methods.pretrain import pretrain_cli, pretrained_run
from czsl_workbench.experiments import run_cli, experiment_notebook
from czsl_workbench.results import results_cli
from czsl_workbench.docs import docs_cli
from czsl_workbench.backbones import BackboneError, OfflineWeightsError
from czsl_workbench.runs import RunDirError
from czsl_workbench.data import make_czsl_fixture, parse_split
from czsl_workbench.feasibility import (FeasibilityError, FEASIBILITY_FILE, feasibility_scores, embed_names,
                                        read_word_vectors, dataset_feasibility, load_feasibility)
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
    assert issubclass(FeasibilityError, ExpectedError) and issubclass(FeasibilityError, ValueError)

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

ZAPPOS_TRAIN = [('Leather', 'Boots.Ankle'), ('Faux.Fur', 'Sandals'), ('Synthetic', 'Boots.Ankle'),
                ('Full.grain.leather', 'Shoes.Heels')]
VECTORS = ('leather 1 0 0\nfaux 0 1 0\nfur 0 0 1\nfull 1 1 0\ngrain 0 2 2\nsynthetic 0 1 1\nboots 1 0 1\n'
           'ankle 3 0 1\nsandals 0 0 2\nshoes 1 1 1\nheels -1 2 0\nzebra 9 9 9\n')

@pytest.fixture
def zappos(tmp_path):
    "A czsl-layout folder with UT-Zappos-style names, and a word-vector file in GloVe's format that covers them."
    root = make_czsl_fixture(tmp_path/'zappos', ZAPPOS_TRAIN, [('Leather', 'Sandals')],
                             [('Synthetic', 'Shoes.Heels'), ('Faux.Fur', 'Boots.Ankle')], n_per_pair=1, image_size=4)
    (tmp_path/'glove.txt').write_text(VECTORS)
    return root, tmp_path/'glove.txt'

def test_czsl_feasibility_writes_the_scores_of_the_word_vectors(capsys, zappos):
    root, glove = zappos
    out = root/FEASIBILITY_FILE
    assert methods.feasibility_cli(['--data', str(root), '--out', str(out), '--embeddings', str(glove)]) is None
    v = parse_split(root)
    vecs = read_word_vectors(glove)
    expected = feasibility_scores(v.attrs, v.objs, v.train_pairs, embed_names(v.attrs, vecs), embed_names(v.objs, vecs))
    scores = load_feasibility(out, n_pairs=12)
    assert torch.equal(scores, expected) and torch.equal(scores, dataset_feasibility(root, embeddings=glove))
    unseen = expected[expected != 0]                      # no unseen pair scores exactly 0 here
    assert len(unseen) == 8 and (scores == 0).sum() == 4
    assert capsys.readouterr().out == (f'{out}: 12 pairs (4 attributes x 3 objects), 8 unseen scored '
                                       f'{unseen.min():.4f} to {unseen.max():.4f}, names embedded by {glove}\n')
    assert sorted(q.name for q in root.iterdir()) == ['compositional-split-natural', 'feasibility.pt', 'images',
                                                      'metadata_compositional-split-natural.t7']

def test_czsl_feasibility_with_a_backbone(capsys, tmp_path, zappos, world, monkeypatch):
    "--backbone embeds the names with its text tower; without one a world's own small CLIP does (the shipped one here)."
    root, _ = zappos
    assert methods.feasibility_cli(['--data', str(root), '--out', str(tmp_path/'micro.pt'), '--backbone',
                                    'czsl-vit-micro']) is None
    assert capsys.readouterr().out.endswith(', names embedded by czsl-vit-micro@random\n')
    assert (load_feasibility(tmp_path/'micro.pt', n_pairs=12) == 0).sum() == 4             # the 4 training pairs
    shipped = lambda *a, **k: ('czsl-vit-tiny', 'world-default')
    for m in (pretrain, methods): monkeypatch.setattr(m, 'shipped_tag', shipped)
    assert methods.feasibility_cli(['--data', str(world), '--out', str(tmp_path/'world.pt')]) is None
    line = capsys.readouterr().out
    assert line.startswith(f'{tmp_path/"world.pt"}: 180 pairs (15 attributes x 12 objects), 104 unseen scored '), line
    assert line.endswith(', names embedded by czsl-vit-tiny@world-default-119327a06f26f484\n'), line
    scores = load_feasibility(tmp_path/'world.pt', n_pairs=180)
    bb = methods.create_backbone('czsl-vit-tiny', 'world-default', device='cpu')
    assert torch.allclose(scores, dataset_feasibility(world, bb=bb), atol=1e-6)

def test_czsl_feasibility(capsys, tmp_path, zappos, world):
    root, glove = zappos
    out = tmp_path/'out'/'feasibility.pt'
    feas = lambda *argv: error(capsys, methods.feasibility_cli, 'czsl-feasibility', *argv)
    assert feas('--data', tmp_path/'nope', '--out', out, '--embeddings', glove) == \
        f'--data not found: {tmp_path/"nope"}'
    assert feas('--data', tmp_path, '--out', out, '--embeddings', glove).startswith(
        f'split folder not found: {tmp_path/"compositional-split-natural"}')
    (root/'compositional-split-natural'/'val_pairs.txt').rename(tmp_path/'val_pairs.txt')
    assert feas('--data', root, '--out', out, '--embeddings', glove) == \
        f'pairs file not found: {root/"compositional-split-natural"/"val_pairs.txt"}'
    (tmp_path/'val_pairs.txt').rename(root/'compositional-split-natural'/'val_pairs.txt')
    (tmp_path/'short.txt').write_text('leather 1 0 0\nfur 0 0 1\nboots 1 0 1\n')
    assert feas('--data', root, '--out', out, '--embeddings', tmp_path/'short.txt') == (
        f'{tmp_path/"short.txt"}: 8 word(s) missing from the word vectors: '
        'ankle, faux, full, grain, heels, sandals, shoes, synthetic')
    (tmp_path/'bad.txt').write_text('leather 1 0 0\nfaux 0 one 0\n')
    assert feas('--data', root, '--out', out, '--embeddings', tmp_path/'bad.txt').startswith(
        f"{tmp_path/'bad.txt'}:2: the vector of 'faux'")
    assert feas('--data', root, '--out', out, '--embeddings', tmp_path/'glove.6B.300d.txt') == \
        f'word-vector file not found: {tmp_path/"glove.6B.300d.txt"}'
    assert feas('--data', root, '--out', out, '--embeddings', glove, '--backbone', 'czsl-vit-micro') == \
        '--embeddings and --backbone are two ways to embed the names: give one'
    assert feas('--data', root, '--out', out, '--pretrained', 'w.pt') == \
        '--pretrained w.pt needs --backbone, the open_clip name of the weights'
    assert feas('--data', root, '--out', out, '--backbone', 'ViT-B-23').startswith(
        '--backbone ViT-B-23 is not an open_clip model')
    assert feas('--data', root, '--out', out).startswith(f'{root} is not a generated world to take a backbone from: '
                                                         'pass --embeddings VECTORS.txt')
    assert 'required: --out' in feas('--data', root)
    assert not (tmp_path/'out').exists()
    (tmp_path/'file').write_text('precious')
    assert feas('--data', root, '--out', tmp_path/'file'/'f.pt', '--embeddings', glove) == \
        f'cannot write --out {tmp_path/"file"/"f.pt"}: {tmp_path/"file"} is a file, not a folder'
    assert feas('--data', root, '--out', tmp_path, '--embeddings', glove).startswith(f'--out {tmp_path} is a folder')
    long = tmp_path/('f' * 250)                               # a legal name, but the temp file's beside it is not
    assert feas('--data', root, '--out', long, '--embeddings', glove).startswith(
        f'cannot write --out {long}: File name too long: {tmp_path}/.{long.name}.')
    assert feas('--data', root, '--out', tmp_path/('f' * 300), '--embeddings', glove).startswith(
        f'cannot write --out {tmp_path/("f" * 300)}: File name too long')
    assert (tmp_path/'file').read_text() == 'precious' and not list(tmp_path.rglob('*.tmp'))

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
     "czsl-data: error: argument --seed: invalid int value: 'x' (see czsl-data synth --help)"),
    (command('czsl-feasibility', 'czsl_workbench.methods', 'feasibility_cli') + ['--data', '/nonexistent',
                                                                                   '--out', '{out}'],
     'czsl-feasibility: error: --data not found: /nonexistent')],
    ids=['czsl-fit', 'czsl-data', 'czsl-feasibility'])
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
