import dgram from 'node:dgram';
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { sameQuestion } from './wire';
import { formatUpstream, type Upstream } from './upstreams';

/** Why one upstream attempt failed; the forwarder then tries the next server. */
export type AttemptReason = 'timeout' | 'refused' | 'unreachable' | 'blocked' | 'reset' | 'closed' | 'error';

export class UpstreamAttemptError extends Error {
  constructor(
    readonly upstream: Upstream,
    readonly reason: AttemptReason,
    message: string,
    /** the socket error's code (ENETUNREACH, ECONNREFUSED, ...) when the kernel gave one */
    readonly errno?: string,
  ) {
    super(`${formatUpstream(upstream)}: ${message}`);
  }
}

/** Every upstream failed for one query: each attempt's failure, in the order they were tried. */
export class UpstreamsFailedError extends Error {
  constructor(readonly failures: UpstreamAttemptError[]) {
    super(failures.length > 0 ? failures.map((f) => f.message).join('; ') : 'no upstream resolvers configured');
  }
}

/** A socket error of an upstream attempt in words: what the errno means for an operator. */
export function attemptFailed(upstream: Upstream, transport: 'UDP' | 'TCP', err: NodeJS.ErrnoException): UpstreamAttemptError {
  const code = err.code;
  switch (code) {
    case 'ECONNREFUSED':
      return new UpstreamAttemptError(
        upstream,
        'refused',
        `${transport === 'UDP' ? 'query refused (ECONNREFUSED, ICMP port unreachable)' : 'TCP connection refused (ECONNREFUSED)'}: nothing listens there`,
        code,
      );
    case 'ENETUNREACH':
      return new UpstreamAttemptError(upstream, 'unreachable', `network unreachable (ENETUNREACH): this host has no route to ${upstream.address}`, code);
    case 'EHOSTUNREACH':
      return new UpstreamAttemptError(upstream, 'unreachable', `host unreachable (EHOSTUNREACH): ${upstream.address} cannot be reached from this host`, code);
    case 'EADDRNOTAVAIL':
    case 'EAFNOSUPPORT':
      return new UpstreamAttemptError(upstream, 'unreachable', `no local address to reach ${upstream.address} from (${code})`, code);
    case 'EPERM':
    case 'EACCES':
      return new UpstreamAttemptError(upstream, 'blocked', `the kernel refused to send to it (${code}): a firewall rule drops these packets`, code);
    case 'ECONNRESET':
    case 'EPIPE':
      return new UpstreamAttemptError(upstream, 'reset', `${transport} connection reset by the upstream (${code})`, code);
    case 'ETIMEDOUT':
      return new UpstreamAttemptError(upstream, 'timeout', `${transport} connection timed out (ETIMEDOUT)`, code);
    default:
      return new UpstreamAttemptError(upstream, 'error', `${transport} ${err.message}`, code);
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
    socket.on('error', (err: NodeJS.ErrnoException) => finish(attemptFailed(upstream, 'UDP', err)));
    socket.on('message', (msg) => {
      if (msg.length < 12 || msg.readUInt16BE(0) !== id || (msg[2] & 0x80) === 0) return;
      if (!sameQuestion(packet, questionEnd, msg)) return;
      finish(undefined, msg);
    });
    // connect() reports its failure (ENETUNREACH: no route) to this callback only, not as 'error'
    // (Node's types omit the argument); sending on the unconnected socket after it would throw.
    const onConnect = (err?: NodeJS.ErrnoException): void => {
      if (done) return;
      if (err) return finish(attemptFailed(upstream, 'UDP', err));
      try {
        socket.send(packet, (sendErr) => {
          if (sendErr) finish(attemptFailed(upstream, 'UDP', sendErr));
        });
      } catch (sendErr) {
        finish(attemptFailed(upstream, 'UDP', sendErr as NodeJS.ErrnoException));
      }
    };
    socket.connect(upstream.port, upstream.address, onConnect);
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
    socket.on('error', (err: NodeJS.ErrnoException) => finish(attemptFailed(upstream, 'TCP', err)));
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
 * `onFailure` hears about every failed attempt. Rejects with every attempt's failure when all fail.
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
  const failures: UpstreamAttemptError[] = [];
  for (const upstream of upstreams) {
    try {
      const answer =
        transport === 'tcp' ? await queryTcp(upstream, query, questionEnd, timeoutMs, inFlight) : await queryUdp(upstream, query, questionEnd, timeoutMs, inFlight);
      return { answer, upstream };
    } catch (err) {
      const failure = err instanceof UpstreamAttemptError ? err : attemptFailed(upstream, transport === 'tcp' ? 'TCP' : 'UDP', err as NodeJS.ErrnoException);
      failures.push(failure);
      onFailure(failure);
    }
  }
  throw new UpstreamsFailedError(failures);
}
