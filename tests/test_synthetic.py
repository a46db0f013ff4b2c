"The embedded world: determinism, split rules, czsl layout, caption corpus, safe writes, CLI, cache."
import hashlib, json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from czsl_workbench import synthetic
from czsl_workbench.synthetic import (generate_world, world_path, make_split, attr_mode_table, obj_mode_table,
                                      load_world_info, render_pair, partial_phrase, ATTRIBUTES, OBJECTS)

META = 'metadata_compositional-split-natural.t7'
SPLIT = 'compositional-split-natural'

def file_hashes(root):
    "{relative path: sha256} of every file under `root`."
    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob('*')) if p.is_file()}

def read_pairs(world, split):
    lines = (Path(world)/SPLIT/f'{split}_pairs.txt').read_text().splitlines()
    pairs = [tuple(l.split(' ')) for l in lines]
    assert all(len(p) == 2 and all(p) for p in pairs), f'{split}_pairs.txt has a line that is not "attr obj"'
    return pairs

@pytest.fixture(scope='module')
def worlds(tmp_path_factory):
    "Three tiny worlds: seed 0 on one worker, seed 0 on two workers, seed 1."
    d = tmp_path_factory.mktemp('worlds')
    return dict(a=generate_world(d/'a', 'tiny', seed=0, workers=1, progress=False),
                b=generate_world(d/'b', 'tiny', seed=0, workers=2, progress=False),
                c=generate_world(d/'c', 'tiny', seed=1, workers=1, progress=False))

# --- determinism ---------------------------------------------------------------------------------------------------
def test_same_seed_same_bytes_whatever_the_workers(worlds):
    ha, hb = file_hashes(worlds['a']), file_hashes(worlds['b'])
    assert len(ha) > 200 and ha == hb

def test_other_seed_other_bytes(worlds):
    ha, hc = file_hashes(worlds['a']), file_hashes(worlds['c'])
    assert ha['world.json'] != hc['world.json']
    assert not set(ha.values()) & {v for k, v in hc.items() if k.endswith('.png')}, 'two seeds rendered an identical image'

# --- layout --------------------------------------------------------------------------------------------------------
def test_czsl_layout(worlds):
    w = worlds['a']; info = load_world_info(w)
    meta = torch.load(w/META)
    assert isinstance(meta, list) and len(meta) == sum(info['counts']['images'].values())
    for m in meta:
        assert set(m) == {'image', 'attr', 'obj', 'set', 'attr_mode', 'obj_mode'}
        assert m['set'] in ('train', 'val', 'test') and isinstance(m['attr_mode'], int) and isinstance(m['obj_mode'], int)
        assert m['image'].startswith(f"{m['attr']}_{m['obj']}/") and m['image'].endswith('.png')
        assert (w/'images'/m['image']).is_file()
    assert len({m['image'] for m in meta}) == len(meta)
    vocab_a, vocab_o = set(info['attributes']), set(info['objects'])
    for split in ('train', 'val', 'test'):
        pairs = read_pairs(w, split)
        assert pairs and {a for a, o in pairs} <= vocab_a and {o for a, o in pairs} <= vocab_o
        assert {(m['attr'], m['obj']) for m in meta if m['set'] == split} == set(pairs)
    im = Image.open(w/'images'/meta[0]['image'])
    assert im.size == (64, 64) and im.mode == 'RGB'
    assert {'vocabulary' if k in ('attributes', 'objects') else k for k in info} >= {'vocabulary', 'families', 'attr_modes', 'attr_mode', 'obj_mode', 'config', 'seed', 'size', 'counts'}
    assert len(info['objects']) >= 10 and len(info['attributes']) >= 12 and len(info['families']) >= 3

def test_metadata_modes_match_the_tables(worlds):
    w = worlds['a']; info = load_world_info(w)
    amode, omode = attr_mode_table(info['attributes'], info['objects']), obj_mode_table(info['attributes'], info['objects'])
    for m in torch.load(w/META):
        assert (m['attr_mode'], m['obj_mode']) == (amode[m['attr'], m['obj']], omode[m['attr'], m['obj']])
    assert all(len(info['attr_modes'][a]) >= 2 for a in info['attributes'])
    assert any(v > 0 for v in info['obj_mode'].values())

# --- split rules ---------------------------------------------------------------------------------------------------
def test_split_rules_on_disk(worlds):
    w = worlds['a']; info = load_world_info(w); meta = torch.load(w/META)
    tr, va, te = (set(read_pairs(w, s)) for s in ('train', 'val', 'test'))
    assert {a for a, o in tr} == set(info['attributes']) and {o for a, o in tr} == set(info['objects'])
    for s in (va, te): assert s & tr and s - tr, 'val and test need both seen and unseen pairs'
    assert not (va - tr) & (te - tr), 'val-unseen and test-unseen overlap'
    assert not {(m['attr'], m['obj']) for m in meta if m['set'] == 'train'} & ((va | te) - tr)
    train_looks = {(m['attr'], m['attr_mode']) for m in meta if m['set'] == 'train'}
    assert train_looks == {(a, i) for a in info['attributes'] for i in range(len(info['attr_modes'][a]))}
    n_all = len(info['attributes']) * len(info['objects']); n_exist = len(tr | va | te)
    assert .5 * n_all < n_exist < .8 * n_all
    assert abs(len(va - tr) - len(va & tr)) <= 1 and abs(len(te - tr) - len(te & tr)) <= 1

@pytest.mark.parametrize('seed', range(6))
def test_split_rules_many_seeds(seed):
    A, O = list(ATTRIBUTES), list(OBJECTS)
    sp = make_split(A, O, seed=seed); amode, omode = attr_mode_table(A, O), obj_mode_table(A, O)
    tr = set(sp['train'])
    assert not tr & set(sp['val_unseen']) and not tr & set(sp['test_unseen']) and not set(sp['val_unseen']) & set(sp['test_unseen'])
    assert set(sp['val_seen']) <= tr and set(sp['test_seen']) <= tr
    assert {(a, amode[a, o]) for a, o in tr} == {(a, m) for a in A for m in range(len(ATTRIBUTES[a][2]))}
    exist = tr | set(sp['val_unseen']) | set(sp['test_unseen'])
    assert {(o, omode[a, o]) for a, o in tr} == {(o, omode[a, o]) for a, o in exist}
    assert make_split(A, O, seed=seed) == sp

# --- caption corpus ------------------------------------------------------------------------------------------------
def test_captions_bind_only_train_pairs_and_use_their_own_images(worlds):
    w = worlds['a']; info = load_world_info(w)
    rows = [json.loads(l) for l in (w/'pretrain'/'captions.jsonl').read_text().splitlines()]
    assert len(rows) == info['counts']['pretrain']['images'] > 0
    train = set(read_pairs(w, 'train')); unseen = {tuple(p.split()) for k in ('val_unseen', 'test_unseen') for p in info['pairs'][k]}
    singles = multis = partials = 0
    for r in rows:
        assert set(r) >= {'image', 'caption', 'objects'} and (w/'pretrain'/r['image']).is_file()
        for o in r['objects']:
            assert (o['attr'], o['obj']) in train
            assert o['attr_mode'] == info['attr_mode'][f"{o['attr']} {o['obj']}"] and o['obj_mode'] == info['obj_mode'][f"{o['attr']} {o['obj']}"]
            if len(r['objects']) == 2: assert f"{o['attr']} {o['obj']}" in r['caption']
        if len(r['objects']) == 1:                     # one object: the pair's phrase, or a partial one naming one primitive
            a, o = o['attr'], o['obj']; full = f'{a} {o}' in r['caption']
            assert full or partial_phrase(a, o, 'attr') in r['caption'] or partial_phrase(a, o, 'obj') in r['caption'], r['caption']
            partials += not full
        for a, o in unseen: assert f' {a} {o}' not in f" {r['caption']}", f'caption binds unseen pair {a} {o}'
        if len(r['objects']) == 2: multis += 1; assert r['relation'] in r['caption']
        else: singles += 1
    assert singles and multis and 0 < partials < singles      # the default pretrain_partial=.5 shows both kinds
    czsl = {v for k, v in file_hashes(w/'images').items()}
    pre = {v for k, v in file_hashes(w/'pretrain'/'images').items()}
    assert len(pre) == len(rows) and not czsl & pre

# --- safe writes ---------------------------------------------------------------------------------------------------
def test_refuses_to_overwrite_and_replaces_on_request(tmp_path):
    out = tmp_path/'w'; out.mkdir(); (out/'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match=str(out)): generate_world(out, 'tiny', progress=False, n_pretrain=2)
    assert (out/'keep.txt').read_text() == 'mine'
    generate_world(out, 'tiny', progress=False, n_pretrain=2, overwrite=True)
    assert not (out/'keep.txt').exists() and (out/'world.json').exists()
    assert sorted(os.listdir(tmp_path)) == ['w']

def test_failed_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    old = generate_world(tmp_path/'w', 'tiny', progress=False, n_pretrain=2); before = file_hashes(old)
    calls, render = [], synthetic._render_chunk
    def boom(args):                                    # the second chunk fails, after files were written
        calls.append(1)
        if len(calls) > 1: raise RuntimeError('disk on fire')
        return render(args)
    monkeypatch.setattr(synthetic, '_render_chunk', boom)
    with pytest.raises(RuntimeError, match='disk on fire'): generate_world(tmp_path/'v', 'tiny', workers=1, progress=False)
    calls.clear()
    with pytest.raises(RuntimeError, match='disk on fire'): generate_world(tmp_path/'w', 'tiny', seed=3, workers=1, progress=False, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ['w'] and file_hashes(old) == before

def test_bad_knobs_are_named(tmp_path):
    with pytest.raises(TypeError, match='bogus'): generate_world(tmp_path/'w', 'tiny', bogus=1)
    with pytest.raises(ValueError, match='mode_distinctness'): generate_world(tmp_path/'w', 'tiny', mode_distinctness=1.5)
    with pytest.raises(ValueError, match='huge'): generate_world(tmp_path/'w', 'huge')
    assert not (tmp_path/'w').exists()

# --- knobs, cache, CLI ---------------------------------------------------------------------------------------------
def test_knobs_change_the_pixels_and_are_stored(tmp_path):
    a = np.asarray(render_pair('striped', 'circle', seed=2, noise_std=0, clutter=0, occluders=0), np.float32)
    b = np.asarray(render_pair('striped', 'circle', seed=2, noise_std=.2, clutter=0, occluders=0), np.float32)
    assert np.abs(a - b).mean() > 10
    # at mode_distinctness 0 the two modes of red look alike; at 1 they do not
    def red_gap(d):
        px = lambda o: np.asarray(render_pair('red', o, seed=0, mode_distinctness=d, noise_std=0, clutter=0, occluders=0, rotation=0, jitter=0), np.float32)[30:34, 30:34].mean((0, 1))
        return np.abs(px('square') - px('circle')).max()
    assert red_gap(1.) > 60 > 25 > red_gap(0.)
    w = generate_world(tmp_path/'w', 'tiny', progress=False, n_pretrain=2, rotation=90, clutter=0, image_size=32)
    cfg = load_world_info(w)['config']
    assert (cfg['rotation'], cfg['clutter'], cfg['image_size']) == (90, 0, 32)
    assert Image.open(next((w/'images').rglob('*.png'))).size == (32, 32)

def test_world_path_generates_once_into_the_cache(isolated_cache):
    p = world_path('tiny', seed=2, n_pretrain=4, progress=False)
    assert p.parent == Path(isolated_cache)/'worlds' and (p/'world.json').exists()
    t = (p/'world.json').stat().st_mtime_ns
    assert world_path('tiny', seed=2, n_pretrain=4, progress=False) == p and (p/'world.json').stat().st_mtime_ns == t
    assert world_path('tiny', seed=3, n_pretrain=4, progress=False) != p

def _cli():
    exe = shutil.which('czsl-data')
    return [exe] if exe else [sys.executable, '-c', 'from czsl_workbench.synthetic import synth_cli; synth_cli()']

def test_cli_synth_tiny(tmp_path):
    out = tmp_path/'w'
    args = _cli() + ['synth', '--out', str(out), '--size', 'tiny', '--workers', '2', '--seed', '4', '--set', 'n_pretrain=6', '--no-progress']
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f'wrote {out}' in r.stdout and 'CZSL images' in r.stdout
    assert load_world_info(out)['seed'] == 4 and load_world_info(out)['counts']['pretrain']['images'] == 6
    r2 = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r2.returncode == 2 and str(out) in r2.stderr and '--overwrite' in r2.stderr
