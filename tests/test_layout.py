"""The architecture as the imports show it: foundation -> methods -> lab, never back; the runner names no method.

Read from the generated modules with `ast` (every import statement, inside functions too, and `importlib.import_module`
calls with a literal name), so an arrow added anywhere in the library fails here."""
import ast
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1]/'czsl_workbench'
FOUNDATION = {'core', 'data', 'synthetic', 'backbones', 'runs', 'train', 'metrics', 'feasibility', 'fit', 'scenes',
              'concepts'}
LAB = {'dashboard', 'experiments', 'results', 'docs', 'demo'}
IGNORED = {'_modidx', ''}                                    # nbdev's index and the package's own __init__ (the version)

def module_name(path: Path) -> str:
    "Dotted name of a module file below the package ('methods.cluspro', 'methods' for its __init__)."
    parts = path.relative_to(PKG).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)

def layer(mod: str) -> str:
    if mod in FOUNDATION: return 'foundation'
    if mod == 'methods' or mod.startswith('methods.'): return 'methods'
    if mod in LAB: return 'lab'
    raise AssertionError(f'module {mod!r} belongs to no part of the book: add it to the foundation, methods or lab')

def imports_of(source: str, mod: str, is_package=False) -> set:
    "The workbench modules imported by the source of module `mod`."
    package = mod.split('.') if is_package else mod.split('.')[:-1]
    out = set()
    def add(name):
        if name == 'czsl_workbench': out.add('')
        elif name.startswith('czsl_workbench.'): out.add(name[len('czsl_workbench.'):])
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names: add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = '.'.join(base + (node.module.split('.') if node.module else []))
                if node.module: out.add(target)
                else: out.update('.'.join(base + [a.name]) for a in node.names)   # `from . import czsl`: submodules
            elif node.module: add(node.module)
        elif (isinstance(node, ast.Call) and getattr(node.func, 'attr', getattr(node.func, 'id', None)) == 'import_module'
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value)
    return {m for m in out if m not in IGNORED}

def graph() -> dict:
    "{module: workbench modules it imports} over every generated module."
    g = {}
    for p in sorted(PKG.rglob('*.py')):
        mod = module_name(p)
        if mod in IGNORED: continue
        g[mod] = imports_of(p.read_text(), mod, p.name == '__init__.py')
    return g

ALLOWED = {'foundation': {'foundation'}, 'methods': {'foundation', 'methods'}, 'lab': {'foundation', 'methods', 'lab'}}

def test_every_module_is_in_a_part_and_imports_resolve():
    g = graph()
    assert {'fit', 'runs', 'methods', 'methods.cluspro', 'methods.pretrain', 'dashboard'} <= set(g)
    for mod, deps in g.items():
        layer(mod)
        for d in deps: assert d in g, f'{mod} imports czsl_workbench.{d}, which is not a module of the package'

def test_arrows_run_from_the_lab_to_methods_to_the_foundation():
    bad = [(m, d) for m, deps in graph().items() for d in deps if layer(d) not in ALLOWED[layer(m)]]
    assert not bad, 'imports against the architecture (module -> import): ' + ', '.join(f'{m} -> {d}' for m, d in bad)

def test_the_runner_names_no_method():
    "fit.py imports no method and holds none of their names; the methods package is what registers them."
    g = graph()
    assert not [d for d in g['fit'] if layer(d) == 'methods']
    import czsl_workbench.methods as methods
    names = {m.name for m in methods.BUILTIN}
    consts = {n.value for n in ast.walk(ast.parse((PKG/'fit.py').read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not names & consts, f'fit.py names the methods {sorted(names & consts)}'
    assert {'methods.czsl', 'methods.cluspro', 'methods.pretrain'} <= g['methods']     # explicit registration

def test_no_import_cycles():
    g, state = graph(), {}
    def visit(m, path):
        if state.get(m) == 'done': return
        assert state.get(m) != 'open', 'import cycle: ' + ' -> '.join(path + [m])
        state[m] = 'open'
        for d in sorted(g[m]): visit(d, path + [m])
        state[m] = 'done'
    for m in g: visit(m, [])

@pytest.mark.parametrize('src, mod, pkg, found', [
    ('from ..dashboard import PrototypeDashboard', 'methods.cluspro', False, {'dashboard'}),
    ('from .czsl import CSPMethod\nfrom ..fit import register', 'methods', True, {'methods.czsl', 'fit'}),
    ('from . import czsl, cluspro', 'methods', True, {'methods.czsl', 'methods.cluspro'}),
    ('def f():\n    import czsl_workbench.methods.cluspro', 'fit', False, {'methods.cluspro'}),
    ("import importlib\nimportlib.import_module('czsl_workbench.cluspro')", 'fit', False, {'cluspro'}),
    ('from .runs import RunDir\nimport czsl_workbench', 'train', False, {'runs'}),
])
def test_the_reader_sees_every_kind_of_import(src, mod, pkg, found):
    "The checks above can fail: each form of import a module might use is read."
    assert imports_of(src, mod, pkg) == found
    if mod == 'methods.cluspro' and found == {'dashboard'}: assert layer('dashboard') not in ALLOWED[layer(mod)]
