// HTTP/2 with prior knowledge (h2c, what gRPC clients send in plaintext): the client's first bytes are the
// 24-byte connection preface (RFC 9113 3.4). The acceptor looks at the first chunk only; an HTTP/1.x
// request never starts with "PRI " (no such method is served), so one byte comparison settles almost
// every HTTP/1 connection at once.
import type net from 'node:net';

export const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const P = 0x50;

export type PrefaceScan = 'http2' | 'http1' | 'more';

/** 'http2': the whole preface is in; 'http1': anything else; 'more': what came so far is a strict prefix of the preface. */
export function scanPreface(buf: Buffer): PrefaceScan {
  if (buf[0] !== P) return 'http1';
  const n = Math.min(buf.length, HTTP2_PREFACE.length);
  if (buf.compare(HTTP2_PREFACE, 0, n, 0, n) !== 0) return 'http1';
  return n === HTTP2_PREFACE.length ? 'http2' : 'more';
}

/** What the acceptor does once the first bytes told the protocol (they were put back with unshift: a codec reading the socket sees everything), or when the socket closed (or timed out) first. */
export interface PrefaceSniffOutcome {
  detected(protocol: 'http1' | 'http2'): void;
  gone(): void;
}

/**
 * Waits for the first bytes of a connection and tells HTTP/1 from HTTP/2 prior knowledge. No timer per
 * connection: the proxy's once-a-second sweep calls `sweep`, which closes a socket that sent nothing for
 * `idleMs` (what the HTTP/1 codec does to a silent connection) or only part of the preface for `prefixMs`
 * (the headers timeout).
 */
export class PrefaceSniffer {
  private readonly waiting = new Map<net.Socket, { since: number; prefix: boolean }>();

  constructor(private readonly onInternalError: (err: unknown, where: string) => void) {}

  get size(): number { return this.waiting.size; }

  take(socket: net.Socket, outcome: PrefaceSniffOutcome): void {
    let buf: Buffer | undefined;
    const entry = { since: Date.now(), prefix: false };
    this.waiting.set(socket, entry);
    const onData = (chunk: Buffer): void => {
      try {
        buf = buf === undefined ? chunk : Buffer.concat([buf, chunk]);
        const scan = scanPreface(buf);
        if (scan === 'more') { entry.prefix = true; return; }
        finish();
        socket.pause();
        socket.unshift(buf);
        outcome.detected(scan);
      } catch (err) {
        this.onInternalError(err, 'HTTP/2 preface sniff');
        socket.destroy();
      }
    };
    const onClose = (): void => {
      finish();
      try { outcome.gone(); } catch (err) { this.onInternalError(err, 'HTTP/2 preface sniff close'); }
    };
    const finish = (): void => {
      this.waiting.delete(socket);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
    };
    const onError = (): void => { /* 'close' follows */ };
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.on('data', onData);
  }

  sweep(now: number, idleMs: number, prefixMs: number): void {
    for (const [socket, e] of this.waiting) if (now - e.since > (e.prefix ? prefixMs : idleMs)) socket.destroy();
  }

  /** The drain time is up, or the proxy closes: every socket still undecided goes. */
  destroyAll(): void {
    for (const socket of [...this.waiting.keys()]) socket.destroy();
  }
}
