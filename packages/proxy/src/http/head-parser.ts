import { absoluteFormAuthority, isValidAuthority } from './authority';

/**
 * A strict HTTP/1.x head parser for the hot path. It works on one latin1 string
 * per head (bytes preserved 1:1) and rejects anything ambiguous rather than
 * guessing: bare LF, obs-fold, whitespace before the colon, bad tokens,
 * conflicting Content-Length / Transfer-Encoding (request smuggling).
 */

export class HttpParseError extends Error {
  constructor(readonly status: 400 | 431 | 501 | 502, message: string) {
    super(message);
    this.name = 'HttpParseError';
  }
}

export interface ParsedHeaders {
  /** Raw names as received, values trimmed; same index in both arrays. */
  names: string[];
  lower: string[];
  values: string[];
}

/** 'stream': payload ended by the end of the stream (HTTP/2, or de-chunked); see http/codec/types.ts. */
export type BodyKind = 'none' | 'length' | 'chunked' | 'close' | 'stream';

export interface RequestHead extends ParsedHeaders {
  method: string;
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1 (and HTTP/2). */
  minor: number;
  protocol: 'HTTP/1.0' | 'HTTP/1.1' | 'HTTP/2';
  bodyKind: BodyKind;
  contentLength: number;
  host: string | undefined;
  /** Connection: close (1.1) or absent keep-alive (1.0). */
  close: boolean;
  /** Lower-cased tokens of the Connection header (hop-by-hop names it lists). */
  connectionTokens: string[] | undefined;
  upgrade: string | undefined;
  expectContinue: boolean;
}

export interface ResponseHead extends ParsedHeaders {
  minor: number;
  status: number;
  reason: string;
  bodyKind: BodyKind;
  contentLength: number;
  close: boolean;
  connectionTokens: string[] | undefined;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: visible chars, SP, HTAB and obs-text; no CTLs (CR/LF/NUL included).
// eslint-disable-next-line no-control-regex -- rejecting control characters is the point
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const TARGET = /^[\x21-\x7e\x80-\xff]+$/;
const DIGITS = /^[0-9]+$/;
const H2C_ONLY = /^\s*h2c\s*$/i;

export interface HeadLimits {
  maxHeadersCount: number;
}

function parseFields(lines: string[], from: number, limits: HeadLimits, out: ParsedHeaders, upstream: boolean): void {
  const fail = (msg: string): never => { throw new HttpParseError(upstream ? 502 : 400, msg); };
  if (lines.length - from > limits.maxHeadersCount) throw new HttpParseError(upstream ? 502 : 431, `more than ${limits.maxHeadersCount} header fields`);
  for (let i = from; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) fail(`malformed header line ${i}`);
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) fail(`invalid header name ${JSON.stringify(name)}`);
    let s = colon + 1;
    let e = line.length;
    while (s < e && (line.charCodeAt(s) === 32 || line.charCodeAt(s) === 9)) s++;
    while (e > s && (line.charCodeAt(e - 1) === 32 || line.charCodeAt(e - 1) === 9)) e--;
    const value = line.slice(s, e);
    if (BAD_VALUE.test(value)) fail(`invalid characters in header ${name}`);
    out.names.push(name);
    out.lower.push(name.toLowerCase());
    out.values.push(value);
  }
}

function splitHead(head: string, upstream: boolean): string[] {
  // Lines end with CRLF; a bare LF or CR anywhere is refused (a smuggling vector).
  const lines = head.split('\r\n');
  for (const l of lines) {
    if (l.includes('\n') || l.includes('\r')) throw new HttpParseError(upstream ? 502 : 400, 'bare CR or LF in message head');
    if (l.length > 0 && (l.charCodeAt(0) === 32 || l.charCodeAt(0) === 9)) throw new HttpParseError(upstream ? 502 : 400, 'obsolete line folding');
  }
  return lines;
}

interface Framing { bodyKind: BodyKind; contentLength: number; close: boolean; connectionTokens: string[] | undefined; teOther: boolean }

function framing(h: ParsedHeaders, minor: number, upstream: boolean): Framing {
  const code = upstream ? 502 : 400;
  let cl: string | undefined;
  let te: string | undefined;
  let connection: string | undefined;
  for (let i = 0; i < h.lower.length; i++) {
    const n = h.lower[i]!;
    if (n === 'content-length') {
      const v = h.values[i]!;
      // "5, 5" style lists are legal if all equal; anything else is refused.
      for (const part of v.split(',')) {
        const p = part.trim();
        if (!DIGITS.test(p) || p.length > 15) throw new HttpParseError(code, `invalid Content-Length ${JSON.stringify(v)}`);
        if (cl !== undefined && cl !== p) throw new HttpParseError(code, 'conflicting Content-Length values');
        cl = p;
      }
    } else if (n === 'transfer-encoding') {
      te = te === undefined ? h.values[i]! : `${te}, ${h.values[i]!}`;
    } else if (n === 'connection') {
      connection = connection === undefined ? h.values[i]! : `${connection}, ${h.values[i]!}`;
    }
  }
  let connectionTokens: string[] | undefined;
  let close = minor === 0;
  if (connection !== undefined) {
    connectionTokens = connection.toLowerCase().split(',').map((t) => t.trim()).filter((t) => t.length > 0);
    if (connectionTokens.includes('close')) close = true;
    else if (minor === 0 && connectionTokens.includes('keep-alive')) close = false;
  }
  if (te !== undefined) {
    if (cl !== undefined) throw new HttpParseError(code, 'both Content-Length and Transfer-Encoding (request smuggling)');
    if (minor === 0 && !upstream) throw new HttpParseError(code, 'Transfer-Encoding in an HTTP/1.0 request');
    const codings = te.toLowerCase().split(',').map((t) => t.trim());
    const last = codings[codings.length - 1];
    if (last === 'chunked') {
      if (codings.indexOf('chunked') !== codings.length - 1) throw new HttpParseError(code, 'chunked applied more than once');
      return { bodyKind: 'chunked', contentLength: -1, close, connectionTokens, teOther: codings.length > 1 };
    }
    // A request whose final coding is not chunked has no reliable length (RFC 9112 6.3).
    if (!upstream) throw new HttpParseError(501, `unsupported Transfer-Encoding ${JSON.stringify(te)}`);
    return { bodyKind: 'close', contentLength: -1, close: true, connectionTokens, teOther: true };
  }
  if (cl !== undefined) {
    const n = Number(cl);
    return { bodyKind: n === 0 ? 'none' : 'length', contentLength: n, close, connectionTokens, teOther: false };
  }
  return { bodyKind: upstream ? 'close' : 'none', contentLength: upstream ? -1 : 0, close, connectionTokens, teOther: false };
}

/** `head` is the latin1 text before the blank line (without the final CRLFCRLF). */
export function parseRequestHead(head: string, limits: HeadLimits): RequestHead {
  const lines = splitHead(head, false);
  const requestLine = lines[0]!;
  const sp1 = requestLine.indexOf(' ');
  const sp2 = requestLine.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || requestLine.indexOf(' ', sp2 + 1) >= 0) throw new HttpParseError(400, 'malformed request line');
  const method = requestLine.slice(0, sp1);
  const target = requestLine.slice(sp1 + 1, sp2);
  const version = requestLine.slice(sp2 + 1);
  if (!TOKEN.test(method)) throw new HttpParseError(400, 'invalid method');
  if (!TARGET.test(target)) throw new HttpParseError(400, 'invalid request target');
  let minor: number;
  if (version === 'HTTP/1.1') minor = 1;
  else if (version === 'HTTP/1.0') minor = 0;
  else throw new HttpParseError(400, `unsupported protocol version ${JSON.stringify(version)}`);
  const out: RequestHead = {
    names: [], lower: [], values: [], method, target, minor, protocol: minor === 1 ? 'HTTP/1.1' : 'HTTP/1.0', bodyKind: 'none', contentLength: 0, host: undefined,
    close: false, connectionTokens: undefined, upgrade: undefined, expectContinue: false,
  };
  parseFields(lines, 1, limits, out, false);
  const f = framing(out, minor, false);
  out.bodyKind = f.bodyKind;
  out.contentLength = f.contentLength;
  out.close = f.close;
  out.connectionTokens = f.connectionTokens;
  let hosts = 0;
  for (let i = 0; i < out.lower.length; i++) {
    const n = out.lower[i]!;
    if (n === 'host') { hosts++; out.host = out.values[i]; }
    else if (n === 'upgrade') out.upgrade = out.values[i];
    else if (n === 'expect' && out.values[i]!.toLowerCase() === '100-continue') out.expectContinue = true;
  }
  if (hosts > 1) throw new HttpParseError(400, 'more than one Host header');
  if (hosts === 0 && minor === 1) throw new HttpParseError(400, 'missing Host header');
  // RFC 9112 3.2 / 3.2.2: the Host value must be uri-host [":" port]. An empty one names no authority:
  // accepted only with an absolute-form target, whose authority replaces it; otherwise nothing to route by.
  const targetAuthority = absoluteFormAuthority(target);
  if (out.host !== undefined && (out.host === '' ? targetAuthority === undefined : !isValidAuthority(out.host))) {
    throw new HttpParseError(400, out.host === '' ? 'empty Host header' : `invalid Host header ${JSON.stringify(out.host)}`);
  }
  if (targetAuthority !== undefined && !isValidAuthority(targetAuthority)) throw new HttpParseError(400, `invalid authority ${JSON.stringify(targetAuthority)} in the request target`);
  if (out.upgrade !== undefined && !(f.connectionTokens?.includes('upgrade'))) out.upgrade = undefined;
  // `Upgrade: h2c` (RFC 7540 3.2, removed by RFC 9113): ignored and answered over HTTP/1.1, as RFC 9110 7.8
  // allows (node:http2 cannot take over an upgraded stream 1); h2c clients use prior knowledge instead
  if (out.upgrade !== undefined && H2C_ONLY.test(out.upgrade)) out.upgrade = undefined;
  return out;
}

export function parseResponseHead(head: string, limits: HeadLimits, requestMethod: string): ResponseHead {
  const lines = splitHead(head, true);
  const statusLine = lines[0]!;
  if (!statusLine.startsWith('HTTP/1.') || statusLine.length < 12 || statusLine.charCodeAt(8) !== 32) throw new HttpParseError(502, 'malformed status line');
  const minorChar = statusLine.charCodeAt(7);
  if (minorChar !== 48 && minorChar !== 49) throw new HttpParseError(502, 'unsupported upstream protocol version');
  const codeText = statusLine.slice(9, 12);
  if (!/^[1-5][0-9][0-9]$/.test(codeText) || (statusLine.length > 12 && statusLine.charCodeAt(12) !== 32)) throw new HttpParseError(502, 'malformed status code');
  const status = Number(codeText);
  const out: ResponseHead = {
    names: [], lower: [], values: [], minor: minorChar - 48, status, reason: statusLine.slice(13),
    bodyKind: 'none', contentLength: 0, close: false, connectionTokens: undefined,
  };
  parseFields(lines, 1, limits, out, true);
  const f = framing(out, out.minor, true);
  out.close = f.close;
  out.connectionTokens = f.connectionTokens;
  if (requestMethod === 'HEAD' || status < 200 || status === 204 || status === 304) {
    out.bodyKind = 'none';
    out.contentLength = 0;
  } else {
    out.bodyKind = f.bodyKind;
    out.contentLength = f.contentLength;
    if (f.bodyKind === 'close') out.close = true;
  }
  return out;
}
