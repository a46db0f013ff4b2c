"Data layer: czsl-layout loader quirks per benchmark style, open-world order, bad input, preload, feature cache."
import itertools, os, pickle, warnings
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from czsl_workbench.data import (CompositionDataset, DatasetError, MissingDataError, FeatureCache, FeatureCacheError,
                                 make_czsl_fixture, read_pairs, parse_split, load_metadata, clip_transform, prompt_name,
                                 pair_prompts, dataset_features, dataset_key, EmptyPairsWarning, warn_empty_pairs,
                                 PHASES)

SPLIT = 'compositional-split-natural'
META = f'metadata_{SPLIT}.t7'

MIT = dict(train_pairs=[('ancient', 'building'), ('ancient', 'town'), ('burnt', 'wood'), ('wet', 'dog')],
           val_pairs=[('ancient', 'building'), ('burnt', 'town')],
           test_pairs=[('wet', 'wood'), ('burnt', 'wood'), ('wet', 'town')],
           extra_entries=[dict(attr='NA', obj='dog', set='train'), dict(attr='wet', obj='dog', set='NA'),
                          dict(attr='dry', obj='dog', set='test'), dict(attr='NA', obj='wood', set='test')])
UT = dict(train_pairs=[('Faux.Leather', 'Boots.Mid-Calf'), ('Canvas', 'Shoes.Flats'), ('Canvas', 'Boots.Mid-Calf')],
          val_pairs=[('Faux.Leather', 'Shoes.Flats'), ('Canvas', 'Shoes.Flats')],
          test_pairs=[('Faux.Leather', 'Shoes.Flats'), ('Canvas', 'Boots.Mid-Calf'), ('Full.grain.leather', 'Shoes.Flats')],
          extra_meta={'_image': lambda e: f"Shoes/{e['obj']}/{e['attr']}/1.jpg"})
CGQA = dict(train_pairs=[('red', 'traffic_light'), ('green', 'traffic_light'), ('red', 'fire_hydrant')],
            val_pairs=[('green', 'fire_hydrant'), ('red', 'traffic_light')],
            test_pairs=[('green', 'fire_hydrant'), ('yellow', 'traffic_light')], flat_images=True)

@pytest.fixture(scope='module')
def fixtures(tmp_path_factory):
    d = tmp_path_factory.mktemp('czsl')
    return {'mit': make_czsl_fixture(d/'mit', **MIT), 'ut': make_czsl_fixture(d/'ut', **UT),
            'cgqa': make_czsl_fixture(d/'cgqa', **CGQA)}

def fresh(tmp_path, style=MIT, **kw):
    "A fixture of our own, for tests that damage it."
    return make_czsl_fixture(tmp_path/'ds', **{**style, **kw})

# ---- loader quirks, one benchmark style at a time

def test_mit_states_style(fixtures):
    tr, ts = CompositionDataset(fixtures['mit'], 'train'), CompositionDataset(fixtures['mit'], 'test')
    assert tr.attrs == ['ancient', 'burnt', 'wet'] and tr.objs == ['building', 'dog', 'town', 'wood']
    allp = MIT['train_pairs'] + MIT['val_pairs'] + MIT['test_pairs']
    assert tr.pairs == sorted(set(allp)) == tr.closed_pairs and len(tr.pairs) == 7
    assert tr.train_pairs == MIT['train_pairs'] and tr.test_pairs == MIT['test_pairs']     # file order
    assert tr.train_pair2idx == {p: i for i, p in enumerate(MIT['train_pairs'])}
    # NA attr, NA set and a pair in no pairs file are dropped
    assert len(tr) == 8 and tr.n_dropped == 1 and len(ts) == 6 and ts.n_dropped == 2
    assert all(a != 'NA' for _, a, _ in tr.data) and ('dry', 'dog') not in {(a, o) for _, a, o in ts.data}
    # the set field decides the phase: 'burnt wood' is in test_pairs.txt, yet its train images stay in train
    assert sum((a, o) == ('burnt', 'wood') for _, a, o in tr.data) == 2
    assert sum((a, o) == ('burnt', 'wood') for _, a, o in ts.data) == 2
    assert {d[0] for d in tr.data}.isdisjoint(d[0] for d in ts.data)
    assert tr.data[0][0].startswith('ancient_building/')
    img, a, o, p = tr[0]
    assert isinstance(img, Image.Image) and img.mode == 'RGB' and img.size == (16, 16)
    assert (tr.attrs[a], tr.objs[o], tr.pairs[p]) == ('ancient', 'building', ('ancient', 'building'))
    for i, (_, an, on) in enumerate(tr.data):
        assert tr.attr_idx[i] == tr.attr2idx[an] and tr.obj_idx[i] == tr.obj2idx[on] and tr.pair_idx[i] == tr.pair2idx[(an, on)]
    assert tr.attr_idx.dtype == tr.obj_idx.dtype == tr.pair_idx.dtype == torch.long
    assert tr.attr_modes is None and tr.obj_modes is None
    assert 'closed world' in repr(tr)

def test_ut_zappos_style(fixtures):
    ds = CompositionDataset(fixtures['ut'], 'test')
    assert ds.attrs == ['Canvas', 'Faux.Leather', 'Full.grain.leather'] and ds.objs == ['Boots.Mid-Calf', 'Shoes.Flats']
    assert ds.pairs[0] == ('Canvas', 'Boots.Mid-Calf')
    assert all(e['_image'].startswith('Shoes/') for e in ds.entries)
    assert ds.data[-1][1:] == ('Full.grain.leather', 'Shoes.Flats')
    assert pair_prompts([ds.data[-1][1:]]) == ['a photo of full grain leather shoes flats']
    assert prompt_name('Boots.Mid-Calf') == 'boots mid-calf' and prompt_name('Faux.Leather') == 'faux leather'
    assert pair_prompts([('Canvas', 'Shoes.Flats')], template='{attr} {obj}') == ['canvas shoes flats']

def test_cgqa_style(fixtures):
    root = fixtures['cgqa']
    ds = CompositionDataset(root, 'train')
    assert not any(p.is_dir() for p in (root/'images').iterdir())                      # flat image folder
    assert ds.objs == ['fire_hydrant', 'traffic_light'] and ('red', 'traffic_light') in ds.pair2idx
    assert all('/' not in d[0] for d in ds.data) and ds[0][0].size == (16, 16)
    assert prompt_name('traffic_light') == 'traffic light'
    assert CompositionDataset(root, 'test').attrs == ['green', 'red', 'yellow']

def test_open_world_order(fixtures):
    for style in ('mit', 'ut', 'cgqa'):
        for phase in ('train', 'val', 'test'):
            cw = CompositionDataset(fixtures[style], phase)
            ow = CompositionDataset(fixtures[style], phase, open_world=True)
            assert ow.pairs == list(itertools.product(ow.attrs, ow.objs)) and 'open world' in repr(ow)
            assert all(ow.pair2idx[(a, o)] == ow.attr2idx[a] * len(ow.objs) + ow.obj2idx[o] for a, o in ow.pairs)
            assert torch.equal(ow.pair_idx, ow.attr_idx * len(ow.objs) + ow.obj_idx)
            assert ow.data == cw.data and torch.equal(ow.attr_idx, cw.attr_idx) and ow.closed_pairs == cw.pairs
            assert [ow.pairs[i] for i in ow.pair_idx] == [cw.pairs[i] for i in cw.pair_idx]

def test_mode_labels(tmp_path):
    root = fresh(tmp_path, CGQA, extra_meta=lambda e: {'attr_mode': int(e['obj'] == 'fire_hydrant'), 'obj_mode': np.int64(2)})
    ds = CompositionDataset(root, 'train')
    assert ds.attr_modes.tolist() == [0, 0, 0, 0, 1, 1] and ds.obj_modes.tolist() == [2] * 6
    meta = load_metadata(root/META); meta[0].pop('attr_mode'); torch.save(meta, root/META)
    assert CompositionDataset(root, 'train').attr_modes.tolist() == [-1, 0, 0, 0, 1, 1]     # absent on one entry
    meta[1]['obj_mode'] = 'b'; torch.save(meta, root/META)
    with pytest.raises(DatasetError, match='obj_mode should be an integer'): CompositionDataset(root, 'train')

def test_dataloader_batches(fixtures):
    ds = CompositionDataset(fixtures['mit'], 'train', transform=clip_transform(8))
    x, a, o, p = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert x.shape == (4, 3, 8, 8) and a.tolist() == ds.attr_idx[:4].tolist() and p.dtype == torch.long

def test_clip_transform(fixtures):
    img = CompositionDataset(fixtures['mit'], 'train')[0][0]
    x = clip_transform(12)(img)
    assert x.shape == (3, 12, 12) and x.dtype == torch.float32
    ref = (torch.from_numpy(np.array(img.resize((12, 12), Image.BICUBIC))).permute(2, 0, 1) / 255 - torch.tensor(
        [0.48145466, 0.4578275, 0.40821073])[:, None, None]) / torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    assert torch.allclose(x, ref, atol=1e-5)
    names = [type(t).__name__ for t in clip_transform(12, train=True, perspective=0.2).transforms]
    assert names == ['Resize', 'CenterCrop', 'RandomHorizontalFlip', 'RandomPerspective', 'RandomRotation', 'ToTensor', 'Normalize']
    assert [type(t).__name__ for t in clip_transform(12).transforms] == ['Resize', 'CenterCrop', 'ToTensor', 'Normalize']

# ---- bad input: each case names the file, line or entry

def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match='no_such_dataset'): CompositionDataset(tmp_path/'no_such_dataset', 'train')
    (tmp_path/'afile').write_text('x')
    with pytest.raises(MissingDataError, match='afile'): CompositionDataset(tmp_path/'afile', 'train')

def test_unknown_phase(fixtures):
    with pytest.raises(DatasetError, match="'valid'"): CompositionDataset(fixtures['mit'], 'valid')
    with pytest.raises(ValueError, match='train'): CompositionDataset(fixtures['mit'], 'all')

def test_missing_split_folder_and_file(tmp_path):
    root = fresh(tmp_path)
    with pytest.raises(MissingDataError, match='compositional-split-natur.*folders in'):
        CompositionDataset(root, 'train', split='compositional-split-natur')
    (root/SPLIT/'val_pairs.txt').unlink()
    with pytest.raises(FileNotFoundError, match='val_pairs.txt'): CompositionDataset(root, 'train')

def test_missing_images_folder(tmp_path):
    root = fresh(tmp_path); (root/'images').rename(root/'imgs')
    with pytest.raises(MissingDataError, match='image folder not found.*images'): CompositionDataset(root, 'train')

@pytest.mark.parametrize('line', ['red', 'red big square', 'a\tb\tc'])
def test_bad_pair_line(tmp_path, line):
    root = fresh(tmp_path); f = root/SPLIT/'test_pairs.txt'
    f.write_text('wet wood\n\nburnt wood\n' + line + '\n')
    with pytest.raises(DatasetError, match=r'test_pairs\.txt:4: expected "attr obj"'): CompositionDataset(root, 'train')

def test_pairs_file_edge_cases(tmp_path):
    f = tmp_path/'p.txt'; f.write_text('  red   circle \n\nred circle\nblue\tsquare\n')
    assert read_pairs(f) == [('red', 'circle'), ('blue', 'square')]
    f.write_text('\n\n')
    with pytest.raises(DatasetError, match='p.txt lists no pairs'): read_pairs(f)
    f.write_bytes(b'\xff\xfe red circle')
    with pytest.raises(DatasetError, match='p.txt'): read_pairs(f)

def test_missing_metadata(tmp_path):
    root = fresh(tmp_path); (root/META).rename(root/'metadata_other.t7')
    with pytest.raises(FileNotFoundError, match=f'{META}.*metadata_other.t7'): CompositionDataset(root, 'train')

@pytest.mark.parametrize('damage', ['garbage', 'truncated', 'empty', 'pickle'])
def test_corrupt_metadata(tmp_path, damage):
    root = fresh(tmp_path); f = root/META
    if damage == 'garbage': f.write_bytes(os.urandom(300))
    elif damage == 'truncated': f.write_bytes(f.read_bytes()[:200])
    elif damage == 'empty': f.write_bytes(b'')
    else: f.write_bytes(pickle.dumps(Path('x'), protocol=2))          # a pickle that weights_only refuses: no code runs
    with pytest.raises(DatasetError, match=f'cannot read metadata .*{META}') as e: CompositionDataset(root, 'train')
    assert e.value.__cause__ is None and e.value.__suppress_context__            # no raw unpickler traceback

def test_metadata_with_objects_is_not_unpickled(tmp_path):
    root = fresh(tmp_path); meta = load_metadata(root/META); meta[0]['where'] = Path('/x'); torch.save(meta, root/META)
    with pytest.raises(DatasetError, match=f'{META}: it holds objects that are not plain data .*pathlib'): CompositionDataset(root, 'train')
    meta[0]['where'] = np.arange(2); meta[0]['w'] = np.float32(1); meta[0]['attr'] = np.str_(meta[0]['attr'])
    torch.save(meta, root/META)
    assert len(CompositionDataset(root, 'train')) == 8                   # numpy values are plain data

@pytest.mark.parametrize('meta, where', [({'a': 1}, 'list of dicts, got dict'),
                                         ([{'image': 'x.png', 'attr': 'wet', 'obj': 'dog', 'set': 'train'}, {'image': 'y.png'}], 'entry 1'),
                                         (['x.png wet dog train'], 'entry 0'),
                                         ([{'image': 'x.png', 'attr': 'wet', 'obj': 3, 'set': 'train'}], 'entry 0')])
def test_malformed_metadata(tmp_path, meta, where):
    root = fresh(tmp_path); torch.save(meta, root/META)
    with pytest.raises(DatasetError, match=where): load_metadata(root/META)
    with pytest.raises(DatasetError, match=META): CompositionDataset(root, 'train')

def test_missing_images(tmp_path):
    root = fresh(tmp_path)
    ds = CompositionDataset(root, 'train')
    for i in (1, 3, 6): ds.image_path(i).unlink()
    with pytest.raises(FileNotFoundError, match=rf'3 of 8 train images .*first: .*{ds.data[1][0]}'): CompositionDataset(root, 'train')
    CompositionDataset(root, 'val')                                   # other phases are not affected
    lazy = CompositionDataset(root, 'train', check_images=False)      # opt out (huge datasets): fails when read, naming the file
    assert len(lazy) == 8
    with pytest.raises(MissingDataError, match=ds.data[1][0]): lazy[1]

def test_missing_images_mit_rename_hint(tmp_path):
    root = fresh(tmp_path)
    (root/'images'/'ancient_building').rename(root/'images'/'ancient building')
    with pytest.raises(MissingDataError, match="'ancient building' exists: rename"): CompositionDataset(root, 'train')

def test_undecodable_image(tmp_path):
    root = fresh(tmp_path); ds = CompositionDataset(root, 'train')
    ds.image_path(2).write_bytes(b'not a png')
    with pytest.raises(DatasetError, match=f'cannot decode image .*{ds.data[2][0]}'): ds[2]
    with pytest.raises(DatasetError, match=ds.data[2][0]): CompositionDataset(root, 'train', preload=True)

# ---- pairs with no images: kept, as czsl's loader keeps them, and said

def _drop_entries(root, pair, phase):
    "Remove `phase`'s metadata entries of `pair`; the pairs files still list it."
    meta = load_metadata(root/META)
    torch.save([m for m in meta if ((m['attr'], m['obj']), m['set']) != (pair, phase)], root/META)

def _load_caught(root, phase, **kw):
    "The dataset and every warning its load emitted."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always'); ds = CompositionDataset(root, phase, **kw)
    return ds, caught

def test_pair_without_images_warns_and_stays(tmp_path):
    root = fresh(tmp_path); _drop_entries(root, ('wet', 'town'), 'test')
    ds, caught = _load_caught(root, 'test')
    assert [w.category for w in caught] == [EmptyPairsWarning] and issubclass(EmptyPairsWarning, UserWarning)
    msg = str(caught[0].message)
    assert str(root) in msg and f'{SPLIT}/test_pairs.txt' in msg and '1 of the 3 pairs' in msg and "'wet town'" in msg
    assert "stay in the vocabulary" in msg and "czsl's loader keeps them" in msg
    assert ds.empty_pairs == [('wet', 'town')] and len(ds) == 4                     # its 2 test images are gone...
    assert ('wet', 'town') in ds.test_pairs and ('wet', 'town') in ds.pairs and len(ds.pairs) == 7   # ...the pair stays
    ow, caught = _load_caught(root, 'test', open_world=True)
    assert len(caught) == 1 and ('wet', 'town') in ow.closed_pairs
    for phase in ('train', 'val'):                                                   # one warning per (root, phase)
        ds, caught = _load_caught(root, phase)
        assert caught == [] and ds.empty_pairs == []

def test_empty_pairs_warning_lists_ten_then_counts(tmp_path):
    pairs = [('a', f'o{k}') for k in range(13)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert warn_empty_pairs(tmp_path, 'train', pairs, [dict(attr='a', obj='o5')]) == pairs[:5] + pairs[6:]
    msg = str(caught[0].message)
    assert len(caught) == 1 and '12 of the 13 pairs' in msg and "'a o0', 'a o1'" in msg and "'a o10'" in msg
    assert "'a o11'" not in msg and msg.count("'a o") == 10 and 'and 2 more' in msg

def test_clean_datasets_warn_nothing(fixtures, tmp_path):
    from czsl_workbench.synthetic import generate_world
    world = generate_world(tmp_path/'world', 'tiny', progress=False)
    for root in (fixtures['mit'], fixtures['ut'], fixtures['cgqa'], world):
        for phase in PHASES:
            ds, caught = _load_caught(root, phase)
            assert caught == [] and ds.empty_pairs == [], (root, phase, [str(w.message) for w in caught])

# ---- preload

def test_preload_equals_lazy(fixtures):
    for style in ('mit', 'ut', 'cgqa'):
        lazy = CompositionDataset(fixtures[style], 'train')
        pre = CompositionDataset(fixtures[style], 'train', preload=True)
        assert pre.images.shape == (len(lazy), 3, 16, 16) and pre.images.dtype == torch.uint8 and 'preloaded' in repr(pre)
        for i in range(len(lazy)):
            assert np.array_equal(np.asarray(pre[i][0]), np.asarray(lazy[i][0])) and pre[i][1:] == lazy[i][1:]
    for train in (False, True):                                          # same random draws -> same tensors
        tf = clip_transform(12, train=train)
        lazy = CompositionDataset(fixtures['mit'], 'val', transform=tf)
        pre = CompositionDataset(fixtures['mit'], 'val', transform=tf, preload=True)
        for i in range(len(lazy)):
            torch.manual_seed(i); a = lazy[i][0]
            torch.manual_seed(i); b = pre[i][0]
            assert torch.equal(a, b)

def test_preload_mixed_sizes(tmp_path):
    root = fresh(tmp_path); ds = CompositionDataset(root, 'train')
    Image.new('RGB', (20, 10), 'red').save(ds.image_path(3))
    with pytest.raises(DatasetError, match='preload_size'): CompositionDataset(root, 'train', preload=True)
    pre = CompositionDataset(root, 'train', preload=True, preload_size=16)
    assert pre.images.shape == (8, 3, 16, 16) and tuple(pre.images[3, :, 0, 0].tolist()) == (255, 0, 0)
    assert np.array_equal(np.asarray(pre[0][0]), np.asarray(ds[0][0]))

# ---- feature cache

def test_feature_cache_hit_miss_changed_key(tmp_path):
    fc, calls = FeatureCache(tmp_path/'fc'), []
    def compute(): calls.append(1); return {'image': torch.randn(5, 4), 'patches': torch.randn(5, 3, 4)}
    key = {'root': '/data/mit', 'split': SPLIT, 'phase': 'test', 'backbone': 'ViT-B-32', 'weights': 'abc123'}
    a = fc.get_or_compute(key, compute)
    assert len(calls) == 1 and fc.misses == 1 and fc.path(key).exists()
    b = fc.get_or_compute(dict(reversed(list(key.items()))), compute)           # same key, other dict order
    assert len(calls) == 1 and fc.hits == 1 and torch.equal(a['image'], b['image']) and torch.equal(a['patches'], b['patches'])
    assert FeatureCache(tmp_path/'fc').get_or_compute(key, compute)['image'].shape == (5, 4) and len(calls) == 1   # new process, same dir
    fc.get_or_compute({**key, 'weights': 'def456'}, compute)
    assert len(calls) == 2 and fc.misses == 2
    assert [p.name for p in (tmp_path/'fc').iterdir() if p.name.startswith('.')] == []          # no temp files left

def test_feature_cache_corrupt(tmp_path):
    fc, calls = FeatureCache(tmp_path/'fc'), []
    def compute(): calls.append(1); return {'image': torch.ones(2, 3)}
    key = {'backbone': 'x'}
    fc.get_or_compute(key, compute)
    fc.path(key).write_bytes(fc.path(key).read_bytes()[:50])                  # truncated
    with pytest.warns(UserWarning, match='unusable'): out = fc.get_or_compute(key, compute)
    assert len(calls) == 2 and torch.equal(out['image'], torch.ones(2, 3))
    assert fc.get_or_compute(key, compute) is not None and len(calls) == 2      # rewritten, now a hit
    fc.save({'backbone': 'other'}, {'image': torch.zeros(1)}); os.replace(fc.path({'backbone': 'other'}), fc.path(key))
    with pytest.warns(UserWarning, match='different key'): fc.get_or_compute(key, compute)   # a file for another key
    assert len(calls) == 3
    strict = FeatureCache(tmp_path/'fc', on_corrupt='raise')
    fc.path(key).write_bytes(b'garbage')
    with pytest.raises(FeatureCacheError, match=fc.path(key).name): strict.get_or_compute(key, compute)

def test_feature_cache_bad_compute(tmp_path):
    fc = FeatureCache(tmp_path/'fc')
    with pytest.raises(TypeError, match='dict of tensors'): fc.get_or_compute({'k': 1}, lambda: [torch.ones(1)])
    def boom(): raise RuntimeError('encoder died')
    with pytest.raises(RuntimeError, match='encoder died'): fc.get_or_compute({'k': 2}, boom)
    assert list((tmp_path/'fc').iterdir()) == []
    with pytest.raises(ValueError, match='on_corrupt'): FeatureCache(tmp_path, on_corrupt='ignore')

def test_feature_cache_default_dir(isolated_cache):
    assert FeatureCache().dir == Path(isolated_cache)/'features'

def test_feature_cache_stores_own_storage(tmp_path):
    fc = FeatureCache(tmp_path/'fc'); big = torch.randn(1000, 100)
    fc.get_or_compute({'k': 'view'}, lambda: {'image': big[:2]})
    assert fc.path({'k': 'view'}).stat().st_size < 20_000                   # not the whole 400 kB buffer

# ---- dataset features

def _encoder(calls):
    def enc(x):                                                                # x: [B, 3, H, W]
        calls.append(len(x)); return x.mean((2, 3))                            # [B, 3]
    return enc

def test_dataset_features_cached(tmp_path):
    root = fresh(tmp_path); fc, calls = FeatureCache(tmp_path/'fc'), []
    ds = CompositionDataset(root, 'train', transform=clip_transform(8))
    f = dataset_features(ds, _encoder(calls), key={'backbone': 'mean'}, batch_size=3, cache=fc, progress=False)
    assert calls == [3, 3, 2] and f['image'].shape == (8, 3)
    ref = torch.stack([ds[i][0].mean((1, 2)) for i in range(len(ds))])
    assert torch.allclose(f['image'], ref)                                     # in dataset order
    assert all(torch.equal(f[k], getattr(ds, k)) for k in ('attr_idx', 'obj_idx', 'pair_idx'))
    f2 = dataset_features(ds, _encoder(calls), key={'backbone': 'mean'}, batch_size=3, cache=fc, progress=False)
    assert len(calls) == 3 and torch.equal(f2['image'], f['image'])            # hit
    ow = CompositionDataset(root, 'train', transform=clip_transform(8), open_world=True)
    f3 = dataset_features(ow, _encoder(calls), key={'backbone': 'mean'}, cache=fc, progress=False)
    assert len(calls) == 3 and torch.equal(f3['pair_idx'], ow.pair_idx)        # features shared, labels of the world
    dataset_features(ds, _encoder(calls), key={'backbone': 'mean', 'weights': 'v2'}, cache=fc, progress=False)
    assert len(calls) == 4                                                     # encoder key changed
    ds.transform = clip_transform(10)
    dataset_features(ds, _encoder(calls), key={'backbone': 'mean'}, cache=fc, progress=False)
    assert len(calls) == 5                                                     # transform changed
    dataset_features(CompositionDataset(root, 'val', transform=clip_transform(10)), _encoder(calls), key={'backbone': 'mean'},
                     cache=fc, progress=False)
    assert len(calls) == 6                                                     # phase changed
    k = dataset_key(ds)
    Image.new('RGB', (16, 16), 'blue').save(ds.image_path(0)); os.utime(ds.image_path(0), ns=(1, 1))
    assert dataset_key(ds) != k                                                # regenerated images
    out = dataset_features(ds, _encoder(calls), key={'backbone': 'mean'}, cache=fc, progress=False)
    assert len(calls) == 7 and not torch.equal(out['image'][0], f['image'][0])

def test_dataset_features_outputs(tmp_path):
    root = fresh(tmp_path, CGQA, extra_meta={'attr_mode': 1, 'obj_mode': 0})
    ds = CompositionDataset(root, 'train', transform=clip_transform(8), preload=True)
    tup = lambda x: (x.mean((2, 3)), x.flatten(2).transpose(1, 2))             # ([B, 3], [B, 64, 3]) like encode_images(tokens=True)
    f = dataset_features(ds, tup, progress=False, dtype=torch.float16)
    assert f['image'].shape == (6, 3) and f['patches'].shape == (6, 64, 3) and f['patches'].dtype == torch.float16
    assert f['attr_mode'].tolist() == [1] * 6 and f['obj_mode'].tolist() == [0] * 6
    g = dataset_features(ds, lambda x: {'image': x.mean((2, 3)), 'extra': x[:, 0, 0, :2]}, num_workers=2, batch_size=2, progress=False)
    assert set(g) >= {'image', 'extra', 'pair_idx'} and torch.allclose(g['image'], f['image'].float(), atol=1e-2)
    with pytest.raises(TypeError, match='encode_fn should return'): dataset_features(ds, lambda x: 3, progress=False)

def test_dataset_features_bad_use(tmp_path):
    root = fresh(tmp_path)
    with pytest.raises(TypeError, match='transform'): dataset_features(CompositionDataset(root, 'train'), _encoder([]), progress=False)
    ds = CompositionDataset(root, 'train', transform=clip_transform(8))
    with pytest.raises(ValueError, match='key'): dataset_features(ds, _encoder([]), cache=FeatureCache(tmp_path/'fc'), progress=False)
