#!/usr/bin/env node
// Before the test suite: are the system tools the tests drive there? As root, install the
// missing ones (scripts/install-test-deps.sh); otherwise say exactly what to run.
import { execFileSync } from 'node:child_process';

const tools = ['iptables', 'iptables-save', 'ip', 'dig', 'dnsmasq', 'unbound', 'etcd', 'nginx', 'promtool', 'curl', 'chromium'];
const missing = tools.filter((tool) => {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore', env: { ...process.env, PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
    return false;
  } catch {
    return true;
  }
});
if (missing.length === 0) process.exit(0);
const isRoot = process.getuid?.() === 0;
if (!isRoot) {
  console.error(`ensure-test-deps: missing ${missing.join(', ')}; install them once with: sudo bash scripts/install-test-deps.sh`);
  process.exit(3);
}
console.log(`ensure-test-deps: installing ${missing.join(', ')} from Debian's packages`);
execFileSync('bash', ['scripts/install-test-deps.sh'], { stdio: 'inherit' });
