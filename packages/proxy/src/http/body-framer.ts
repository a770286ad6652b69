import { HttpParseError, type BodyKind } from './head-parser';

/**
 * Tracks where a message body ends without copying it, so bytes can be passed
 * through unchanged and keep-alive works on both sides. For chunked bodies the
 * chunk metadata is validated byte by byte; data runs are skipped in bulk.
 * `onData` (optional) receives the payload ranges, for de-chunking.
 */

const enum S { Size, SizeExt, SizeLf, Data, DataCr, DataLf, TrailerStart, TrailerLine, TrailerLf, EndLf, Done }

const MAX_CHUNK_SIZE_DIGITS = 13; // < 2^52: far above any real chunk, below float precision

export class BodyFramer {
  done = false;
  private remaining = 0;
  private state: S = S.Size;
  private sizeDigits = 0;
  private chunked = false;
  private untilClose = false;

  constructor(private readonly errorStatus: 400 | 502) {}

  /** Resets for a new body; 'stream' (payload ended by the stream's end) is taken like 'close'. */
  reset(kind: BodyKind, contentLength: number): this {
    this.chunked = kind === 'chunked';
    this.untilClose = kind === 'close' || kind === 'stream';
    this.remaining = kind === 'length' ? contentLength : 0;
    this.state = S.Size;
    this.sizeDigits = 0;
    this.done = kind === 'none' || (kind === 'length' && contentLength === 0);
    return this;
  }

  /**
   * Consumes body bytes from buf[offset..]. Returns the number of bytes that
   * belong to this body; `done` is set when it is complete.
   */
  feed(buf: Buffer, offset: number, onData?: (start: number, end: number) => void): number {
    if (this.done) return 0;
    const avail = buf.length - offset;
    if (this.untilClose) { onData?.(offset, buf.length); return avail; }
    if (!this.chunked) {
      const n = avail < this.remaining ? avail : this.remaining;
      this.remaining -= n;
      if (this.remaining === 0) this.done = true;
      onData?.(offset, offset + n);
      return n;
    }
    return this.feedChunked(buf, offset, onData);
  }

  private fail(msg: string): never {
    throw new HttpParseError(this.errorStatus, `invalid chunked body: ${msg}`);
  }

  private feedChunked(buf: Buffer, offset: number, onData?: (start: number, end: number) => void): number {
    let i = offset;
    const len = buf.length;
    while (i < len) {
      const c = buf[i]!;
      switch (this.state) {
        case S.Size: {
          const v = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
          if (v >= 0) {
            if (++this.sizeDigits > MAX_CHUNK_SIZE_DIGITS) this.fail('chunk size too large');
            this.remaining = this.remaining * 16 + v;
            i++;
          } else if (this.sizeDigits === 0) {
            this.fail('missing chunk size');
          } else if (c === 13) { this.state = S.SizeLf; i++; }
          else if (c === 59 /* ; */) { this.state = S.SizeExt; i++; }
          else this.fail('bad character in chunk size');
          break;
        }
        case S.SizeExt:
          if (c === 13) this.state = S.SizeLf;
          else if (c === 10 || c === 0) this.fail('bare LF in chunk extension');
          i++;
          break;
        case S.SizeLf:
          if (c !== 10) this.fail('chunk size line not ended by CRLF');
          i++;
          this.sizeDigits = 0;
          this.state = this.remaining === 0 ? S.TrailerStart : S.Data;
          break;
        case S.Data: {
          const n = Math.min(len - i, this.remaining);
          onData?.(i, i + n);
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = S.DataCr;
          break;
        }
        case S.DataCr:
          if (c !== 13) this.fail('chunk data not followed by CRLF');
          this.state = S.DataLf;
          i++;
          break;
        case S.DataLf:
          if (c !== 10) this.fail('chunk data not followed by CRLF');
          this.state = S.Size;
          i++;
          break;
        case S.TrailerStart:
          if (c === 13) this.state = S.EndLf;
          else if (c === 10) this.fail('bare LF in trailer');
          else this.state = S.TrailerLine;
          i++;
          break;
        case S.TrailerLine:
          if (c === 13) this.state = S.TrailerLf;
          else if (c === 10) this.fail('bare LF in trailer');
          i++;
          break;
        case S.TrailerLf:
          if (c !== 10) this.fail('trailer line not ended by CRLF');
          this.state = S.TrailerStart;
          i++;
          break;
        case S.EndLf:
          if (c !== 10) this.fail('last chunk not ended by CRLF');
          i++;
          this.state = S.Done;
          this.done = true;
          return i - offset;
        default:
          return i - offset;
      }
    }
    return i - offset;
  }
}
