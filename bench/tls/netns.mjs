// Two hosts for the mTLS benchmark: network namespaces joined by a veth pair (as the agent's and the
// e2e tests' createNsPair: lo up, 198.18.0.0/15 addresses, a default route through the peer), and
// the inbound capture rule of host B (PREROUTING REDIRECT of a service port to the proxy's listener,
// so the proxy reads SO_ORIGINAL_DST as in production). Nothing touches the machine's own namespace.
import { execFileSync } from 'node:child_process';

function run(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`bench/tls: ${cmd} ${args.join(' ')} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}
export const inNs = (ns, cmd, args) => run('ip', ['netns', 'exec', ns, cmd, ...args]);

/** Why the namespaces cannot be made here, or undefined. */
export function netnsUnavailable() {
  if (process.getuid?.() !== 0) return 'needs root (ip netns, iptables)';
  for (const tool of ['ip', 'iptables']) {
    try { execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }); } catch { return `needs ${tool}`; }
  }
  return undefined;
}

export function createNsPair(tag, subnet) {
  const a = `bench-${tag}-a-${process.pid}`;
  const b = `bench-${tag}-b-${process.pid}`;
  const ipA = `198.18.${subnet}.1`;
  const ipB = `198.18.${subnet}.2`;
  const remove = () => { for (const ns of [a, b]) { try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }); } catch { /* not there */ } } };
  remove();
  try {
    run('ip', ['netns', 'add', a]);
    run('ip', ['netns', 'add', b]);
    const va = `bta${process.pid % 100000}`;
    const vb = `btb${process.pid % 100000}`;
    run('ip', ['link', 'add', va, 'netns', a, 'type', 'veth', 'peer', 'name', vb, 'netns', b]);
    for (const [ns, dev, ip, peer] of [[a, va, ipA, ipB], [b, vb, ipB, ipA]]) {
      inNs(ns, 'ip', ['link', 'set', 'lo', 'up']);
      inNs(ns, 'ip', ['addr', 'add', `${ip}/24`, 'dev', dev]);
      inNs(ns, 'ip', ['link', 'set', dev, 'up']);
      inNs(ns, 'ip', ['route', 'add', 'default', 'via', peer]);
    }
  } catch (err) {
    remove();
    throw err;
  }
  return { a, b, ipA, ipB, remove };
}

/** Host `ns`'s inbound capture of `address:port` to the proxy listener on `listenerPort`. */
export function captureInbound(ns, address, port, listenerPort) {
  inNs(ns, 'iptables', ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '-d', address, '--dport', String(port), '-j', 'REDIRECT', '--to-ports', String(listenerPort)]);
}
