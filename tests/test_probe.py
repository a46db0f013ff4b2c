"The compositionality probe: world negatives checked by an independent reader of captions, scorers on hand-made cases."
import json, math, time
from collections import Counter
from types import SimpleNamespace
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from PIL import Image
from czsl_workbench.synthetic import world_path, load_world_info, ATTRIBUTES, OBJECTS, RELATIONS
from czsl_workbench.data import DatasetError, MissingDataError
from czsl_workbench.synthetic import world_pairs
from czsl_workbench.methods.probe import (KINDS, ProbeItem, Accuracies, world_probe, probe_scores,
    probe_accuracy, kind_accuracy, chance_accuracy, bow_scores, bow_accuracy, CaptionLM, blind_scores, blind_accuracy,
    corpus_captions, balanced_subset, recall_at_k, retrieval_recall, load_sugarcrepe, probe_table)

# ---------------------------------------------------------------- an independent reader of the world's captions
MIRROR = {'left of': 'right of', 'right of': 'left of', 'above': 'below', 'below': 'above'}

def parse_np(text):
    "'a red square' -> (['red'], 'square'); articles must agree with the next word; anything else is an error."
    t = text.split()
    assert len(t) >= 2 and t[0] in ('a', 'an'), text
    assert t[0] == ('an' if t[1][0] in 'aeiou' else 'a'), f'wrong article in {text!r}'
    assert t[-1] in OBJECTS and all(w in ATTRIBUTES for w in t[1:-1]), text
    return t[1:-1], t[-1]

def parse(caption):
    "'X rel Y' -> (X, rel, Y) with X, Y noun phrases; exactly one relation."
    found = [r for r in RELATIONS if f' {r} ' in caption]
    assert len(found) == 1, caption
    x, y = caption.split(f' {found[0]} ')
    return parse_np(x), found[0], parse_np(y)

def names(np_, pair):
    "A noun phrase names an object when its shape is the object's and every attribute it gives is the object's."
    attrs, obj = np_
    return obj == pair[1] and all(a == pair[0] for a in attrs)

def is_true(caption, meta):
    "A two-object caption is true of the scene in either reading: (first rel second) or (second mirror(rel) first)."
    x, rel, y = parse(caption); p1, p2 = meta['pairs']; r = meta['relation']
    return (rel == r and names(x, p1) and names(y, p2)) or (rel == MIRROR[r] and names(x, p2) and names(y, p1))

def test_the_reader_can_say_false():
    meta = dict(pairs=[['red', 'square'], ['blue', 'star']], relation='left of')
    assert is_true('a red square left of a blue star', meta) and is_true('a blue star right of a red square', meta)
    assert is_true('a square left of a star', meta) and is_true('a star right of a red square', meta)
    for neg in ['a red square right of a blue star', 'a blue square left of a red star', 'a red star left of a blue square',
                'a red square above a blue star', 'a red square left of a green star', 'a red striped square left of a star',
                'a red star right of a blue square', 'a blue star left of a red square']:
        assert not is_true(neg, meta), neg
    with pytest.raises(AssertionError): parse('an red square left of a blue star')

# ---------------------------------------------------------------- the world probe
@pytest.fixture(scope='module')
def world(): return world_path('tiny', progress=False)

@pytest.fixture(scope='module')
def seen(world): return world_probe(world, n=80)

@pytest.fixture(scope='module')
def unseen(world): return world_probe(world, n=80, unseen=True)

def test_every_negative_is_false_and_every_caption_true(seen, unseen):
    assert len(seen) == len(unseen) == 80 * len(KINDS)
    for it in seen + unseen:
        assert it.caption != it.negative, it
        assert is_true(it.caption, it.meta), (it.kind, it.caption, it.meta)
        assert not is_true(it.negative, it.meta), (it.kind, it.negative, it.meta)

def test_each_kind_edits_what_it_says(seen):
    for it in seen:
        (xa, xo), rel, (ya, yo) = parse(it.caption); (na, no), nrel, (ma, mo) = parse(it.negative)
        (a1, o1), (a2, o2) = it.meta['pairs']
        assert a1 != a2 and o1 != o2
        if it.kind == 'replace-att':
            assert (xo, yo, rel) == (no, mo, nrel) and sum([xa != na, ya != ma]) == 1 and it.meta['new'] not in (a1, a2)
        elif it.kind == 'replace-obj':
            assert (xa, ya, rel) == (na, ma, nrel) and sum([xo != no, yo != mo]) == 1 and it.meta['new'] not in (o1, o2)
        elif it.kind == 'replace-rel':
            assert ((xa, xo), (ya, yo)) == ((na, no), (ma, mo)) and nrel != rel
            assert it.meta['rel_negative'] == ('opposite' if nrel == MIRROR[rel] else 'cross-axis')
        elif it.kind == 'swap-att': assert (na, no, ma, mo, nrel) == (ya, xo, xa, yo, rel)
        elif it.kind == 'swap-obj': assert (na, no, ma, mo, nrel) == (xa, yo, ya, xo, rel)
        elif it.kind == 'add-att':
            j = it.meta['changed']; bare, full = [(xa, xo), (ya, yo)], [(na, no), (ma, mo)]
            assert bare[j][0] == [] and full[j] == ([it.meta['new']], bare[j][1]) and bare[1 - j] == full[1 - j]
            assert bare[1 - j][0] == [it.meta['pairs'][1 - j][0]] and it.meta['new'] not in (a1, a2)
    fams = Counter(it.meta['rel_negative'] for it in seen if it.kind == 'replace-rel')
    assert set(fams) == {'opposite', 'cross-axis'}

def test_swaps_are_word_permutations(seen, unseen):
    swaps = [it for it in seen + unseen if it.kind.startswith('swap')]
    assert len(swaps) == 4 * 80
    for it in swaps: assert Counter(it.caption.split()) == Counter(it.negative.split()), it
    for it in seen:
        if not it.kind.startswith('swap'): assert Counter(it.caption.split()) != Counter(it.negative.split()), it

def test_unseen_scenes_hold_exactly_one_test_unseen_pair(world, seen, unseen):
    info = load_world_info(world)
    train, tu = set(world_pairs(info, 'train')), set(world_pairs(info, 'test_unseen'))
    for it in unseen:
        ps = [tuple(p) for p in it.meta['pairs']]
        assert sum(p in tu for p in ps) == 1 and sum(p in train for p in ps) == 1
        assert ps[it.meta['unseen_index']] in tu
        if it.kind != 'add-att':                                       # the caption itself names both pairs
            (xa, xo), _, (ya, yo) = parse(it.caption); assert [(xa[0], xo), (ya[0], yo)] == ps
    assert {it.meta['unseen_index'] for it in unseen} == {0, 1}
    for it in seen: assert all(tuple(p) in train for p in it.meta['pairs']) and it.meta['unseen_index'] is None

def test_determinism_and_shared_scenes(world, seen):
    again = world_probe(world, n=80)
    assert [(i.caption, i.negative, i.id) for i in again] == [(i.caption, i.negative, i.id) for i in seen]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(again, seen))
    other = world_probe(world, n=80, seed=1)
    assert [i.negative for i in other] != [i.negative for i in seen]
    assert not all(np.array_equal(a.image, b.image) for a, b in zip(other, seen))
    few = world_probe(world, n=10, kinds=['swap-att', 'add-att'])        # a prefix, other kinds untouched
    assert [i.kind for i in few] == ['swap-att'] * 10 + ['add-att'] * 10
    for k in ('swap-att', 'add-att'):
        assert [(i.caption, i.negative) for i in few if i.kind == k] == \
            [(i.caption, i.negative) for i in seen if i.kind == k][:10]
    by_scene = {}
    for it in seen: by_scene.setdefault(it.meta['scene'], []).append(it)
    assert len(by_scene) == 80 and all(len(v) == len(KINDS) and all(x.image is v[0].image for x in v) for v in by_scene.values())
    im = seen[0].image
    assert im.dtype == np.uint8 and im.shape == (64, 64, 3)
    assert len({seen[i].image.tobytes() for i in range(80)}) == 80

def test_domains_and_bad_arguments(world, tmp_path):
    corpus = world_probe(world, n=3, kinds=['swap-att'])
    czsl = world_probe(world, n=3, kinds=['swap-att'], domain='czsl')
    assert [i.caption for i in corpus] == [i.caption for i in czsl]
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(corpus, czsl))
    with pytest.raises(ValueError, match=r"unknown probe kind\(s\) \['swap-rel'\]"): world_probe(world, n=1, kinds=['swap-rel'])
    with pytest.raises(ValueError, match='domain'): world_probe(world, n=1, domain='coco')
    info = json.loads((world/'world.json').read_text())
    info['objects'] = ['circle', 'square']; info['config']['objects'] = ['circle', 'square']
    info['pairs'] = {k: [p for p in v if p.split()[1] in ('circle', 'square')] for k, v in info['pairs'].items()}
    (tmp_path/'world.json').write_text(json.dumps(info))
    with pytest.raises(ValueError, match="'replace-obj' needs a third object"): world_probe(tmp_path, n=1)

def test_a_full_probe_builds_fast(world):
    t = time.time(); items = world_probe(world, n=600)
    assert len(items) == 3600 and time.time() - t < 15

# ---------------------------------------------------------------- scoring
class GreyCLIP(nn.Module):
    "Image of grey level g -> e_g; text i of WORDS -> its vector; counts the images it encodes."
    WORDS = {'zero': [1., 0, 0], 'one': [0, 1., 0], 'two': [0, 0, 1.], 'half': [.5 ** .5, .5 ** .5, 0]}
    visual = None
    def __init__(self): super().__init__(); self.seen = 0; self.modes = []
    def encode_image(self, x, normalize=True):
        self.seen += len(x); self.modes.append(self.training); return torch.eye(3)[x.long()]
    def encode_text(self, tok, normalize=True): return torch.tensor(list(self.WORDS.values()))[tok.long()]

def grey_backbone():
    return SimpleNamespace(model=GreyCLIP(), device=torch.device('cpu'), embed_dim=3,
                           tokenizer=lambda ts: torch.tensor([list(GreyCLIP.WORDS).index(t) for t in ts]),
                           preprocess_val=lambda im: torch.tensor(np.asarray(im)[0, 0, 0]))

def grey(v): return np.full((4, 4, 3), v, np.uint8)

def test_probe_accuracy_on_a_hand_made_backbone(tmp_path):
    bb = grey_backbone(); bb.model.train()
    g0, g1, g2 = grey(0), grey(1), grey(2)
    Image.fromarray(grey(1)).save(tmp_path/'one.png')
    items = [ProbeItem(g0, 'zero', 'one', 'a', '0'), ProbeItem(g0, 'one', 'zero', 'a', '1'),
             ProbeItem(tmp_path/'one.png', 'half', 'zero', 'a', '2'), ProbeItem(g2, 'two', 'half', 'b', '3'),
             ProbeItem(Image.fromarray(g2), 'one', 'one', 'b', '4'), ProbeItem(str(tmp_path/'one.png'), 'zero', 'half', 'b', '5')]
    m = probe_scores(bb, items)
    np.testing.assert_allclose(m, [1, -1, .5 ** .5, 1, 0, -.5 ** .5], atol=1e-6)
    acc = probe_accuracy(bb, items)
    assert isinstance(acc, Accuracies) and acc.n == {'a': 3, 'b': 3}
    assert acc['a'] == pytest.approx(2 / 3) and acc['b'] == pytest.approx(.5)      # b: right, tie (1/2), wrong
    assert bb.model.seen == 2 * 4                       # g0, one.png (as Path and str: one file), g2, the PIL image
    assert bb.model.training and not any(bb.model.modes)      # scored in eval mode, the caller's mode restored
    with pytest.raises(TypeError, match='uint8'): probe_scores(bb, [ProbeItem(np.zeros((4, 4, 3)), 'one', 'two', 'a', 'x')])
    with pytest.raises(MissingDataError, match='nothing.png'): probe_scores(bb, [ProbeItem(tmp_path/'nothing.png', 'one', 'two', 'a', 'x')])

def test_kind_accuracy_ties_and_order():
    items = [ProbeItem(None, 'x', 'y', k, str(i)) for i, k in enumerate(['add-obj', 'swap-att', 'swap-att', 'replace-att'])]
    acc = kind_accuracy(items, [0., 0., 1., -1.])
    assert list(acc) == ['replace-att', 'swap-att', 'add-obj'] and acc == {'replace-att': 0., 'swap-att': .75, 'add-obj': .5}
    assert acc.n == {'replace-att': 1, 'swap-att': 2, 'add-obj': 1}
    assert chance_accuracy(items) == {'replace-att': .5, 'swap-att': .5, 'add-obj': .5}
    with pytest.raises(ValueError, match='3 margins for 4 items'): kind_accuracy(items, [1, 2, 3])

def test_a_real_backbone_scores_world_and_file_items_alike(seen, tmp_path):
    from czsl_workbench.backbones import create_backbone
    torch.manual_seed(0); bb = create_backbone('czsl-vit-micro', device='cpu')
    items = [it for it in seen if it.meta['scene'] < 10]
    for it in items[:6]: Image.fromarray(it.image).save(tmp_path/f"{it.meta['scene']}.png")
    files = [ProbeItem(tmp_path/f"{it.meta['scene']}.png", it.caption, it.negative, it.kind, it.id) for it in items[:6]]
    np.testing.assert_allclose(probe_scores(bb, files), probe_scores(bb, items[:6]), atol=1e-5)
    acc = probe_accuracy(bb, items)
    assert set(acc) == set(KINDS) and all(0 <= v <= 1 for v in acc.values()) and set(acc.n.values()) == {10}

# ---------------------------------------------------------------- controls
def test_bow_is_chance_on_swaps_and_perfect_on_replace_and_add(seen, unseen):
    for items in (seen, unseen):
        acc = bow_accuracy(items)
        assert acc['swap-att'] == acc['swap-obj'] == .5
        assert acc['replace-att'] == acc['replace-obj'] == acc['add-att'] == 1.
        rr = [it for it in items if it.kind == 'replace-rel']
        assert ((bow_scores(rr) > 0) == [it.meta['rel_negative'] == 'cross-axis' for it in rr]).all()
    real = [ProbeItem(None, 'A dog, on a mat.', 'a mat on a dog', 'swap-obj', '0'),
            ProbeItem(None, 'a dog on a mat', 'a cat on a mat', 'replace-obj', '1'),
            ProbeItem(None, 'a dog', 'a red dog', 'add-att', '2')]
    assert bow_accuracy(real) == {'replace-obj': 1., 'swap-obj': .5, 'add-att': 1.}

def test_blind_language_model_by_hand():
    lm = CaptionLM(['a b', 'a c'], lam=1)
    assert lm.V == 5 and lm.N == 6
    assert lm.logprob('a b') == pytest.approx(math.log(3 / 7 * 2 / 7 * 2 / 6))
    assert lm.logprob('b a') == pytest.approx(math.log(1 / 7 * 1 / 6 * 1 / 7))
    assert lm.logprob('a b', normalize=True) == pytest.approx(math.log(3 / 7 * 2 / 7 * 2 / 6) / 3)
    assert lm.logprob('a z') == pytest.approx(math.log(3 / 7 * 1 / 7 * 1 / 5))           # unknown word z
    half = CaptionLM(['a b', 'a c'])
    assert half.prob('b', 'a') == pytest.approx(.5 * 2 / 7 + .5 * 2 / 11)
    assert half.prob('</s>', 'c') == pytest.approx(.5 * 2 / 6 + .5 * 3 / 11)
    assert CaptionLM(['a b', 'a c'], lam=0).prob('a', 'b') == pytest.approx(3 / 11)
    items = [ProbeItem(None, 'a b', 'b a', 'k', '0'), ProbeItem(None, 'b a', 'a b', 'k', '1'),
             ProbeItem(None, 'a b', 'a c', 'j', '2'), ProbeItem(None, 'a', 'a b c', 'l', '3')]
    m = blind_scores(items, ['a b', 'a c'], lam=1, normalize=False)
    assert m[0] == pytest.approx(math.log(3 / 7 * 2 / 7 * 2 / 6) - math.log(1 / 7 * 1 / 6 * 1 / 7)) and m[2] == 0
    assert blind_accuracy(items, lm, normalize=False) == {'k': .5, 'j': .5, 'l': 1.}
    # per token: 'a' = log(3/7 * 1/7) / 2, 'a b c' = log(3/7 * 2/7 * 1/6 * 2/6) / 4: the longer text wins per token
    assert blind_scores(items[3:], lm)[0] == pytest.approx(math.log(3 / 49) / 2 - math.log(3 / 7 * 2 / 7 * 2 / 36) / 4)
    assert blind_accuracy(items[3:], lm) == {'l': 0.}
    with pytest.raises(ValueError, match='lam'): CaptionLM([], lam=1.5)

def test_blind_on_the_world(world, seen):
    caps = corpus_captions(world)
    assert len(caps) == load_world_info(world)['counts']['pretrain']['images'] and all(isinstance(c, str) for c in caps)
    acc = blind_accuracy(seen, caps)
    assert set(acc) == set(KINDS) and all(0 <= v <= 1 for v in acc.values())
    assert blind_accuracy(seen, caps, normalize=False)['add-att'] == 1.      # the longer negative always loses

def test_balanced_subset_puts_the_scorer_at_chance(world, seen):
    items = [ProbeItem(None, 'x', 'y', k, str(i)) for i, k in enumerate('aaaabbc')]
    sub = balanced_subset(items, [1, 2, 3, -1, 0, 5, -2])
    ids = [it.id for it in sub]
    assert ids == sorted(ids, key=int) and '3' in ids and '4' in ids and '6' not in ids
    assert len([i for i in ids if i in '012']) == 1 and kind_accuracy(sub, [0] * len(sub)).n == {'a': 2, 'b': 1}
    assert [it.id for it in balanced_subset(items, [1, 2, 3, -1, 0, 5, -2], seed=0)] == ids
    caps = corpus_captions(world); m = blind_scores(seen, caps)
    sub = balanced_subset(seen, m)
    assert set(blind_accuracy(sub, caps).values()) == {.5} and 0 < len(sub) < len(seen)
    with pytest.raises(ValueError, match='2 margins for 7 items'): balanced_subset(items, [1, 2])

def test_corpus_captions_errors(tmp_path):
    with pytest.raises(MissingDataError, match='no caption corpus'): corpus_captions(tmp_path)
    (tmp_path/'pretrain').mkdir(); (tmp_path/'pretrain'/'captions.jsonl').write_text('{"caption": "a b"}\n{"image": 1}\n')
    with pytest.raises(DatasetError, match='line 2'): corpus_captions(tmp_path)

# ---------------------------------------------------------------- retrieval
def test_recall_at_k_by_hand():
    S = np.array([[.9, .1, .2],
                  [.8, .5, .1],
                  [.4, .0, .4]])
    assert recall_at_k(S, ks=(1, 2)) == {'i2t_R@1': .5, 'i2t_R@2': 1., 't2i_R@1': 1., 't2i_R@2': 1.}
    assert recall_at_k(torch.tensor(S.T), ks=(1, 2)) == {'i2t_R@1': 1., 'i2t_R@2': 1., 't2i_R@1': .5, 't2i_R@2': 1.}
    assert recall_at_k(np.ones((4, 4)), ks=(1, 2, 4)) == {'i2t_R@1': .25, 'i2t_R@2': .5, 'i2t_R@4': 1.,
                                                         't2i_R@1': .25, 't2i_R@2': .5, 't2i_R@4': 1.}
    S3 = np.array([[0., 1., 1., 2.], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])   # row 0: g=3 -> 0 at k<=3
    r = recall_at_k(S3, ks=(1, 4))
    assert r['i2t_R@1'] == .75 and r['i2t_R@4'] == 1.
    with pytest.raises(ValueError, match='square'): recall_at_k(np.ones((2, 3)))

def test_retrieval_recall_on_a_hand_made_backbone():
    bb = grey_backbone()
    r = retrieval_recall(bb, [grey(0), grey(1), grey(2)], ['zero', 'half', 'two'], ks=(1, 2))
    # images e0, e1, e2 against texts e0, (e0+e1)/sqrt2, e2: image 0 ties zero (1) above half (.71): hit; image 1
    # ranks half (.71) first; column 'zero': image 0 (1) first; column 'half': images 0 and 1 tie (.71): 1/2
    assert r == {'i2t_R@1': 1., 'i2t_R@2': 1., 't2i_R@1': pytest.approx(2.5 / 3), 't2i_R@2': 1.}
    with pytest.raises(ValueError, match='2 images for 3 captions'): retrieval_recall(bb, [grey(0)] * 2, ['a', 'b', 'c'])

# ---------------------------------------------------------------- SugarCrepe files
def sugarcrepe_fixture(root, n_images=3):
    (root/'coco').mkdir(parents=True); (root/'json').mkdir()
    for i in range(n_images): Image.new('RGB', (8, 8), (80 * i, 40, 200)).save(root/'coco'/f'{i:012d}.png')
    data = {'swap_att': {'0': dict(filename='000000000000.png', caption='a red cat on a blue mat',
                                   negative_caption='a blue cat on a red mat')},
            'replace_obj': {'3': dict(filename='000000000001.png', caption='a blue car', negative_caption='a blue boat'),
                            '9': dict(filename='000000000002.png', caption='a tree', negative_caption='a house')}}
    for k, d in data.items(): (root/'json'/f'{k}.json').write_text(json.dumps(d))
    return root/'json', root/'coco'

def test_load_sugarcrepe(tmp_path):
    js, img = sugarcrepe_fixture(tmp_path)
    items = load_sugarcrepe(js, img)
    assert [(i.kind, i.id, i.caption, i.negative) for i in items] == [
        ('replace-obj', 'replace-obj/3', 'a blue car', 'a blue boat'), ('replace-obj', 'replace-obj/9', 'a tree', 'a house'),
        ('swap-att', 'swap-att/0', 'a red cat on a blue mat', 'a blue cat on a red mat')]
    assert items[0].image == img/'000000000001.png' and items[0].meta == dict(file='replace_obj.json', filename='000000000001.png')
    one = load_sugarcrepe(js/'swap_att.json', str(img))
    assert len(one) == 1 and one[0].kind == 'swap-att'
    assert bow_accuracy(items) == {'replace-obj': 1., 'swap-att': .5}

def test_load_sugarcrepe_errors(tmp_path):
    js, img = sugarcrepe_fixture(tmp_path)
    (img/'000000000002.png').unlink()
    with pytest.raises(MissingDataError, match=r"1 of 3 .*replace_obj.json id '9': 000000000002.png"): load_sugarcrepe(js, img)
    many = {str(i): dict(filename=f'gone{i}.jpg', caption='c', negative_caption='n') for i in range(8)}
    (js/'add_att.json').write_text(json.dumps(many))
    with pytest.raises(MissingDataError) as e: load_sugarcrepe(js/'add_att.json', img)
    msg = str(e.value)
    assert '8 of 8' in msg and "add_att.json id '0': gone0.jpg" in msg and 'gone4.jpg' in msg and 'gone5.jpg' not in msg
    bad = tmp_path/'bad'; bad.mkdir()
    (bad/'swap_obj.json').write_text(json.dumps({'1': dict(filename='000000000000.png', caption='c')}))
    with pytest.raises(DatasetError, match=r"swap_obj.json, id '1': missing \['negative_caption'\]"): load_sugarcrepe(bad, img)
    (bad/'swap_obj.json').write_text(json.dumps({'x7': 'not an entry'}))
    with pytest.raises(DatasetError, match=r"swap_obj.json, id 'x7': expected an object"): load_sugarcrepe(bad, img)
    (bad/'swap_obj.json').write_text(json.dumps({'2': dict(filename='000000000000.png', caption='', negative_caption='n')}))
    with pytest.raises(DatasetError, match=r"id '2': \['caption'\] must be non-empty"): load_sugarcrepe(bad, img)
    (bad/'swap_obj.json').write_text('{"1": {"filename": ')
    with pytest.raises(DatasetError, match='swap_obj.json: not a readable JSON file'): load_sugarcrepe(bad, img)
    (bad/'swap_obj.json').write_text('[1, 2]')
    with pytest.raises(DatasetError, match='swap_obj.json: expected'): load_sugarcrepe(bad, img)
    with pytest.raises(MissingDataError, match='not found'): load_sugarcrepe(tmp_path/'nowhere', img)
    (tmp_path/'empty').mkdir()
    with pytest.raises(MissingDataError, match=r'no \*.json files'): load_sugarcrepe(tmp_path/'empty', img)
    with pytest.raises(MissingDataError, match='image folder not found'): load_sugarcrepe(js, tmp_path/'no_images')

# ---------------------------------------------------------------- the table
def test_probe_table(seen):
    res = {'chance': chance_accuracy(seen), 'bow': bow_accuracy(seen)}
    tab = probe_table(res)
    assert list(tab.index) == list(KINDS) + ['mean'] and list(tab.columns) == ['chance', 'bow', 'n']
    assert tab.loc['swap-att', 'bow'] == .5 and tab.loc['mean', 'chance'] == .5
    assert tab.loc['mean', 'bow'] == pytest.approx(round(np.mean(list(res['bow'].values())), 3))
    assert list(tab['n']) == [80] * len(KINDS) + [80 * len(KINDS)]
    assert 'n' not in probe_table({'a': {'x': 1.}}).columns and 'mean' not in probe_table(res, mean=False).index
    mixed = probe_table({'a': res['bow'], 'b': Accuracies({'swap-att': 1.}, {'swap-att': 3})})
    assert list(mixed.columns) == ['a', 'b', 'n a', 'n b'] and mixed.loc['swap-att', 'n b'] == 3
    assert pd.isna(mixed.loc['add-att', 'n b']) and pd.isna(mixed.loc['add-att', 'b']) and mixed.loc['mean', 'n a'] == 480
