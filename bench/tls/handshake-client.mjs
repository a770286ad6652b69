#!/usr/bin/env node
// New connection per request, in its own process (its CPU is not the measured side's): `concurrency`
// loops, each opening a connection (TCP, or TCP + a full mTLS handshake: no session resumption),
// sending one GET with `Connection: close` and reading the response to the end. Bounded by
// `seconds`, and each connection by a 5 s timeout. Prints one JSON line: { ok, failed, errors }.
//   node handshake-client.mjs --host H --port P --seconds S --concurrency C [--cert F --key F --ca F --servername N]
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  options: {
    host: { type: 'string' }, port: { type: 'string' }, seconds: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '8' },
    cert: { type: 'string' }, key: { type: 'string' }, ca: { type: 'string' }, servername: { type: 'string' }, hostHeader: { type: 'string', default: 'server' },
  },
});
if (!o.host || !o.port) { console.error('handshake-client: --host and --port are required'); process.exit(2); }
const useTls = o.cert !== undefined;
const tlsOptions = useTls
  ? {
      cert: fs.readFileSync(o.cert), key: fs.readFileSync(o.key), ca: fs.readFileSync(o.ca), servername: o.servername,
      ALPNProtocols: ['http/1.1'], minVersion: 'TLSv1.2',
      // The chain is verified against the CA; the peer's name is not the point of this client.
      checkServerIdentity: () => undefined,
    }
  : undefined;
const request = `GET / HTTP/1.1\r\nHost: ${o.hostHeader}\r\nConnection: close\r\n\r\n`;
const deadline = Date.now() + Number(o.seconds) * 1000;
let ok = 0;
let failed = 0;
const errors = {};

function once() {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      if (!error && data.startsWith('HTTP/1.1 200')) ok++;
      else {
        failed++;
        const why = error ? (error.code ?? error.message) : `response ${JSON.stringify(data.slice(0, 12))}`;
        errors[why] = (errors[why] ?? 0) + 1;
      }
      resolve();
    };
    const port = Number(o.port);
    const socket = useTls
      ? tls.connect({ host: o.host, port, ...tlsOptions }, () => socket.write(request))
      : net.connect({ host: o.host, port }, () => socket.write(request));
    const timer = setTimeout(() => finish(new Error('timeout')), 5000);
    socket.setEncoding('utf8');
    socket.on('data', (d) => { data += d; });
    socket.on('end', () => finish());
    socket.on('close', () => finish());
    socket.on('error', (err) => finish(err));
  });
}

async function loop() {
  while (Date.now() < deadline) await once();
}

await Promise.all(Array.from({ length: Number(o.concurrency) }, loop));
console.log(JSON.stringify({ ok, failed, errors }));
