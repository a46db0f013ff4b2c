"Every chapter in nbs/ runs top to bottom under nbdev's test runner: one pytest test per notebook."
import os, subprocess, sys, pytest
from pathlib import Path

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(p.name for p in NBS.glob('*.ipynb'))

def test_there_are_chapters():
    "The book in its three parts: the foundation (00-09), the methods (10-29), the lab (30 on), in reading order."
    assert {'00_core.ipynb', '01_data.ipynb', '02_synthetic.ipynb', '03_backbones.ipynb', '04_runs.ipynb',
            '05_train.ipynb', '06_metrics.ipynb', '06a_feasibility.ipynb', '07_fit.ipynb', '08_scenes.ipynb',
            '09_concepts.ipynb', '10_methods.ipynb', '11_czsl.ipynb', '12_prototypes.ipynb', '13_losses.ipynb',
            '14_cluspro.ipynb', '15_troika.ipynb', '20_pretrain.ipynb', '21_probe.ipynb', '22_c2lip.ipynb', '25_zsl.ipynb',
            '26_pzsl.ipynb', '30_dashboard.ipynb', '31_experiments.ipynb', '32_results.ipynb', '33_docs.ipynb',
            '90_demo.ipynb'} <= set(NOTEBOOKS)

@pytest.mark.parametrize('nb', NOTEBOOKS)
def test_notebook(nb):
    r = subprocess.run(['nbdev_test', '--path', str(NBS/nb), '--do_print'], capture_output=True, text=True,
                       cwd=NBS.parent, env={**os.environ}, timeout=600)
    assert r.returncode == 0, f'{nb} failed under nbdev_test:\n{r.stdout[-6000:]}\n{r.stderr[-6000:]}'
