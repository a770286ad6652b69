import { createRequire } from 'node:module';
import type * as OtelApi from '@opentelemetry/api';
import type * as OtelExporter from '@opentelemetry/exporter-trace-otlp-proto';
import type * as OtelResources from '@opentelemetry/resources';
import type * as OtelSdk from '@opentelemetry/sdk-trace-base';
import type { MeshLogger } from '@mesh-agent/admin-kit';
import type { Counter, Gauge, StatsStore } from '../stats/store';
import { LogLimiter } from './log-limiter';
import type { HopTrace, TracingSettings } from './tracing';

/** The proxy's version in the spans' instrumentation scope (kept equal to PROXY_VERSION, proxy.ts). */
const SCOPE_VERSION = '0.1.0';
/** Export failures are logged at most this often, with the count since the last line: a down collector must not flood the log. */
const EXPORT_FAILURE_LOG_INTERVAL_MS = 10_000;
/** Closing the proxy waits at most this long for the last batch. */
const SHUTDOWN_FLUSH_CAP_MS = 2000;

/** What a finished request gives its span: Envoy's span tags (source/common/tracing), read in ActiveStream.finish(). */
export interface FinishedHop {
  readonly trace: HopTrace;
  /** inbound (SERVER span, Envoy's `ingress`) or outbound (CLIENT span, `egress HOST`) */
  readonly inbound: boolean;
  readonly startEpochMs: number;
  readonly endEpochMs: number;
  readonly method: string;
  readonly scheme: string;
  readonly authority: string | undefined;
  readonly path: string;
  readonly protocol: string;
  readonly status: number;
  readonly flags: string;
  readonly requestId: string | undefined;
  readonly userAgent: string | undefined;
  readonly peer: string;
  readonly bytesReceived: number;
  readonly bytesSent: number;
  readonly upstreamCluster: string | undefined;
  readonly upstreamHost: string | undefined;
  /** gRPC requests: the call's grpc-status (non-zero = error, as Envoy's tracer marks it) */
  readonly grpcStatus: number | undefined;
}

export interface SpanSink {
  record(hop: FinishedHop): void;
  shutdown(): Promise<void>;
  /** spans handed to the batch processor and not yet exported or failed (never above maxQueueSize) */
  readonly pending: number;
}

/**
 * Requires the OpenTelemetry SDK (only now: a proxy without `tracing.otlp` never loads it) and makes the
 * span sink: a BasicTracerProvider whose ids are this proxy's own (the ones it propagated), a
 * BatchSpanProcessor and the OTLP/HTTP protobuf exporter.
 */
export function createOtlpSink(settings: TracingSettings, stats: StatsStore, logger: MeshLogger): SpanSink {
  const load = createRequire(import.meta.url ?? __filename);
  const api = load('@opentelemetry/api') as typeof OtelApi;
  const sdk = load('@opentelemetry/sdk-trace-base') as typeof OtelSdk;
  const { OTLPTraceExporter } = load('@opentelemetry/exporter-trace-otlp-proto') as typeof OtelExporter;
  const { resourceFromAttributes } = load('@opentelemetry/resources') as typeof OtelResources;
  return new OtlpSink(settings, stats, logger, api, sdk, OTLPTraceExporter, resourceFromAttributes);
}

/**
 * Bounded export: at most maxQueueSize spans wait or are in flight. Past that, a span is dropped and
 * counted (`tracing.opentelemetry.spans_dropped`), so a slow or down collector costs counters, not memory.
 * A failed export drops its batch (counted too; the exporter's own retries, within timeoutMs, come first).
 */
class OtlpSink implements SpanSink {
  pending = 0;
  private closed = false;
  private readonly nextIds = { traceId: '', spanId: '' };
  private readonly provider: OtelSdk.BasicTracerProvider;
  private readonly tracer: OtelApi.Tracer;
  private readonly spansSent: Counter;
  private readonly spansDropped: Counter;
  private readonly exportFailed: Counter;
  private readonly pendingGauge: Gauge;
  private readonly failureLog = new LogLimiter(EXPORT_FAILURE_LOG_INTERVAL_MS);

  constructor(
    private readonly settings: TracingSettings,
    stats: StatsStore,
    private readonly logger: MeshLogger,
    private readonly api: typeof OtelApi,
    sdk: typeof OtelSdk,
    Exporter: typeof OtelExporter.OTLPTraceExporter,
    resourceFromAttributes: typeof OtelResources.resourceFromAttributes,
  ) {
    this.spansSent = stats.counter('tracing.opentelemetry.', undefined, 'spans_sent');
    this.spansDropped = stats.counter('tracing.opentelemetry.', undefined, 'spans_dropped');
    this.exportFailed = stats.counter('tracing.opentelemetry.', undefined, 'export_failed');
    this.pendingGauge = stats.gauge('tracing.opentelemetry.', undefined, 'spans_pending');
    for (const s of [this.spansSent, this.spansDropped, this.exportFailed, this.pendingGauge]) s.used = true; // shown at 0 from the start
    const otlp = settings.otlp!;
    const exporter = new Exporter({ url: otlp.endpoint, headers: { ...otlp.headers }, timeoutMillis: otlp.timeoutMs, concurrencyLimit: 2 });
    const counting: OtelSdk.SpanExporter = {
      export: (spans, done) => {
        let settled = false;
        const settle = (ok: boolean, err: Error | undefined): void => {
          if (settled) return;
          settled = true;
          clearTimeout(guard);
          this.settle(spans.length, ok, err);
        };
        // should the exporter never call back, the batch still leaves the count (a stuck export must not stop tracing for good)
        const guard = setTimeout(() => settle(false, new Error(`no answer within ${otlp.timeoutMs * 2} ms`)), otlp.timeoutMs * 2).unref();
        try {
          exporter.export(spans, (result) => { settle(result.code === 0, result.error); done(result); });
        } catch (err) {
          settle(false, err as Error);
          done({ code: 1, error: err as Error });
        }
      },
      shutdown: () => exporter.shutdown(),
      forceFlush: () => exporter.forceFlush(),
    };
    const processor = new sdk.BatchSpanProcessor(counting, {
      maxQueueSize: settings.maxQueueSize,
      maxExportBatchSize: Math.min(settings.maxExportBatchSize, settings.maxQueueSize),
      scheduledDelayMillis: settings.scheduledDelayMs,
      exportTimeoutMillis: otlp.timeoutMs + 1000,
    });
    const ids = this.nextIds;
    this.provider = new sdk.BasicTracerProvider({
      resource: resourceFromAttributes({ 'service.name': settings.serviceName }),
      // the span's ids are the ones this hop already put on the wire
      idGenerator: { generateTraceId: () => ids.traceId, generateSpanId: () => ids.spanId },
      sampler: new sdk.AlwaysOnSampler(), // sampled before: only sampled hops get here
      spanProcessors: [processor],
    });
    this.tracer = this.provider.getTracer('mesh-proxy', SCOPE_VERSION);
  }

  record(hop: FinishedHop): void {
    if (this.closed) return;
    if (this.pending >= this.settings.maxQueueSize) { this.spansDropped.inc(); return; }
    this.pending++;
    this.pendingGauge.set(this.pending);
    try {
      this.makeSpan(hop);
    } catch (err) {
      // called as a request finishes (a socket callback): a failing SDK costs the span, never the request
      this.settle(1, false, err as Error);
    }
  }

  private makeSpan(hop: FinishedHop): void {
    const api = this.api;
    const t = hop.trace;
    this.nextIds.traceId = t.traceId;
    this.nextIds.spanId = t.spanId;
    const parent = t.parentSpanId === '' ? api.ROOT_CONTEXT
      : api.trace.setSpanContext(api.ROOT_CONTEXT, { traceId: t.traceId, spanId: t.parentSpanId, traceFlags: api.TraceFlags.SAMPLED, isRemote: true });
    const error = hop.status >= 500 || hop.status === 0 || (hop.grpcStatus !== undefined && hop.grpcStatus !== 0);
    // Envoy's tags, as its OpenTelemetry tracer sets them (string values)
    const attributes: OtelApi.Attributes = {
      component: 'proxy',
      node_id: this.settings.nodeId,
      'guid:x-request-id': hop.requestId ?? '',
      'http.url': `${hop.scheme}://${hop.authority ?? ''}${hop.path}`,
      'http.method': hop.method,
      'http.protocol': hop.protocol,
      'http.status_code': String(hop.status),
      response_flags: hop.flags || '-',
      'peer.address': hop.peer,
      request_size: String(hop.bytesReceived),
      response_size: String(hop.bytesSent),
      'upstream_cluster': hop.upstreamCluster ?? '-',
      'upstream_cluster.name': hop.upstreamCluster ?? '-',
      upstream_address: hop.upstreamHost ?? '-',
    };
    if (hop.userAgent !== undefined) attributes.user_agent = hop.userAgent;
    if (hop.grpcStatus !== undefined) attributes['grpc.status_code'] = String(hop.grpcStatus);
    if (error) attributes.error = 'true';
    const name = hop.inbound ? 'ingress' : `egress ${hop.authority ?? ''}`;
    const span = this.tracer.startSpan(name, { kind: hop.inbound ? api.SpanKind.SERVER : api.SpanKind.CLIENT, startTime: hop.startEpochMs, attributes }, parent);
    if (error) span.setStatus({ code: api.SpanStatusCode.ERROR });
    span.end(hop.endEpochMs);
  }

  private settle(count: number, ok: boolean, err: Error | undefined): void {
    this.pending = Math.max(0, this.pending - count);
    this.pendingGauge.set(this.pending);
    if (ok) { this.spansSent.inc(count); return; }
    this.exportFailed.inc();
    this.spansDropped.inc(count);
    const failures = this.failureLog.note();
    if (failures !== undefined) {
      this.logger.scope('main').warn({ endpoint: this.settings.otlp?.endpoint, err: err?.message, failures, dropped: this.spansDropped.value },
        'span export to the OTLP collector failed; the batch was dropped (tracing.opentelemetry.spans_dropped)');
    }
  }

  async shutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let timer: NodeJS.Timeout | undefined;
    const cap = new Promise<void>((resolve) => { timer = setTimeout(resolve, Math.min(SHUTDOWN_FLUSH_CAP_MS, this.settings.otlp?.timeoutMs ?? SHUTDOWN_FLUSH_CAP_MS)).unref(); });
    await Promise.race([this.provider.shutdown().catch(() => undefined), cap]);
    clearTimeout(timer);
  }
}
