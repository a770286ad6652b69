// The demo's applications: the local service `user`, the two instances of the peer `order`, the gRPC peer `inventory`
// and the TCP peer `clock`. Plain HTTP, HTTP/2 and TCP servers that know nothing of the mesh.
import http from 'node:http';
import http2 from 'node:http2';
import net, { type AddressInfo } from 'node:net';

export interface DemoApp {
  name: string;
  port: number;
  close(): Promise<void>;
}

export async function startDemoApp(name: string, host: string, port: number, answer: string): Promise<DemoApp> {
  const server = http.createServer((req, res) => {
    if (req.url === '/health') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('ok\n');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'x-demo-instance': name });
    res.end(`${answer} (${req.method} ${req.url}, Host: ${req.headers.host ?? '-'})\n`);
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    name,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The gRPC methods the demo's `inventory` serves (unary, messages are opaque bytes: no protobuf needed to call them). */
export const DEMO_GRPC_METHODS = { get: '/demo.Inventory/Get', health: '/grpc.health.v1.Health/Check' } as const;

/** A gRPC message frame: 1 byte compressed flag (0), 4 bytes length, the message. */
function grpcFrame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/**
 * The demo's gRPC service `inventory`: HTTP/2 only (h2c with prior knowledge), as a gRPC server is,
 * written on node:http2 so the demo needs no gRPC library. `Get` answers `in stock: <request>`, the
 * standard health check answers SERVING; any other method is UNIMPLEMENTED (12). A request that is
 * not gRPC (`mesh-agent trace`, a browser through the proxy) gets a plain text 200 saying what it is.
 */
export async function startDemoGrpcApp(name: string, host: string, port: number): Promise<DemoApp> {
  const server = http2.createServer({ maxSessionMemory: 16 });
  server.on('sessionError', () => undefined);
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    const path = String(headers[':path'] ?? '/');
    if (!String(headers['content-type'] ?? '').startsWith('application/grpc')) {
      stream.respond({ ':status': 200, 'content-type': 'text/plain', 'x-demo-instance': name });
      stream.end(`${name}: a gRPC service over HTTP/2 (POST application/grpc to ${DEMO_GRPC_METHODS.get}); you sent ${headers[':method']} ${path}\n`);
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (chunk: Buffer) => {
      size += chunk.length;
      // one small unary message is all the demo takes; a bigger body is refused, not buffered
      if (size > 64 * 1024) stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      else chunks.push(chunk);
    });
    stream.on('end', () => {
      if (stream.destroyed) return;
      const body = Buffer.concat(chunks);
      const message = body.length >= 5 ? body.subarray(5, 5 + body.readUInt32BE(1)) : Buffer.alloc(0);
      let reply: Buffer | undefined;
      if (path === DEMO_GRPC_METHODS.get) reply = Buffer.concat([Buffer.from('in stock: '), message]);
      else if (path === DEMO_GRPC_METHODS.health) reply = Buffer.from([0x08, 0x01]); // HealthCheckResponse { status: SERVING }
      const trailers = reply ? { 'grpc-status': '0' } : { 'grpc-status': '12', 'grpc-message': `unknown method ${path}` };
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-demo-instance': name }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers(trailers));
      stream.end(reply ? grpcFrame(reply) : undefined);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  return {
    name,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * The demo's TCP service `clock`: server-first, as MySQL and SMTP are. It greets every connection
 * with the time before the client says anything, then echoes each line back (a protocol the
 * proxy's HTTP path cannot carry: it must be proxied as bytes).
 */
export async function startDemoClock(name: string, host: string, port: number): Promise<DemoApp> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    socket.write(`${name}: the time is ${new Date().toISOString()}\n`);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    name,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
