// Drive a headless JupyterLab with playwright-core and Debian chromium (no downloaded browser builds).
// Usage: node drive_lab.js '<json config>'   (tests/test_browser.py builds the config)
// Opens the notebook, waits for an Idle kernel, runs all cells from the Run menu, waits for the widget output,
// records the main plotly plot, changes the primitive control (Dropdown or Combobox), waits until the plot changes,
// saves screenshots and the console log, and prints one line `RESULT_JSON: {...}` that the python side asserts on.
'use strict';
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2]);
const T = Object.assign({ load: 60000, idle: 60000, output: 240000, change: 120000, total: 480000 }, cfg.timeouts || {});
const outDir = cfg.out_dir;
const consoleLog = [];
const steps = [];
const result = { ok: false, steps, screenshots: [], console_log: path.join(outDir, 'console.log') };
const t0 = Date.now();
const step = (name, extra) => { steps.push(Object.assign({ step: name, t: +((Date.now() - t0) / 1000).toFixed(1) }, extra || {})); };

// ---- page-side helpers (serialised into the page) ----
// installed into every page with addInitScript (a real function, so no escaping games)
function installHelpers() {
window.__czsl = {
  panel() {  // the notebook in front; every query below stays inside it
    return [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden')) || document.createElement('div');
  },
  kernelIdle() {  // a real kernel, connected and idle ("No Kernel | Idle"-like states right after load do not count)
    const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
    if (!panel) return false;
    const ind = panel.querySelector('.jp-Notebook-ExecutionIndicator');
    const name = panel.querySelector('.jp-Toolbar-kernelName');
    const sb = document.querySelector('#jp-main-statusbar');
    return !!ind && ind.getAttribute('data-status') === 'idle' && !!name && !/^\s*(No Kernel)?\s*$/.test(name.textContent)
      && !!sb && /\|\s*Idle/.test(sb.textContent);
  },
  kernelStatusText() {
    const panel = [...document.querySelectorAll('.jp-NotebookPanel')].find(p => !p.classList.contains('lm-mod-hidden'));
    const ind = panel && panel.querySelector('.jp-Notebook-ExecutionIndicator');
    const sb = document.querySelector('#jp-main-statusbar');
    return { indicator: ind ? ind.getAttribute('data-status') : null, statusbar: sb ? sb.textContent.trim().slice(0, 200) : null };
  },
  executedCells() {  // prompts that show [*] or [n]
    return [...this.panel().querySelectorAll('.jp-InputArea-prompt')].filter(p => /\[\s*(\*|\d+)\s*\]/.test(p.textContent)).length;
  },
  pendingCells() {  // cells queued or running show "[*]:" in their prompt
    return [...this.panel().querySelectorAll('.jp-InputArea-prompt')].filter(p => p.textContent.includes('*')).length;
  },
  errors() {  // error outputs (tracebacks, shown as stderr); warnings on stderr are not errors
    return [...this.panel().querySelectorAll('.jp-OutputArea-output')].filter(o =>
      o.getAttribute('data-mime-type') === 'application/vnd.jupyter.error' ||
      (o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr' && o.textContent.includes('Traceback (most recent call last)'))
    ).map(o => o.textContent.slice(-1500));
  },
  label(el) {
    const l = el.querySelector(':scope > label.widget-label, :scope > .widget-label');
    return l ? l.textContent.trim().replace(/:$/, '') : '';
  },
  controls() {
    const found = [];
    for (const el of this.panel().querySelectorAll('.jp-OutputArea-output .widget-dropdown')) {
      if (el.querySelector('select')) found.push({ el, kind: 'dropdown' });
    }
    for (const el of this.panel().querySelectorAll('.jp-OutputArea-output .widget-text')) {
      const inp = el.querySelector('input[list]');
      if (inp && el.querySelector('datalist')) found.push({ el, kind: 'combobox' });
    }
    return found;
  },
  markControl(hints) {
    const cs = this.controls();
    if (!cs.length) return null;
    const re = hints.label_regex ? new RegExp(hints.label_regex, 'i') : null;
    const pick = cs.find(c => hints.css_class && (c.el.classList.contains(hints.css_class) || c.el.closest('.' + hints.css_class)))
      || (re && cs.find(c => re.test(this.label(c.el))))
      || cs.find(c => /primitive/i.test(this.label(c.el)) && !/kind/i.test(this.label(c.el)))
      || cs.find(c => c.kind === 'combobox') || cs[0];
    document.querySelectorAll('[data-czsl-test="control"]').forEach(e => e.removeAttribute('data-czsl-test'));
    pick.el.setAttribute('data-czsl-test', 'control');
    const info = { kind: pick.kind, label: this.label(pick.el), n_controls: cs.length,
                   all: cs.map(c => ({ kind: c.kind, label: this.label(c.el) })) };
    if (pick.kind === 'dropdown') {
      const s = pick.el.querySelector('select');
      info.options = [...s.options].map(o => o.textContent); info.selected_index = s.selectedIndex;
      info.value = s.selectedIndex >= 0 ? s.options[s.selectedIndex].textContent : null;
    } else {
      info.options = [...pick.el.querySelectorAll('datalist option')].map(o => o.value);
      info.value = pick.el.querySelector('input[list]').value;
    }
    return info;
  },
  plots() { return [...this.panel().querySelectorAll('.jp-OutputArea-output .js-plotly-plot')]; },
  mainPlot(hints) {
    const marked = this.panel().querySelector('.js-plotly-plot[data-czsl-test="plot"]');
    if (marked && marked.isConnected) return marked;
    const ps = this.plots();
    if (!ps.length) return null;
    const isScatter = p => (p._fullData || p.data || []).some(t => /^scatter/.test(t.type || 'scatter'));
    const pick = ps.find(p => hints.plot_class && p.closest('.' + hints.plot_class)) || ps.find(isScatter) || ps[0];
    pick.setAttribute('data-czsl-test', 'plot');
    return pick;
  },
  arr(v) {
    if (v == null) return null;
    if (Array.isArray(v) || ArrayBuffer.isView(v)) {
      const head = Array.from(v).slice(0, 4).map(x => typeof x === 'number' ? +x.toFixed(4) : x);
      return { n: v.length, head };
    }
    if (typeof v === 'object' && v.bdata) return { n: null, b: String(v.bdata).slice(0, 48), dtype: v.dtype };
    return { other: String(v).slice(0, 40) };
  },
  plotState(hints) {
    const p = this.mainPlot(hints);
    if (!p || !(p.data || p._fullData)) return null;
    const data = (p._fullData && p._fullData.length ? p._fullData : p.data) || [];
    const lay = p._fullLayout || p.layout || {};
    let title = lay.title; if (title && typeof title === 'object') title = title.text;
    const traces = data.map(t => ({ type: t.type, name: t.name, x: this.arr(t.x), y: this.arr(t.y),
                                    color: this.arr(t.marker && t.marker.color) }));
    const n_points = traces.reduce((s, t) => s + ((t.x && t.x.n) || 0), 0);
    return { title: title == null ? null : String(title), n_traces: traces.length, n_points, traces, n_plots: this.plots().length };
  },
};
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  const browser = await chromium.launch({
    executablePath: cfg.chromium || '/usr/bin/chromium', headless: true, timeout: T.load,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  let page;
  const shot = async (name) => {
    if (!page) return;
    const p = path.join(outDir, name);
    try { await page.screenshot({ path: p, fullPage: false, timeout: 15000 }); result.screenshots.push(p); } catch (e) { consoleLog.push(`[screenshot ${name} failed] ${e}`); }
  };
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    page = await context.newPage();
    page.on('console', m => consoleLog.push(`[${m.type()}] ${m.text()}`));
    page.on('pageerror', e => consoleLog.push(`[pageerror] ${e && e.stack ? e.stack : e}`));
    page.on('requestfailed', r => consoleLog.push(`[requestfailed] ${r.url()} ${r.failure() ? r.failure().errorText : ''}`));
    await page.addInitScript(installHelpers);

    await page.goto(cfg.url, { waitUntil: 'domcontentloaded', timeout: T.load });
    await page.waitForSelector('.jp-NotebookPanel .jp-Notebook', { timeout: T.load });
    step('notebook_open');
    await page.waitForFunction(() => window.__czsl.kernelIdle(), null, { timeout: T.idle, polling: 250 });
    await page.waitForTimeout(1000);  // idle must hold: the kernel may still be (re)connecting
    await page.waitForFunction(() => window.__czsl.kernelIdle(), null, { timeout: T.idle, polling: 250 });
    step('kernel_idle');

    // Run -> Run All Cells (not Shift+Enter: keyboard focus is unreliable right after load). If no cell starts
    // within 15 s (the request can be lost while the kernel connection settles), open the menu again (3 tries).
    let started = false;
    for (let attempt = 1; attempt <= 3 && !started; attempt++) {
      await page.locator('.lm-MenuBar-itemLabel').filter({ hasText: /^Run$/ }).first().click({ timeout: 15000 });
      await page.locator('.lm-Menu-itemLabel').filter({ hasText: /^Run All Cells$/ }).first().click({ timeout: 15000 });
      step('run_all_clicked', { attempt });
      started = await page.waitForFunction(() => window.__czsl.executedCells() > 0, null, { timeout: 15000, polling: 200 })
        .then(() => true, () => false);
    }
    if (!started) throw new Error('Run > Run All Cells started no cell (3 tries)');
    step('cells_started');

    // Wait for the plot and the control, failing early when a cell errored and nothing is still running.
    const hints = cfg.hints || {};
    const deadline = Date.now() + T.output;
    let ready = false;
    while (Date.now() < deadline) {
      const s = await page.evaluate(h => ({
        plot: !!window.__czsl.plotState(h), controls: window.__czsl.controls().length,
        pending: window.__czsl.pendingCells(), idle: window.__czsl.kernelIdle(), errors: window.__czsl.errors(),
      }), hints);
      if (s.plot && s.controls) { ready = true; break; }
      if (s.errors.length && !s.pending && s.idle) { result.cell_errors = s.errors; throw new Error('a cell raised before the widget appeared'); }
      await page.waitForTimeout(500);
    }
    if (!ready) throw new Error(`widget output (.js-plotly-plot and a Dropdown/Combobox) did not appear within ${T.output / 1000}s`);
    step('widget_visible');
    await page.waitForFunction(() => window.__czsl.kernelIdle() && window.__czsl.pendingCells() === 0, null, { timeout: T.output, polling: 250 });
    step('run_all_done');
    result.cell_errors = await page.evaluate(() => window.__czsl.errors());

    const control = await page.evaluate(h => window.__czsl.markControl(h), hints);
    result.control = control;
    const before = await page.evaluate(h => window.__czsl.plotState(h), hints);
    result.before = before;
    await page.locator('[data-czsl-test="control"]').scrollIntoViewIfNeeded({ timeout: 10000 }).catch(() => {});
    await shot('before.png');

    // choose another option than the current one
    const others = control.options.map((o, i) => ({ o, i })).filter(({ o, i }) => o !== '' &&
      (control.kind === 'dropdown' ? i !== control.selected_index : o !== control.value));
    if (!others.length) throw new Error(`the primitive control offers no other option: ${JSON.stringify(control)}`);
    const target = others[0];
    if (control.kind === 'dropdown') {
      await page.locator('[data-czsl-test="control"] select').selectOption({ index: target.i }, { timeout: 15000 });
    } else {
      const inp = page.locator('[data-czsl-test="control"] input[list]');
      await inp.fill(target.o, { timeout: 15000 });
      await inp.press('Enter');
      await inp.blur();
    }
    result.chosen = target.o;
    step('control_changed', { to: target.o });

    const beforeKey = JSON.stringify(before);
    try {
      await page.waitForFunction(([h, key]) => {
        const s = window.__czsl.plotState(h);
        return !!s && JSON.stringify(s) !== key;
      }, [hints, beforeKey], { timeout: T.change, polling: 250 });
    } catch (e) { throw new Error(`the plot did not change within ${T.change / 1000}s after choosing ${JSON.stringify(target.o)}`); }
    step('plot_changed');
    // let the rest of the update land (several restyle/relayout messages), then settle on idle
    await page.waitForFunction(() => window.__czsl.kernelIdle(), null, { timeout: T.change, polling: 250 }).catch(() => {});
    await page.waitForTimeout(500);
    result.after = await page.evaluate(h => window.__czsl.plotState(h), hints);
    result.control_after = await page.evaluate(h => window.__czsl.markControl(h), hints);
    result.cell_errors = await page.evaluate(() => window.__czsl.errors());
    await page.locator('.js-plotly-plot[data-czsl-test="plot"]').scrollIntoViewIfNeeded({ timeout: 10000 }).catch(() => {});
    await shot('after.png');
    result.ok = true;
  } catch (e) {
    result.error = String(e && e.message ? e.message : e).slice(0, 4000);
    try { result.kernel = await page.evaluate(() => window.__czsl && window.__czsl.kernelStatusText()); } catch (_) {}
    try { result.cell_errors = result.cell_errors || await page.evaluate(() => window.__czsl && window.__czsl.errors()); } catch (_) {}
    await shot('failure.png');
  } finally {
    result.seconds = +((Date.now() - t0) / 1000).toFixed(1);
    try { fs.writeFileSync(result.console_log, consoleLog.join('\n') + '\n'); } catch (_) {}
    await browser.close().catch(() => {});
  }
}

const guard = setTimeout(() => {
  result.error = `driver exceeded its total budget of ${T.total / 1000}s`;
  try { fs.writeFileSync(result.console_log, consoleLog.join('\n') + '\n'); } catch (_) {}
  console.log('RESULT_JSON: ' + JSON.stringify(result));
  process.exit(3);
}, T.total);

main().then(() => {
  clearTimeout(guard);
  console.log('RESULT_JSON: ' + JSON.stringify(result));
  process.exit(result.ok ? 0 : 1);
}, (e) => {
  clearTimeout(guard);
  result.error = 'driver crashed: ' + String(e && e.stack ? e.stack : e).slice(0, 4000);
  console.log('RESULT_JSON: ' + JSON.stringify(result));
  process.exit(2);
});
