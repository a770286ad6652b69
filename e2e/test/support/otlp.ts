// An OTLP/HTTP trace receiver run in a namespace (the infra host), for the tracing lab. No
// OpenTelemetry Collector can be installed here (npm and Debian's archive have none), so the
// receiver decodes ExportTraceServiceRequest with the protobufjs types generated from the official
// opentelemetry-proto definitions that @opentelemetry/otlp-transformer 0.212.0 ships (a devDependency
// of the proxy package); it prints one `SPAN {json}` line per span.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { nsArgv, nsRun, waitFor, withLog, type Managed } from './exec.js';
import { REPO_ROOT } from './mesh.js';
import type { World } from './world.js';

export const OTLP_PORT = 4318;

const RECEIVER_SOURCE = `
const http = require('node:http');
const [rootPath, address, port] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const root = require(rootPath);
const { ExportTraceServiceRequest, ExportTraceServiceResponse } = root.opentelemetry.proto.collector.trace.v1;
const hex = (b) => (b ? Buffer.from(b).toString('hex') : '');
const valueOf = (v) => (v ? (v.stringValue !== undefined ? v.stringValue : v.intValue !== undefined ? Number(v.intValue) : v.boolValue !== undefined ? v.boolValue : v.doubleValue) : '');
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST' || req.url !== '/v1/traces') { res.statusCode = 404; res.end(); return; }
    try {
      const msg = ExportTraceServiceRequest.toObject(ExportTraceServiceRequest.decode(Buffer.concat(chunks)), { longs: String });
      for (const rs of msg.resourceSpans || []) {
        const service = ((rs.resource && rs.resource.attributes) || []).filter((a) => a.key === 'service.name').map((a) => valueOf(a.value))[0] || '';
        for (const ss of rs.scopeSpans || []) for (const s of ss.spans || []) {
          const attributes = {};
          for (const kv of s.attributes || []) attributes[kv.key] = valueOf(kv.value);
          console.log('SPAN ' + JSON.stringify({ service, traceId: hex(s.traceId), spanId: hex(s.spanId), parentSpanId: hex(s.parentSpanId), name: s.name, kind: s.kind, attributes }));
        }
      }
      const body = Buffer.from(ExportTraceServiceResponse.encode(ExportTraceServiceResponse.create({})).finish());
      res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': body.length });
      res.end(body);
    } catch (err) {
      res.statusCode = 400;
      res.end('cannot decode: ' + err.message);
    }
  });
});
server.listen(port, address, () => console.log('otlp receiver listening on ' + address + ':' + port));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
`;

export interface ReceivedSpan { service: string; traceId: string; spanId: string; parentSpanId: string; name: string; kind: number; attributes: Record<string, string | number | boolean> }
export interface OtlpReceiverProcess { process: Managed; url: string; spans(): ReceivedSpan[] }

/** OTLP's Span.SpanKind values. */
export const SPAN_KIND = { SERVER: 2, CLIENT: 3 } as const;

export async function startOtlpReceiver(world: World, role: 'infra', port = OTLP_PORT): Promise<OtlpReceiverProcess> {
  const script = join(world.dir, 'otlp-receiver.cjs');
  writeFileSync(script, RECEIVER_SOURCE, { mode: 0o644 });
  const rootPath = createRequire(join(REPO_ROOT, 'packages/proxy/package.json')).resolve('@opentelemetry/otlp-transformer/build/src/generated/root.js');
  const host = world.host(role);
  const proc = world.procs.start('otlp-receiver', nsArgv(host.ns, process.execPath, [script, rootPath, host.address, String(port)]));
  const url = `http://${host.address}:${port}/v1/traces`;
  await waitFor('the OTLP receiver to listen', async () => {
    const { stdout } = await nsRun(host.ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://${host.address}:${port}/`], { allowFail: true });
    return stdout === '404';
  }, { timeoutMs: 20_000 }).catch((err) => { throw withLog(err, proc); });
  return {
    process: proc, url,
    spans: () => proc.lines.filter((l) => l.startsWith('SPAN ')).map((l) => JSON.parse(l.slice(5)) as ReceivedSpan),
  };
}
