import net from 'node:net';

// Raw HTTP/2 frames (RFC 9113 4.1) and HPACK literals (RFC 7541 6.2, no Huffman) built by hand, so the
// attack tests send exactly the bytes an attacker would, which no well-behaved client library does.

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
export const FrameType = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const ErrorCode = { NO_ERROR: 0, PROTOCOL_ERROR: 1, INTERNAL_ERROR: 2, FLOW_CONTROL_ERROR: 3, REFUSED_STREAM: 7, CANCEL: 8, COMPRESSION_ERROR: 9, ENHANCE_YOUR_CALM: 11 } as const;
export const Setting = { HEADER_TABLE_SIZE: 1, ENABLE_PUSH: 2, MAX_CONCURRENT_STREAMS: 3, INITIAL_WINDOW_SIZE: 4, MAX_FRAME_SIZE: 5, MAX_HEADER_LIST_SIZE: 6 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

export function settings(entries: [number, number][] = [], ack = false): Buffer {
  const p = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => { p.writeUInt16BE(id, i * 6); p.writeUInt32BE(value, i * 6 + 2); });
  return frame(FrameType.SETTINGS, ack ? Flag.ACK : 0, 0, p);
}

export function rstStream(streamId: number, code: number = ErrorCode.CANCEL): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FrameType.RST_STREAM, 0, streamId, p);
}

export function windowUpdate(streamId: number, increment: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(increment);
  return frame(FrameType.WINDOW_UPDATE, 0, streamId, p);
}

/** RFC 7541 5.1 integer with an N-bit prefix; `first` holds the pattern bits above the prefix. */
function hpackInt(value: number, prefixBits: number, first: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([first | value]);
  const out = [first | max];
  let v = value - max;
  while (v >= 128) { out.push((v % 128) + 128); v = Math.floor(v / 128); }
  out.push(v);
  return Buffer.from(out);
}

function hpackString(s: string | Buffer): Buffer {
  const b = typeof s === 'string' ? Buffer.from(s, 'latin1') : s;
  return Buffer.concat([hpackInt(b.length, 7, 0), b]);
}

/** Literal header field without indexing, new name (RFC 7541 6.2.2). */
export function literal(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

/** Literal header field with incremental indexing, new name (6.2.1): the field enters the dynamic table (index 62 when it is the newest). */
export function literalIndexed(name: string, value: string | Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x40]), hpackString(name), hpackString(value)]);
}

/** Indexed header field (6.1): a reference to the static (1..61) or dynamic (62..) table. */
export function indexed(index: number): Buffer {
  return hpackInt(index, 7, 0x80);
}

/** A GET request's header block: pseudo-headers then extra fields, all literals. */
export function requestBlock(authority: string, path = '/', extra: [string, string][] = [], method = 'GET'): Buffer {
  return Buffer.concat([
    literal(':method', method), literal(':scheme', 'http'), literal(':path', path), literal(':authority', authority),
    ...extra.map(([n, v]) => literal(n, v)),
  ]);
}

export function headers(streamId: number, block: Buffer, flags: number = Flag.END_HEADERS | Flag.END_STREAM): Buffer {
  return frame(FrameType.HEADERS, flags, streamId, block);
}

export interface ReceivedFrame { type: number; flags: number; streamId: number; payload: Buffer }

/** A raw HTTP/2 client connection: writes frames as given, parses what comes back, answers SETTINGS with an ACK. */
export class RawH2 {
  readonly frames: ReceivedFrame[] = [];
  closed = false;
  bytesIn = 0;
  private buf = Buffer.alloc(0);
  private readonly waiters: (() => void)[] = [];

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.bytesIn += chunk.length;
      this.buf = Buffer.concat([this.buf, chunk]);
      while (this.buf.length >= 9) {
        const len = this.buf.readUIntBE(0, 3);
        if (this.buf.length < 9 + len) break;
        const f = { type: this.buf[3]!, flags: this.buf[4]!, streamId: this.buf.readUInt32BE(5) & 0x7fffffff, payload: this.buf.subarray(9, 9 + len) };
        this.buf = this.buf.subarray(9 + len);
        // bounded: a test keeps at most this many frames (an attack answered frame for frame must not eat the runner's memory)
        if (this.frames.length < 100_000) this.frames.push(f);
        if (f.type === FrameType.SETTINGS && !(f.flags & Flag.ACK) && !socket.destroyed) socket.write(settings([], true));
      }
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => { this.closed = true; this.wake(); });
  }

  static async connect(port: number, initial: [number, number][] = [], host = '127.0.0.1'): Promise<RawH2> {
    const socket = net.connect(port, host);
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject); });
    const c = new RawH2(socket);
    c.write(Buffer.concat([PREFACE, settings(initial)]));
    return c;
  }

  write(b: Buffer): boolean {
    if (this.socket.destroyed) return false;
    return this.socket.write(b);
  }

  private wake(): void { for (const w of this.waiters.splice(0)) w(); }

  /** Resolves once `pred` holds (checked on every frame and on close); rejects after `ms`. */
  async until(pred: () => boolean, ms: number, what: string): Promise<void> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}; frames seen: ${this.summary()}`);
      await new Promise<void>((resolve) => { const t = setTimeout(resolve, Math.min(left, 100)); this.waiters.push(() => { clearTimeout(t); resolve(); }); });
    }
  }

  goaway(): { lastStreamId: number; code: number; debug: string } | undefined {
    const f = this.frames.find((x) => x.type === FrameType.GOAWAY);
    return f ? { lastStreamId: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4), debug: f.payload.subarray(8).toString() } : undefined;
  }

  rstCode(streamId: number): number | undefined {
    const f = this.frames.find((x) => x.type === FrameType.RST_STREAM && x.streamId === streamId);
    return f ? f.payload.readUInt32BE(0) : undefined;
  }

  summary(): string {
    const counts = new Map<number, number>();
    for (const f of this.frames) counts.set(f.type, (counts.get(f.type) ?? 0) + 1);
    return `${[...counts].map(([t, n]) => `${Object.entries(FrameType).find(([, v]) => v === t)?.[0] ?? t}x${n}`).join(' ')}${this.closed ? ' (closed)' : ''}`;
  }

  close(): void { this.socket.destroy(); }
}
