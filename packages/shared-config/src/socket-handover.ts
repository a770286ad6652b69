// A listening socket handed over by the agent accepts connections and receives datagrams the moment it
// arrives in a child process (Node calls listen() / bind() on it at once), before the child's server
// (mesh-dns's DNS server, the proxy's listener) exists.
// Without a listener those connections would hang and those datagrams would be dropped, so they are
// held here, bounded in count and time, and given to the server once it serves.
import type dgram from 'node:dgram';
import type net from 'node:net';

/** At most this many connections / datagrams are held; more are refused (reset) / dropped. */
export const HOLD_LIMIT = 1024;
/** What is still held this long after it arrived is given up: a reset beats a hang. */
export const HOLD_MS = 10_000;

export interface HoldOptions {
  limit?: number;
  holdMs?: number;
  /** Told how many were given up and why (for the log and /latest_error). */
  onGiveUp?: (count: number, why: string) => void;
  /**
   * Told of an error of the handed-over socket while it is held (an accept failing with EMFILE, a
   * UDP receive error): without a listener Node would throw it and end the child. After release
   * the server that took the socket over handles its errors.
   */
  onError?: (err: Error) => void;
}

class Held<T> {
  private items: T[] = [];
  private released = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly discard: (item: T) => void,
    private readonly opts: HoldOptions,
  ) {}

  get count(): number {
    return this.items.length;
  }

  get isReleased(): boolean {
    return this.released;
  }

  add(item: T): void {
    if (this.items.length >= (this.opts.limit ?? HOLD_LIMIT)) {
      this.discard(item);
      this.opts.onGiveUp?.(1, 'the hold limit is reached');
      return;
    }
    this.items.push(item);
    // unref: holding must not keep a process alive that is otherwise done
    this.timer ??= setTimeout(() => this.giveUp(`not served within ${this.opts.holdMs ?? HOLD_MS} ms`), this.opts.holdMs ?? HOLD_MS).unref();
  }

  /** From now on the server serves by itself; what was held goes to `deliver` in arrival order. */
  release(deliver: (item: T) => void): void {
    this.released = true;
    this.clearTimer();
    for (const item of this.items.splice(0)) deliver(item);
  }

  giveUp(why: string): void {
    this.clearTimer();
    const items = this.items.splice(0);
    for (const item of items) this.discard(item);
    if (items.length > 0) this.opts.onGiveUp?.(items.length, why);
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export interface HeldConnections {
  readonly count: number;
  /** Hands every held connection to `deliver`; later ones reach the server's own listener. */
  release(deliver: (socket: net.Socket) => void): void;
  /** Resets what is held (shutdown). */
  giveUp(why: string): void;
}

/** Keeps `emitter`'s errors from killing the process while held; `release` hands them back. */
function heldErrors<T>(emitter: net.Server | dgram.Socket, held: Held<T>, opts: HoldOptions): Held<T> {
  const onError = (err: Error) => opts.onError?.(err);
  emitter.on('error', onError);
  const release = held.release.bind(held);
  held.release = (deliver) => {
    emitter.removeListener('error', onError);
    release(deliver);
  };
  return held;
}

export function holdConnections(server: net.Server, opts: HoldOptions = {}): HeldConnections {
  const held = new Held<net.Socket>((socket) => socket.destroy(), opts);
  server.on('connection', (socket) => {
    if (held.isReleased) return; // the server's own listener has it
    socket.on('error', () => {}); // a client giving up while held is no error of ours
    held.add(socket);
  });
  return heldErrors(server, held, opts);
}

export interface HeldDatagram {
  msg: Buffer;
  rinfo: dgram.RemoteInfo;
}

export interface HeldDatagrams {
  readonly count: number;
  release(deliver: (datagram: HeldDatagram) => void): void;
  giveUp(why: string): void;
}

export function holdDatagrams(socket: dgram.Socket, opts: HoldOptions = {}): HeldDatagrams {
  const held = new Held<HeldDatagram>(() => {}, opts);
  socket.on('message', (msg, rinfo) => {
    if (!held.isReleased) held.add({ msg, rinfo });
  });
  return heldErrors(socket, held, opts);
}

/**
 * The server that took a handed-over listening socket over with `server.listen(handle)` (admin-kit's
 * HTTP server and the proxy's listener do): Node moves the socket's accept callback to it. Node
 * internals (the owner symbol on the socket's handle), as in the agent's sockets.ts; undefined when
 * they change.
 */
export function adoptedBy(handle: net.Server): net.Server | undefined {
  const raw = (handle as unknown as { _handle?: object | null })._handle;
  if (!raw) return undefined;
  const symbol = Object.getOwnPropertySymbols(raw).find((s) => s.description === 'owner_symbol');
  const owner = symbol ? (raw as Record<symbol, unknown>)[symbol] : undefined;
  return owner && owner !== handle && typeof (owner as net.Server).emit === 'function' ? (owner as net.Server) : undefined;
}
