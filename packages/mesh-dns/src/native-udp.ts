// The UDP listener through recvmmsg/sendmmsg (native/udp_batch.c) when that addon is built: a batch
// of queries per system call and per call into JS, answers written in place and sent with one
// system call. Without the addon (not built, not Linux, MESH_DNS_NO_NATIVE_UDP=1) mesh-dns serves UDP
// through Node's dgram: the same answers, fewer per CPU-second.
import type dgram from 'node:dgram';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import util from 'node:util';
import { fileURLToPath } from 'node:url';

/** Queries taken per recvmmsg (and per call into JS). */
export const BATCH = 64;
/** Bytes per query slot: a whole UDP datagram fits, so nothing is ever cut. Pages are touched only as far as a datagram reaches. */
export const QUERY_SLOT = 65536;
/** Bytes per answer slot: a local answer or an error answer is at most the question (271 bytes) plus 27. */
export const ANSWER_SLOT = 512;
/** sizeof(struct sockaddr_in6): the sender of each query as the kernel wrote it */
export const ADDR_SLOT = 28;

const AF_INET = 2;
const AF_INET6 = 10;
const LITTLE_ENDIAN = os.endianness() === 'LE';

export interface NativeUdpStats {
  batches: number;
  datagrams: number;
  answers: number;
  sendErrors: number;
  recvErrors: number;
}

interface UdpBatchAddon {
  open(
    fd: number,
    batch: number,
    rxSlot: number,
    txSlot: number,
    rx: Buffer,
    tx: Buffer,
    addrs: Buffer,
    lens: Int32Array,
    onBatch: (count: number) => void,
    onError: (errno: number, where: string) => void,
  ): object;
  close(handle: object): void;
  sendTo(handle: object, data: Buffer, sockaddr: Buffer): number;
  stats(handle: object): NativeUdpStats;
}

let addon: UdpBatchAddon | null | undefined;
let loadError: string | undefined;

function here(): string {
  try {
    return path.dirname(fileURLToPath(import.meta.url));
  } catch {
    return __dirname;
  }
}

/** Loads native/build/Release/udp_batch.node once; null when it is not there or switched off. */
export function loadUdpBatchAddon(): UdpBatchAddon | null {
  if (addon !== undefined) return addon;
  if (process.env.MESH_DNS_NO_NATIVE_UDP === '1') {
    loadError = 'disabled by MESH_DNS_NO_NATIVE_UDP=1';
    addon = null;
    return addon;
  }
  if (process.platform !== 'linux') {
    loadError = 'recvmmsg/sendmmsg are Linux-only';
    addon = null;
    return addon;
  }
  const req = createRequire(import.meta.url ?? __filename);
  // src/ and dist/ are both one level below the package root
  const file = path.join(here(), '..', 'native', 'build', 'Release', 'udp_batch.node');
  try {
    addon = req(file) as UdpBatchAddon;
  } catch (err) {
    loadError = `${(err as Error).message.split('\n')[0]} (build it with: pnpm --filter @mesh-agent/mesh-dns build:native)`;
    addon = null;
  }
  return addon;
}

export function nativeUdpStatus(): { loaded: boolean; error?: string } {
  return loadUdpBatchAddon() ? { loaded: true } : { loaded: false, error: loadError };
}

/** The libuv handle under a dgram socket (Node internals: its state symbol; `_handle` is deprecated). */
function udpHandleOf(socket: dgram.Socket): { fd?: number; recvStop?: () => number } | undefined {
  const symbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol');
  const state = symbol ? (socket as unknown as Record<symbol, { handle?: unknown }>)[symbol] : undefined;
  const handle = state?.handle;
  return handle && typeof handle === 'object' ? (handle as { fd?: number; recvStop?: () => number }) : undefined;
}

/**
 * A bound dgram socket read and written in batches. The server's `onBatch(count)` reads query i
 * (`queries[i]`, `queryLength(i)` bytes; the view is the whole slot) and writes its answer into
 * `answers[i]`, setting `setAnswerLength(i, n)`; answers are sent when onBatch returns. An answer
 * that comes later (forwarded) goes with `sendTo(answer, peer(i))`.
 */
export class BatchedUdp {
  readonly queries: Buffer[] = [];
  readonly answers: Buffer[] = [];
  /** [0, BATCH): query lengths (the addon writes), [BATCH, 2 BATCH): answer lengths (JS writes) */
  readonly lengths = new Int32Array(2 * BATCH);
  readonly addrs = Buffer.alloc(BATCH * ADDR_SLOT);
  private readonly rx = Buffer.alloc(BATCH * QUERY_SLOT);
  private readonly tx = Buffer.alloc(BATCH * ANSWER_SLOT);
  private handle: object | undefined;
  private finalStats: NativeUdpStats | undefined;

  private constructor(private readonly native: UdpBatchAddon) {
    for (let i = 0; i < BATCH; i++) {
      this.queries.push(this.rx.subarray(i * QUERY_SLOT, (i + 1) * QUERY_SLOT));
      this.answers.push(this.tx.subarray(i * ANSWER_SLOT, (i + 1) * ANSWER_SLOT));
    }
  }

  /**
   * Takes over the reading of `socket` (dgram stops reading it; sending through it still works).
   * Returns the reason instead when it cannot: no addon, no file descriptor (an unbound socket, a
   * Node whose internals differ), or the addon refused the socket.
   */
  static attach(socket: dgram.Socket, onBatch: (count: number) => void, onError: (err: Error) => void): BatchedUdp | string {
    const native = loadUdpBatchAddon();
    if (!native) return `the recvmmsg/sendmmsg addon is not loaded (${loadError ?? 'not built'})`;
    const handle = udpHandleOf(socket);
    const fd = handle?.fd;
    if (typeof fd !== 'number' || fd < 0 || typeof handle?.recvStop !== 'function') return 'the UDP socket has no file descriptor to read (Node internals differ)';
    const batched = new BatchedUdp(native);
    try {
      batched.handle = native.open(fd, BATCH, QUERY_SLOT, ANSWER_SLOT, batched.rx, batched.tx, batched.addrs, batched.lengths, onBatch, (errno, where) =>
        onError(errnoError(errno, where)),
      );
    } catch (err) {
      return `the addon refused the socket: ${(err as Error).message}`;
    }
    // From now on the addon reads; dgram would compete for the same datagrams.
    handle.recvStop.call(handle);
    return batched;
  }

  queryLength(i: number): number {
    return this.lengths[i];
  }

  setAnswerLength(i: number, length: number): void {
    this.lengths[BATCH + i] = length;
  }

  /** The sender's port of query i (0: it expects no answer, RFC 768). */
  sourcePort(i: number): number {
    const off = i * ADDR_SLOT;
    return (this.addrs[off + 2] << 8) | this.addrs[off + 3];
  }

  /** A copy of the sender's address of query i, for an answer sent after this batch. */
  peer(i: number): Buffer {
    return Buffer.from(this.addrs.subarray(i * ADDR_SLOT, (i + 1) * ADDR_SLOT));
  }

  /** Sends one datagram to `peer`; 0 or -errno (never throws). */
  sendTo(data: Buffer, peer: Buffer): number {
    if (this.handle === undefined) return -9; // EBADF
    return this.native.sendTo(this.handle, data, peer);
  }

  get open(): boolean {
    return this.handle !== undefined;
  }

  stats(): NativeUdpStats {
    if (this.handle === undefined) return this.finalStats ?? { batches: 0, datagrams: 0, answers: 0, sendErrors: 0, recvErrors: 0 };
    return this.native.stats(this.handle);
  }

  /** Stops reading (no onBatch after this) and closes the addon's duplicate of the fd; the dgram socket stays open. */
  close(): void {
    if (this.handle === undefined) return;
    this.finalStats = this.native.stats(this.handle);
    this.native.close(this.handle);
    this.handle = undefined;
  }
}

/** '127.0.0.1:5353' or '[::1]:5353' from a sockaddr_in / sockaddr_in6 (error messages only). */
export function describeSockaddr(addr: Buffer): string {
  const family = LITTLE_ENDIAN ? addr[0] | (addr[1] << 8) : (addr[0] << 8) | addr[1];
  const port = (addr[2] << 8) | addr[3];
  if (family === AF_INET) return `${addr[4]}.${addr[5]}.${addr[6]}.${addr[7]}:${port}`;
  if (family === AF_INET6) {
    const groups: string[] = [];
    for (let i = 8; i < 24; i += 2) groups.push(((addr[i] << 8) | addr[i + 1]).toString(16));
    const text = groups.join(':');
    return `[${net.isIPv6(text) ? text : '?'}]:${port}`;
  }
  return `(address family ${family})`;
}

/** An Error with `code` (EPERM, ...) and `errno` from a negative errno (a libuv status is one on Linux). */
export function errnoError(errno: number, where: string): Error {
  let code: string;
  try {
    code = util.getSystemErrorName(errno);
  } catch {
    code = `errno ${-errno}`;
  }
  const err = new Error(`${where} failed: ${code}`) as NodeJS.ErrnoException;
  err.code = code;
  err.errno = errno;
  err.syscall = where;
  return err;
}
