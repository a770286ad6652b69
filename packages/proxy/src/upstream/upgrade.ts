import http, { type IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import type net from 'node:net';
import type { ProxyServer } from 'http-proxy-3';
import type { Host } from '../cluster/host';
import type { RequestHead } from '../http/head-parser';
import { connectUpstreamTls, type SecretLookup, type UpstreamTlsSettings } from '../tls/upstream-tls';

/** One upgrade's connection to an mTLS host: the same origination (and identity check) as the pool's. */
class MtlsUpgradeAgent extends http.Agent {
  constructor(private readonly host: Host, private readonly settings: UpstreamTlsSettings, private readonly secrets: SecretLookup | undefined) {
    super({ keepAlive: false });
  }

  override createConnection(): net.Socket {
    return connectUpstreamTls(this.host, this.settings, this.secrets);
  }
}

/**
 * Upgrade (WebSocket) requests go through http-proxy-3 (the user's named
 * dependency): it is not on the hot path, and it handles the 101 exchange and
 * the two-way pipe. See docs/proxy-design.md for why the hot path is not on it.
 */
export class UpgradeForwarder {
  private proxyServer: ProxyServer | undefined;
  /** The proxy's secrets, for upgrades to hosts reached over mTLS. */
  secrets: SecretLookup | undefined;

  /** Loaded on the first upgrade: a proxy that never sees one does not pay its memory (~10 MiB). */
  private get proxy(): ProxyServer {
    if (this.proxyServer) return this.proxyServer;
    const req = createRequire(import.meta.url ?? __filename);
    const { createProxyServer } = req('http-proxy-3') as typeof import('http-proxy-3');
    this.proxyServer = createProxyServer({ ws: true, xfwd: true });
    this.proxyServer.on('error', (_err: Error, _req: unknown, res: unknown) => {
      const socket = res as net.Socket | undefined;
      if (socket && typeof socket.destroy === 'function') {
        if (socket.writable) socket.end('HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
        else socket.destroy();
      }
    });
    return this.proxyServer;
  }

  /** `tls`: the host is reached over mTLS (the cluster's setting, the host has an identity). */
  forward(head: RequestHead, path: string, socket: net.Socket, rest: Buffer, host: Host, onClose: () => void, tls?: UpstreamTlsSettings): void {
    const headers: Record<string, string> = {};
    for (let i = 0; i < head.lower.length; i++) {
      const n = head.lower[i]!;
      headers[n] = headers[n] === undefined ? head.values[i]! : `${headers[n]}, ${head.values[i]!}`;
    }
    // The minimal IncomingMessage surface http-proxy-3's ws passes read.
    const req = {
      method: head.method,
      url: path,
      headers,
      httpVersion: head.minor === 0 ? '1.0' : '1.1',
      httpVersionMajor: 1,
      httpVersionMinor: head.minor,
      socket,
      connection: socket,
    } as unknown as IncomingMessage;
    socket.once('close', onClose);
    const target = host.address.includes(':') ? `http://[${host.address}]:${host.port}` : `http://${host.address}:${host.port}`;
    this.proxy.ws(req, socket, rest, tls ? { target, agent: new MtlsUpgradeAgent(host, tls, this.secrets) } : { target });
  }

  close(): void {
    this.proxyServer?.close();
  }
}
