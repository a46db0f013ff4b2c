"czsl-docs: the real book rendered offline with a runs table, chapters executed on a copy, bad input refused, atomic rebuilds, the CLI."
import json, os, re, socket, subprocess, sys, warnings
from pathlib import Path
from urllib.parse import unquote
import nbformat, pytest
from bs4 import BeautifulSoup
import czsl_workbench.docs as docs
from czsl_workbench.docs import build_docs, docs_cli, docs_manifest, DocsError, DocsWarning, MARKER

NBS = Path(__file__).resolve().parents[1]/'nbs'

def write_nb(path, title, *code, summary='', outputs=None):
    "A notebook with a `# title` markdown cell and code cells (`outputs`: {cell index: text printed})."
    cells = [nbformat.v4.new_markdown_cell(f'# {title}' + (f'\n> {summary}' if summary else ''))]
    for i, src in enumerate(code):
        out = [nbformat.v4.new_output('stream', text=outputs[i])] if outputs and i in outputs else []
        cells.append(nbformat.v4.new_code_cell(src, outputs=out))
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path

def make_runs(root):
    "A sweep root with one finished run (metrics, run.json done) and one failed run (error in run.json)."
    for lr, state in ((0.1, 'done'), (1.0, 'failed')):
        run = root/f'lr={lr}'/'seed0'
        write_nb(run/'executed.ipynb', 'run', f'print("training with lr {lr}")', outputs={0: f'run-output-lr-{lr}\n'})
        (run/'parameters.json').write_text(json.dumps({'lr': lr, 'K': 3, 'seed': 0}))
        (run/'run.json').write_text(json.dumps({'state': state, 'seconds': 4.2,
                                                'error': None if state == 'done' else 'FloatingPointError: loss is nan at step 7'}))
        if state == 'done': (run/'metrics.json').write_text(json.dumps({'test': {'AUC': 0.3125, 'best_hm': 0.4375}, 'val': {'AUC': 0.25}}))
    return root

def small_book(root):
    "A tiny nbs/ folder: an index, two chapters (one with hidden cells), an experiment; returns it."
    write_nb(root/'index.ipynb', 'Tiny book', summary='For the tests.')
    write_nb(root/'00_a.ipynb', 'Chapter A', '#| hide\nHIDDEN = "hidden-sentinel-7391"', '#| export\ndef f(): return 1')
    write_nb(root/'01_b.ipynb', 'Chapter B', 'x = 2')
    write_nb(root/'experiments'/'00_t.ipynb', 'Template', 'print("exp-" + "ran")')
    return root

def hrefs(html): return re.findall(r'href="([^"]*)"', html)
def soup(path):
    "The page parsed, without its (large, inline) style and script blocks."
    return BeautifulSoup(re.sub(r'<(style|script)\b.*?</\1>', '', Path(path).read_text(), flags=re.S), 'html.parser')
def text(path): return soup(path).get_text()
def resolve(page, href): return (Path(page).parent/unquote(href.split('#')[0])).resolve()

@pytest.fixture(scope='module')
def real_site(tmp_path_factory):
    "The real nbs/ plus a fake sweep, built with every network connection refused."
    tmp = tmp_path_factory.mktemp('docs_real')
    runs = make_runs(tmp/'sweep')
    def refuse(self, addr): raise OSError(f'network access during the docs build: {addr}')
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, 'connect', refuse)
        index = build_docs(tmp/'site', nbs=NBS, runs=[runs], progress=False)
    return index, docs_manifest(index.parent)

def test_every_notebook_has_a_page(real_site):
    index, m = real_site
    expected = {f'chapters/{p.stem}.html' for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.'))}
    expected |= {f'{d}/{p.stem}.html' for d in ('experiments', 'records', 'benchmarks') for p in (NBS/d).glob('*.ipynb')}
    assert len(expected) >= 15 and 'chapters/00_core.html' in expected and 'experiments/01_cluspro.html' in expected
    assert {p['html'] for p in m['pages'] if p['status'] == 'ok'} >= expected
    assert all((index.parent/h).is_file() for h in expected)
    assert [p['html'] for p in m['pages']][0] == 'chapters/index.html'          # the introduction comes first
    assert (index.parent/MARKER).is_file() and m['title'] == 'czsl_workbench'

def test_links_are_relative_and_resolve(real_site):
    index, m = real_site
    links = hrefs(index.read_text())
    assert len(links) >= len(m['pages'])
    for h in links:
        assert not h.startswith(('/', 'file:', 'http')), h
        assert resolve(index, h).is_file(), h
    for p in m['pages']:
        for h in hrefs((index.parent/p['html']).read_text()):
            assert not h.startswith(('/', 'file:')) and str(NBS) not in h, (p['html'], h)

def test_prev_next_follow_the_section_order(real_site):
    index, m = real_site
    sections = [p['section'] for p in m['pages'] if p['html'].startswith('chapters/')]
    assert sections == sorted(sections, key=['Foundation', 'Methods', 'Lab'].index) and set(sections) == {'Foundation', 'Methods', 'Lab'}
    for group in (('Foundation', 'Methods', 'Lab'), ('Experiments',), ('Benchmarks',), ('Runs',)):    # the book reads through its parts
        ps = [index.parent/p['html'] for p in m['pages'] if p['section'] in group and p['status'] == 'ok']
        assert len(ps) >= 2, group
        for i, page in enumerate(ps):
            nav = BeautifulSoup(re.search(r'<nav class="czsl-nav">.*?</nav>', page.read_text()).group(0), 'html.parser')
            assert resolve(page, nav.select_one('a.czsl-home')['href']) == index.resolve()
            prev, nxt = nav.select_one('a[rel=prev]'), nav.select_one('a[rel=next]')
            assert (prev is None) == (i == 0) and (nxt is None) == (i == len(ps) - 1), page
            if prev: assert resolve(page, prev['href']) == ps[i - 1].resolve()
            if nxt: assert resolve(page, nxt['href']) == ps[i + 1].resolve()

def test_hidden_cells_and_directives_left_out(real_site):
    index, m = real_site
    chapters = [p for p in m['pages'] if p['html'].startswith('chapters/') and 'nbdev.nbdev_export()' in Path(p['src']).read_text()]
    assert len(chapters) >= 10                                       # the chapters end with a hidden export cell
    for p in chapters:
        page = index.parent/p['html']
        assert 'nbdev.nbdev_export()' not in text(page), p['html']
        inputs = soup(page).select('.jp-InputArea-editor')
        assert inputs and not any(re.match(r'\s*#\s*\|', i.get_text()) for i in inputs), p['html']
    core = text(index.parent/'chapters'/'00_core.html')
    assert 'def set_seed' in core and 'default_exp' not in core

def test_offline_pages(real_site):
    index, m = real_site
    page = (index.parent/'chapters'/'02_synthetic.html').read_text()
    soup = BeautifulSoup(page, 'html.parser')
    imgs = soup.select('img')
    assert imgs and all(i['src'].startswith('data:image/') for i in imgs)     # figures are embedded
    assert not [l for l in soup.select('link[href]') if '://' in l['href']]   # all CSS is inline
    remote = [s['src'] for s in soup.select('script[src]')]
    assert all('mathjax' in s.lower() or 'require' in s for s in remote), remote   # only nbconvert's math/widget loaders

def test_runs_table(real_site):
    index, m = real_site
    soup = BeautifulSoup(index.read_text(), 'html.parser')
    table = soup.find('h2', id='runs').find_next('table')
    head = [th.get_text() for th in table.select('th')]
    assert head == ['run', 'state', 'lr', 'test/AUC', 'test/best_hm']   # K and seed do not vary; the test split's headline metrics
    rows = {tr.select('td')[0].get_text(): [td.get_text() for td in tr.select('td')] for tr in table.select('tbody tr')}
    assert set(rows) == {'lr=0.1/seed0', 'lr=1.0/seed0'}
    assert rows['lr=0.1/seed0'][1:] == ['done', '0.1', '0.3125', '0.4375']
    assert rows['lr=1.0/seed0'][1].startswith('failed') and 'FloatingPointError' in rows['lr=1.0/seed0'][1]
    assert rows['lr=1.0/seed0'][2:] == ['1.0', '', '']
    run_page = index.parent/'runs'/'sweep'/'lr=0.1'/'seed0.html'
    assert 'run-output-lr-0.1' in run_page.read_text()

def test_execute_runs_chapters_on_a_copy(tmp_path):
    book = small_book(tmp_path/'book')
    write_nb(book/'00_a.ipynb', 'Chapter A', '#| hide\nHIDDEN = "hidden-sentinel-7391"', 'print(HIDDEN.upper())',
             'import os; print("cwd=" + os.path.basename(os.getcwd()))', '#| notest\nraise RuntimeError("not run")',
             '#| hide\nimport nbdev; nbdev.nbdev_export()')
    write_nb(book/'01_b.ipynb', 'Chapter B', 'print("before-" + "raise")', 'raise KeyError("boom")', 'print("after-" + "raise")')
    before = {p: p.read_bytes() for p in book.rglob('*.ipynb')}
    index = build_docs(tmp_path/'site', nbs=book, execute=True, progress=False)
    assert {p: p.read_bytes() for p in book.rglob('*.ipynb')} == before
    a = text(index.parent/'chapters'/'00_a.html')
    assert 'HIDDEN-SENTINEL-7391' in a and 'cwd=book' in a           # the hidden setup ran, in the notebook's folder
    assert 'hidden-sentinel' not in a and 'nbdev_export' not in a and 'not run' in a and 'RuntimeError: not run' not in a
    b = text(index.parent/'chapters'/'01_b.html')
    assert 'before-raise' in b and 'KeyError' in b and 'after-raise' not in b
    assert 'exp-ran' not in text(index.parent/'experiments'/'00_t.html')   # templates are not executed
    status = {p['html']: (p['status'], p['error']) for p in docs_manifest(index.parent)['pages']}
    assert status['chapters/01_b.html'] == ('failed to execute', 'KeyError') and status['chapters/00_a.html'] == ('ok', None)
    assert 'failed to execute: KeyError' in index.read_text()

def test_bad_input_is_refused(tmp_path):
    book = small_book(tmp_path/'book')
    with pytest.raises(DocsError, match='nowhere'): build_docs(tmp_path/'site', nbs=tmp_path/'nowhere', progress=False)
    with pytest.raises(DocsError, match='inside the notebooks folder'): build_docs(book/'_site', nbs=book, progress=False)
    with pytest.raises(DocsError, match='no-runs'): build_docs(tmp_path/'site', nbs=book, runs=[tmp_path/'no-runs'], progress=False)
    runs = make_runs(tmp_path/'site'/'sweep')
    with pytest.raises(DocsError, match='would delete it'): build_docs(tmp_path/'site', nbs=book, runs=[runs], progress=False)
    mine = tmp_path/'mine'; (mine/'sub').mkdir(parents=True)
    (mine/'thesis.tex').write_text('precious'); (mine/'sub'/'data.csv').write_text('1,2')
    with pytest.raises(DocsError, match='not an earlier czsl-docs build'): build_docs(mine, nbs=book, progress=False)
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob('*')) == ['sub', 'sub/data.csv', 'thesis.tex']
    assert (mine/'thesis.tex').read_text() == 'precious'
    assert not list(tmp_path.glob('.*building*'))
    with pytest.raises(SystemExit) as e: docs_cli(['--out', str(mine), '--nbs', str(book)])
    assert e.value.code == 2 and (mine/'thesis.tex').read_text() == 'precious'

def test_corrupt_notebook_is_listed_and_cli_fails(tmp_path, capsys):
    book = small_book(tmp_path/'book')
    (book/'02_broken.ipynb').write_text('{"cells": [')
    with pytest.warns(DocsWarning, match='02_broken.ipynb'):
        index = build_docs(tmp_path/'site', nbs=book, progress=False)
    page = index.read_text()
    assert '<li>02_broken <span class="bad">could not be rendered: NotJSONError' in page
    assert not (index.parent/'chapters'/'02_broken.html').exists()
    assert all((index.parent/'chapters'/f).is_file() for f in ('index.html', '00_a.html', '01_b.html'))
    nav = (index.parent/'chapters'/'01_b.html').read_text()
    assert 'rel="next"' not in nav                                   # no link to the page that was not built
    with pytest.raises(SystemExit) as e: docs_cli(['--out', str(tmp_path/'site'), '--nbs', str(book)])
    assert e.value.code == 1
    out, err = capsys.readouterr()
    assert '4 pages written' in out and '(1 could not be rendered)' in out and '02_broken.ipynb' in err

def test_rebuild_replaces_and_failed_build_keeps_old_site(tmp_path, monkeypatch):
    book = small_book(tmp_path/'book')
    site = tmp_path/'site'
    build_docs(site, nbs=book, progress=False)
    assert (site/'chapters'/'01_b.html').is_file()
    (book/'01_b.ipynb').unlink(); write_nb(book/'02_c.ipynb', 'Chapter C', 'y = 3')
    build_docs(site, nbs=book, progress=False)
    assert not (site/'chapters'/'01_b.html').exists() and (site/'chapters'/'02_c.html').is_file()
    assert [p['html'] for p in docs_manifest(site)['pages']] == ['chapters/index.html', 'chapters/00_a.html', 'chapters/02_c.html', 'experiments/00_t.html']
    assert oct((site/'index.html').stat().st_mode & 0o777) != '0o600'             # not left private like a temp file
    before = {p: p.read_bytes() for p in site.rglob('*') if p.is_file()}
    def boom(*a, **k): raise RuntimeError('disk full')
    monkeypatch.setattr(docs, 'index_html', boom)
    write_nb(book/'03_d.ipynb', 'Chapter D', 'z = 4')
    with pytest.raises(RuntimeError, match='disk full'): build_docs(site, nbs=book, progress=False)
    assert {p: p.read_bytes() for p in site.rglob('*') if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['book', 'site']           # no temp folders left behind

def test_cli_subprocess_prints_the_url(tmp_path):
    book = small_book(tmp_path/'book'); runs = make_runs(tmp_path/'sweep')
    r = subprocess.run([sys.executable, '-c', 'from czsl_workbench.docs import docs_cli; docs_cli()', '--out', str(tmp_path/'site'),
                        '--nbs', str(book), '--runs', str(runs), '--title', 'Tiny site'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    index = (tmp_path/'site'/'index.html').resolve()
    assert f'open {index.as_uri()}' in r.stdout and '6 pages written' in r.stdout
    assert '<title>Tiny site</title>' in index.read_text()
