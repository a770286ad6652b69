#!/usr/bin/env node
// One query in flight: send, wait for the answer, send the next. Prints JSON {n, p50, p99} in µs.
// Bounded by a count and a time limit. Used by run.mjs for both servers, so client overhead is the same.
import dgram from 'node:dgram';

const [port, seconds = '3', name = 'svc-1.default.svc.cluster.local'] = process.argv.slice(2);
const MAX = 200_000;
const labels = name.split('.');
const query = Buffer.concat([
  Buffer.from([0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]),
  ...labels.map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
  Buffer.from([0, 0, 1, 0, 1]),
]);
const socket = dgram.createSocket('udp4');
const samples = [];
const deadline = Date.now() + Number(seconds) * 1000;
let id = 0;
let sentAt = 0n;
let timer;

function send() {
  if (samples.length >= MAX || Date.now() >= deadline) return finish();
  id = (id + 1) & 0xffff;
  query.writeUInt16BE(id, 0);
  sentAt = process.hrtime.bigint();
  socket.send(query, Number(port), '127.0.0.1');
  clearTimeout(timer);
  timer = setTimeout(send, 1000); // a lost datagram: go on with the next
}

function finish() {
  clearTimeout(timer);
  socket.close();
  samples.sort((a, b) => a - b);
  const at = (p) => samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))];
  process.stdout.write(JSON.stringify({ n: samples.length, p50: at(50), p99: at(99) }) + '\n');
}

socket.on('message', (msg) => {
  if (msg.readUInt16BE(0) !== id) return;
  samples.push(Number(process.hrtime.bigint() - sentAt) / 1000);
  send();
});
socket.bind(0, '127.0.0.1', send);
