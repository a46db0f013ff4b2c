"Concepts: exact phrases on every world caption and on hand-picked English, the spaCy adapter on a stand-in, the stats."
import sys, types, pytest
import numpy as np
from czsl_workbench.concepts import (extract_concepts, concepts_of, concept_stats, builtin_chunks, tokens, load_spacy,
                                     spacy_chunks, tidy_concepts, is_generic, WholeCaption, BOUNDARY, DETERMINERS,
                                     GENERIC, QUANTITIES, COLOURS, MODIFIERS)
from czsl_workbench.synthetic import ATTRIBUTES, OBJECTS, RELATIONS, TEMPLATES, phrase, partial_phrase

PAIRS = [(a, o) for a in ATTRIBUTES for o in OBJECTS]
HINT = 'pip install spacy && python -m spacy download en_core_web_sm'

def test_vocabulary_is_content():
    vocab = set(ATTRIBUTES) | set(OBJECTS)
    assert len(PAIRS) == 180
    assert not vocab & (BOUNDARY | DETERMINERS | GENERIC | QUANTITIES)
    assert set(ATTRIBUTES) <= COLOURS | MODIFIERS
    assert {w for r in RELATIONS for w in r.split()} <= BOUNDARY

def test_every_pair_every_template():
    for a, o in PAIRS:
        for t in TEMPLATES:
            assert extract_concepts(t.format(phrase(a, o))) == [f'{a} {o}'], (a, o, t)

def test_partial_phrases_every_template():
    for a, o in PAIRS:
        for t in TEMPLATES:
            assert extract_concepts(t.format(partial_phrase(a, o, 'attr'))) == [f'{a} shape']
            assert extract_concepts(t.format(partial_phrase(a, o, 'obj'))) == [o]

def test_two_objects_every_relation():
    "Every ordered pair of pairs with every relation: 180 x 180 x 4 captions; the same phrase twice is kept once."
    bad = []
    for p in PAIRS:
        for q in PAIRS:
            want = [' '.join(p)] if p == q else [' '.join(p), ' '.join(q)]
            for r in RELATIONS:
                cap = f'{phrase(*p)} {r} {phrase(*q)}'
                if extract_concepts(cap) != want: bad.append(cap)
    assert not bad, bad[:5]

def test_world_examples():
    assert extract_concepts('a photo of an orange star') == ['orange star']
    assert extract_concepts('a red square left of a blue star') == ['red square', 'blue star']
    assert extract_concepts('a picture of a striped shape') == ['striped shape']
    assert extract_concepts('a star') == ['star']
    assert extract_concepts('a rendering of a hollow hexagon') == ['hollow hexagon']
    assert (extract_concepts('a striped square left of a blue star, a hollow circle above them, on a dark background')
            == ['striped square', 'blue star', 'hollow circle'])
    assert (extract_concepts('a glowing drop below a melted cross, a red arrow right of them, a wavy heart above them, '
                             'on a light background') == ['glowing drop', 'melted cross', 'red arrow', 'wavy heart'])
    assert extract_concepts('a red star above a red star, a red star below them') == ['red star']

def scene(pairs, rels, background, fourth='them'):
    "A long scene caption: the form of the brief (every later object relative to 'them') or the scenes chapter's."
    s = f'{phrase(*pairs[0])} {rels[0]} {phrase(*pairs[1])}'
    for i in range(2, len(pairs)):
        ref = 'them' if i == 2 or fourth == 'them' else f'the {pairs[2][0]} {pairs[2][1]}'
        s += f', {phrase(*pairs[i])} {rels[i - 1]} {ref}'
    return s + f', on a {background} background'

def test_scene_captions():
    rng = np.random.default_rng(0)
    for i in range(3000):
        k = 2 + i % 3
        pairs = [PAIRS[j] for j in rng.integers(len(PAIRS), size=k)]
        rels = [RELATIONS[j] for j in rng.integers(len(RELATIONS), size=k - 1)]
        cap = scene(pairs, rels, ('dark', 'grey', 'light')[i % 3], 'them' if i % 2 else 'third')
        want = list(dict.fromkeys(' '.join(p) for p in pairs))
        assert extract_concepts(cap) == want, cap
    four = [('red', 'arrow'), ('wavy', 'heart'), ('hollow', 'circle'), ('blue', 'drop')]
    assert (scene(four, ['left of', 'above', 'below'], 'grey', 'third') ==
            'a red arrow left of a wavy heart, a hollow circle above them, a blue drop below the hollow circle, '
            'on a grey background')

ENGLISH = {
    'A woman wearing a red dress stands next to a fireplace.': ['woman', 'red dress', 'fireplace'],
    'Two dogs playing with a frisbee in the park': ['dogs', 'frisbee', 'park'],
    'A man riding a horse on the beach': ['man', 'horse', 'beach'],
    'A plate of food with broccoli and rice': ['plate', 'food', 'broccoli', 'rice'],
    'A close up of a cat on a laptop': ['cat', 'laptop'],
    'Two giraffes standing next to each other': ['giraffes'],
    'A bathroom with a toilet, sink and mirror.': ['bathroom', 'toilet', 'sink', 'mirror'],
    'A large jetliner flying over a city.': ['large jetliner', 'city'],
    'A group of people standing around a kitchen table': ['people', 'kitchen table'],
    'A red double decker bus driving down a street': ['red double decker bus'],
    'A cat laying on top of a laptop computer': ['cat', 'laptop computer'],
    'Pizza with pepperoni and cheese on a wooden table': ['pizza', 'pepperoni', 'cheese', 'wooden table'],
    'A young boy is holding a baseball bat.': ['young boy', 'baseball bat'],
    'A boy is holding balloons': ['boy', 'balloons'],
    'A tennis player swinging a racket': ['tennis player', 'racket'],
    'Several sheep grazing in a grassy field': ['sheep', 'grassy field'],
    'A bed covered with pillows': ['bed', 'pillows'],
    'A car in a parking lot': ['car', 'parking lot'],
    'A tall building next to a traffic light': ['tall building', 'traffic light'],
    "The man's hat is on the table": ['man', 'hat', 'table'],
    'THE DOG, THE DOG AND THE CAT!': ['dog', 'cat'],
    '2 kids in T-shirts': ['kids', 't-shirts'],
    'A glowing star and a melted heart': ['glowing star', 'melted heart'],
    'A photo of the scene': ['a photo of the scene'],                 # only picture words: the whole caption
}

@pytest.mark.parametrize('caption, want', list(ENGLISH.items()))
def test_english(caption, want):
    assert extract_concepts(caption) == want

def test_fallback_is_the_whole_caption():
    for cap, want in [('Looking up.', 'looking up.'), ('', ''), ('  It is.  ', 'it is.'), ('A photo', 'a photo')]:
        got = extract_concepts(cap)
        assert got == [want] and isinstance(got[0], WholeCaption)
    assert not isinstance(extract_concepts('a star')[0], WholeCaption)

def test_pieces():
    assert tokens("A close-up of a man's T-shirt.") == ['a', 'close-up', 'of', 'a', 'man', None, 't-shirt', None]
    assert builtin_chunks('a photo of a man riding a glowing horse') == ['photo', 'man', 'glowing horse']
    assert [is_generic(p) for p in ['top', 'dark background', 'pictures', 'lots', 'parking lot']] == [True] * 4 + [0]
    assert tidy_concepts(['x', 'red star', 'photo', 'red star', 'star'], 'c') == ['red star', 'star']

def test_unknown_backend():
    with pytest.raises(ValueError, match=r"'llm'.*\('builtin', 'spacy'\)"): extract_concepts('a star', backend='llm')

@pytest.fixture
def no_cache():
    load_spacy.cache_clear(); yield; load_spacy.cache_clear()

def test_spacy_missing_says_what_to_install(monkeypatch, no_cache):
    monkeypatch.setitem(sys.modules, 'spacy', None)                     # import fails even if spaCy were installed
    with pytest.raises(ImportError) as e: extract_concepts('a red dress', backend='spacy')
    assert HINT in str(e.value) and "backend='builtin'" in str(e.value)
    assert extract_concepts('a red dress') == ['red dress']            # the builtin backend needs nothing

def test_spacy_model_missing_says_what_to_install(monkeypatch, no_cache):
    fake = types.ModuleType('spacy')
    def load(name): raise OSError(f"[E050] Can't find model '{name}'")
    fake.load = load
    monkeypatch.setitem(sys.modules, 'spacy', fake)
    with pytest.raises(RuntimeError) as e: extract_concepts('a red dress', backend='spacy')
    assert HINT in str(e.value) and "backend='builtin'" in str(e.value)
    with pytest.raises(RuntimeError, match='python -m spacy download en_core_web_md'):
        extract_concepts('a red dress', backend='spacy', model='en_core_web_md')

def chunk(text, root, pos='NOUN'):
    return types.SimpleNamespace(text=text, root=types.SimpleNamespace(text=root, pos_=pos))

DOCS = {   # caption -> the noun chunks a parser would give
    'A woman in her red dress next to it': [chunk('A woman', 'woman'), chunk('her red dress', 'dress'),
                                             chunk('it', 'it', 'PRON')],
    'The two dogs and the dogs in the background': [chunk('The two dogs', 'dogs'), chunk('the dogs', 'dogs'),
                                                     chunk('the background', 'background')],
    "The man's hat": [chunk("The man's hat", 'hat')],
    'She smiles': [chunk('She', 'She', 'PRON')],
    'They': [chunk('They', 'They', 'X')],                 # a pronoun the tagger missed, caught by the word list
}

def test_spacy_adapter_on_a_stand_in(monkeypatch, no_cache):
    loads = []
    fake = types.ModuleType('spacy')
    def load(name):
        loads.append(name)
        return lambda text: types.SimpleNamespace(noun_chunks=DOCS[text])
    fake.load = load
    monkeypatch.setitem(sys.modules, 'spacy', fake)
    got = concepts_of(list(DOCS), backend='spacy')
    assert got == [['woman', 'red dress'], ['dogs'], ['hat'], ['she smiles'], ['they']]
    assert isinstance(got[3][0], WholeCaption) and isinstance(got[4][0], WholeCaption)
    assert spacy_chunks('The two dogs and the dogs in the background') == ['dogs', 'dogs', 'background']
    assert loads == ['en_core_web_sm']                  # loaded once per process (per model)
    extract_concepts("The man's hat", backend='spacy', model='other'); assert loads == ['en_core_web_sm', 'other']

def test_concepts_of_and_stats():
    caps = ['a photo of a red square', 'a red square left of a blue star', 'Looking up.', 'a star above a star']
    got = concepts_of(caps)
    assert got == [['red square'], ['red square', 'blue star'], ['looking up.'], ['star']]
    assert concepts_of(caps, progress=True) == got
    assert concept_stats(got) == dict(captions=4, mean=1.25, min=1, max=2, hist={1: 3, 2: 1}, fallback=0.25)
    assert concept_stats([]) == dict(captions=0, mean=0., min=0, max=0, hist={}, fallback=0.)
    assert concept_stats([['a', 'b', 'c'], ['d']])['hist'] == {1: 1, 3: 1}
