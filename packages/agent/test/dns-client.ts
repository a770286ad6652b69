// A minimal DNS client for tests: one A query over UDP on the wire, parsed just enough to check
// the answer (rcode and the A records). dig is used too; this one is cheap enough for load loops.
import dgram from 'node:dgram';

function encodeName(name: string): Buffer {
  const parts = name.split('.').filter(Boolean).map((label) => Buffer.concat([Buffer.from([label.length]), Buffer.from(label)]));
  return Buffer.concat([...parts, Buffer.from([0])]);
}

export function buildQuery(id: number, name: string, type = 1): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([header, encodeName(name), tail]);
}

function skipName(buf: Buffer, offset: number): number {
  for (;;) {
    const len = buf[offset];
    if (len === 0) return offset + 1;
    if ((len & 0xc0) === 0xc0) return offset + 2;
    offset += len + 1;
  }
}

export function parseAnswer(buf: Buffer): { id: number; rcode: number; addresses: string[] } {
  const id = buf.readUInt16BE(0);
  const rcode = buf.readUInt16BE(2) & 0xf;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) off = skipName(buf, off) + 4;
  const addresses: string[] = [];
  for (let i = 0; i < an; i++) {
    off = skipName(buf, off);
    const type = buf.readUInt16BE(off);
    const rdlen = buf.readUInt16BE(off + 8);
    if (type === 1 && rdlen === 4) addresses.push([...buf.subarray(off + 10, off + 14)].join('.'));
    off += 10 + rdlen;
  }
  return { id, rcode, addresses };
}

let nextId = 1;

/** One A query; rejects on timeout (a lost datagram is a failure). */
export function queryA(port: number, name: string, timeoutMs = 3000): Promise<{ rcode: number; addresses: string[] }> {
  const id = (nextId = (nextId + 1) & 0xffff);
  const socket = dgram.createSocket('udp4');
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no DNS answer for ${name} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.on('message', (msg) => {
      const answer = parseAnswer(msg);
      if (answer.id !== id) return;
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    });
    socket.send(buildQuery(id, name), port, '127.0.0.1');
  });
}
