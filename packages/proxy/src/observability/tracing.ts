import { randomFillSync } from 'node:crypto';
import type { MeshLogger } from '@mesh-agent/admin-kit';
import type { TracingConfig } from '../config/types';
import type { StatsStore } from '../stats/store';
import { createOtlpSink, type FinishedHop, type SpanSink } from './tracing-otlp';

/**
 * Trace propagation and the span of each hop (issue 16), as Envoy's tracers do it:
 *   - extract: W3C `traceparent` (+ `tracestate`), else B3 multi-header (`x-b3-traceid`, `x-b3-spanid`,
 *     `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags`), else B3 single (`b3`);
 *   - one span per proxy hop: a new span id whose parent is the caller's span (a new trace when none came);
 *   - inject both formats into the upstream request with this hop's span as the parent.
 * The incoming sampled flag is honoured; a new trace is sampled with `samplingPercent`.
 * Propagation is always on and costs a header scan, ids from a pooled random buffer and a few header
 * lines; nothing of the OpenTelemetry SDK exists unless `tracing.otlp` is set (tracing-otlp.ts, loaded then).
 */

/** W3C trace context: version 00 (55 characters) or a later version's first four fields. */
const TRACEPARENT_RE = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-|$)/;
const HEX16_OR_32 = /^([0-9a-f]{16}|[0-9a-f]{32})$/;
const HEX16 = /^[0-9a-f]{16}$/;
const ZERO_TRACE = '00000000000000000000000000000000';
const ZERO_SPAN = '0000000000000000';

/** Random ids cut from one hex string of 4 KiB of CSPRNG bytes, refilled when used up: an id is a substring, no per-id conversion. */
const POOL = Buffer.allocUnsafe(4096);
let poolHex = '';
let poolOffset = 0;
function randomHex(bytes: number): string {
  const chars = bytes * 2;
  if (poolOffset + chars > poolHex.length) { randomFillSync(POOL); poolHex = POOL.toString('hex'); poolOffset = 0; }
  const hex = poolHex.slice(poolOffset, poolOffset + chars);
  poolOffset += chars;
  return hex;
}
/** A span id (8 random bytes, never all zero: W3C's invalid value). */
export function newSpanId(): string {
  const id = randomHex(8);
  return id === ZERO_SPAN ? newSpanId() : id;
}
export function newTraceId(): string {
  const id = randomHex(16);
  return id === ZERO_TRACE ? newTraceId() : id;
}

/** The trace headers this proxy replaces on the way upstream (`tracestate` passes through as it came). */
export function isTraceHeader(lowerName: string): boolean {
  const c = lowerName.charCodeAt(0);
  if (c === 116 /* t */) return lowerName === 'traceparent';
  if (c === 98 /* b */) return lowerName === 'b3';
  return c === 120 /* x */ && lowerName.startsWith('x-b3-');
}

export type TraceFormat = 'w3c' | 'b3' | 'b3-single' | 'none';

/**
 * This hop's trace context: what came in, and the span this proxy makes. One per ActiveStream, reset per
 * request (no allocation besides the id strings).
 */
export class HopTrace {
  traceId = '';
  /** this hop's span */
  spanId = '';
  /** the caller's span ('' = this hop starts the trace) */
  parentSpanId = '';
  sampled = false;
  /** B3 debug (`x-b3-flags: 1`, `b3: ...-d`): sampled, and passed on */
  debug = false;
  /** how the context came in ('none': this hop started the trace) */
  format: TraceFormat = 'none';
  /** the caller used single-header B3: it is passed on in that form too */
  private b3Single = false;

  /** Reads the request's trace headers and makes this hop's span id. `samplingPercent`: for a new trace. */
  extract(lower: readonly string[], values: readonly string[], samplingPercent: number): void {
    let traceparent: string | undefined;
    let b3: string | undefined;
    let b3TraceId: string | undefined;
    let b3SpanId: string | undefined;
    let b3Sampled: string | undefined;
    let b3Flags: string | undefined;
    for (let i = 0; i < lower.length; i++) {
      const n = lower[i]!;
      if (!isTraceHeader(n)) continue;
      const v = values[i]!;
      if (n === 'traceparent') traceparent = v;
      else if (n === 'b3') b3 = v;
      else if (n === 'x-b3-traceid') b3TraceId = v;
      else if (n === 'x-b3-spanid') b3SpanId = v;
      else if (n === 'x-b3-sampled') b3Sampled = v;
      else if (n === 'x-b3-flags') b3Flags = v;
    }
    this.format = 'none';
    this.debug = false;
    this.b3Single = b3 !== undefined;
    let sampled: boolean | undefined;
    if (traceparent !== undefined && this.fromTraceparent(traceparent)) {
      sampled = this.sampled;
    } else if (b3TraceId !== undefined && b3SpanId !== undefined && this.fromB3(b3TraceId.trim().toLowerCase(), b3SpanId.trim().toLowerCase())) {
      this.debug = b3Flags?.trim() === '1';
      sampled = this.debug ? true : b3SampledFlag(b3Sampled);
    } else if (b3 !== undefined) {
      sampled = this.fromB3Single(b3.trim().toLowerCase());
    } else if (b3Sampled !== undefined || b3Flags !== undefined) {
      // sampling only (`x-b3-sampled: 0` asks not to trace): a new trace that keeps the decision
      this.debug = b3Flags?.trim() === '1';
      sampled = this.debug ? true : b3SampledFlag(b3Sampled);
    }
    if (this.format === 'none') { this.traceId = newTraceId(); this.parentSpanId = ''; }
    this.spanId = newSpanId();
    this.sampled = sampled ?? (samplingPercent >= 100 ? true : samplingPercent <= 0 ? false : Math.random() * 100 < samplingPercent);
  }

  /**
   * W3C: version 00, or a later one read by its first four fields; lower-case hex only, as the spec writes
   * it. An invalid header (version ff, all-zero ids, bad form) starts a new trace (the spec's rule).
   */
  private fromTraceparent(v: string): boolean {
    if (v.length < 55 || !TRACEPARENT_RE.test(v)) return false;
    const version = v.slice(0, 2);
    if (version === 'ff' || (version === '00' && v.length !== 55)) return false; // version 00 has exactly four fields
    const traceId = v.slice(3, 35);
    const spanId = v.slice(36, 52);
    if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return false;
    this.traceId = traceId;
    this.parentSpanId = spanId;
    const low = v.charCodeAt(54); // the flags' low hex digit: bit 0 is "sampled"
    this.sampled = ((low <= 57 ? low - 48 : low - 87) & 1) === 1;
    this.format = 'w3c';
    return true;
  }

  private fromB3(traceId: string, spanId: string): boolean {
    if (!HEX16_OR_32.test(traceId) || !HEX16.test(spanId) || spanId === ZERO_SPAN) return false;
    const full = traceId.length === 16 ? `0000000000000000${traceId}` : traceId; // 64-bit B3 ids, left-padded as OpenTelemetry does
    if (full === ZERO_TRACE) return false;
    this.traceId = full;
    this.parentSpanId = spanId;
    this.format = 'b3';
    return true;
  }

  /** `b3: {traceid}-{spanid}[-{sampled}[-{parentspanid}]]`, or a lone sampling state (`0`, `1`, `d`). */
  private fromB3Single(v: string): boolean | undefined {
    const parts = v.split('-');
    if (parts.length === 1) {
      if (parts[0] === 'd') { this.debug = true; return true; }
      return b3SampledFlag(parts[0]);
    }
    if (!this.fromB3(parts[0]!, parts[1] ?? '')) return undefined;
    this.format = 'b3-single';
    const state = parts[2];
    if (state === 'd') { this.debug = true; return true; }
    return b3SampledFlag(state);
  }

  /** The headers for an HTTP/1.1 upstream head, each line ending in CRLF. */
  h1Headers(): string {
    const flag = this.sampled ? '1' : '0';
    let out = `traceparent: 00-${this.traceId}-${this.spanId}-0${flag}\r\nx-b3-traceid: ${this.traceId}\r\nx-b3-spanid: ${this.spanId}\r\n`;
    if (this.parentSpanId !== '') out += `x-b3-parentspanid: ${this.parentSpanId}\r\n`;
    out += `x-b3-sampled: ${flag}\r\n`;
    if (this.debug) out += 'x-b3-flags: 1\r\n';
    if (this.b3Single) out += `b3: ${this.b3SingleValue()}\r\n`;
    return out;
  }

  /** The same headers for an HTTP/2 upstream (lower-case names). */
  pushHeaders(names: string[], values: string[]): void {
    const flag = this.sampled ? '1' : '0';
    names.push('traceparent', 'x-b3-traceid', 'x-b3-spanid');
    values.push(`00-${this.traceId}-${this.spanId}-0${flag}`, this.traceId, this.spanId);
    if (this.parentSpanId !== '') { names.push('x-b3-parentspanid'); values.push(this.parentSpanId); }
    names.push('x-b3-sampled'); values.push(flag);
    if (this.debug) { names.push('x-b3-flags'); values.push('1'); }
    if (this.b3Single) { names.push('b3'); values.push(this.b3SingleValue()); }
  }

  private b3SingleValue(): string {
    const state = this.debug ? 'd' : this.sampled ? '1' : '0';
    return this.parentSpanId === '' ? `${this.traceId}-${this.spanId}-${state}` : `${this.traceId}-${this.spanId}-${state}-${this.parentSpanId}`;
  }
}

function b3SampledFlag(v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  const s = v.trim().toLowerCase();
  if (s === '1' || s === 'true') return true;
  if (s === '0' || s === 'false') return false;
  return undefined; // B3's "defer": this hop decides
}

/** The resolved `tracing` section: what every request reads. */
export interface TracingSettings {
  readonly serviceName: string;
  readonly samplingPercent: number;
  readonly nodeId: string;
  readonly otlp: { readonly endpoint: string; readonly timeoutMs: number; readonly headers: Readonly<Record<string, string>> } | undefined;
  readonly maxQueueSize: number;
  readonly maxExportBatchSize: number;
  readonly scheduledDelayMs: number;
}

export const TRACING_DEFAULTS = { samplingPercent: 100, timeoutMs: 10_000, maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMs: 1000 } as const;

export function resolveTracing(config: TracingConfig | undefined, node: { id?: string; cluster?: string } | undefined): TracingSettings {
  const otlp = config?.otlp;
  return {
    serviceName: config?.serviceName || node?.cluster || 'mesh-proxy',
    samplingPercent: config?.samplingPercent ?? TRACING_DEFAULTS.samplingPercent,
    nodeId: node?.id ?? 'mesh-proxy',
    otlp: otlp ? { endpoint: otlp.endpoint, timeoutMs: otlp.timeoutMs ?? TRACING_DEFAULTS.timeoutMs, headers: otlp.headers ?? {} } : undefined,
    maxQueueSize: config?.maxQueueSize ?? TRACING_DEFAULTS.maxQueueSize,
    maxExportBatchSize: config?.maxExportBatchSize ?? TRACING_DEFAULTS.maxExportBatchSize,
    scheduledDelayMs: config?.scheduledDelayMs ?? TRACING_DEFAULTS.scheduledDelayMs,
  };
}

/**
 * The proxy's tracer: the settings every request reads, and the span sink when spans are exported.
 * `sink` is undefined without `tracing.otlp`: a request then only propagates.
 */
export class ProxyTracing {
  readonly samplingPercent: number;
  readonly sink: SpanSink | undefined;

  constructor(readonly settings: TracingSettings, stats: StatsStore, logger: MeshLogger) {
    this.samplingPercent = settings.samplingPercent;
    // Loaded only now: without tracing.otlp the OpenTelemetry SDK is never required (the proxy's memory, issue 17).
    this.sink = settings.otlp ? createOtlpSink(settings, stats, logger) : undefined;
  }

  /** A finished request whose hop was sampled: its span goes to the batch (or is dropped and counted when the queue is full). */
  record(hop: FinishedHop): void {
    this.sink?.record(hop);
  }

  /** Flushes what is queued (bounded by the export timeout) and stops the exporter. */
  async shutdown(): Promise<void> {
    await this.sink?.shutdown();
  }

  /** Same settings: the sink is kept across a config update. */
  sameAs(other: TracingSettings): boolean {
    return JSON.stringify(this.settings) === JSON.stringify(other);
  }
}
