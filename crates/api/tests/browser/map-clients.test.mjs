// The tile world's own clients on a page of another origin, in headless Chromium:
//   1. MapLibre GL (npm maplibre-gl, WebGL: Chromium's SwiftShader) with a raster source
//      from the api's TileJSON;
//   2. OpenLayers (npm ol) with a WMTS source built from the api's capabilities, loading
//      tiles with crossOrigin: 'anonymous'.
// Each must paint tiles (pixels of more than one colour read back from its canvas: a canvas
// with a tile that failed CORS is blank, or tainted and unreadable) with no console error
// and no failed request. The libraries come from node_modules, installed from npm by run.sh,
// and are served by this script's own server, the page's origin; the api is the other one.
//
// Usage: node map-clients.test.mjs API_BASE_URL
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const API = process.argv[2];
if (!API) throw new Error('usage: node map-clients.test.mjs API_BASE_URL');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_MS = 30_000;

const PAGES = {
  '/maplibre.html': `<!doctype html><meta charset="utf-8">
<link rel="stylesheet" href="/lib/maplibre-gl/dist/maplibre-gl.css">
<div id="map" style="width:512px;height:512px"></div>
<script type="module">
import * as maplibregl from '/lib/maplibre-gl/dist/maplibre-gl.mjs';
const map = new maplibregl.Map({
  container: 'map', center: [0, 0], zoom: 1, fadeDuration: 0,
  canvasContextAttributes: { preserveDrawingBuffer: true },
  style: { version: 8, sources: { fractile: { type: 'raster', url: '${API}/tilejson.json?style=fire', tileSize: 256 } },
           layers: [{ id: 'fractile', type: 'raster', source: 'fractile' }] },
});
map.on('error', (e) => console.error('maplibre: ' + (e.error && e.error.message)));
map.once('idle', () => { window.painted = map.getCanvas(); });
</script>`,
  '/openlayers.html': `<!doctype html><meta charset="utf-8">
<link rel="stylesheet" href="/lib/ol/ol.css">
<script src="/lib/ol/dist/ol.js"></script>
<div id="map" style="width:512px;height:512px"></div>
<script>
fetch('${API}/wmts/1.0.0/WMTSCapabilities.xml').then((r) => r.text()).then((xml) => {
  const caps = new ol.format.WMTSCapabilities().read(xml);
  const options = ol.source.WMTS.optionsFromCapabilities(caps, { layer: 'ocean', matrixSet: 'GoogleMapsCompatible' });
  options.crossOrigin = 'anonymous';
  const map = new ol.Map({ target: 'map', layers: [new ol.layer.Tile({ source: new ol.source.WMTS(options) })],
                           view: new ol.View({ center: [0, 0], zoom: 1 }) });
  map.once('rendercomplete', () => { window.painted = document.querySelector('#map canvas'); });
}).catch((e) => console.error('openlayers: ' + e));
</script>`,
};

const TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };

// The page's origin: the two pages and the libraries out of node_modules.
const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname === '/favicon.ico') {
    res.writeHead(204).end();
    return;
  }
  if (PAGES[url.pathname]) {
    res.writeHead(200, { 'content-type': 'text/html' }).end(PAGES[url.pathname]);
    return;
  }
  const file = path.join(HERE, 'node_modules', url.pathname.replace(/^\/lib\//, ''));
  if (!url.pathname.startsWith('/lib/') || !file.startsWith(path.join(HERE, 'node_modules')) || !fs.existsSync(file)) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
  fs.createReadStream(file).pipe(res);
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

// WebGL headless: Chromium's software renderer, asked for explicitly (it no longer falls
// back to it silently in every version).
const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--enable-unsafe-swiftshader'] });
let failed = 0;
try {
  for (const [name, page] of [['MapLibre GL 6 (TileJSON)', '/maplibre.html'], ['OpenLayers 10 (WMTS)', '/openlayers.html']]) {
    const tab = await browser.newPage();
    const problems = [];
    tab.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    tab.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    tab.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
    let verdict;
    try {
      await tab.goto(origin + page);
      await tab.waitForFunction(() => window.painted, null, { timeout: TIMEOUT_MS });
      // Read the canvas back (a tainted canvas throws): how many colours the map has.
      const colours = await tab.evaluate(() => {
        const source = window.painted;
        const copy = document.createElement('canvas');
        copy.width = source.width; copy.height = source.height;
        const ctx = copy.getContext('2d');
        ctx.drawImage(source, 0, 0);
        const data = ctx.getImageData(0, 0, copy.width, copy.height).data;
        const seen = new Set();
        for (let i = 0; i < data.length; i += 4 * 97) seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        return seen.size;
      });
      await tab.screenshot({ path: path.join(HERE, 'output', page.slice(1).replace('.html', '.png')) });
      verdict = colours > 8 && problems.length === 0;
      console.log(`${verdict ? 'ok' : 'not ok'} - ${name}: tiles painted from ${API} on a page of ${origin} (${colours} colours)`);
    } catch (e) {
      verdict = false;
      console.log(`not ok - ${name}: ${e.message.split('\n')[0]}`);
    }
    for (const p of problems) console.log(`    ${p}`);
    if (!verdict) failed++;
    await tab.close();
  }
} finally {
  await browser.close();
  server.close();
}
console.log(`map clients: ${2 - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
