"""Adapters inside the image tower on the hub's ViTs (random weights, nothing downloaded): at initialisation the adapted
tower is the frozen one to the bit; only adapters learn; the state dict holds them alone."""
import pytest, torch
import open_clip
from czsl_workbench.methods.czsl import TowerAdapters

@pytest.mark.parametrize('name,blocks', [('ViT-B-32', 12), ('ViT-B-16', 12), ('ViT-L-14', 24)])
def test_adapted_hub_vit_starts_as_the_frozen_one(name, blocks):
    torch.manual_seed(0)
    visual = open_clip.create_model(name, pretrained=None).visual.eval()
    tower = TowerAdapters(visual).eval()
    assert len(tower.adapters) == 2 * blocks                              # 48 in ViT-L/14, as in ClusPro's code
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad(): assert torch.equal(tower(x), visual(x))
    keys = set(tower.state_dict())
    assert len(keys) == 4 * 2 * blocks and all(k.startswith('adapters.') for k in keys)   # no frozen CLIP weight

def test_only_the_adapters_learn_on_a_hub_vit():
    torch.manual_seed(0)
    visual = open_clip.create_model('ViT-B-32', pretrained=None).visual
    before = {k: v.clone() for k, v in visual.state_dict().items()}
    tower = TowerAdapters(visual, hidden=8)
    opt = torch.optim.AdamW(tower.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 224, 224)
    tower(x).square().mean().backward(); opt.step()
    assert all(p.grad is None for p in visual.parameters())
    assert all(p.grad is not None for p in tower.adapters.parameters())
    assert all(torch.equal(v, before[k]) for k, v in visual.state_dict().items())
    with torch.no_grad(): assert not torch.equal(tower.eval()(x), visual.eval()(x))
