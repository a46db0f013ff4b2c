"Backbones: offline behaviour in a fresh process; CLIP pretraining (the backbone-training method) round trip, resume, CLI."
import json, os, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
import open_clip
from czsl_workbench.train import Callback
from czsl_workbench.backbones import create_backbone, encode_images, encode_texts, OfflineWeightsError
from czsl_workbench.data import load_caption_corpus
from czsl_workbench.runs import RunDirError
from czsl_workbench.methods.pretrain import pretrain_clip

def make_corpus(root, n=24, size=32, seed=0):
    "A hand-made caption corpus in the world's layout: coloured squares and their captions."
    rng = np.random.default_rng(seed); d = Path(root)/'pretrain'; (d/'images').mkdir(parents=True)
    cols = {'red': (220, 30, 30), 'blue': (30, 30, 220), 'green': (30, 200, 30)}
    rows = []
    for i in range(n):
        c = list(cols)[i % 3]; a = np.full((size, size, 3), 255, np.uint8)
        x, y = rng.integers(2, size // 2, 2); a[y:y + size // 3, x:x + size // 3] = cols[c]
        Image.fromarray(a).save(d/'images'/f'{i}.png'); rows.append({'image': f'images/{i}.png', 'caption': f'a {c} square'})
    (d/'captions.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return Path(root)

def test_offline_hub_tag_fails_fast_in_fresh_process():
    "With HF_HUB_OFFLINE=1 set before Python starts, a hub tag fails in seconds and says how to pass a local checkpoint."
    code = "from czsl_workbench.backbones import create_backbone; create_backbone('ViT-B-32', pretrained='openai', device='cpu')"
    t0 = time.time()
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode != 0 and time.time() - t0 < 60
    assert 'OfflineWeightsError' in r.stderr and "pretrained='/path/to/ViT-B-32.pt'" in r.stderr

def test_missing_local_checkpoint_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothere.pt'): create_backbone('ViT-B-32', pretrained=str(tmp_path/'nothere.pt'))
    with pytest.raises(FileNotFoundError, match='nodir'): create_backbone(f'local-dir:{tmp_path/"nodir"}')

def test_missing_corpus_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='czsl-data synth'): load_caption_corpus(tmp_path)

def test_pretrain_save_load_round_trip_and_resume(tmp_path):
    world = make_corpus(tmp_path/'world')
    kw = dict(model_name='czsl-vit-micro', batch_size=8, lr=1e-3, seed=3, device='cpu', progress=False)
    full = pretrain_clip(world, tmp_path/'full', epochs=2, **kw)
    # the saved folder is a plain open_clip local-dir: same weights, same outputs
    m = open_clip.create_model(f'local-dir:{tmp_path/"full"/"model"}').eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(m.encode_image(x, normalize=True), encode_images(full, x))
    # a run stopped after its first epoch and resumed ends where the uninterrupted run ends
    class Kill(Callback):
        order = 35
        def after_train_valid(self): raise KeyboardInterrupt('killed after the first epoch')
    with pytest.raises(KeyboardInterrupt): pretrain_clip(world, tmp_path/'part', epochs=2, cbs=[Kill()], **kw)
    ck = torch.load(tmp_path/'part'/'checkpoints'/'last.pt', weights_only=False); assert ck['epoch'] == 0
    assert not (tmp_path/'part'/'model').exists()
    pretrain_clip(world, tmp_path/'part', epochs=2, **kw)   # resumes from last.pt at epoch 1
    hist = [json.loads(l) for l in (tmp_path/'full'/'history.jsonl').read_text().splitlines()]
    assert [h['epoch'] for h in hist] == [0, 1] and hist[1]['train_loss'] < hist[0]['train_loss'] + 1.0
    sd_full, sd_part = full.model.state_dict(), create_backbone(f'local-dir:{tmp_path/"part"/"model"}', device='cpu').model.state_dict()
    for k in sd_full: torch.testing.assert_close(sd_full[k].cpu(), sd_part[k].cpu(), rtol=0, atol=0)

def test_pretrain_cli(tmp_path):
    world = make_corpus(tmp_path/'world', n=16)
    r = subprocess.run(['czsl-pretrain', '--world', str(world), '--out', str(tmp_path/'run'), '--model-name', 'czsl-vit-micro',
                        '--epochs', '1', '--batch-size', '8'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path/'run'/'model'/'open_clip_config.json').exists() and 'local-dir:' in r.stdout
    r = subprocess.run(['czsl-pretrain', '--world', str(tmp_path/'nope'), '--out', str(tmp_path/'run2')], capture_output=True, text=True)
    assert r.returncode == 2 and 'world folder not found' in r.stderr and not (tmp_path/'run2').exists()

def test_corrupt_checkpoint_on_resume_is_named(tmp_path):
    "A resume from an unreadable last.pt fails with an error naming the file, and leaves the file as it was."
    world = make_corpus(tmp_path/'world', n=8)
    kw = dict(model_name='czsl-vit-micro', epochs=1, batch_size=4, device='cpu', progress=False)
    pretrain_clip(world, tmp_path/'run', **kw)
    (tmp_path/'run'/'metrics.json').unlink()                          # as if it had been stopped before its metrics
    ck = tmp_path/'run'/'checkpoints'/'last.pt'; ck.write_bytes(b'not a checkpoint')
    with pytest.raises(RunDirError, match='cannot resume: checkpoint .*last.pt is unreadable'):
        pretrain_clip(world, tmp_path/'run', **kw)
    assert ck.read_bytes() == b'not a checkpoint'
    orphan = tmp_path/'orphan'/'checkpoints'/'last.pt'; orphan.parent.mkdir(parents=True); orphan.write_bytes(b'x')
    with pytest.raises(RunDirError, match='holds checkpoints but no parameters.json, so what made them is unknown'):
        pretrain_clip(world, tmp_path/'orphan', **kw)                 # a checkpoint nobody can vouch for is not resumed
    assert orphan.read_bytes() == b'x'
