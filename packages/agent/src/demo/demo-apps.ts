// The demo's applications: the local service `user` and the two instances of the peer `order`.
// Plain HTTP servers that know nothing of the mesh.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

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
