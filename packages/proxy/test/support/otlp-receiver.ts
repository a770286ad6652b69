// A real OTLP/HTTP trace receiver for tests: POST /v1/traces with a protobuf ExportTraceServiceRequest,
// decoded with the protobufjs types generated from the official opentelemetry-proto definitions that
// @opentelemetry/otlp-transformer 0.212.0 ships (build/src/generated/root.js).
// Why not an OpenTelemetry Collector: none can be installed here (no otelcol package on npm or in
// Debian's archive; `apt-cache search otel` finds only the Go SDK sources), so the receiving end is
// built on the same protobuf definitions the collector uses.
import { createRequire } from 'node:module';
import http from 'node:http';
import type net from 'node:net';

const load = createRequire(import.meta.url);

interface ProtoType {
  decode(buf: Uint8Array): unknown;
  encode(msg: unknown): { finish(): Uint8Array };
  toObject(msg: unknown, opts: Record<string, unknown>): unknown;
  create(props?: Record<string, unknown>): unknown;
}
interface OtlpRoot {
  opentelemetry: { proto: { collector: { trace: { v1: { ExportTraceServiceRequest: ProtoType; ExportTraceServiceResponse: ProtoType } } } } };
}
const root = load('@opentelemetry/otlp-transformer/build/src/generated/root.js') as OtlpRoot;
const { ExportTraceServiceRequest, ExportTraceServiceResponse } = root.opentelemetry.proto.collector.trace.v1;

/** OTLP's Span.SpanKind values. */
export const SPAN_KIND = { INTERNAL: 1, SERVER: 2, CLIENT: 3 } as const;

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** '' = a root span */
  parentSpanId: string;
  name: string;
  kind: number;
  startNs: bigint;
  endNs: bigint;
  /** Status.code: 0 unset, 1 ok, 2 error */
  statusCode: number;
  attributes: Record<string, string | number | boolean>;
  /** the resource's service.name */
  service: string;
  scope: string;
}

interface KeyValue { key: string; value?: { stringValue?: string; intValue?: string; boolValue?: boolean; doubleValue?: number } }
const valueOf = (kv: KeyValue) => kv.value?.stringValue ?? (kv.value?.intValue !== undefined ? Number(kv.value.intValue) : undefined) ?? kv.value?.boolValue ?? kv.value?.doubleValue ?? '';
const hex = (b: Uint8Array | undefined) => (b ? Buffer.from(b).toString('hex') : '');

export interface OtlpReceiver {
  port: number;
  url: string;
  spans: ReceivedSpan[];
  /** POST bodies received (each one export call) */
  requests: number;
  contentTypes: string[];
  close(): Promise<void>;
}

/** Listens on `host` (loopback by default); `port` 0 = ephemeral. */
export async function startOtlpReceiver(host = '127.0.0.1', port = 0): Promise<OtlpReceiver> {
  const spans: ReceivedSpan[] = [];
  const state = { requests: 0 };
  const contentTypes: string[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') { res.statusCode = 404; res.end(); return; }
      state.requests++;
      contentTypes.push(String(req.headers['content-type']));
      try {
        const msg = ExportTraceServiceRequest.decode(Buffer.concat(chunks));
        const obj = ExportTraceServiceRequest.toObject(msg, { longs: String, defaults: false }) as {
          resourceSpans?: { resource?: { attributes?: KeyValue[] }; scopeSpans?: { scope?: { name?: string }; spans?: Record<string, unknown>[] }[] }[];
        };
        for (const rs of obj.resourceSpans ?? []) {
          const service = String(rs.resource?.attributes?.find((a) => a.key === 'service.name')?.value?.stringValue ?? '');
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              const attributes: ReceivedSpan['attributes'] = {};
              for (const kv of (s.attributes as KeyValue[] | undefined) ?? []) attributes[kv.key] = valueOf(kv);
              spans.push({
                traceId: hex(s.traceId as Uint8Array), spanId: hex(s.spanId as Uint8Array), parentSpanId: hex(s.parentSpanId as Uint8Array | undefined),
                name: String(s.name ?? ''), kind: Number(s.kind ?? 0),
                startNs: BigInt(String(s.startTimeUnixNano ?? '0')), endNs: BigInt(String(s.endTimeUnixNano ?? '0')),
                statusCode: Number((s.status as { code?: number } | undefined)?.code ?? 0), attributes, service, scope: ss.scope?.name ?? '',
              });
            }
          }
        }
        const body = Buffer.from(ExportTraceServiceResponse.encode(ExportTraceServiceResponse.create({})).finish());
        res.writeHead(200, { 'content-type': 'application/x-protobuf', 'content-length': body.length });
        res.end(body);
      } catch (err) {
        res.statusCode = 400;
        res.end(`cannot decode ExportTraceServiceRequest: ${(err as Error).message}`);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const bound = (server.address() as net.AddressInfo).port;
  return {
    port: bound, url: `http://${host}:${bound}/v1/traces`, spans, contentTypes,
    get requests() { return state.requests; },
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
