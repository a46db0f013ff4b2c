// Open a page of a czsl-docs site in headless Debian chromium with every request outside file:// blocked, and report
// whether its formulas render as MathML and its plotly figures draw. Usage: node check_site.js '<json config>'
// (tests/test_browser.py builds the config: url, out_dir, chromium). Prints one line `RESULT_JSON: {...}`.
'use strict';
const path = require('path');
const { chromium } = require('playwright-core');

const cfg = JSON.parse(process.argv[2]);
(async () => {
  const result = { ok: false, blocked: [], console: [] };
  const browser = await chromium.launch({
    executablePath: cfg.chromium || '/usr/bin/chromium', headless: true, timeout: 60000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
    await context.route('**/*', route => {                    // the network is off: only the site's own files load
      const url = route.request().url();
      if (/^(file|data|blob):/.test(url)) return route.continue();
      result.blocked.push(url); return route.abort();
    });
    const page = await context.newPage();
    page.on('console', m => result.console.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', e => result.console.push(`pageerror: ${e.message}`));
    await page.goto(cfg.url, { waitUntil: 'load', timeout: 60000 });
    try { await page.waitForSelector('.czsl-plotly .main-svg', { timeout: 30000 }); } catch (e) { result.plotly_wait = String(e).slice(0, 200); }
    Object.assign(result, await page.evaluate(() => ({
      maths: [...document.querySelectorAll('math')].map(m => {
        const r = m.getBoundingClientRect();
        return { display: getComputedStyle(m).display, width: r.width, height: r.height, block: m.getAttribute('display') === 'block' };
      }),
      raw_tex: /\$[^$\s][^$]*\\[a-z]+/.test(document.body.innerText),
      plotly_plots: document.querySelectorAll('.czsl-plotly.js-plotly-plot').length,
      plotly_svgs: document.querySelectorAll('.czsl-plotly .main-svg').length,
      plotly_traces: document.querySelectorAll('.czsl-plotly .scatterlayer .trace').length,
      plotly_failed: document.body.innerText.includes('plotly.js did not load'),
    })));
    await page.screenshot({ path: path.join(cfg.out_dir, 'site.png'), fullPage: true });
    result.screenshot = path.join(cfg.out_dir, 'site.png');
    result.ok = true;
  } catch (e) { result.error = String(e).slice(0, 1000); }
  finally { await browser.close(); }
  console.log('RESULT_JSON: ' + JSON.stringify(result));
})();
