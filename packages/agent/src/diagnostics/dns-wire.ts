// Just enough of the DNS wire format to ask for an A record and read the answer: doctor and trace
// send a real query to port 53 (through the capture path), as the application's resolver would.
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';

export interface DnsAnswer {
  server: string;
  rcode: number;
  rcodeName: string;
  addresses: string[];
  ms: number;
  error?: string;
}

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];

export function encodeQuery(id: number, name: string, type = 1): Buffer {
  const labels = name.replace(/\.$/, '').split('.').filter(Boolean);
  const parts: Buffer[] = [Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])];
  for (const label of labels) parts.push(Buffer.from([label.length]), Buffer.from(label, 'ascii'));
  parts.push(Buffer.from([0, type >> 8, type & 0xff, 0, 1]));
  return Buffer.concat(parts);
}

function skipName(msg: Buffer, offset: number): number {
  while (offset < msg.length) {
    const len = msg[offset];
    if (len === 0) return offset + 1;
    if ((len & 0xc0) === 0xc0) return offset + 2;
    offset += len + 1;
  }
  throw new Error('truncated name');
}

export function decodeAnswer(msg: Buffer): { id: number; rcode: number; addresses: string[] } {
  if (msg.length < 12) throw new Error('short DNS message');
  const id = msg.readUInt16BE(0);
  const rcode = msg[3] & 0x0f;
  const qd = msg.readUInt16BE(4);
  const an = msg.readUInt16BE(6);
  let offset = 12;
  for (let i = 0; i < qd; i++) offset = skipName(msg, offset) + 4;
  const addresses: string[] = [];
  for (let i = 0; i < an; i++) {
    offset = skipName(msg, offset);
    const type = msg.readUInt16BE(offset);
    const rdlen = msg.readUInt16BE(offset + 8);
    offset += 10;
    if (type === 1 && rdlen === 4) addresses.push([...msg.subarray(offset, offset + 4)].join('.'));
    offset += rdlen;
  }
  return { id, rcode, addresses };
}

/** The first nameserver of resolv.conf: where the application's own queries go (port 53). */
export function systemNameserver(resolvConf = '/etc/resolv.conf'): string {
  try {
    const line = readFileSync(resolvConf, 'utf8').split('\n').find((l) => /^\s*nameserver\s+\S+/.test(l));
    const server = line?.trim().split(/\s+/)[1];
    if (server) return server;
  } catch { /* no resolv.conf: glibc falls back to the loopback resolver */ }
  return '127.0.0.1';
}

export function queryA(server: string, port: number, name: string, timeoutMs = 2_000): Promise<DnsAnswer> {
  const started = performance.now();
  const id = Math.floor(Math.random() * 0xffff);
  const family = server.includes(':') ? 'udp6' : 'udp4';
  return new Promise((resolve) => {
    const socket = dgram.createSocket(family);
    let done = false;
    const finish = (answer: Omit<DnsAnswer, 'server' | 'ms'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      resolve({ server: `${server}:${port}`, ms: Math.round((performance.now() - started) * 10) / 10, ...answer });
    };
    const timer = setTimeout(() => finish({ rcode: -1, rcodeName: 'TIMEOUT', addresses: [], error: `no answer within ${timeoutMs} ms` }), timeoutMs);
    socket.on('error', (err) => finish({ rcode: -1, rcodeName: 'ERROR', addresses: [], error: err.message }));
    socket.on('message', (msg) => {
      try {
        const decoded = decodeAnswer(msg);
        if (decoded.id !== id) return;
        finish({ rcode: decoded.rcode, rcodeName: RCODES[decoded.rcode] ?? `RCODE${decoded.rcode}`, addresses: decoded.addresses });
      } catch (err) {
        finish({ rcode: -1, rcodeName: 'FORMERR', addresses: [], error: (err as Error).message });
      }
    });
    socket.send(encodeQuery(id, name), port, server);
  });
}
