"Shared test setup: an isolated cache root, offline hub, CPU device, and small shared fixtures."
import os, sys, pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def pytest_configure(config):
    # The README's command sets HF_HUB_OFFLINE=1 before Python starts; keep it for every subprocess too.
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('CZSL_DEVICE', 'cpu')
    os.environ.setdefault('NUMBA_CACHE_DIR', str(Path(os.environ.get('TMPDIR', '/tmp'))/'czsl_numba_cache'))
    os.environ.setdefault('MPLBACKEND', 'Agg')

@pytest.fixture(scope='session', autouse=True)
def isolated_cache(tmp_path_factory):
    "Every test session gets its own cache root, so tests never read a developer's cached worlds or models."
    old = os.environ.get('CZSL_CACHE')
    d = tmp_path_factory.mktemp('czsl_cache'); os.environ['CZSL_CACHE'] = str(d)
    yield d
    if old is None: os.environ.pop('CZSL_CACHE', None)
    else: os.environ['CZSL_CACHE'] = old
