// Run inside a network namespace (ip netns exec NS node handover-driver.cjs CONFIG): plays the agent's
// part in a hot restart. It owns the listening sockets (0.0.0.0:15001, 127.0.0.1:15000) without accepting
// on them, forks generation 0 of the real proxy bin, and on SIGUSR2 forks generation 1
// and tells generation 0 to drain. It reports on stdout: "ready N", "exited N CODE". SIGUSR2 = restart.
const { fork } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const fs = require('node:fs');

const bin = path.join(__dirname, '..', '..', 'bin', 'mesh-proxy.js');
const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const drainTimeMs = Number(process.argv[3] ?? 3000);

function owned(address, port) {
  const { TCP, constants } = process.binding('tcp_wrap');
  const raw = new TCP(constants.SERVER);
  if (raw.bind(address, port) !== 0) throw new Error(`cannot bind ${address}:${port}`);
  const server = new net.Server();
  server._handle = raw;
  return server;
}
const listener = owned('0.0.0.0', 15001);
const admin = owned('127.0.0.1', 15000);
const children = [];

function generation(epoch) {
  const child = fork(bin, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  children.push(child);
  child.on('message', (m) => { if (m.type === 'ready') console.log(`ready ${epoch}`); });
  child.on('exit', (code) => console.log(`exited ${epoch} ${code}`));
  child.send({ type: 'handle', name: 'listener' }, listener);
  child.send({ type: 'handle', name: 'admin' }, admin);
  child.send({ type: 'config', config });
  child.send({ type: 'start', epoch });
  return child;
}

const old = generation(0);
process.on('SIGUSR2', () => {
  if (children.length !== 1) return;
  generation(1).on('message', (m) => { if (m.type === 'ready') old.send({ type: 'drain', drainTimeMs }); });
});
