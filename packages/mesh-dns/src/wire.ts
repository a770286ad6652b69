// Hand-written DNS wire handling for the hot path: parse the question straight from the raw
// buffer and build answers from precomputed bytes. dns-packet is used only off the hot path.

export const TYPE_A = 1;
export const TYPE_NS = 2;
export const TYPE_SOA = 6;
export const TYPE_AAAA = 28;
export const TYPE_OPT = 41;
export const CLASS_IN = 1;

export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const RCODE_NOTIMP = 4;

const HEADER_LEN = 12;
const MAX_NAME_WIRE_LEN = 255;
const MAX_LABEL_LEN = 63;

/** What the hot path needs from a query. The name stays in the buffer: `queryKey()` makes a string only off the hot path. */
export interface ParsedQuery {
  id: number;
  /** FNV-1a over the lower-cased wire form of the name (length bytes included), for the name table */
  hash: number;
  /** offset just past the name's final zero byte */
  nameEnd: number;
  /** false when a label holds a '.' or a byte outside printable ASCII: never a mesh name */
  plainName: boolean;
  qtype: number;
  qclass: number;
  /** offset just past the question section */
  questionEnd: number;
  /** true when the additional section starts with an OPT record (EDNS0) */
  edns: boolean;
  /** the UDP payload size the client advertised (512 without EDNS) */
  udpSize: number;
  /** the DNSSEC OK bit of the client's OPT record */
  dnssecOk: boolean;
}

/** Why a packet is not a query the server can answer. `drop` means: send nothing back. */
export type QueryProblem = 'drop' | 'formerr' | 'notimp';

/** ASCII lower-casing by table lookup: one load per byte instead of two compares. */
const LOWER = new Uint8Array(256).map((_, c) => (c >= 0x41 && c <= 0x5a ? c + 0x20 : c));
/** 1 for bytes a plain (cacheable, printable) label holds: printable ASCII except '.' */
const PLAIN = new Uint8Array(256).map((_, c) => (c >= 0x21 && c <= 0x7e && c !== 0x2e ? 1 : 0));

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** The hash parseQuery computes, for a lower-cased wire-format name held in `wire`. */
export function hashWireName(wire: Buffer): number {
  let hash = FNV_OFFSET;
  for (let i = 0; i < wire.length; i++) hash = Math.imul(hash ^ wire[i], FNV_PRIME);
  return hash >>> 0;
}

/** A presentation name ('a.b', no trailing dot) in lower-cased wire form, without the final zero byte. */
export function toWireName(name: string): Buffer {
  const parts = name.toLowerCase().split('.').filter((label) => label.length > 0);
  return Buffer.concat(parts.map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label, 'latin1')])));
}

/**
 * Parses a query's header and single question without allocating strings. Returns a problem
 * instead of throwing: bad input is ordinary here. Responses (QR set) and packets shorter than a
 * header are dropped; QDCOUNT other than 1, answers in a query, compression in the question,
 * oversized labels or names and truncated questions give FORMERR; opcodes other than QUERY give NOTIMP.
 * `len`: the datagram's length when `buf` is a larger receive slot (the batched UDP path).
 */
export function parseQuery(buf: Buffer, len: number = buf.length): ParsedQuery | QueryProblem {
  if (len < HEADER_LEN) return 'drop';
  const flagsHi = buf[2];
  if (flagsHi & 0x80) return 'drop'; // a response: never answer one (reflection loops)
  if ((flagsHi >> 3) & 0x0f) return 'notimp';
  if (buf[4] !== 0 || buf[5] !== 1) return 'formerr';
  if (buf[6] !== 0 || buf[7] !== 0 || buf[8] !== 0 || buf[9] !== 0) return 'formerr';

  let pos = HEADER_LEN;
  let hash = FNV_OFFSET;
  let plain = true;
  for (;;) {
    if (pos >= len) return 'formerr';
    const labelLen = buf[pos];
    if (labelLen === 0) break;
    if (labelLen > MAX_LABEL_LEN) return 'formerr'; // also rejects compression pointers (0xC0) in a question
    const end = pos + 1 + labelLen;
    if (end > len || end - HEADER_LEN > MAX_NAME_WIRE_LEN - 1) return 'formerr';
    hash = Math.imul(hash ^ labelLen, FNV_PRIME);
    for (let i = pos + 1; i < end; i++) {
      const c = LOWER[buf[i]];
      plain = plain && PLAIN[c] === 1;
      hash = Math.imul(hash ^ c, FNV_PRIME);
    }
    pos = end;
  }
  const nameEnd = pos + 1;
  if (nameEnd + 4 > len) return 'formerr';
  const qtype = (buf[nameEnd] << 8) | buf[nameEnd + 1];
  const qclass = (buf[nameEnd + 2] << 8) | buf[nameEnd + 3];
  const questionEnd = nameEnd + 4;

  let edns = false;
  let udpSize = 512;
  let dnssecOk = false;
  // EDNS0: an OPT record (root name, type 41) first in the additional section.
  if ((buf[10] !== 0 || buf[11] !== 0) && questionEnd + 11 <= len && buf[questionEnd] === 0 && buf[questionEnd + 1] === 0 && buf[questionEnd + 2] === TYPE_OPT) {
    edns = true;
    udpSize = Math.max(512, (buf[questionEnd + 3] << 8) | buf[questionEnd + 4]);
    dnssecOk = (buf[questionEnd + 7] & 0x80) !== 0;
  }
  return { id: (buf[0] << 8) | buf[1], hash: hash >>> 0, nameEnd, plainName: plain, qtype, qclass, questionEnd, edns, udpSize, dnssecOk };
}

/** True when the query's name equals `wire` (lower-cased wire form without the zero byte), ignoring case. */
export function nameEquals(buf: Buffer, q: ParsedQuery, wire: Buffer): boolean {
  if (q.nameEnd - 1 - HEADER_LEN !== wire.length) return false;
  for (let i = 0; i < wire.length; i++) {
    if (LOWER[buf[HEADER_LEN + i]] !== wire[i]) return false;
  }
  return true;
}

/** The query's name lower-cased, labels joined by '.', no trailing dot ('' for the root). Slow path only. */
export function queryKey(buf: Buffer, q: ParsedQuery): string {
  const labels: string[] = [];
  let pos = HEADER_LEN;
  while (pos < q.nameEnd - 1) {
    const labelLen = buf[pos];
    labels.push(buf.toString('latin1', pos + 1, pos + 1 + labelLen).toLowerCase());
    pos += 1 + labelLen;
  }
  return labels.join('.');
}

/** The OPT record a local answer carries when the query had one: UDP size 1232, no options. */
const LOCAL_OPT = Buffer.from([0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);

/** The answer record of a mesh name: a pointer to the question name, type A, class IN, TTL, the VIP. */
export function buildARecord(vip: string, ttl: number): Buffer {
  const rr = Buffer.alloc(16);
  rr.writeUInt16BE(0xc00c, 0);
  rr.writeUInt16BE(TYPE_A, 2);
  rr.writeUInt16BE(CLASS_IN, 4);
  rr.writeUInt32BE(ttl >>> 0, 6);
  rr.writeUInt16BE(4, 10);
  const octets = vip.split('.').map((part) => Number(part));
  for (let i = 0; i < 4; i++) rr[12 + i] = octets[i];
  return rr;
}

/**
 * An authoritative answer for a local name: the query's header (ID, opcode, RD) and question
 * bytes copied as asked (0x20 case kept), then `answer` (or no answer: NOERROR, empty).
 */
export function buildLocalAnswer(query: Buffer, q: ParsedQuery, answer: Buffer | undefined): Buffer {
  const out = Buffer.allocUnsafe(localAnswerLength(q, answer));
  writeLocalAnswer(query, q, answer, out);
  return out;
}

/** The length of buildLocalAnswer's answer: at most 271 (the longest question) + 16 + 11 bytes. */
export function localAnswerLength(q: ParsedQuery, answer: Buffer | undefined): number {
  return q.questionEnd + (answer === undefined ? 0 : answer.length) + (q.edns ? LOCAL_OPT.length : 0);
}

/** buildLocalAnswer into `out` from offset 0 (an answer slot of the batched UDP path); returns the length. */
export function writeLocalAnswer(query: Buffer, q: ParsedQuery, answer: Buffer | undefined, out: Buffer): number {
  const qEnd = q.questionEnd;
  const answerLen = answer === undefined ? 0 : answer.length;
  const optLen = q.edns ? LOCAL_OPT.length : 0;
  // Byte loops, not Buffer#copy: for a few dozen bytes the call overhead of copy() dominates.
  for (let i = 0; i < qEnd; i++) out[i] = query[i];
  out[2] = 0x84 | (query[2] & 0x79); // QR, AA, keep opcode and RD; clear TC
  out[3] = 0x80; // RA, rcode NOERROR
  out[6] = 0;
  out[7] = answerLen === 0 ? 0 : 1;
  out[8] = 0;
  out[9] = 0;
  out[10] = 0;
  out[11] = optLen === 0 ? 0 : 1;
  for (let i = 0; i < answerLen; i++) out[qEnd + i] = answer![i];
  for (let i = 0; i < optLen; i++) out[qEnd + answerLen + i] = LOCAL_OPT[i];
  return qEnd + answerLen + optLen;
}

/**
 * An error answer (SERVFAIL, FORMERR, NOTIMP): the header with the rcode, and the question when it
 * could be parsed (`questionEnd`), otherwise no question.
 */
export function buildErrorAnswer(query: Buffer, rcode: number, questionEnd?: number): Buffer {
  const end = questionEnd ?? HEADER_LEN;
  const out = Buffer.alloc(end);
  query.copy(out, 0, 0, Math.min(end, query.length));
  out[2] = 0x80 | (query[2] & 0x79);
  out[3] = 0x80 | (rcode & 0x0f);
  out[4] = 0;
  out[5] = questionEnd === undefined ? 0 : 1;
  out.fill(0, 6, 12);
  return out;
}

/** Compares the question of `answer` with that of `query`: names case-insensitively, type and class exactly. */
export function sameQuestion(query: Buffer, queryQuestionEnd: number, answer: Buffer): boolean {
  if (answer.length < queryQuestionEnd) return false;
  if (answer[4] !== 0 || answer[5] !== 1) return false;
  for (let i = HEADER_LEN; i < queryQuestionEnd; i++) {
    let a = query[i];
    let b = answer[i];
    if (a >= 0x41 && a <= 0x5a) a += 0x20;
    if (b >= 0x41 && b <= 0x5a) b += 0x20;
    if (a !== b) return false;
  }
  return true;
}

/** Skips a possibly compressed name; returns the offset after it, or -1 when malformed. */
function skipName(buf: Buffer, pos: number): number {
  for (let hops = 0; hops < 128; hops++) {
    if (pos >= buf.length) return -1;
    const len = buf[pos];
    if (len === 0) return pos + 1;
    if ((len & 0xc0) === 0xc0) return pos + 2 <= buf.length ? pos + 2 : -1;
    if (len > MAX_LABEL_LEN) return -1;
    pos += 1 + len;
  }
  return -1;
}

/** Where the TTLs of an answer are and how long it may be cached. */
export interface AnswerLayout {
  rcode: number;
  truncated: boolean;
  /** offsets of every TTL field except the OPT record's */
  ttlOffsets: number[];
  /** seconds: the smallest TTL of the answers, or for negative answers the SOA's min(TTL, MINIMUM); undefined = do not cache */
  cacheTtl: number | undefined;
}

/** Walks an upstream answer's records (answer, authority, additional) for caching. Undefined when malformed. */
export function layoutAnswer(buf: Buffer): AnswerLayout | undefined {
  if (buf.length < HEADER_LEN) return undefined;
  const rcode = buf[3] & 0x0f;
  const truncated = (buf[2] & 0x02) !== 0;
  const qd = buf.readUInt16BE(4);
  const counts = [buf.readUInt16BE(6), buf.readUInt16BE(8), buf.readUInt16BE(10)];
  let pos = HEADER_LEN;
  for (let i = 0; i < qd; i++) {
    pos = skipName(buf, pos);
    if (pos < 0 || pos + 4 > buf.length) return undefined;
    pos += 4;
  }
  const ttlOffsets: number[] = [];
  let minAnswerTtl = Infinity;
  let soaTtl: number | undefined;
  for (let section = 0; section < 3; section++) {
    for (let i = 0; i < counts[section]; i++) {
      pos = skipName(buf, pos);
      if (pos < 0 || pos + 10 > buf.length) return undefined;
      const type = buf.readUInt16BE(pos);
      const ttl = buf.readUInt32BE(pos + 4);
      const rdlen = buf.readUInt16BE(pos + 8);
      const rdata = pos + 10;
      if (rdata + rdlen > buf.length) return undefined;
      if (type !== TYPE_OPT) {
        ttlOffsets.push(pos + 4);
        if (section === 0) minAnswerTtl = Math.min(minAnswerTtl, ttl);
        if (section === 1 && type === TYPE_SOA) {
          // MINIMUM is the last 4 bytes of the SOA rdata
          const minimum = rdlen >= 22 ? buf.readUInt32BE(rdata + rdlen - 4) : 0;
          soaTtl = Math.min(ttl, minimum);
        }
      }
      pos = rdata + rdlen;
    }
  }
  let cacheTtl: number | undefined;
  if (counts[0] > 0 && (rcode === RCODE_NOERROR)) cacheTtl = minAnswerTtl;
  else if ((rcode === RCODE_NXDOMAIN || rcode === RCODE_NOERROR) && soaTtl !== undefined) cacheTtl = soaTtl;
  if (truncated || (cacheTtl !== undefined && cacheTtl <= 0)) cacheTtl = undefined;
  return { rcode, truncated, ttlOffsets, cacheTtl };
}

