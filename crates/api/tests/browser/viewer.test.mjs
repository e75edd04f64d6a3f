// Headless-browser test of the fractile map viewer (the page the api serves at GET /).
//
// Run (from this directory, against a running api):
//
//   npm ci
//   node viewer.test.mjs http://127.0.0.1:18080
//
// Needs Debian's Chromium (`apt-get install chromium`, /usr/bin/chromium; set
// CHROMIUM=/path to use another) and no internet: Leaflet's files, which the page
// loads from unpkg.com with SRI integrity attributes, are served from
// node_modules/leaflet (the npm package leaflet@1.9.4), and every other off-host
// request is aborted.
//
// What it checks, in order (it stops at the first failure):
//   1. the page loads Leaflet 1.9.4 with both integrity attributes accepted
//      (the SRI hashes match the npm package's files) and its CSS applied;
//   2. within 20 s at least one tile element (.fractile-tile) is painted
//      (data-loaded="1") and its <img> holds a decoded 256x256 image;
//   3. painted tiles carry data-cache (L1/L2/MISS), a numeric data-ms and, from the
//      api's traceresponse (run.sh starts it exporting spans), data-trace (32 hex digits);
//   4. a 503 + Retry-After: 1 answer for one tile (injected by the test) shows
//      an error tile and that tile is re-fetched and painted afterwards;
//   5. zooming in (the zoom control's "+") paints tiles of the next zoom;
//   6. the #tile-info checkbox, toggled with the keyboard, puts show-tile-info
//      on the map container, shows labels with the cache value (MISS/L1/L2),
//      colours the outline by cache layer, and toggles off again;
//   7. the style selector swaps the layer (tiles requested with style=fire);
//      every tile URL the viewer requests is canonical (no query for the default
//      style, exactly ?style=<name> for another);
//   8. no page errors, unhandled rejections or console errors throughout,
//      other than the console's note of the one injected 503;
//   9. in a second browser context where the CDN is unreachable (every off-host
//      request fails as if offline), the page shows #leaflet-failed instead of the
//      map: visible, every text in it at a contrast of at least 7:1 and 12 px or
//      more, saying what failed (and from where), that tiles are still served at
//      /tiles/{z}/{x}/{y}.png (its example link answers a PNG), and how to
//      self-host Leaflet (FRACTILE_VIEWER_ASSETS).
// Screenshots go to output/viewer.png, output/viewer-tile-info.png and
// output/viewer-offline.png.
// Exit code 0 = all passed; otherwise the failure is printed and the code is 1.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const LEAFLET_DIST = path.join(HERE, 'node_modules', 'leaflet', 'dist');
const LEAFLET_CDN = 'https://unpkg.com/leaflet@1.9.4/dist/';
const OUTPUT = path.join(HERE, 'output');
const STEP_TIMEOUT_MS = 20_000;
const OVERALL_TIMEOUT_MS = 180_000;
const CONTENT_TYPES = {
  '.js': 'application/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.map': 'application/json; charset=utf-8',
};

function usage(message) {
  console.error(`${message}\nusage: node viewer.test.mjs http://127.0.0.1:PORT`);
  process.exit(2);
}

const baseArg = process.argv[2];
if (!baseArg) usage('missing base URL');
let base;
try {
  base = new URL(baseArg);
} catch {
  usage(`not a URL: ${baseArg}`);
}
if (!/^https?:$/.test(base.protocol)) usage(`not an http(s) URL: ${baseArg}`);
const pageUrl = new URL('/', base).href;

// A hard stop, whatever happens (e.g. the browser hangs on close).
const watchdog = setTimeout(() => {
  console.error(`FAIL: the test did not finish within ${OVERALL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, OVERALL_TIMEOUT_MS);
watchdog.unref();

let passed = 0;
async function check(name, fn) {
  try {
    const note = await fn();
    passed++;
    console.log(`ok ${passed} - ${name}${note ? ` (${note})` : ''}`);
  } catch (err) {
    err.step = name;
    throw err;
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

const problems = [];      // page errors, unhandled rejections, console errors
const offHost = [];       // aborted off-host requests
const cdnServed = [];     // Leaflet files served from node_modules
let injected503 = null;   // the tile request answered with a 503 by the test
const tileRequests = [];  // path and query of every tile request the page made
let ignored503 = 0;       // console messages about it

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  timeout: STEP_TIMEOUT_MS,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

let exitCode = 0;
try {
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);

  await context.route('**/*', async (route) => {
    const url = route.request().url();
    if (url.startsWith(LEAFLET_CDN)) {
      const rel = decodeURIComponent(new URL(url).pathname.slice(new URL(LEAFLET_CDN).pathname.length));
      const file = path.join(LEAFLET_DIST, rel);
      if (!file.startsWith(LEAFLET_DIST + path.sep) || !fs.existsSync(file)) {
        return route.fulfill({ status: 404, body: 'not in node_modules/leaflet/dist' });
      }
      cdnServed.push(rel);
      return route.fulfill({
        status: 200,
        // crossorigin="" makes these CORS requests: without this header SRI fails.
        headers: {
          'content-type': CONTENT_TYPES[path.extname(file)] || 'application/octet-stream',
          'access-control-allow-origin': '*',
        },
        body: fs.readFileSync(file),
      });
    }
    if (new URL(url).origin !== base.origin) {
      offHost.push(url);
      return route.abort('blockedbyclient');
    }
    if (/\/tiles\//.test(url)) {
      const u = new URL(url);
      tileRequests.push(u.pathname + u.search + (url.endsWith('?') ? '?' : ''));
    }
    // Overload: answer the first tile request with 503 + Retry-After: 1.
    if (!injected503 && /\/tiles\/\d+\/\d+\/\d+\.png/.test(url)) {
      injected503 = url;
      return route.fulfill({
        status: 503,
        headers: { 'retry-after': '1', 'content-type': 'text/plain' },
        body: 'overloaded (injected by the test)',
      });
    }
    return route.continue();
  });

  const page = await context.newPage();
  await page.addInitScript(() => {
    window.addEventListener('unhandledrejection', (e) => {
      console.error(`unhandled rejection: ${e.reason && (e.reason.stack || e.reason)}`);
    });
  });
  page.on('pageerror', (err) => problems.push(`page error: ${err.stack || err}`));
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const text = msg.text();
    const loc = msg.location().url || '';
    // Chromium logs the injected 503 as "Failed to load resource: ... status of 503".
    if (/status of 503/.test(text) && injected503 && loc === injected503) {
      ignored503++;
      return;
    }
    problems.push(`console error: ${text}${loc ? ` (${loc})` : ''}`);
  });
  const noProblems = () =>
    assert(problems.length === 0, `errors in the page:\n  ${problems.join('\n  ')}`);

  // --- 1. page and Leaflet -------------------------------------------------
  await check('page loads Leaflet 1.9.4 with valid SRI hashes', async () => {
    const res = await page.goto(pageUrl, { waitUntil: 'load' });
    assert(res && res.status() === 200, `GET ${pageUrl} answered ${res && res.status()}`);
    assert(!(await page.content()).includes('{{MAX_ZOOM}}'), 'the server left {{MAX_ZOOM}} unreplaced');
    assert(cdnServed.includes('leaflet.js') && cdnServed.includes('leaflet.css'),
      `Leaflet not requested from ${LEAFLET_CDN} (served: ${cdnServed.join(', ') || 'nothing'})`);
    const state = await page.evaluate(() => {
      const pane = document.querySelector('.leaflet-tile-pane');
      return {
        version: window.L && window.L.version,
        // leaflet.css gives the tile pane z-index 200: proves the CSS passed SRI.
        paneZ: pane && getComputedStyle(pane).zIndex,
        hasMap: Boolean(window.fractile && window.fractile.map),
      };
    });
    assert(state.version === '1.9.4', `leaflet.js not loaded (integrity mismatch?): L.version=${state.version}`);
    assert(state.paneZ === '200', `leaflet.css not applied (integrity mismatch?): tile pane z-index=${state.paneZ}`);
    assert(state.hasMap, 'the viewer script did not create the map');
    noProblems();
    return `max zoom ${await page.evaluate(() => window.fractile.map.getMaxZoom())}`;
  });

  // --- 2, 3. tiles ---------------------------------------------------------
  const painted = '.fractile-tile[data-loaded="1"]';
  await check('tiles are painted with a decoded 256x256 image', async () => {
    await page.waitForFunction((sel) => document.querySelectorAll(sel).length >= 1, painted,
      { timeout: STEP_TIMEOUT_MS });
    const img = await page.$eval(`${painted} img`, (el) => ({
      complete: el.complete, w: el.naturalWidth, h: el.naturalHeight, src: el.src,
      visibility: getComputedStyle(el).visibility,
    }));
    assert(img.complete && img.w === 256 && img.h === 256,
      `painted tile image is ${img.w}x${img.h} (complete=${img.complete})`);
    assert(img.src.startsWith('blob:'), `tile image src is not an object URL: ${img.src}`);
    assert(img.visibility === 'visible', `painted tile is not visible (visibility: ${img.visibility})`);
    return `${await page.locator(painted).count()} painted`;
  });

  await check('painted tiles carry data-cache, data-ms and data-trace', async () => {
    const tiles = await page.$$eval(painted, (els) => els.map((el) => ({ ...el.dataset })));
    for (const t of tiles) {
      assert(['L1', 'L2', 'MISS'].includes(t.cache), `tile ${t.z}/${t.x}/${t.y}: data-cache=${t.cache}`);
      assert(t.ms !== '' && Number.isFinite(Number(t.ms)), `tile ${t.z}/${t.x}/${t.y}: data-ms=${t.ms}`);
      assert(/^[0-9a-f]{32}$/.test(t.trace || ''), `tile ${t.z}/${t.x}/${t.y}: data-trace=${t.trace}`);
    }
    return [...new Set(tiles.map((t) => t.cache))].join('/');
  });

  // --- 4. overload ------------------------------------------------------------
  await check('a 503 with Retry-After shows an error tile, then the tile is re-fetched', async () => {
    assert(injected503, 'no tile request was made');
    const [, z, x, y] = injected503.match(/\/tiles\/(\d+)\/(\d+)\/(\d+)\.png/);
    const sel = `.fractile-tile[data-z="${z}"][data-x="${x}"][data-y="${y}"]`;
    await page.waitForFunction((s) => {
      const el = document.querySelector(s);
      return el && el.dataset.loaded === '1' && el.dataset.retries === '1' && !el.dataset.error;
    }, sel, { timeout: STEP_TIMEOUT_MS });
    const visibility = await page.$eval(sel, (el) => getComputedStyle(el).visibility);
    assert(visibility === 'visible', `the re-fetched tile is not visible (visibility: ${visibility})`);
    noProblems();
    return `${z}/${x}/${y}; ${ignored503} console note(s) of it ignored`;
  });

  // --- 5. zoom --------------------------------------------------------------
  await check('zooming in paints tiles of the next zoom', async () => {
    await waitForAllPainted(page);
    const z0 = await page.evaluate(() => window.fractile.map.getZoom());
    await page.click('.leaflet-control-zoom-in');
    await page.waitForFunction((z) => window.fractile.map.getZoom() === z, z0 + 1);
    await page.waitForFunction(
      (z) => document.querySelectorAll(`.fractile-tile[data-loaded="1"][data-z="${z}"]`).length >= 1,
      z0 + 1, { timeout: STEP_TIMEOUT_MS });
    await waitForAllPainted(page);
    fs.mkdirSync(OUTPUT, { recursive: true });
    await page.screenshot({ path: path.join(OUTPUT, 'viewer.png') });
    noProblems();
    return `zoom ${z0} -> ${z0 + 1}`;
  });

  // --- 6. tile info overlay ---------------------------------------------------
  await check('the tile-info toggle (keyboard) shows labels and cache-coloured outlines', async () => {
    await page.focus('#tile-info');
    await page.keyboard.press('Space');
    assert(await page.isChecked('#tile-info'), '#tile-info is not checked after pressing Space');
    const on = await page.$eval('#map', (el) => el.classList.contains('show-tile-info'));
    assert(on, 'the map container lacks show-tile-info');
    const labels = await page.evaluate(() => {
      const colours = { L1: 'rgb(46, 204, 64)', L2: 'rgb(59, 156, 255)', MISS: 'rgb(255, 140, 26)' };
      const vw = innerWidth, vh = innerHeight;
      return [...document.querySelectorAll('.fractile-tile[data-loaded="1"]')].map((tile) => {
        const label = tile.querySelector('.fractile-tile-label');
        const r = label.getBoundingClientRect();
        return {
          text: label.textContent,
          visible: getComputedStyle(label).display !== 'none' && r.width > 0 && r.height > 0 &&
            r.right > 0 && r.bottom > 0 && r.left < vw && r.top < vh,
          outline: getComputedStyle(tile, '::after').borderTopColor,
          outlineShown: getComputedStyle(tile, '::after').display !== 'none',
          expected: colours[tile.dataset.cache],
        };
      });
    });
    const visible = labels.filter((l) => l.visible);
    assert(visible.length > 0, 'no tile label is visible');
    const good = visible.find((l) => /\b(MISS|L1|L2)\b/.test(l.text) && /\d ms\b/.test(l.text));
    assert(good, `no visible label shows the cache value and time: ${visible.map((l) => l.text).join(' | ')}`);
    for (const l of labels) {
      assert(l.outlineShown && l.outline === l.expected,
        `tile "${l.text}": outline ${l.outline} (shown=${l.outlineShown}), expected ${l.expected}`);
    }
    await waitForAllPainted(page);
    await page.screenshot({ path: path.join(OUTPUT, 'viewer-tile-info.png') });
    await page.keyboard.press('Space');
    const off = await page.$eval('#map', (el) => !el.classList.contains('show-tile-info'));
    assert(off, 'show-tile-info still set after unchecking');
    await page.keyboard.press('Space');   // leave it on for the next step's tiles
    noProblems();
    return `e.g. "${good.text}"`;
  });

  // --- 7. style -------------------------------------------------------------
  await check('the style selector swaps the layer', async () => {
    await page.selectOption('#style-select', 'fire');
    await page.waitForFunction(() =>
      document.querySelectorAll('.fractile-tile[data-style="fire"][data-loaded="1"]').length >= 1,
    null, { timeout: STEP_TIMEOUT_MS });
    // Once the new layer has loaded, the old one is removed.
    await page.waitForFunction(() =>
      document.querySelectorAll('.fractile-tile:not([data-style="fire"])').length === 0,
    null, { timeout: STEP_TIMEOUT_MS });
    assert(new URL(page.url()).searchParams.get('style') === 'fire', `page URL not updated: ${page.url()}`);
    // One URL per tile: the default style without a query, another as ?style=<name> only.
    const canonical = /^\/tiles\/(0|[1-9]\d*)\/(0|[1-9]\d*)\/(0|[1-9]\d*)\.png(\?style=(fire|ocean|grayscale))?$/;
    const odd = tileRequests.filter((r) => !canonical.test(r));
    assert(odd.length === 0, `non-canonical tile URLs requested: ${odd.slice(0, 5).join(', ')}`);
    assert(tileRequests.some((r) => r.endsWith('.png')), 'no default-style tile was requested without a query');
    assert(tileRequests.some((r) => r.endsWith('?style=fire')), 'no tile was requested with ?style=fire');
    noProblems();
  });

  // --- 8. ---------------------------------------------------------------------
  await check('no page errors, console errors or off-host requests', async () => {
    noProblems();
    assert(offHost.length === 0, `off-host requests (aborted):\n  ${offHost.join('\n  ')}`);
  });

  // --- 9. offline: the CDN is unreachable ------------------------------------
  await check('with the Leaflet CDN blocked, a readable page says what failed and what still works', async () => {
    const offline = await browser.newContext({ viewport: { width: 1024, height: 768 } });
    try {
      offline.setDefaultTimeout(STEP_TIMEOUT_MS);
      const blocked = [];
      await offline.route('**/*', (route) => {
        const url = route.request().url();
        if (new URL(url).origin === base.origin) return route.continue();
        blocked.push(url);
        return route.abort('internetdisconnected');
      });
      const page = await offline.newPage();
      const res = await page.goto(pageUrl, { waitUntil: 'load' });
      assert(res && res.status() === 200, `GET ${pageUrl} answered ${res && res.status()}`);
      assert(blocked.some((u) => u === `${LEAFLET_CDN}leaflet.js`), `leaflet.js was not requested: ${blocked.join(', ')}`);
      const box = page.locator('#leaflet-failed');
      await box.waitFor({ state: 'visible' });
      assert(!(await page.locator('#map').isVisible()), 'the empty map still covers the page');
      const text = (await box.innerText()).replace(/\s+/g, ' ');
      for (const want of [
        'Leaflet did not load',                      // what failed
        `${LEAFLET_CDN}leaflet.js`,                  // from where
        'offline',                                   // why, probably
        '/tiles/{z}/{x}/{y}.png',                    // what still works
        'FRACTILE_VIEWER_ASSETS',                    // how to self-host
        'leaflet@1.9.4',
      ]) {
        assert(text.includes(want), `the message lacks ${JSON.stringify(want)}: ${text}`);
      }
      // Every text element of the message must be readable: contrast against the background
      // it is drawn on of at least 7:1 (WCAG AAA), and a font of at least 12 px.
      const worst = await box.evaluate((el) => {
        const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
        const lum = ([r, g, b]) => {
          const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
          return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
        };
        const background = (node) => {
          for (let n = node; n; n = n.parentElement) {
            const c = rgb(getComputedStyle(n).backgroundColor);
            if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
          }
          return [255, 255, 255];
        };
        let worst = { ratio: Infinity };
        for (const node of [el, ...el.querySelectorAll('*')]) {
          if (![...node.childNodes].some((c) => c.nodeType === 3 && c.textContent.trim())) continue;
          const style = getComputedStyle(node);
          const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(node))];
          const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
          const px = parseFloat(style.fontSize);
          if (ratio < worst.ratio || px < 12) worst = { ratio, px, tag: node.tagName, color: style.color };
        }
        return worst;
      });
      assert(worst.ratio >= 7 && worst.px >= 12, `unreadable text: ${JSON.stringify(worst)}`);
      // The tile link in the message works.
      const tile = await page.evaluate(async () => {
        const r = await fetch(document.querySelector('#leaflet-failed a').href);
        return { status: r.status, type: r.headers.get('content-type') };
      });
      assert(tile.status === 200 && tile.type === 'image/png', `the example tile: ${JSON.stringify(tile)}`);
      await page.screenshot({ path: path.join(OUTPUT, 'viewer-offline.png') });
      return `contrast ${worst.ratio.toFixed(1)}:1`;
    } finally {
      await offline.close().catch(() => {});
    }
  });

  console.log(`screenshots: ${path.join(OUTPUT, 'viewer.png')}, ${path.join(OUTPUT, 'viewer-tile-info.png')}`);
  console.log(`viewer: ${passed} passed, 0 failed`);
} catch (err) {
  exitCode = 1;
  console.error(`FAIL${err.step ? ` - ${err.step}` : ''}: ${err.message}`);
  if (problems.length && !/errors in the page/.test(err.message)) console.error(`errors seen in the page:\n  ${problems.join('\n  ')}`);
  console.log(`viewer: ${passed} passed, 1 failed`);
} finally {
  await browser.close().catch(() => {});
  clearTimeout(watchdog);
}
process.exit(exitCode);

// Waits (bounded) until every tile Leaflet currently shows is painted and
// has finished fading in (Leaflet animates tile opacity from 0 to 1).
async function waitForAllPainted(page) {
  await page.waitForFunction(() => {
    const tiles = [...document.querySelectorAll('.fractile-tile')];
    return tiles.length > 0 &&
      tiles.every((t) => t.dataset.loaded === '1' && (t.style.opacity === '' || t.style.opacity === '1'));
  }, null, { timeout: STEP_TIMEOUT_MS });
}
