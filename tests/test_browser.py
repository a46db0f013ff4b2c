"""The dashboard in a real browser: headless JupyterLab driven by playwright-core and Debian chromium.

The test installs what it needs from the package registries only (never a downloaded browser build):
Debian `chromium` with apt when `/usr/bin/chromium` is missing, and npm `playwright-core` into a cache directory.
It starts JupyterLab on a free loopback port with a random token and temporary Jupyter/IPython directories, opens a
copy of the notebook, runs it from the Run menu, changes the primitive in the dropdown, checks that the plot updated,
saves screenshots under the test's temp dir, and stops the server it started by its PID.
It skips (with the reason) only when chromium or playwright-core cannot be installed.
"""
import json, os, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import nbformat, pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent/'browser'/'drive_lab.js'
CHROMIUM = '/usr/bin/chromium'
# The notebook the main test opens. Point it elsewhere (here, or with the environment variable CZSL_BROWSER_NOTEBOOK,
# relative to the repository root), e.g. `nbs/experiments/02_explore_run.ipynb`, to check another notebook that
# displays a PrototypeDashboard. The test opens a copy in a temp dir (cells calling nbdev_export are left out).
DASHBOARD_NOTEBOOK = ROOT/os.environ.get('CZSL_BROWSER_NOTEBOOK', 'nbs/30_dashboard.ipynb')
# How the driver finds the primitive control and the main plot: a widget with the CSS class `css_class` (set with
# `widget.add_class`) wins, else a Dropdown/Combobox whose description matches `label_regex`, else one whose
# description says "primitive" but not "kind", else the first Combobox, else the first Dropdown. The main plot: the
# `.js-plotly-plot` inside a widget with the class `plot_class`, else the first plotly plot that has a scatter trace.
CONTROL_HINTS = dict(css_class='czsl-primitive', label_regex=r'^primitive$', plot_class='czsl-main-plot')
NODE_CACHE = Path(os.environ.get('CZSL_NODE_CACHE', Path.home()/'.cache'/'czsl_workbench'/'node'))

def _run(cmd, timeout, **kw):
    try: return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, 124, e.stdout or '', f'timed out after {timeout}s')
    except OSError as e: return subprocess.CompletedProcess(cmd, 127, '', str(e))

def _tail(r, n=800): return ((r.stdout or '')[-n:] + '\n' + (r.stderr or '')[-n:]).strip()

def ensure_chromium():
    "Debian chromium from apt when missing (apt-get update only if the first install fails). Returns None or why not."
    if Path(CHROMIUM).exists(): return None
    if not shutil.which('apt-get'): return f'{CHROMIUM} is missing and apt-get is not available to install it'
    pre = []
    if os.geteuid() != 0:
        if not shutil.which('sudo'): return f'{CHROMIUM} is missing and installing it needs root (no sudo)'
        pre = ['sudo', '-n']
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    install = pre + ['apt-get', 'install', '-y', '-q', '-o', 'DPkg::Lock::Timeout=120', 'chromium']
    r = _run(install, 600, env=env)
    if r.returncode != 0 or not Path(CHROMIUM).exists():
        u = _run(pre + ['apt-get', 'update', '-q', '-o', 'DPkg::Lock::Timeout=120'], 300, env=env)
        r = _run(install, 600, env=env)
        if r.returncode != 0 or not Path(CHROMIUM).exists():
            return (f'`{" ".join(install)}` failed (rc={r.returncode}; apt-get update rc={u.returncode}): '
                    + _tail(r, 600).replace('\n', ' | '))
    return None

def _node_ok(env, cwd): return _run(['node', '-e', "require('playwright-core')"], 60, env=env, cwd=cwd).returncode == 0

def ensure_playwright(tmp_factory):
    "An env in which `require('playwright-core')` works from the driver's directory; (env, None) or (None, why)."
    if not shutil.which('node'): return None, 'node is not installed'
    env = dict(os.environ)
    if _node_ok(env, DRIVER.parent): return env, None
    cache = NODE_CACHE
    try: cache.mkdir(parents=True, exist_ok=True); probe = cache/'.w'; probe.touch(); probe.unlink()
    except OSError: cache = tmp_factory.mktemp('node')
    mods = cache/'node_modules'
    env['NODE_PATH'] = os.pathsep.join(p for p in [str(mods), os.environ.get('NODE_PATH', '')] if p)
    if _node_ok(env, DRIVER.parent): return env, None
    if not shutil.which('npm'): return None, 'playwright-core is not installed and npm is not available'
    r = _run(['npm', 'install', '--no-save', '--no-audit', '--no-fund', '--prefix', str(cache), 'playwright-core'], 600,
             cwd=cache, env={**env, 'PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD': '1'})
    if r.returncode != 0 or not _node_ok(env, DRIVER.parent):
        return None, f'`npm install playwright-core` into {cache} failed (rc={r.returncode}): ' + _tail(r, 600).replace('\n', ' | ')
    return env, None

@pytest.fixture(scope='module')
def browser_env(tmp_path_factory):
    t = time.time(); why = ensure_chromium()
    if why: pytest.skip(f'chromium cannot be installed: {why}')
    t_chromium = time.time() - t; t = time.time()
    env, why = ensure_playwright(tmp_path_factory)
    if why: pytest.skip(f'playwright-core cannot be installed: {why}')
    print(f'[browser] chromium ready in {t_chromium:.1f}s, playwright-core in {time.time()-t:.1f}s')
    return env

def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _children(pid):
    "PIDs whose parent is `pid` (the server's kernels), read from /proc."
    kids = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try: stat = (d/'stat').read_text()
        except OSError: continue
        if int(stat.rsplit(')', 1)[1].split()[1]) == pid: kids.append(int(d.name))
    return kids

def _alive(pid):
    try: os.kill(pid, 0)
    except ProcessLookupError: return False
    try:  # a zombie is gone for our purposes
        return (Path('/proc')/str(pid)/'stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

def _wait_gone(pids, timeout):
    end = time.time() + timeout
    while time.time() < end and any(_alive(p) for p in pids): time.sleep(0.2)
    return [p for p in pids if _alive(p)]

class Lab:
    "A headless JupyterLab with its own token, port and temporary Jupyter directories, stopped by PID."
    def __init__(self, root, base):
        self.root, self.port, self.token = Path(root), _free_port(), secrets.token_hex(16)
        self.url = f'http://127.0.0.1:{self.port}'
        d = {k: base/k.lower() for k in ('JUPYTER_CONFIG_DIR', 'JUPYTER_DATA_DIR', 'JUPYTER_RUNTIME_DIR', 'IPYTHONDIR')}
        for p in d.values(): p.mkdir(parents=True, exist_ok=True)
        # quiet JupyterLab: no news or update checks (nothing outside can be reached anyway)
        s = d['JUPYTER_CONFIG_DIR']/'lab'/'user-settings'/'@jupyterlab'/'apputils-extension'/'notification.jupyterlab-settings'
        s.parent.mkdir(parents=True, exist_ok=True); s.write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
        self.env = {**os.environ, **{k: str(v) for k, v in d.items()}, 'HF_HUB_OFFLINE': '1', 'PYDEVD_DISABLE_FILE_VALIDATION': '1'}
        self.env.pop('JUPYTER_PATH', None); self.env.pop('JUPYTER_PREFER_ENV_PATH', None)
        self.log = base/'jupyter.log'; self.proc = None
        self.dirs = d

    def start(self, timeout=90, tries=3):
        "Start the server; a port taken between choosing and binding it (port_retries=0) gets a fresh port."
        for i in range(tries):
            try: return self._start(timeout)
            except RuntimeError as e:
                if i == tries - 1 or 'already in use' not in str(e): raise
                self.port = _free_port(); self.url = f'http://127.0.0.1:{self.port}'

    def _start(self, timeout):
        cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={self.port}',
               '--ServerApp.port_retries=0', f'--IdentityProvider.token={self.token}', f'--ServerApp.root_dir={self.root}',
               '--ServerApp.open_browser=False', '--LabApp.news_url=None',
               '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
               f'--LabApp.user_settings_dir={self.dirs["JUPYTER_CONFIG_DIR"]/"lab"/"user-settings"}',
               f'--LabApp.workspaces_dir={self.dirs["JUPYTER_CONFIG_DIR"]/"lab"/"workspaces"}',
               '--ServerApp.terminals_enabled=False'] + (['--allow-root'] if os.geteuid() == 0 else [])
        if getattr(self, '_logf', None): self._logf.close()
        self._logf = open(self.log, 'w')
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self._logf, stderr=subprocess.STDOUT, start_new_session=True)
        end, last = time.time() + timeout, None
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f'JupyterLab exited with rc={self.proc.returncode}: ' + self.log.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f'{self.url}/api/status?token={self.token}', timeout=5) as r:
                    if r.status == 200: return json.loads(r.read())
            except Exception as e: last = e
            time.sleep(0.3)
        raise RuntimeError(f'JupyterLab did not answer /api/status within {timeout}s ({last}): ' + self.log.read_text()[-3000:])

    def api(self, path, method='GET'):
        req = urllib.request.Request(f'{self.url}{path}', method=method, headers={'Authorization': f'token {self.token}'})
        with urllib.request.urlopen(req, timeout=10) as r: return json.loads(r.read() or b'null')

    def stop(self):
        "Shut kernels down through the API, then terminate / kill the server by its PID; assert all are gone."
        if self.proc is None: return
        pid = self.proc.pid; kids = _children(pid)
        try:
            if self.proc.poll() is None: self.api('/api/shutdown', 'POST')
        except Exception: pass
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait(10)
        left = _wait_gone(kids, 10)
        for k in left:  # kernels the server failed to stop: end them by their PID
            try: os.kill(k, signal.SIGKILL)
            except ProcessLookupError: pass
        self._logf.close()
        assert self.proc.returncode is not None and not _alive(pid), f'JupyterLab (pid {pid}) is still running'
        assert not _wait_gone(kids, 5), f'kernel processes {kids} of JupyterLab (pid {pid}) are still running'

@pytest.fixture(scope='module')
def lab(tmp_path_factory, browser_env):
    base = tmp_path_factory.mktemp('lab'); root = base/'root'; root.mkdir()
    server = Lab(root, base)
    r = _run([sys.executable, '-m', 'jupyter', 'kernelspec', 'list', '--json'], 60, env=server.env)
    assert r.returncode == 0 and 'python3' in json.loads(r.stdout)['kernelspecs'], f'no python3 kernelspec with temp Jupyter dirs: {_tail(r)}'
    try:
        t = time.time(); server.start(); print(f'[browser] JupyterLab up on port {server.port} in {time.time()-t:.1f}s')
        yield server
    finally: server.stop()

def copy_notebook(src, root):
    "A copy in the server's root, without cells that would export into the project (nbdev_export)."
    nb = nbformat.read(src, as_version=4)
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and 'nbdev_export' in c.source)]
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3 (ipykernel)', 'language': 'python'}
    dst = Path(root)/Path(src).name; nbformat.write(nb, dst); return dst

def drive(lab, nb, out_dir, env, timeouts=None):
    "Run the node driver against `nb` (in the server root); return its parsed JSON result."
    out_dir = Path(out_dir); out_dir.mkdir(parents=True, exist_ok=True)
    # a fresh workspace per run, so tabs from an earlier run are not restored next to this notebook
    ws = f'czsl-{secrets.token_hex(4)}'
    cfg = dict(url=f'{lab.url}/lab/workspaces/{ws}/tree/{nb.relative_to(lab.root).as_posix()}?token={lab.token}', out_dir=str(out_dir),
               chromium=CHROMIUM, hints=CONTROL_HINTS, timeouts=timeouts or {})
    total = (timeouts or {}).get('total', 480000)/1000 + 60
    p = subprocess.Popen(['node', str(DRIVER), json.dumps(cfg)], cwd=DRIVER.parent, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try: out, err = p.communicate(timeout=total)
    except subprocess.TimeoutExpired:
        p.terminate()  # playwright closes the browser it launched on SIGTERM
        try: out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired: p.kill(); out, err = p.communicate()
    lines = [l for l in out.splitlines() if l.startswith('RESULT_JSON: ')]
    (out_dir/'driver.log').write_text(out + '\n--- stderr ---\n' + err)
    assert lines, f'the driver printed no result (rc={p.returncode}); log {out_dir/"driver.log"}:\n{err[-3000:]}'
    res = json.loads(lines[-1][len('RESULT_JSON: '):])
    res['driver_rc'] = p.returncode; res['jupyter_log'] = str(lab.log)
    return res

def check(res):
    "Assert the browser run worked; the message names the screenshots, console log and server log."
    where = (f"\nscreenshots: {res.get('screenshots')}\nconsole log: {res.get('console_log')}\njupyter log: {res.get('jupyter_log')}"
             f"\nsteps: {res.get('steps')}\nkernel: {res.get('kernel')}")
    assert res['ok'], f"browser check failed: {res.get('error')}\ncell errors: {res.get('cell_errors')}{where}"
    assert not res.get('cell_errors'), f"cells raised: {res['cell_errors']}{where}"
    b, a = res['before'], res['after']
    assert b and a and a['n_traces'] > 0, f'no plot state: before={b} after={a}{where}'
    assert a != b, f'the plot did not change after choosing {res.get("chosen")!r}{where}'
    c = res['control_after']
    assert c['value'] == res['chosen'], f"the control shows {c['value']!r}, expected {res['chosen']!r}{where}"
    for s in res['screenshots']: assert Path(s).stat().st_size > 1000, s

# ---- the harness on a stand-in notebook: a Dropdown drives a FigureWidget (cheap, proves the browser path) ----
STANDIN = '''import ipywidgets as widgets, plotly.graph_objects as go
pts = {'a': ([0, 1, 2], [0, 1, 4]), 'b': ([0, 1, 2, 3, 4], [4, 3, 2, 1, 0]), 'c': ([1, 2], [2, 1])}
dd = widgets.Dropdown(options=list(pts), value='a', description='primitive')
dd.add_class('czsl-primitive')
fig = go.FigureWidget(go.Scatter(x=pts['a'][0], y=pts['a'][1], mode='markers'), layout=dict(title=dict(text='primitive a')))
def on_change(ch):
    with fig.batch_update():
        fig.data[0].x, fig.data[0].y = pts[ch['new']]
        fig.layout.title.text = f"primitive {ch['new']}"
fig.add_class('czsl-main-plot')
dd.observe(on_change, names='value')
usage = go.FigureWidget(go.Scatter(x=['p0', 'p1'], y=[3, 5]), layout=dict(title=dict(text='usage'), height=250))  # decoy first
widgets.VBox([widgets.Dropdown(options=['attribute', 'object'], description='kind'), dd, usage, fig])'''

def _standin(path, source):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('# stand-in'), nbformat.v4.new_code_cell(source)])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3 (ipykernel)', 'language': 'python'}
    nbformat.write(nb, path); return path

COMBOBOX = STANDIN.replace("dd = widgets.Dropdown(options=list(pts), value='a', description='primitive')",
                           "dd = widgets.Combobox(options=list(pts), value='a', description='primitive', ensure_option=True)"
                           ).replace("dd.add_class('czsl-primitive')\n", '').replace("fig.add_class('czsl-main-plot')\n", '').replace(
                           "go.FigureWidget(go.Scatter(x=['p0'", "go.FigureWidget(go.Bar(x=['p0'")

@pytest.mark.timeout(1800)
@pytest.mark.parametrize('kind', ['dropdown', 'combobox'])
def test_browser_harness_standin(lab, browser_env, tmp_path, kind):
    """A generated notebook redraws its plot when the primitive changes to 'b'. `dropdown`: control and plot found by
    their CSS classes; `combobox`: no classes, the control found by its label and the plot as the first scatter."""
    path = _standin(lab.root/f'standin_{kind}.ipynb', STANDIN if kind == 'dropdown' else COMBOBOX)
    res = drive(lab, path, tmp_path/'standin', browser_env, timeouts=dict(output=90000, change=30000, total=240000))
    check(res)
    assert res['control']['kind'] == kind and res['control']['label'] == 'primitive' and res['chosen'] == 'b', res['control']
    assert res['before']['title'] == 'primitive a' and res['after']['title'] == 'primitive b', (res['before'], res['after'])
    assert (res['before']['n_points'], res['after']['n_points']) == (3, 5), (res['before'], res['after'])
    assert res['after']['n_plots'] == 2, res['after']
    print(f"[browser] stand-in {kind}: {res['seconds']}s in the browser; screenshots {res['screenshots']}")

@pytest.mark.timeout(600)
def test_browser_harness_reports_cell_error(lab, browser_env, tmp_path):
    "A cell that raises makes the driver stop early and report the traceback, a screenshot and the console log."
    path = _standin(lab.root/'raises.ipynb', 'import warnings; warnings.warn("only a warning")\nraise ValueError("no run directory at /nowhere")')
    t = time.time(); res = drive(lab, path, tmp_path/'raises', browser_env, timeouts=dict(output=90000, total=150000))
    assert not res['ok'] and 'a cell raised' in res['error'], res
    assert len(res['cell_errors']) == 1 and 'no run directory at /nowhere' in res['cell_errors'][0], res['cell_errors']
    assert Path(res['console_log']).exists() and any(s.endswith('failure.png') for s in res['screenshots']), res
    assert time.time() - t < 60, f'the driver took {time.time() - t:.0f}s to notice the error'

@pytest.mark.timeout(1800)
def test_dashboard_in_browser(lab, browser_env, tmp_path):
    "The dashboard notebook runs in JupyterLab; changing the primitive redraws the main plot."
    if not DASHBOARD_NOTEBOOK.exists(): pytest.skip(f'dashboard notebook not found: {DASHBOARD_NOTEBOOK}')
    path = copy_notebook(DASHBOARD_NOTEBOOK, lab.root)
    res = drive(lab, path, tmp_path/'dashboard', browser_env, timeouts=dict(output=420000, change=180000, total=720000))
    check(res)
    print(f"[browser] dashboard: {res['seconds']}s in the browser; control {res['control']['kind']} "
          f"{res['control']['label']!r}: {res['control']['value']!r} -> {res['chosen']!r}; screenshots {res['screenshots']}")

SITE_CHECK = Path(__file__).resolve().parent/'browser'/'check_site.js'

def test_site_renders_formulas_and_plotly_with_the_network_blocked(browser_env, tmp_path):
    "A czsl-docs page with a formula and a stored plotly figure, opened from file:// with every other request blocked."
    import plotly.graph_objects as go
    from czsl_workbench.docs import build_docs
    nbs = tmp_path/'nbs'; nbs.mkdir()
    fig = json.loads(go.Figure(go.Scatter(x=[0, 1, 2], y=[2, 0, 1], mode='markers')).to_json())
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell('# Offline\n> A formula and a figure.\n\nThe loss $\\mathcal{L} = -\\frac{1}{B}\\sum_i \\log p_{i y_i}$ and\n'
                                      '$$w_{ic} \\leftarrow \\frac{p_{ic}}{\\sum_{k \\in S_i} p_{ik}}$$'),
        nbformat.v4.new_code_cell('fig', outputs=[nbformat.v4.new_output('display_data', data={'application/vnd.plotly.v1+json': fig, 'text/plain': 'Figure()'})])])
    nbformat.write(nb, nbs/'00_offline.ipynb')
    index = build_docs(tmp_path/'site', nbs=nbs, progress=False)
    cfg = dict(url=(index.parent/'chapters'/'00_offline.html').as_uri(), out_dir=str(tmp_path), chromium=CHROMIUM)
    r = _run(['node', str(SITE_CHECK), json.dumps(cfg)], 180, cwd=SITE_CHECK.parent, env=browser_env)
    lines = [l for l in r.stdout.splitlines() if l.startswith('RESULT_JSON: ')]
    assert lines, f'the site check printed no result (rc={r.returncode}):\n{_tail(r, 3000)}'
    res = json.loads(lines[-1][len('RESULT_JSON: '):])
    assert res['ok'], res
    assert res['blocked'] == [], f"the page asked the network for {res['blocked']}"
    assert len(res['maths']) == 2 and sum(m['block'] for m in res['maths']) == 1, res['maths']
    assert all('math' in m['display'] and m['width'] > 0 and m['height'] > 0 for m in res['maths']), res['maths']   # laid out as MathML
    assert not res['raw_tex'], 'raw TeX is visible on the page'
    assert (res['plotly_plots'], res['plotly_traces'], res['plotly_failed']) == (1, 1, False) and res['plotly_svgs'] > 0, res
