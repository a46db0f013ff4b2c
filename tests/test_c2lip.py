"Backbone fine-tuning (clip-finetune, NegCLIP-style, C2LIP) and the scene corpus: real data by CSV, bad input, caching."
import json
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from czsl_workbench.backbones import create_backbone
from czsl_workbench.data import DatasetError, MissingDataError
from czsl_workbench.fit import fit_method, method_config
from czsl_workbench.runs import RunDir
from czsl_workbench.synthetic import world_path
import czsl_workbench.scenes as scenes
from czsl_workbench.methods.c2lip import ConceptStep, ConceptData, concept_loss, C2LIPMethod
import czsl_workbench.methods                                  # registers the built-in methods

@pytest.fixture(scope='module')
def micro(): return create_backbone('czsl-vit-micro', device='cpu')

def write_csv(root, n=12, size=32):
    "An open_clip-style training CSV (tab-separated, filepath/title) over a folder of hand-made images."
    root = Path(root); (root/'img').mkdir(parents=True)
    cols = {'red': (220, 30, 30), 'blue': (30, 30, 220), 'green': (30, 200, 30)}; lines = ['filepath\ttitle']
    for i in range(n):
        c, d = list(cols)[i % 3], list(cols)[(i + 1) % 3]; a = np.full((size, size, 3), 128, np.uint8)
        a[4:14, 2:14], a[18:28, 18:30] = cols[c], cols[d]
        Image.fromarray(a).save(root/'img'/f'{i}.png'); lines.append(f'img/{i}.png\tA {c} square next to a {d} circle.')
    (root/'train.csv').write_text('\n'.join(lines) + '\n')
    return root/'train.csv'

def test_c2lip_trains_on_an_open_clip_csv_and_saves_a_plain_backbone(tmp_path, micro):
    csv = write_csv(tmp_path/'data')
    m = fit_method('c2lip', micro, csv, tmp_path/'run', epochs=2, batch_size=6, lr=1e-3, progress=False)
    run = RunDir(tmp_path/'run'); p = run.read_parameters()
    assert p['method'] == 'c2lip' and p['root'] == str(csv) and (p['npc'], p['xac']) == (1., .01) and p['backbone'] == micro.ident
    hist = run.read_history()
    assert len(hist) == 2 and all(np.isfinite(h['train_npc']) and np.isfinite(h['train_xac']) for h in hist)
    bb = create_backbone(m['model'], device='cpu')
    assert set(bb.model.state_dict()) == set(micro.model.state_dict()) and m['n_train'] == 12
    build = json.loads((Path(m['model'][len('local-dir:'):])/'build.json').read_text())
    assert build['data'] == f'path:{csv.resolve()}'
    # resumable: the same call returns the finished run's metrics without training again
    assert fit_method('c2lip', micro, csv, tmp_path/'run', epochs=2, batch_size=6, lr=1e-3, progress=False) == m

def test_csv_errors_name_the_file_and_column(tmp_path, micro):
    csv = write_csv(tmp_path/'data', n=3)
    with pytest.raises(DatasetError, match=r"no column\(s\) \['path'\]"):
        fit_method('clip-finetune', micro, csv, tmp_path/'r1', img_key='path', progress=False)
    (tmp_path/'data'/'img'/'1.png').unlink()
    with pytest.raises(MissingDataError, match='1.png'): fit_method('clip-finetune', micro, csv, tmp_path/'r2', progress=False)
    assert not RunDir(tmp_path/'r2').finished()

def test_bad_options_and_a_missing_backbone_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown contrastive form 'hinge'"): method_config('c2lip', form='hinge')
    with pytest.raises(ValueError, match='xac=-1'): method_config('c2lip', xac=-1)
    with pytest.raises(ValueError, match='fine-tunes a pretrained backbone'): fit_method('negclip', None, tmp_path, tmp_path/'r', progress=False)

def test_hard_negatives_add_text_columns_that_raise_the_softmax_loss(micro):
    caps = ['a red square left of a blue star', 'a green heart above a striped cross', 'a blue star below a red square']
    cd = ConceptData(torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8), caps, micro.tokenizer)
    batch = [torch.stack([cd[i][j] for i in range(3)]) if j < 6 else [cd[i][j] for i in range(3)] for j in range(8)]
    plain, neg = ConceptStep(micro, method_config('clip-finetune')).eval(), ConceptStep(micro, method_config('negclip')).eval()
    with torch.no_grad():
        a, b = concept_loss(plain, plain(*batch)), concept_loss(neg, neg(*batch))
    assert float(b['contrastive']) > float(a['contrastive'])        # extra columns in every image's softmax

def test_scene_corpus_is_cached_keyed_and_never_half_written(tmp_path, monkeypatch):
    w = world_path('tiny', progress=False)
    a = scenes.scene_corpus(w, n=8, n_heldout=2, progress=False, workers=1)
    stamp = (a/'corpus.json').stat().st_mtime_ns
    assert scenes.scene_corpus(w, n=8, n_heldout=2, progress=False) == a and (a/'corpus.json').stat().st_mtime_ns == stamp
    assert scenes.scene_key(w, n=9) != scenes.scene_key(w, n=8) != scenes.scene_key(w, seed=1, n=8)
    def boom(args): raise RuntimeError('renderer crashed')
    monkeypatch.setattr(scenes, '_render_scene_chunk', boom)
    out = tmp_path/'s'
    with pytest.raises(RuntimeError, match='renderer crashed'): scenes.generate_scene_corpus(w, out, n=4, n_heldout=0, workers=1, progress=False)
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match='not a generated world'): scenes.scene_corpus(tmp_path, n=2)

def test_sigmoid_form_trains_the_models_own_bias_or_a_training_only_one(tmp_path, micro):
    "SigLIP-style: a model with `logit_bias` trains it (and keeps it); a CLIP without one gets a wrapper bias that is not saved."
    csv = write_csv(tmp_path/'data', n=12)
    sig = create_backbone('czsl-vit-micro', device='cpu', init_logit_bias=-10.)
    assert ConceptStep(sig, method_config('c2lip', form='sigmoid')).bias is None
    m = fit_method('c2lip', sig, csv, tmp_path/'sig', form='sigmoid', epochs=2, batch_size=6, lr=1e-2, progress=False)
    out = create_backbone(m['model'], device='cpu')
    assert set(out.model.state_dict()) == set(sig.model.state_dict()) and out.model.logit_bias.item() != -10.
    h = RunDir(tmp_path/'sig').read_history()
    assert all(np.isfinite(r['train_contrastive']) and np.isfinite(r['train_xac']) for r in h)
    m2 = fit_method('clip-finetune', micro, csv, tmp_path/'plain', form='sigmoid', epochs=1, batch_size=6, progress=False)
    assert 'logit_bias' not in create_backbone(m2['model'], device='cpu').model.state_dict()

def test_scene_and_csv_bad_inputs_are_named(tmp_path):
    (tmp_path/'half').mkdir(); (tmp_path/'half'/'captions.jsonl').write_text('')
    with pytest.raises(FileNotFoundError, match='not a complete scene corpus'): scenes.scene_rows(tmp_path/'half')
    with pytest.raises(ValueError, match="split must be 'train' or 'heldout'"): scenes.scene_rows(tmp_path/'half', 'test')
    with pytest.raises(ValueError, match='needs at least that many train pairs'):
        scenes.scene_plan([('red', 'star'), ('blue', 'star')], 3, 0, {}, {}, scenes.SceneConfig())
    (tmp_path/'bad.csv').write_bytes(b'\xff\xfe\x00\x81 not text')
    with pytest.raises(DatasetError, match='bad.csv: not a readable CSV'):
        from czsl_workbench.data import load_caption_corpus
        load_caption_corpus(tmp_path/'bad.csv')
