"""The records stand on the shipped backbone: every committed record (and benchmark) that names a backbone names the
weights in `backbones.SHIPPED`, and the records' digests name one backbone and one world, so no future record drifts."""
import json, re
from pathlib import Path
import pytest
from czsl_workbench.backbones import SHIPPED
from czsl_workbench.results import read_digest

NBS = Path(__file__).resolve().parents[1]/'nbs'
RECORDS = sorted((NBS/'records').glob('*.ipynb'))
SHA = SHIPPED['czsl-vit-tiny', 'world-default']['sha256']

def printed(path) -> list[str]:
    "The lines a notebook printed (its stream outputs)."
    nb = json.loads(Path(path).read_text())
    return [l for c in nb['cells'] for o in c.get('outputs', []) if o.get('output_type') == 'stream'
            for l in ''.join(o['text']).splitlines()]

def backbone_lines(path) -> list[str]:
    "The lines in which a notebook says which backbone it stands on ('backbone: ...' / 'backbone ...')."
    return [l for l in printed(path) if re.match(r'backbone[: ]', l) or re.search(r'; backbone ', l)]

@pytest.mark.parametrize('path', RECORDS + sorted((NBS/'benchmarks').glob('*.ipynb')), ids=lambda p: p.name)
def test_committed_notebooks_name_the_shipped_backbone(path):
    lines = backbone_lines(path)
    if path.parent.name == 'records': assert lines, f'{path.name} does not say which backbone it stands on'
    for l in lines:
        assert f'czsl-vit-tiny@world-default-{SHA[:16]}' in l, f'{path.name} stands on another backbone: {l}'

def test_digests_name_one_backbone_and_one_world():
    digests = {p.name: read_digest(p) for p in RECORDS}
    digests = {k: d for k, d in digests.items() if d}
    assert {'00_zero_shot_default.ipynb', '01_cluspro_default.ipynb', '06_pzsl_default.ipynb'} <= set(digests)
    assert {k: d['backbone_sha256'] for k, d in digests.items()} == {k: SHA for k in digests}
    worlds = {k: d['world']['sha256'] for k, d in digests.items()}
    assert len(set(worlds.values())) == 1, worlds
    floor = next(r for r in digests['00_zero_shot_default.ipynb']['runs'] if r['run'] == '.')
    assert 0.05 < floor['numbers']['AUC'] < 0.5                      # a floor, neither chance nor saturation

def test_the_check_catches_another_backbone(tmp_path):
    "The guard itself: a record whose backbone line names other weights is caught."
    nb = {'cells': [{'cell_type': 'code', 'source': '', 'metadata': {}, 'outputs': [
        {'output_type': 'stream', 'name': 'stdout',
         'text': 'backbone: local-dir:/c/model@e199e66fefedd430 (sha256 e199)\n'}]}]}
    (tmp_path/'r.ipynb').write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match='stands on another backbone'):
        test_committed_notebooks_name_the_shipped_backbone(tmp_path/'r.ipynb')
