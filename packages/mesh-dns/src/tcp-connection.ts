import type net from 'node:net';

export interface TcpLimits {
  /** close a connection that sends nothing for this long */
  idleTimeoutMs: number;
  /** queries of one connection being answered at once; reading pauses beyond this */
  maxInFlight: number;
}

/**
 * Serves one DNS-over-TCP connection: two-byte length framing, answers written as they complete
 * (DNS over TCP allows any order), at most `maxInFlight` queries pending (then reading pauses, so a
 * client that pipelines without reading cannot grow our memory), an idle timeout for the rest.
 */
export function serveTcpConnection(socket: net.Socket, limits: TcpLimits, answer: (query: Buffer) => Buffer | undefined | Promise<Buffer | undefined>): void {
  let pending: Buffer = Buffer.alloc(0);
  let inFlight = 0;
  let closed = false;
  socket.setNoDelay(true);
  socket.setTimeout(limits.idleTimeoutMs, () => socket.destroy());
  socket.on('error', () => socket.destroy());
  socket.on('close', () => {
    closed = true;
  });

  const send = (response: Buffer | undefined): void => {
    // the client may have gone while its upstream query was in flight: nothing to answer then
    if (closed || socket.destroyed || response === undefined) return;
    const frame = Buffer.allocUnsafe(2 + response.length);
    frame.writeUInt16BE(response.length, 0);
    response.copy(frame, 2);
    socket.write(frame);
  };

  const settle = (): void => {
    inFlight--;
    if (!closed && socket.isPaused() && inFlight < limits.maxInFlight) {
      socket.resume();
      drain();
    }
  };

  const drain = (): void => {
    while (!closed && pending.length >= 2 && inFlight < limits.maxInFlight) {
      const len = pending.readUInt16BE(0);
      if (pending.length < 2 + len) return;
      const query = Buffer.from(pending.subarray(2, 2 + len));
      pending = pending.subarray(2 + len);
      if (len === 0) continue;
      inFlight++;
      let result: Buffer | undefined | Promise<Buffer | undefined>;
      try {
        result = answer(query);
      } catch {
        result = undefined;
      }
      if (result instanceof Promise) {
        result.then(send, () => undefined).finally(settle);
      } else {
        send(result);
        inFlight--;
      }
    }
    if (inFlight >= limits.maxInFlight) socket.pause();
  };

  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    drain();
  });
}
