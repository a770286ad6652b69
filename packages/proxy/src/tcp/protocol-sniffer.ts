// Istio's protocol sniffing for an inbound port declared `auto` (issue 15): the first bytes tell an
// HTTP/1.x request line, the HTTP/2 preface or a TLS ClientHello (all taken by today's HTTP path) from
// anything else (TCP). A server-first protocol sends nothing, so the wait is bounded: nothing (or only
// an ambiguous prefix) within `timeoutMs` is TCP.
import type net from 'node:net';

export type SniffedProtocol = 'http' | 'tcp';
type Scan = SniffedProtocol | 'more';

/** Request-line methods the HTTP path serves, and "PRI" (the h2 preface starts "PRI * HTTP/2.0"). */
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE', 'PRI'].map((m) => Buffer.from(`${m} `, 'latin1'));
const TLS_HANDSHAKE = 0x16;

/** 'http': a method and a space, or a TLS handshake record (0x16 0x03); 'more': a strict prefix of one; 'tcp': anything else. */
export function scanProtocol(buf: Buffer): Scan {
  if (buf.length === 0) return 'more';
  if (buf[0] === TLS_HANDSHAKE) {
    if (buf.length < 2) return 'more';
    return buf[1] === 0x03 ? 'http' : 'tcp';
  }
  let prefix = false;
  for (const m of METHODS) {
    const n = Math.min(buf.length, m.length);
    if (buf.compare(m, 0, n, 0, n) !== 0) continue;
    if (n === m.length) return 'http';
    prefix = true;
  }
  return prefix ? 'more' : 'tcp';
}

/**
 * Waits (at most `timeoutMs`) for enough bytes to decide; the bytes read are handed back to the caller
 * to put back in front of the socket's stream. `decided` is called once, never after the socket closed.
 */
export function sniffProtocol(socket: net.Socket, timeoutMs: number, decided: (protocol: SniffedProtocol, read: Buffer | undefined) => void,
  gone: () => void, onInternalError: (err: unknown, where: string) => void): { cancel(): void } {
  let buf: Buffer | undefined;
  let finished = false;
  const finish = (): void => {
    finished = true;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('close', onClose);
    socket.off('error', onError);
  };
  const decide = (protocol: SniffedProtocol): void => {
    finish();
    socket.pause();
    try { decided(protocol, buf); } catch (err) { onInternalError(err, 'protocol sniff'); socket.destroy(); }
  };
  const onData = (chunk: Buffer): void => {
    buf = buf === undefined ? chunk : Buffer.concat([buf, chunk]);
    const scan = scanProtocol(buf);
    if (scan !== 'more') decide(scan);
  };
  const onClose = (): void => { finish(); try { gone(); } catch (err) { onInternalError(err, 'protocol sniff close'); } };
  const onError = (): void => { /* the close that follows ends the sniff */ };
  const timer = setTimeout(() => { if (!finished) decide('tcp'); }, timeoutMs);
  socket.on('data', onData);
  socket.on('close', onClose);
  socket.on('error', onError);
  return { cancel: () => { if (!finished) { finish(); socket.destroy(); } } };
}
