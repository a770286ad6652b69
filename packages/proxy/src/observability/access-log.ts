import fs from 'node:fs';
import os from 'node:os';
import { parseAccessLogFormat, type AccessLogToken } from '@mesh-agent/shared-config';

/** One finished request, as Envoy's access log command operators see it. */
export interface AccessLogEntry {
  startTime: number; // epoch ms
  method: string;
  path: string;
  protocol: string;
  status: number;
  flags: string;
  bytesReceived: number;
  bytesSent: number;
  durationMs: number;
  upstreamServiceTimeMs: number | undefined;
  forwardedFor: string | undefined;
  userAgent: string | undefined;
  requestId: string | undefined;
  authority: string | undefined;
  upstreamHost: string | undefined;
  upstreamCluster: string | undefined;
  /** Envoy's %UPSTREAM_TRANSPORT_FAILURE_REASON%: why the TLS handshake with the upstream failed. */
  upstreamTransportFailureReason?: string;
  /** Envoy's %RESPONSE_CODE_DETAILS% where set (`rbac_access_denied_matched_policy[none]`). */
  responseCodeDetails?: string;
  /** Which way the request went; absent = by the cluster's name (`in#...` inbound, else outbound). */
  direction?: AccessLogDirection;
  /** %ROUTE_NAME%: the matched route's name. */
  routeName?: string;
  /** %DOWNSTREAM_REMOTE_ADDRESS%: the client's address. */
  downstreamRemoteAddress?: string;
  /** The request's headers (lower-case names), for %REQ(NAME)%. */
  requestHeaders?: HeaderLists;
  /** The response's headers as relayed, for %RESP(NAME)%, and the pairs the proxy added (`[name, value, ...]`). */
  responseHeaders?: HeaderLists;
  responseExtra?: readonly string[];
}

export interface HeaderLists { readonly lower: readonly string[]; readonly values: readonly string[] }

export type AccessLogFormat = 'text' | 'json';
export type AccessLogDirection = 'inbound' | 'outbound';

const dash = (v: string | number | undefined): string | number => (v === undefined || v === '' ? '-' : v);

/**
 * Envoy's default format:
 * [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS%
 * %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%"
 * "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"
 */
export function formatTextLine(e: AccessLogEntry): string {
  return `[${new Date(e.startTime).toISOString()}] "${e.method} ${e.path} ${e.protocol}" ${e.status} ${e.flags || '-'} ${e.bytesReceived} ${e.bytesSent} ${e.durationMs} ${dash(e.upstreamServiceTimeMs)} "${dash(e.forwardedFor)}" "${dash(e.userAgent)}" "${dash(e.requestId)}" "${dash(e.authority)}" "${dash(e.upstreamHost)}"\n`;
}

/** JSON keys are Envoy's command operator names in lower case, as Istio's JSON access log uses. */
export function formatJsonLine(e: AccessLogEntry): string {
  return `${JSON.stringify({
    start_time: new Date(e.startTime).toISOString(),
    method: e.method,
    path: e.path,
    protocol: e.protocol,
    response_code: e.status,
    response_flags: e.flags || '-',
    bytes_received: e.bytesReceived,
    bytes_sent: e.bytesSent,
    duration: e.durationMs,
    upstream_service_time: e.upstreamServiceTimeMs ?? null,
    x_forwarded_for: e.forwardedFor ?? null,
    user_agent: e.userAgent ?? null,
    request_id: e.requestId ?? null,
    authority: e.authority ?? null,
    upstream_host: e.upstreamHost ?? null,
    upstream_cluster: e.upstreamCluster ?? null,
    upstream_transport_failure_reason: e.upstreamTransportFailureReason ?? null,
    response_code_details: e.responseCodeDetails ?? null,
  })}\n`;
}

type Value = string | number | undefined;
type Getter = (e: AccessLogEntry) => Value;

const HOSTNAME = os.hostname();

function headerIn(h: HeaderLists | undefined, lower: string): string | undefined {
  if (!h) return undefined;
  for (let i = 0; i < h.lower.length; i++) if (h.lower[i] === lower) return h.values[i];
  return undefined;
}

function pairIn(pairs: readonly string[] | undefined, lower: string): string | undefined {
  if (!pairs) return undefined;
  for (let i = 0; i + 1 < pairs.length; i += 2) if (pairs[i] === lower) return pairs[i + 1];
  return undefined;
}

/** %REQ(NAME)% for one name: the pseudo-headers and the headers the entry carries itself, else the request's headers. */
function requestHeaderGetter(name: string): Getter {
  switch (name) {
    case ':method': return (e) => e.method;
    case ':path': return (e) => e.path;
    case ':authority': case 'host': return (e) => e.authority;
    case 'x-forwarded-for': return (e) => e.forwardedFor;
    case 'user-agent': return (e) => e.userAgent;
    case 'x-request-id': return (e) => e.requestId;
    default: return (e) => headerIn(e.requestHeaders, name);
  }
}

function responseHeaderGetter(name: string): Getter {
  if (name === 'x-envoy-upstream-service-time') return (e) => e.upstreamServiceTimeMs;
  return (e) => headerIn(e.responseHeaders, name) ?? pairIn(e.responseExtra, name);
}

/** `%REQ(A?B)%`: A, else B (Envoy's alternative header). */
function headerGetter(arg: string, one: (name: string) => Getter): Getter {
  const [first, second] = arg.split('?').map((n) => n.trim().toLowerCase());
  const a = one(first!);
  if (second === undefined || second === '') return a;
  const b = one(second);
  return (e) => a(e) ?? b(e);
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

/** Envoy's START_TIME(FORMAT): strftime in UTC (%Y %m %d %H %M %S %j %z %Z %s, %1f..%9f / %f fractions); other specifiers are kept. */
function startTimeFormatter(format: string): (ms: number) => string {
  return (ms) => {
    const d = new Date(ms);
    return format.replace(/%([1-9]?f|[YmdHMSjzZsT%FD])/g, (all, spec: string) => {
      switch (spec) {
        case 'Y': return String(d.getUTCFullYear());
        case 'm': return pad(d.getUTCMonth() + 1);
        case 'd': return pad(d.getUTCDate());
        case 'H': return pad(d.getUTCHours());
        case 'M': return pad(d.getUTCMinutes());
        case 'S': return pad(d.getUTCSeconds());
        case 'j': return pad(Math.floor((ms - Date.UTC(d.getUTCFullYear(), 0, 1)) / 86400000) + 1, 3);
        case 'z': return '+0000';
        case 'Z': return 'UTC';
        case 's': return String(Math.floor(ms / 1000));
        case 'T': return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
        case 'F': return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
        case 'D': return `${pad(d.getUTCMonth() + 1)}/${pad(d.getUTCDate())}/${pad(d.getUTCFullYear() % 100)}`;
        case '%': return '%';
        default: {
          // fractions of a second: milliseconds are all the clock has, the rest is zeros
          const digits = spec.length === 2 ? Number(spec[0]) : 9;
          return `${pad(ms % 1000, 3)}000000`.slice(0, digits);
        }
      }
      return all;
    });
  };
}

function operatorGetter(t: Extract<AccessLogToken, { kind: 'operator' }>): Getter {
  switch (t.name) {
    case 'START_TIME': {
      if (t.arg === undefined || t.arg === '') return (e) => new Date(e.startTime).toISOString();
      const f = startTimeFormatter(t.arg);
      return (e) => f(e.startTime);
    }
    case 'REQ': return headerGetter(t.arg!, requestHeaderGetter);
    case 'RESP': return headerGetter(t.arg!, responseHeaderGetter);
    case 'RESPONSE_CODE': return (e) => e.status;
    case 'RESPONSE_FLAGS': return (e) => e.flags || undefined;
    case 'RESPONSE_CODE_DETAILS': return (e) => e.responseCodeDetails;
    case 'BYTES_RECEIVED': return (e) => e.bytesReceived;
    case 'BYTES_SENT': return (e) => e.bytesSent;
    case 'DURATION': return (e) => e.durationMs;
    case 'PROTOCOL': return (e) => (e.protocol === '-' ? undefined : e.protocol);
    case 'ROUTE_NAME': return (e) => e.routeName;
    case 'UPSTREAM_HOST': return (e) => e.upstreamHost;
    case 'UPSTREAM_CLUSTER': return (e) => e.upstreamCluster;
    case 'UPSTREAM_TRANSPORT_FAILURE_REASON': return (e) => e.upstreamTransportFailureReason;
    case 'DOWNSTREAM_REMOTE_ADDRESS': case 'DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT': return (e) => e.downstreamRemoteAddress ?? e.forwardedFor;
    case 'HOSTNAME': return () => HOSTNAME;
  }
}

function withMaxLength(get: Getter, maxLength: number | undefined): Getter {
  if (maxLength === undefined) return get;
  return (e) => {
    const v = get(e);
    return typeof v === 'string' && v.length > maxLength ? v.slice(0, maxLength) : v;
  };
}

type Part = string | Getter;

function compileParts(format: string): Part[] {
  return parseAccessLogFormat(format).map((t) => (t.kind === 'text' ? t.text : withMaxLength(operatorGetter(t), t.maxLength)));
}

/** A format string as text: an absent value is `-`, as Envoy prints it. */
function renderParts(parts: readonly Part[], e: AccessLogEntry): string {
  let out = '';
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (typeof p === 'string') out += p;
    else {
      const v = p(e);
      out += v === undefined || v === '' ? '-' : v;
    }
  }
  return out;
}

/**
 * Envoy's text_format, compiled once (the format string is never parsed per request). A newline ends
 * each line when the format does not end with one. Throws (AccessLogFormatError) on an unknown operator.
 */
export function compileTextFormat(format: string): (e: AccessLogEntry) => string {
  const parts = compileParts(format.endsWith('\n') ? format : `${format}\n`);
  return (e) => renderParts(parts, e);
}

/**
 * Envoy's json_format, compiled once: a value that is exactly one operator keeps its type (numbers stay
 * numbers; an absent value is null); any other value is a string rendered as in text (absent = `-`).
 */
export function compileJsonFormat(format: Readonly<Record<string, string>>): (e: AccessLogEntry) => string {
  const fields = Object.entries(format).map(([key, value]) => {
    const parts = compileParts(value);
    const only = parts.length === 1 && typeof parts[0] !== 'string' ? parts[0] : undefined;
    return { key, parts, only };
  });
  return (e) => {
    const obj: Record<string, unknown> = {};
    for (const f of fields) {
      if (f.only) {
        const v = f.only(e);
        obj[f.key] = v === undefined || v === '' ? null : v;
      } else obj[f.key] = renderParts(f.parts, e);
    }
    return `${JSON.stringify(obj)}\n`;
  };
}

/** One access log's settings (bootstrap accessLog, or one entry of accessLogs). */
export interface AccessLogSinkOptions {
  format?: AccessLogFormat;
  path?: string;
  textFormat?: string;
  jsonFormat?: Readonly<Record<string, string>>;
  /** `both` (default) or the requests of one direction. */
  direction?: AccessLogDirection | 'both';
}

/** The line maker of one log: jsonFormat, textFormat, else the default of `format` (today's lines, unchanged). */
export function accessLogFormatter(opts: Pick<AccessLogSinkOptions, 'format' | 'textFormat' | 'jsonFormat'>): (e: AccessLogEntry) => string {
  if (opts.jsonFormat !== undefined) return compileJsonFormat(opts.jsonFormat);
  if (opts.textFormat !== undefined) return compileTextFormat(opts.textFormat);
  return opts.format === 'json' ? formatJsonLine : formatTextLine;
}

/** Inbound when the request went to an inbound cluster (`in#PORT#SERVICE`), else outbound. */
export function directionOf(e: AccessLogEntry): AccessLogDirection {
  return e.direction ?? (e.upstreamCluster?.startsWith('in#') ? 'inbound' : 'outbound');
}

/** A log file that cannot be opened: which of the logs (index in `logs`), its path and why. */
export class AccessLogOpenError extends Error {
  constructor(readonly index: number, readonly path: string | undefined, override readonly cause: Error) {
    super(`cannot open ${JSON.stringify(path)} for appending: ${cause.message}`);
    this.name = 'AccessLogOpenError';
  }
}

/** One destination: its stream, line maker and direction filter. */
interface Sink {
  readonly stream: NodeJS.WritableStream;
  readonly ownsStream: boolean;
  readonly format: (e: AccessLogEntry) => string;
  readonly direction: AccessLogDirection | 'both';
  readonly onStreamError: (err: Error) => void;
  pending: string[];
  failed: boolean;
}

/**
 * Buffers lines and writes them once per event-loop turn: one write for many requests.
 * Writes to one destination (`format`/`path`, as before issue 16) or several (`logs`: Envoy's
 * access_log list, each with its format and direction). Files are opened at construction
 * (synchronously: a path that cannot be opened throws there, while the config is applied, rather than
 * as an unhandled stream error later; what was opened before is closed again). A write that fails at
 * run time (disk full, a closed stdout pipe) is reported once through `onError` and that log stops.
 */
export class AccessLogger {
  private readonly sinks: Sink[] = [];
  private scheduled = false;

  constructor(opts: AccessLogSinkOptions & { logs?: readonly AccessLogSinkOptions[]; stream?: NodeJS.WritableStream; onError?: (err: Error, path: string | undefined) => void }) {
    const logs = opts.logs ?? [opts];
    try {
      for (const log of logs) this.sinks.push(this.openSink(log, opts.stream, opts.onError));
    } catch (err) {
      for (const sink of this.sinks) void this.closeSink(sink);
      throw new AccessLogOpenError(this.sinks.length, logs[this.sinks.length]?.path, err as Error);
    }
  }

  private openSink(log: AccessLogSinkOptions, override: NodeJS.WritableStream | undefined, onError: ((err: Error, path: string | undefined) => void) | undefined): Sink {
    const format = accessLogFormatter(log);
    let stream: NodeJS.WritableStream;
    let ownsStream = false;
    if (override) stream = override;
    else if (!log.path || log.path === '/dev/stdout') stream = process.stdout;
    else if (log.path === '/dev/stderr') stream = process.stderr;
    else { stream = fs.createWriteStream(log.path, { fd: fs.openSync(log.path, 'a') }); ownsStream = true; }
    const sink: Sink = {
      stream, ownsStream, format, direction: log.direction ?? 'both', pending: [], failed: false,
      onStreamError: (err) => {
        if (sink.failed) return;
        sink.failed = true;
        sink.pending = [];
        onError?.(err, log.path);
      },
    };
    stream.on('error', sink.onStreamError);
    return sink;
  }

  log(entry: AccessLogEntry): void {
    const sinks = this.sinks;
    let direction: AccessLogDirection | undefined;
    let queued = false;
    for (let i = 0; i < sinks.length; i++) {
      const sink = sinks[i]!;
      if (sink.failed) continue;
      if (sink.direction !== 'both' && sink.direction !== (direction ??= directionOf(entry))) continue;
      sink.pending.push(sink.format(entry));
      queued = true;
    }
    if (queued && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    for (const sink of this.sinks) {
      if (sink.pending.length === 0 || sink.failed) continue;
      const text = sink.pending.join('');
      sink.pending = [];
      sink.stream.write(text);
    }
  }

  private async closeSink(sink: Sink): Promise<void> {
    if (sink.ownsStream && !sink.failed) await new Promise<void>((resolve) => (sink.stream as fs.WriteStream).end(resolve));
    else if (sink.ownsStream) (sink.stream as fs.WriteStream).destroy();
    // a shared stream (stdout) outlives this logger: its listener goes, an owned one keeps it (a late error must stay handled)
    if (!sink.ownsStream) sink.stream.off('error', sink.onStreamError);
  }

  async close(): Promise<void> {
    this.flush();
    await Promise.all(this.sinks.map((sink) => this.closeSink(sink)));
  }
}
