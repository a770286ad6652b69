#!/usr/bin/env node
// The Node.js floor for the new-connection figures: a bare node:tls server (client certificate
// required, verified against the CA, as the proxy's inbound) and a bare node:net server, each
// answering every request with a fixed 200 and closing. No proxying, no upstream: what any
// Node.js TLS terminator pays at least per connection.
//   node floor-server.mjs --address A --tls-port P --plain-port P --cert F --key F --ca F
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({ options: { address: { type: 'string' }, 'tls-port': { type: 'string' }, 'plain-port': { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' }, ca: { type: 'string' } } });
const RESPONSE = 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n';

function answer(socket) {
  let head = '';
  socket.setEncoding('latin1');
  socket.on('error', () => socket.destroy());
  socket.on('data', (d) => {
    head += d;
    if (head.includes('\r\n\r\n')) socket.end(RESPONSE);
    else if (head.length > 8192) socket.destroy();
  });
}

const secure = tls.createServer({
  cert: fs.readFileSync(o.cert), key: fs.readFileSync(o.key), ca: fs.readFileSync(o.ca),
  requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'],
}, answer);
secure.on('tlsClientError', () => { /* a failed handshake: the client sees it */ });
secure.listen(Number(o['tls-port']), o.address);
net.createServer(answer).listen(Number(o['plain-port']), o.address);
