import { execFile } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cluster, curl, deadPort, request, startProxy, startUpstream, vhost, waitFor, type StartedProxy, type TestUpstream } from './support/proxy-harness';
import { startH2Upstream, type H2Upstream } from './support/h2-upstream';
import { SPAN_KIND, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './support/otlp-receiver';

// Issue 16: trace propagation (W3C and B3 in, both out, one span per hop) through the real proxy to a
// real upstream, and span export with the OpenTelemetry SDK over OTLP/HTTP protobuf to a receiver
// decoding the official OTLP protobuf types (support/otlp-receiver.ts says why not a collector).

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0([01])$/;

function promtool(text: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = execFile('promtool', ['check', 'metrics'], (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }));
    child.stdin!.end(text);
  });
}

/** Every tracing stat from one /stats answer (sums across stats are then consistent). */
async function tracingStats(p: StartedProxy): Promise<Record<string, number>> {
  const text = (await request(p.admin, { host: '127.0.0.1', path: '/stats?filter=^tracing\\.opentelemetry\\.' })).body;
  return Object.fromEntries(text.trim().split('\n').filter(Boolean).map((l) => { const [k, v] = l.split(': '); return [k!.replace('tracing.opentelemetry.', ''), Number(v)]; }));
}

async function stat(p: StartedProxy, name: string): Promise<number> {
  const text = (await request(p.admin, { host: '127.0.0.1', path: `/stats?filter=^${encodeURIComponent(name.replace(/\./g, '\\.'))}$` })).body;
  const m = new RegExp(`^${name.replace(/\./g, '\\.')}: (\\d+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

describe('tracing: propagation and OTLP export', () => {
  let up: TestUpstream;
  let rx: OtlpReceiver;
  let p: StartedProxy;

  beforeAll(async () => {
    [up, rx] = await Promise.all([startUpstream('order'), startOtlpReceiver()]);
    p = await startProxy({
      node: { id: 'sidecar~10.0.0.1~user', cluster: 'user' },
      clusters: [cluster('out#80#order', [up]), { name: 'out#80#empty', endpoints: [] }],
      routes: { virtualHosts: [vhost('order', ['order'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }]), vhost('empty', ['empty'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#empty' } }])] },
      tracing: { otlp: { endpoint: rx.url, headers: { 'x-api-key': 'collector-secret' } }, scheduledDelayMs: 50 },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await Promise.all([up?.close(), rx?.close()]);
  });

  const last = () => up.requests[up.requests.length - 1]!.headers;
  const spanOf = async (traceId: string, spanId?: string): Promise<ReceivedSpan> => {
    await waitFor(() => rx.spans.some((s) => s.traceId === traceId && (spanId === undefined || s.spanId === spanId)), `span of trace ${traceId} at the receiver`);
    return rx.spans.find((s) => s.traceId === traceId && (spanId === undefined || s.spanId === spanId))!;
  };

  it('starts a trace when none came: W3C and B3 upstream, one CLIENT span with Envoy\'s tags exported over OTLP/HTTP protobuf', async () => {
    const r = await request(p.port, { host: 'order', path: '/items?x=1', headers: { 'user-agent': 'tracing-test' } });
    expect(r.status).toBe(200);
    const h = last();
    const m = TRACEPARENT.exec(String(h.traceparent));
    expect(m, String(h.traceparent)).not.toBeNull();
    const [, traceId, spanId, sampled] = m!;
    expect(sampled).toBe('1'); // samplingPercent defaults to 100
    expect(h['x-b3-traceid']).toBe(traceId);
    expect(h['x-b3-spanid']).toBe(spanId);
    expect(h['x-b3-sampled']).toBe('1');
    expect(h['x-b3-parentspanid']).toBeUndefined(); // this hop is the root
    expect(h.b3).toBeUndefined(); // single-header B3 only when the caller used it
    const span = await spanOf(traceId!);
    expect(span.spanId).toBe(spanId);
    expect(span.parentSpanId).toBe('');
    expect(span.kind).toBe(SPAN_KIND.CLIENT);
    expect(span.name).toBe('egress order');
    expect(span.service).toBe('user'); // node.cluster
    expect(span.scope).toBe('mesh-proxy');
    expect(span.attributes).toMatchObject({
      component: 'proxy', node_id: 'sidecar~10.0.0.1~user', 'guid:x-request-id': String(h['x-request-id']),
      'http.method': 'GET', 'http.url': 'http://order/items?x=1', 'http.protocol': 'HTTP/1.1', 'http.status_code': '200',
      response_flags: '-', upstream_cluster: 'out#80#order', upstream_address: `127.0.0.1:${up.port}`, user_agent: 'tracing-test',
    });
    expect(span.attributes.error).toBeUndefined();
    expect(span.endNs).toBeGreaterThan(span.startNs);
    expect(rx.contentTypes[0]).toBe('application/x-protobuf');
  });

  it('continues an incoming W3C trace: same trace id, a new span whose parent is the caller\'s, tracestate passed on', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpan = '00f067aa0ba902b7';
    await request(p.port, { host: 'order', path: '/w3c', headers: { traceparent: `00-${traceId}-${callerSpan}-01`, tracestate: 'vendor=abc,other=1' } });
    const h = last();
    const m = TRACEPARENT.exec(String(h.traceparent))!;
    expect(m[1]).toBe(traceId);
    expect(m[2]).not.toBe(callerSpan);
    expect(m[3]).toBe('1');
    expect(h.tracestate).toBe('vendor=abc,other=1');
    expect(h['x-b3-traceid']).toBe(traceId);
    expect(h['x-b3-parentspanid']).toBe(callerSpan);
    expect(h['x-b3-spanid']).toBe(m[2]);
    const span = await spanOf(traceId);
    expect(span.spanId).toBe(m[2]);
    expect(span.parentSpanId).toBe(callerSpan);
  });

  it('B3 multi-header in: W3C and B3 out with the same trace, a 64-bit trace id left-padded', async () => {
    await request(p.port, { host: 'order', path: '/b3', headers: { 'x-b3-traceid': '463ac35c9f6413ad', 'x-b3-spanid': 'a2fb4a1d1a96d312', 'x-b3-sampled': '1' } });
    const h = last();
    const full = '0000000000000000463ac35c9f6413ad';
    const m = TRACEPARENT.exec(String(h.traceparent))!;
    expect(m[1]).toBe(full);
    expect(h['x-b3-traceid']).toBe(full);
    expect(h['x-b3-parentspanid']).toBe('a2fb4a1d1a96d312');
    expect(h['x-b3-spanid']).toBe(m[2]);
    expect(h['x-b3-sampled']).toBe('1');
    expect((await spanOf(full)).parentSpanId).toBe('a2fb4a1d1a96d312');
  });

  it('single-header b3 in: rewritten with this hop\'s span, plus the multi-header form and traceparent', async () => {
    const traceId = '80f198ee56343ba864fe8b2a57d3eff7';
    await request(p.port, { host: 'order', path: '/b3single', headers: { b3: `${traceId}-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90` } });
    const h = last();
    const m = TRACEPARENT.exec(String(h.traceparent))!;
    expect(m[1]).toBe(traceId);
    expect(h.b3).toBe(`${traceId}-${m[2]}-1-e457b5a2e4d86bd1`);
    expect(h['x-b3-parentspanid']).toBe('e457b5a2e4d86bd1');
    expect((await spanOf(traceId)).parentSpanId).toBe('e457b5a2e4d86bd1');
  });

  it('honours a caller\'s "not sampled": propagated with flag 00 / x-b3-sampled 0, no span exported', async () => {
    const unsampled = '11111111111111111111111111111111';
    await request(p.port, { host: 'order', path: '/unsampled', headers: { traceparent: `00-${unsampled}-2222222222222222-00` } });
    const h = last();
    expect(String(h.traceparent)).toMatch(new RegExp(`^00-${unsampled}-[0-9a-f]{16}-00$`));
    expect(h['x-b3-sampled']).toBe('0');
    // a sampled request after it: once its span is in, the unsampled one would have been too (one queue, in order)
    const sampled = '33333333333333333333333333333333';
    await request(p.port, { host: 'order', path: '/sampled', headers: { traceparent: `00-${sampled}-2222222222222222-01` } });
    await spanOf(sampled);
    expect(rx.spans.some((s) => s.traceId === unsampled)).toBe(false);
  });

  it('reads the sampled bit of any flags byte (0b sampled, 0a not) and passes the flags on as 01 / 00', async () => {
    await request(p.port, { host: 'order', path: '/flags', headers: { traceparent: '00-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-2222222222222222-0b' } });
    expect(String(last().traceparent)).toMatch(/^00-b{32}-[0-9a-f]{16}-01$/);
    await request(p.port, { host: 'order', path: '/flags', headers: { traceparent: '00-cccccccccccccccccccccccccccccccc-2222222222222222-0a' } });
    expect(String(last().traceparent)).toMatch(/^00-c{32}-[0-9a-f]{16}-00$/);
    // a later version is read by its first four fields; upper-case hex is not W3C's form: a new trace
    await request(p.port, { host: 'order', path: '/flags', headers: { traceparent: '01-dddddddddddddddddddddddddddddddd-2222222222222222-01-future' } });
    expect(String(last().traceparent)).toMatch(/^00-d{32}-/);
    await request(p.port, { host: 'order', path: '/flags', headers: { traceparent: '00-EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE-2222222222222222-01' } });
    expect(String(last().traceparent)).not.toMatch(/-e{32}-|-E{32}-/i);
  });

  it('an invalid traceparent starts a new trace (W3C\'s rule); B3 debug is kept and forces sampling', async () => {
    await request(p.port, { host: 'order', path: '/bad', headers: { traceparent: '00-00000000000000000000000000000000-2222222222222222-01' } });
    const m = TRACEPARENT.exec(String(last().traceparent))!;
    expect(m[1]).not.toBe('00000000000000000000000000000000');
    expect(last()['x-b3-parentspanid']).toBeUndefined();
    await request(p.port, { host: 'order', path: '/debug', headers: { 'x-b3-traceid': '5555555555555555aaaaaaaaaaaaaaaa', 'x-b3-spanid': '6666666666666666', 'x-b3-sampled': '0', 'x-b3-flags': '1' } });
    expect(last()['x-b3-flags']).toBe('1');
    expect(last()['x-b3-sampled']).toBe('1');
    await spanOf('5555555555555555aaaaaaaaaaaaaaaa');
  });

  it('a local reply gets its span too: 503 UH is an error span with response_flags UH; 404 NR names no cluster', async () => {
    const t1 = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1';
    const r = await request(p.port, { host: 'empty', path: '/', headers: { traceparent: `00-${t1}-2222222222222222-01` } });
    expect(r.status).toBe(503);
    const uh = await spanOf(t1);
    expect(uh.attributes).toMatchObject({ 'http.status_code': '503', response_flags: 'UH', upstream_cluster: 'out#80#empty', error: 'true' });
    expect(uh.statusCode).toBe(2); // STATUS_CODE_ERROR
    const t2 = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa2';
    expect((await request(p.port, { host: 'nowhere', path: '/', headers: { traceparent: `00-${t2}-2222222222222222-01` } })).status).toBe(404);
    expect((await spanOf(t2)).attributes).toMatchObject({ 'http.status_code': '404', response_flags: 'NR', upstream_cluster: '-' });
  });

  it('/config_dump shows the tracer as Envoy\'s bootstrap tracing, without the export headers\' values', async () => {
    const text = (await curl(['-s', `http://127.0.0.1:${p.admin}/config_dump`])).stdout;
    const dump = JSON.parse(text) as { configs: Array<Record<string, any>> };
    const boot = dump.configs.find((c) => String(c['@type']).endsWith('BootstrapConfigDump'))!.bootstrap;
    expect(boot.tracing.http.name).toBe('envoy.tracers.opentelemetry');
    expect(boot.tracing.http.typed_config).toMatchObject({ '@type': 'type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig', service_name: 'user', http_service: { http_uri: { uri: rx.url, timeout: '10s' }, request_headers_to_add: [{ header: { key: 'x-api-key', value: '[redacted]' } }] } });
    expect(boot.tracing.random_sampling).toEqual({ value: 100 });
    expect(text).not.toContain('collector-secret');
  });

  it('counts sent spans, and /stats/prometheus with the tracing stats passes promtool', async () => {
    await waitFor(async () => (await stat(p, 'tracing.opentelemetry.spans_sent')) === rx.spans.length && rx.spans.length >= 8, 'spans_sent equal to what the receiver holds');
    expect(await stat(p, 'tracing.opentelemetry.spans_dropped')).toBe(0);
    expect(await stat(p, 'tracing.opentelemetry.export_failed')).toBe(0);
    const text = (await curl(['-s', `http://127.0.0.1:${p.admin}/stats/prometheus`])).stdout;
    expect(text).toMatch(/^envoy_tracing_opentelemetry_spans_sent(_total)? \d+$/m);
    expect(await promtool(text)).toEqual({ code: 0, out: '' });
  });

  it('a config update with new tracing settings takes effect for the next request (samplingPercent 0: new traces not sampled, a caller\'s decision still kept)', async () => {
    const config = p.proxy.config as unknown as Record<string, unknown>;
    p.proxy.update({ ...config, version: '2', tracing: { otlp: { endpoint: rx.url }, scheduledDelayMs: 50, samplingPercent: 0 } });
    await request(p.port, { host: 'order', path: '/zero' });
    expect(String(last().traceparent)).toMatch(/-00$/);
    expect(last()['x-b3-sampled']).toBe('0');
    const kept = '77777777777777777777777777777777';
    await request(p.port, { host: 'order', path: '/kept', headers: { traceparent: `00-${kept}-2222222222222222-01` } });
    expect(String(last().traceparent)).toMatch(/-01$/);
    await spanOf(kept);
  });
});

describe('tracing: the collector is down', () => {
  let up: TestUpstream;
  let p: StartedProxy;
  const MAX_QUEUE = 20;
  beforeAll(async () => {
    up = await startUpstream('order');
    const dead = await deadPort();
    p = await startProxy({
      clusters: [cluster('out#80#order', [up])],
      routes: { virtualHosts: [vhost('order', ['order'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }])] },
      tracing: { otlp: { endpoint: `http://127.0.0.1:${dead}/v1/traces`, timeoutMs: 300 }, maxQueueSize: MAX_QUEUE, maxExportBatchSize: 10, scheduledDelayMs: 20 },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await up?.close();
  });

  it('drops and counts spans, never holding more than maxQueueSize, and requests are unaffected', async () => {
    const N = 300;
    let maxPending = 0;
    for (let i = 0; i < N; i += 10) {
      const batch = await Promise.all(Array.from({ length: 10 }, (_, j) => request(p.port, { host: 'order', path: `/r${i + j}` })));
      for (const r of batch) expect(r.status).toBe(200);
      maxPending = Math.max(maxPending, await stat(p, 'tracing.opentelemetry.spans_pending'));
    }
    expect(maxPending).toBeLessThanOrEqual(MAX_QUEUE);
    expect(await stat(p, 'tracing.opentelemetry.spans_dropped')).toBeGreaterThan(0);
    // every span is accounted for: dropped (queue full or failed export) or still pending; none was sent
    await waitFor(async () => (await stat(p, 'tracing.opentelemetry.export_failed')) > 0, 'a failed export counted');
    const t = await tracingStats(p);
    expect(t.spans_sent).toBe(0);
    expect(t.spans_dropped! + t.spans_pending!).toBe(N);
    expect(t.spans_pending).toBeLessThanOrEqual(MAX_QUEUE);
  });
});

describe('tracing: propagation only (no tracing.otlp)', () => {
  let up: TestUpstream;
  let p: StartedProxy;
  beforeAll(async () => {
    up = await startUpstream('order');
    p = await startProxy({
      clusters: [cluster('out#80#order', [up])],
      routes: { virtualHosts: [vhost('order', ['order'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }])] },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await up?.close();
  });

  it('propagates without exporting: no tracing stats, headers still injected, and the upstream never sees the caller\'s own span as its parent', async () => {
    await request(p.port, { host: 'order', path: '/', headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } });
    const h = up.requests[0]!.headers;
    expect(String(h.traceparent)).toMatch(/^00-4bf92f3577b34da6a3ce929d0e0e4736-(?!00f067aa0ba902b7)[0-9a-f]{16}-01$/);
    expect(h['x-b3-parentspanid']).toBe('00f067aa0ba902b7');
    const stats = (await curl(['-s', `http://127.0.0.1:${p.admin}/stats`])).stdout;
    expect(stats).not.toContain('tracing.opentelemetry');
  });
});

describe('tracing: the OpenTelemetry SDK is loaded only for tracing.otlp (the built package)', () => {
  it('serves and propagates with no SDK module loaded; the first config with otlp loads it', async () => {
    const dist = join(__dirname, '..', 'dist', 'index.js');
    const script = `
      import http from 'node:http';
      import { createRequire } from 'node:module';
      const { createProxy } = await import(${JSON.stringify(dist)});
      const cache = createRequire(${JSON.stringify(dist)}).cache;
      const sdkLoaded = () => Object.keys(cache).some((k) => k.includes('@opentelemetry'));
      let seen = '';
      const up = http.createServer((req, res) => { seen = req.headers.traceparent || ''; res.end('ok'); });
      await new Promise((r) => up.listen(0, '127.0.0.1', r));
      const base = { admin: { address: '127.0.0.1', port: 0 }, listener: { address: '127.0.0.1', port: 0 },
        clusters: [{ name: 'out#80#order', endpoints: [{ address: '127.0.0.1', port: up.address().port }] }],
        routes: { virtualHosts: [{ name: 'order', domains: ['order'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }] }] } };
      const p = createProxy(base, { admin: false });
      const { listener } = await p.start();
      await new Promise((r) => http.get({ port: listener.port, host: '127.0.0.1', headers: { host: 'order' } }, (res) => { res.resume(); res.on('end', r); }));
      const before = sdkLoaded();
      p.update({ ...base, version: '2', tracing: { otlp: { endpoint: 'http://127.0.0.1:9/v1/traces' } } });
      const after = sdkLoaded();
      await p.close(); up.close();
      console.log(JSON.stringify({ before, after, seen }));
      process.exit(0);
    `;
    const out = await new Promise<string>((resolve, reject) => execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))));
    const r = JSON.parse(out.trim().split('\n').pop()!) as { before: boolean; after: boolean; seen: string };
    expect(r.seen).toMatch(TRACEPARENT);
    expect(r.before).toBe(false);
    expect(r.after).toBe(true);
  });
});

describe('tracing: HTTP/2 on both sides', () => {
  let up: H2Upstream;
  let p: StartedProxy;
  beforeAll(async () => {
    up = await startH2Upstream();
    p = await startProxy({
      clusters: [{ name: 'out#80#inventory', protocol: 'http2', endpoints: [{ address: '127.0.0.1', port: up.port }] }],
      routes: { virtualHosts: [vhost('inventory', ['inventory'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#inventory' } }])] },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    await up?.close();
  });

  it('an h2c request to an HTTP/2 upstream carries this hop\'s traceparent and B3 headers, the caller\'s replaced', async () => {
    const traceId = 'abcdef0123456789abcdef0123456789';
    const r = await curl(['-s', '--http2-prior-knowledge', '-H', 'Host: inventory', '-H', `traceparent: 00-${traceId}-1111111111111111-01`, '-H', 'x-b3-spanid: 9999999999999999', `http://127.0.0.1:${p.port}/stock`]);
    expect(r.code).toBe(0);
    const h = up.streams[up.streams.length - 1]!.headers;
    const m = TRACEPARENT.exec(String(h.traceparent))!;
    expect(m[1]).toBe(traceId);
    expect(m[2]).not.toBe('1111111111111111');
    expect(h['x-b3-spanid']).toBe(m[2]); // one value: the caller's x-b3-spanid is not forwarded beside it
    expect(h['x-b3-parentspanid']).toBe('1111111111111111');
    expect(h['x-b3-traceid']).toBe(traceId);
  });
});

describe('tracing: a collector that accepts and never answers', () => {
  let up: TestUpstream;
  let p: StartedProxy;
  let hang: net.Server;
  const held: net.Socket[] = [];
  beforeAll(async () => {
    up = await startUpstream('order');
    hang = net.createServer((s) => { held.push(s); s.on('error', () => {}); s.resume(); });
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    p = await startProxy({
      clusters: [cluster('out#80#order', [up])],
      routes: { virtualHosts: [vhost('order', ['order'], [{ match: { prefix: '/' }, route: { cluster: 'out#80#order' } }])] },
      tracing: { otlp: { endpoint: `http://127.0.0.1:${(hang.address() as net.AddressInfo).port}/v1/traces`, timeoutMs: 300 }, maxQueueSize: 10, maxExportBatchSize: 5, scheduledDelayMs: 20 },
    });
  });
  afterAll(async () => {
    await p?.proxy.close();
    for (const s of held) s.destroy();
    await new Promise<void>((r) => hang.close(() => r()));
    await up?.close();
  });

  it('times the export out, drops the batch, and keeps answering requests with the queue bounded', async () => {
    for (let i = 0; i < 50; i++) expect((await request(p.port, { host: 'order', path: `/h${i}` })).status).toBe(200);
    await waitFor(async () => (await stat(p, 'tracing.opentelemetry.export_failed')) > 0, 'an export timed out');
    const t = await tracingStats(p);
    expect(t.spans_pending).toBeLessThanOrEqual(10);
    expect(t.spans_sent).toBe(0);
    expect(t.spans_dropped! + t.spans_pending!).toBe(50);
  });
});
