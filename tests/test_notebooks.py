"Every chapter in nbs/ runs top to bottom under nbdev's test runner: one pytest test per notebook."
import os, subprocess, sys, pytest
from pathlib import Path

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(p.name for p in NBS.glob('*.ipynb'))

def test_there_are_chapters():
    assert {'00_core.ipynb', '01_data.ipynb', '02_synthetic.ipynb', '03_train.ipynb', '04_metrics.ipynb', '05_backbones.ipynb', '90_demo.ipynb'} <= set(NOTEBOOKS)

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook(nb):
    r = subprocess.run(['nbdev_test', '--path', str(NBS/nb), '--do_print'], capture_output=True, text=True,
                       cwd=NBS.parent, env={**os.environ}, timeout=600)
    assert r.returncode == 0, f'{nb} failed under nbdev_test:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}'
