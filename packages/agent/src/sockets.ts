// The agent owns every listening socket of its children, so a child can die or be replaced
// while the kernel keeps the socket open and queues new connections / datagrams for the next one.
//
// Why internals: a net.Server that listens in the agent would also accept connections in the
// agent (the kernel hands each to whichever process accepts first), and a bound dgram.Socket
// would read datagrams. So the TCP socket is bound with a raw handle (the child calls listen()
// on its duplicate; the listening state then lives as long as any process holds the socket) and
// the UDP socket stops receiving right after bind. Both are handed to children wrapped in the
// public types child_process.send() accepts (net.Server, dgram.Socket).
import net from 'node:net';
import dgram from 'node:dgram';
import { EXIT_CODES, MeshError, type HandleName } from '@mesh-agent/shared-config';

export type { HandleName };
export type OwnedHandle = net.Server | dgram.Socket;

export interface OwnedSocket {
  name: HandleName;
  protocol: 'tcp' | 'udp';
  address: string;
  port: number;
  handle: OwnedHandle;
  close(): void;
}

interface RawTcpHandle {
  bind(address: string, port: number): number;
  bind6(address: string, port: number, flags: number): number;
  getsockname(out: { address?: string; port?: number }): number;
  close(cb?: () => void): void;
}

const tcpWrap = (process as any).binding('tcp_wrap') as { TCP: new (type: number) => RawTcpHandle; constants: { SERVER: number } };

function errnoName(code: number): string {
  // uv error codes are negative errno values; the common ones for bind
  const names: Record<number, string> = { [-98]: 'EADDRINUSE', [-13]: 'EACCES', [-99]: 'EADDRNOTAVAIL', [-22]: 'EINVAL' };
  return names[code] ?? `errno ${code}`;
}

function bindError(name: HandleName, protocol: string, address: string, port: number, reason: string): MeshError {
  return new MeshError('MESH_AGENT_BIND_FAILED', `cannot bind ${protocol} ${address}:${port} (${name}): ${reason}`, {
    exitCode: EXIT_CODES.unavailable,
    hint: reason.includes('EADDRINUSE')
      ? `another process listens on port ${port} (find it with \`ss -lntup | grep :${port}\`), or choose another port in the agent config (ports.*)`
      : `check the address ${address} exists on this host and the agent may bind port ${port}`,
  });
}

/** Binds a TCP socket the children listen on; the agent itself never accepts on it. */
export function bindTcp(name: HandleName, address: string, port: number): OwnedSocket {
  const raw = new tcpWrap.TCP(tcpWrap.constants.SERVER);
  const err = net.isIPv6(address) ? raw.bind6(address, port, 0) : raw.bind(address, port);
  if (err !== 0) {
    raw.close();
    throw bindError(name, 'tcp', address, port, errnoName(err));
  }
  const out: { address?: string; port?: number } = {};
  raw.getsockname(out);
  const shell = new net.Server();
  (shell as unknown as { _handle: RawTcpHandle })._handle = raw;
  let closed = false;
  return {
    name,
    protocol: 'tcp',
    address,
    port: out.port ?? port,
    handle: shell,
    close() {
      if (closed) return;
      closed = true;
      raw.close();
    },
  };
}

/** Binds a UDP socket the children read from; the agent stops reading at once. */
export async function bindUdp(name: HandleName, address: string, port: number): Promise<OwnedSocket> {
  const socket = dgram.createSocket({ type: net.isIPv6(address) ? 'udp6' : 'udp4' });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', (err: NodeJS.ErrnoException) => reject(bindError(name, 'udp', address, port, err.code ?? err.message)));
    socket.bind({ address, port, exclusive: false }, () => {
      stopReceiving(socket);
      resolve();
    });
  });
  let closed = false;
  return {
    name,
    protocol: 'udp',
    address,
    port: socket.address().port,
    handle: socket,
    close() {
      if (closed) return;
      closed = true;
      socket.close();
    },
  };
}

function stopReceiving(socket: dgram.Socket): void {
  const stateSymbol = Object.getOwnPropertySymbols(socket).find((s) => String(s) === 'Symbol(state symbol)');
  const state = stateSymbol ? (socket as unknown as Record<symbol, { handle?: { recvStop(): number }; receiving?: boolean }>)[stateSymbol] : undefined;
  if (!state?.handle) throw new MeshError('MESH_AGENT_INTERNAL', 'cannot stop the agent reading its UDP socket (Node internals changed)');
  state.handle.recvStop();
  state.receiving = false;
}
