import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { sameQuestion } from './wire';
import { formatUpstream, type Upstream } from './upstreams';

/** Why one upstream attempt failed; the forwarder then tries the next server. */
export class UpstreamAttemptError extends Error {
  constructor(
    readonly upstream: Upstream,
    readonly reason: 'timeout' | 'refused' | 'error' | 'closed',
    message: string,
  ) {
    super(`${formatUpstream(upstream)}: ${message}`);
  }
}

/** The IDs of this server's upstream queries in flight, so one that comes back to it is recognised as a loop. */
export interface InFlightIds {
  add(id: number): void;
  delete(id: number): void;
}

/** A copy of the query with a fresh random ID: off-path spoofers must guess it and the port. */
function withRandomId(query: Buffer): { packet: Buffer; id: number } {
  const packet = Buffer.from(query);
  const id = randomInt(0, 0x10000);
  packet.writeUInt16BE(id, 0);
  return { packet, id };
}

/**
 * One query over UDP from a fresh socket on a random port, connected to the upstream so the kernel
 * drops datagrams from anyone else and an ICMP port-unreachable fails fast. Answers whose ID or
 * question does not match are ignored (the wait goes on until the timeout).
 */
export function queryUdp(upstream: Upstream, query: Buffer, questionEnd: number, timeoutMs: number, inFlight?: InFlightIds): Promise<Buffer> {
  const { packet, id } = withRandomId(query);
  inFlight?.add(id);
  return new Promise<Buffer>((resolve, reject) => {
    const socket = dgram.createSocket(upstream.family === 6 ? 'udp6' : 'udp4');
    let done = false;
    const finish = (err: Error | undefined, answer?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => finish(new UpstreamAttemptError(upstream, 'timeout', `no answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const refused = err.code === 'ECONNREFUSED';
      finish(new UpstreamAttemptError(upstream, refused ? 'refused' : 'error', refused ? 'connection refused (nothing listens there)' : err.message));
    });
    socket.on('message', (msg) => {
      if (msg.length < 12 || msg.readUInt16BE(0) !== id || (msg[2] & 0x80) === 0) return;
      if (!sameQuestion(packet, questionEnd, msg)) return;
      finish(undefined, msg);
    });
    socket.connect(upstream.port, upstream.address, () => {
      if (done) return;
      socket.send(packet, (err) => {
        if (err) finish(new UpstreamAttemptError(upstream, 'error', err.message));
      });
    });
  }).finally(() => inFlight?.delete(id));
}

/** One query over TCP (two-byte length framing); the answer must carry our ID and question. */
export function queryTcp(upstream: Upstream, query: Buffer, questionEnd: number, timeoutMs: number, inFlight?: InFlightIds): Promise<Buffer> {
  const { packet, id } = withRandomId(query);
  inFlight?.add(id);
  return new Promise<Buffer>((resolve, reject) => {
    const socket = net.connect({ host: upstream.address, port: upstream.port, family: upstream.family });
    let done = false;
    let received: Buffer = Buffer.alloc(0);
    const finish = (err: Error | undefined, answer?: Buffer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => finish(new UpstreamAttemptError(upstream, 'timeout', `no TCP answer within ${timeoutMs} ms`)), timeoutMs);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const refused = err.code === 'ECONNREFUSED';
      finish(new UpstreamAttemptError(upstream, refused ? 'refused' : 'error', refused ? 'TCP connection refused' : err.message));
    });
    socket.on('close', () => finish(new UpstreamAttemptError(upstream, 'closed', 'TCP connection closed before an answer')));
    socket.on('connect', () => {
      const frame = Buffer.allocUnsafe(2 + packet.length);
      frame.writeUInt16BE(packet.length, 0);
      packet.copy(frame, 2);
      socket.write(frame);
    });
    socket.on('data', (chunk) => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk]);
      while (received.length >= 2) {
        const len = received.readUInt16BE(0);
        if (received.length < 2 + len) return;
        const msg = received.subarray(2, 2 + len);
        received = received.subarray(2 + len);
        if (msg.length >= 12 && msg.readUInt16BE(0) === id && (msg[2] & 0x80) !== 0 && sameQuestion(packet, questionEnd, msg)) {
          finish(undefined, Buffer.from(msg));
          return;
        }
      }
    });
  }).finally(() => inFlight?.delete(id));
}

export interface ForwardOutcome {
  answer: Buffer;
  upstream: Upstream;
}

/**
 * Asks each upstream in turn until one answers: over TCP when the client asked over TCP, else over
 * UDP (a truncated UDP answer is relayed as is, so the client retries over TCP and so do we).
 * `onFailure` hears about every failed attempt. Rejects with the last failure when all fail.
 */
export async function forwardQuery(
  upstreams: readonly Upstream[],
  query: Buffer,
  questionEnd: number,
  transport: 'udp' | 'tcp',
  timeoutMs: number,
  onFailure: (err: UpstreamAttemptError) => void,
  inFlight?: InFlightIds,
): Promise<ForwardOutcome> {
  let last: Error = new Error('no upstream resolvers configured');
  for (const upstream of upstreams) {
    try {
      const answer =
        transport === 'tcp' ? await queryTcp(upstream, query, questionEnd, timeoutMs, inFlight) : await queryUdp(upstream, query, questionEnd, timeoutMs, inFlight);
      return { answer, upstream };
    } catch (err) {
      last = err as Error;
      if (err instanceof UpstreamAttemptError) onFailure(err);
    }
  }
  throw last;
}
