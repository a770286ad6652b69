// Issue 9: the agent's admin home page (GET / on 15020) in headless Chromium from Debian, inside
// host A's namespace (the admin port is on A's loopback): content, self-refresh, no external requests.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { preflight, IN_CI } from './support/preflight.js';
import { waitFor } from './support/exec.js';
import { createWorld, type World } from './support/world.js';
import { appGet, startSidecar } from './support/mesh.js';

const CHROMIUM = '/usr/bin/chromium';
const pre = preflight();
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium && !IN_CI) console.warn(`home page test skipped: ${CHROMIUM} is missing (sudo bash scripts/install-test-deps.sh installs it)`);

describe('home page preflight', () => {
  it.runIf(IN_CI)('CI has Chromium from Debian', () => {
    expect(hasChromium, `${CHROMIUM} is missing: scripts/install-test-deps.sh installs the chromium package`).toBe(true);
  });
});

describe.skipIf(!pre.ok || !hasChromium)('e2e: the admin home page in headless Chromium', () => {
  let world: World;
  let browser: Browser | undefined;

  beforeAll(async () => {
    world = await createWorld({ apps: ['a', 'b'] });
    await startSidecar(world, 'b');
    await startSidecar(world, 'a');
    // Chromium runs inside A's namespace; Playwright talks to it over a pipe, so that is all it takes.
    const wrapper = join(world.dir, 'chromium-in-a.sh');
    writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${world.host('a').ns} ${CHROMIUM} "$@"\n`);
    chmodSync(wrapper, 0o755);
    browser = await chromium.launch({
      executablePath: wrapper,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
      timeout: 60_000,
    });
  }, 240_000);

  afterAll(async () => {
    await browser?.close().catch(() => undefined);
    await world?.teardown();
  }, 120_000);

  it('shows status, components, doctor checks, services, rates and links; refreshes itself; loads nothing from elsewhere', async () => {
    const page = await browser!.newPage({ viewport: { width: 1400, height: 1100 } });
    const requested: string[] = [];
    page.on('request', (req) => requested.push(req.url()));
    await page.goto('http://127.0.0.1:15020/', { waitUntil: 'load', timeout: 30_000 });
    await page.waitForFunction("document.getElementById('status').textContent === '<SERVICE_REGISTERED>'", undefined, { timeout: 60_000 });

    // Traffic for the rate chart, sent until the chart of order's cluster rises off its baseline.
    const chartRises = `[...document.querySelectorAll('#charts > div')].some((d) => d.textContent.includes('out#8089#order') &&
      [...d.querySelectorAll('polyline')].some((p) => p.getAttribute('points').split(' ').some((xy) => Number(xy.split(',')[1]) < 70)))`;
    await waitFor('the request-rate chart of out#8089#order to show traffic', async () => {
      for (let i = 0; i < 10; i++) expect((await appGet(world.host('a').ns, 'http://order/home')).code).toBe(200);
      return page.evaluate(chartRises);
    }, { timeoutMs: 90_000, intervalMs: 500 });
    const firstUpdate = await page.textContent('#updated');
    await waitFor('the page to refresh itself', async () => (await page.textContent('#updated')) !== firstUpdate, { timeoutMs: 30_000 });

    const components = await page.textContent('#components-table');
    expect(components).toMatch(/pilot-agent\s*healthy/);
    expect(components).toMatch(/mesh-dns\s*healthy\s*0/);
    expect(components).toMatch(/envoy\s*healthy\s*0/);
    const checks = await page.textContent('#checks-table');
    for (const hop of ['agent', 'mesh-dns', 'dns-capture', 'vip-route', 'outbound-capture', 'proxy', 'route:order', 'cluster:order', 'inbound-capture', 'local-app', 'registry']) expect(checks).toContain(hop);
    expect(await page.locator('#checks-table .FAIL').count()).toBe(0);
    const services = await page.textContent('#services-table');
    expect(services).toContain('out#8089#order');
    expect(services).toContain(`${world.host('b').address}:8089`);
    expect(services).toContain('in#8089#user');
    expect(await page.textContent('#charts')).toMatch(/out#8089#order \d+(\.\d+)? rq\/s/);
    const links = await page.locator('#links-list a').evaluateAll((as) => as.map((a) => a.getAttribute('href') ?? ''));
    for (const url of ['http://127.0.0.1:15020/config_dump/envoy', 'http://127.0.0.1:15021/config_dump', 'http://127.0.0.1:15000/clusters', 'http://127.0.0.1:15000/stats/prometheus']) expect(links).toContain(url);
    expect(await page.textContent('#links-list')).toContain('curl -X POST http://127.0.0.1:15020/hot_restart/envoy');
    // No external assets: every request went to the agent's own admin port.
    expect(requested.filter((u) => !u.startsWith('http://127.0.0.1:15020/'))).toEqual([]);

    const dir = process.env.E2E_CAPTURE_DIR ?? world.dir;
    mkdirSync(dir, { recursive: true });
    const shot = join(dir, 'home-page.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(20_000);
  });
});
