import http2 from 'node:http2';
import type net from 'node:net';
import type tls from 'node:tls';
import { GRPC_SERVING } from '../../src/resilience/health-checker';

/**
 * A real HTTP/2 upstream (node:http2) on loopback: h2c, or TLS (ALPN h2) with the test certificates.
 * It records every stream with the session it came on, answers gRPC health checks with `healthStatus`,
 * and otherwise echoes as gRPC would (a unary `/x.Echo/Call` returns the request message with trailers
 * grpc-status 0) or runs the test's handler.
 */
export interface H2Upstream {
  port: number;
  address: string;
  server: http2.Http2Server | http2.Http2SecureServer;
  /** every stream seen, in order */
  streams: { path: string; headers: http2.IncomingHttpHeaders; sessionId: number; trailers?: http2.IncomingHttpHeaders }[];
  sessions: http2.ServerHttp2Session[];
  /** grpc.health.v1 answer (1 SERVING, 2 NOT_SERVING) */
  healthStatus: number;
  healthChecks: number;
  close(): Promise<void>;
}

export type H2Handler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, up: H2Upstream) => void;

export interface H2UpstreamOptions {
  handler?: H2Handler;
  /** SETTINGS_MAX_CONCURRENT_STREAMS the server announces */
  maxConcurrentStreams?: number;
  tls?: { key: string | Buffer; cert: string | Buffer; ca: string | Buffer };
}

/** A gRPC message frame (uncompressed). */
export function grpcFrame(msg: Buffer): Buffer {
  const f = Buffer.alloc(5 + msg.length);
  f.writeUInt32BE(msg.length, 1);
  msg.copy(f, 5);
  return f;
}

export async function startH2Upstream(opts: H2UpstreamOptions = {}): Promise<H2Upstream> {
  const settings = { maxConcurrentStreams: opts.maxConcurrentStreams ?? 100 };
  const server = opts.tls
    ? http2.createSecureServer({ key: opts.tls.key, cert: opts.tls.cert, ca: opts.tls.ca, requestCert: true, rejectUnauthorized: true, allowHTTP1: false, settings })
    : http2.createServer({ settings });
  let nextSession = 0;
  const ids = new WeakMap<http2.ServerHttp2Session, number>();
  const up: H2Upstream = {
    port: 0, address: '127.0.0.1', server, streams: [], sessions: [], healthStatus: GRPC_SERVING, healthChecks: 0,
    close: () => new Promise<void>((resolve) => { for (const s of up.sessions) s.destroy(); server.close(() => resolve()); }),
  };
  server.on('session', (session) => {
    ids.set(session, ++nextSession);
    up.sessions.push(session);
    session.on('error', () => { /* a test cut it */ });
  });
  server.on('stream', (stream, headers) => {
    const entry: H2Upstream['streams'][number] = { path: String(headers[':path']), headers, sessionId: ids.get(stream.session as http2.ServerHttp2Session) ?? 0 };
    up.streams.push(entry);
    stream.on('error', () => { /* reset by the peer */ });
    stream.on('trailers', (t) => { entry.trailers = t; });
    if (headers[':path'] === '/grpc.health.v1.Health/Check') {
      up.healthChecks++;
      stream.resume();
      stream.on('end', () => {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        stream.end(grpcFrame(Buffer.from([0x08, up.healthStatus])));
      });
      return;
    }
    if (opts.handler) { opts.handler(stream, headers, up); return; }
    // default: echo the body back; gRPC requests get their trailers
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
      stream.respond({ ':status': 200, 'content-type': grpc ? 'application/grpc' : 'text/plain', 'x-session': String(entry.sessionId) }, { waitForTrailers: grpc });
      if (grpc) stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }));
      stream.end(Buffer.concat(chunks));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.port = (server.address() as net.AddressInfo).port;
  return up;
}

/** The peer certificate's subject alt names the TLS upstream saw on a session (for identity checks). */
export function peerSans(session: http2.ServerHttp2Session): string | undefined {
  return (session.socket as tls.TLSSocket).getPeerCertificate?.().subjectaltname;
}
