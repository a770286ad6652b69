import fs from 'node:fs';

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
}

export type AccessLogFormat = 'text' | 'json';

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

/**
 * Buffers lines and writes them once per event-loop turn: one write for many requests.
 * A file is opened at construction (synchronously: a path that cannot be opened throws there, while
 * the config is applied, rather than as an unhandled stream error later). A write that fails at run
 * time (disk full, a closed stdout pipe) is reported once through `onError` and logging stops.
 */
export class AccessLogger {
  private pending: string[] = [];
  private scheduled = false;
  private failed = false;
  private readonly stream: NodeJS.WritableStream;
  private readonly ownsStream: boolean;
  private readonly format: (e: AccessLogEntry) => string;
  private readonly onStreamError: (err: Error) => void;

  constructor(opts: { format?: AccessLogFormat; path?: string; stream?: NodeJS.WritableStream; onError?: (err: Error) => void }) {
    this.format = opts.format === 'json' ? formatJsonLine : formatTextLine;
    if (opts.stream) { this.stream = opts.stream; this.ownsStream = false; }
    else if (!opts.path || opts.path === '/dev/stdout') { this.stream = process.stdout; this.ownsStream = false; }
    else if (opts.path === '/dev/stderr') { this.stream = process.stderr; this.ownsStream = false; }
    else { this.stream = fs.createWriteStream(opts.path, { fd: fs.openSync(opts.path, 'a') }); this.ownsStream = true; }
    this.onStreamError = (err) => {
      if (this.failed) return;
      this.failed = true;
      this.pending = [];
      opts.onError?.(err);
    };
    this.stream.on('error', this.onStreamError);
  }

  log(entry: AccessLogEntry): void {
    if (this.failed) return;
    this.pending.push(this.format(entry));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.pending.length === 0 || this.failed) return;
    const text = this.pending.join('');
    this.pending = [];
    this.stream.write(text);
  }

  async close(): Promise<void> {
    this.flush();
    if (this.ownsStream && !this.failed) await new Promise<void>((resolve) => (this.stream as fs.WriteStream).end(resolve));
    else if (this.ownsStream) (this.stream as fs.WriteStream).destroy();
    // a shared stream (stdout) outlives this logger: its listener goes, an owned one keeps it (a late error must stay handled)
    if (!this.ownsStream) this.stream.off('error', this.onStreamError);
  }
}
