// Issue 16: a request crossing two hosts' sidecars (A outbound -> B inbound -> B's application) is one
// trace: A's proxy makes a CLIENT span, B's a SERVER span whose parent is A's span, both exported over
// OTLP/HTTP to a receiver on the infra host (support/otlp.ts says why not an OpenTelemetry Collector).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { preflight } from './support/preflight.js';
import { waitFor } from './support/exec.js';
import { createWorld, hostRules, APP_PORT, type World } from './support/world.js';
import { admin, appGet, appCurl, startSidecar, type Role, type Sidecar } from './support/mesh.js';
import { SPAN_KIND, startOtlpReceiver, type OtlpReceiverProcess, type ReceivedSpan } from './support/otlp.js';

const pre = preflight();

async function stat(ns: string, name: string): Promise<number> {
  const { stdout } = await admin(ns, 15000, '/stats');
  const line = stdout.split('\n').find((l) => l.startsWith(`${name}: `));
  return line ? Number(line.slice(name.length + 2)) : 0;
}

describe.skipIf(!pre.ok)('e2e: a trace across two sidecars', () => {
  let world: World;
  let rx: OtlpReceiverProcess;
  const sidecars: Partial<Record<Role, Sidecar>> = {};

  beforeAll(async () => {
    world = await createWorld({ apps: ['a', 'b'] });
    rx = await startOtlpReceiver(world, 'infra');
    const proxyConfig = ['  tracing:', '    scheduledDelayMs: 100', '    otlp:', `      endpoint: ${rx.url}`];
    sidecars.b = await startSidecar(world, 'b', { proxyConfig });
    sidecars.a = await startSidecar(world, 'a', { proxyConfig });
  }, 240_000);

  afterAll(async () => {
    await world?.teardown();
    if (world) expect(await hostRules()).toBe(world.hostRulesBefore);
  }, 120_000);

  const spansOf = async (traceId: string, count: number): Promise<ReceivedSpan[]> =>
    waitFor(`${count} spans of trace ${traceId} at the receiver`, async () => {
      const found = rx.spans().filter((s) => s.traceId === traceId);
      return found.length >= count ? found : undefined;
    }, { timeoutMs: 20_000, intervalMs: 200 });

  it('continues the caller\'s W3C trace: A\'s CLIENT span is the child of the caller\'s, B\'s SERVER span the child of A\'s', async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const callerSpan = '00f067aa0ba902b7';
    const res = await appCurl(world.host('a').ns, 'http://order/traced', ['-w', '\n%{http_code}', '-H', `traceparent: 00-${traceId}-${callerSpan}-01`]);
    expect(res.stdout).toBe(`hello from host-b path /traced\n\n200`);
    const spans = await spansOf(traceId, 2);
    const client = spans.find((s) => s.kind === SPAN_KIND.CLIENT)!;
    const server = spans.find((s) => s.kind === SPAN_KIND.SERVER)!;
    expect(client).toBeDefined();
    expect(server).toBeDefined();
    expect(client.service).toBe('user');
    expect(server.service).toBe('order');
    expect(client.parentSpanId).toBe(callerSpan);
    expect(server.parentSpanId).toBe(client.spanId);
    expect(server.spanId).not.toBe(client.spanId);
    expect(client.name).toBe('egress order');
    expect(server.name).toBe('ingress');
    expect(client.attributes).toMatchObject({ 'http.status_code': '200', upstream_cluster: `out#${APP_PORT}#order`, upstream_address: `${world.host('b').address}:${APP_PORT}`, node_id: 'user-a' });
    expect(server.attributes).toMatchObject({ 'http.status_code': '200', upstream_cluster: `in#${APP_PORT}#order`, node_id: 'order-b', 'peer.address': world.host('a').address });
    // the same request: A made the x-request-id, B's span carries it too
    expect(server.attributes['guid:x-request-id']).toBe(client.attributes['guid:x-request-id']);
    expect(String(client.attributes['guid:x-request-id'])).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('starts a trace at A when the application sent none: A\'s span is the root, B\'s its child, in one trace id', async () => {
    const before = new Set(rx.spans().map((s) => s.spanId));
    expect(await appGet(world.host('a').ns, 'http://order/untraced')).toEqual({ code: 200, body: 'hello from host-b path /untraced' });
    const client = await waitFor('A\'s CLIENT span of /untraced', async () => rx.spans().find((s) => !before.has(s.spanId) && s.kind === SPAN_KIND.CLIENT && String(s.attributes['http.url']).endsWith('/untraced')), { timeoutMs: 20_000, intervalMs: 200 });
    expect(client.parentSpanId).toBe('');
    const [server] = (await spansOf(client.traceId, 2)).filter((s) => s.kind === SPAN_KIND.SERVER);
    expect(server?.parentSpanId).toBe(client.spanId);
  });

  it('counts what each sidecar sent; nothing dropped', async () => {
    for (const role of ['a', 'b'] as const) {
      const ns = world.host(role).ns;
      expect(await stat(ns, 'tracing.opentelemetry.spans_sent')).toBeGreaterThanOrEqual(2);
      expect(await stat(ns, 'tracing.opentelemetry.spans_dropped')).toBe(0);
    }
  });
});
