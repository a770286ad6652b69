// `mesh-agent ca ...` as an operator meets it: files written, what to do next, exit 2 with the file named on bad input.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { tempDir } from './agent-fixture';

const agentBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../bin/mesh-agent.js');

function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
const agent = (args: string[]) => run(process.execPath, [agentBin, ...args]);
const openssl = (args: string[]) => run('openssl', args);

const dirs: string[] = [];
function scratch(): string {
  const dir = tempDir('mesh-agent-pki-cli-');
  dirs.push(dir);
  return dir;
}
afterAll(() => {
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
});

async function verifyLeaf(dir: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return openssl(['verify', '-CAfile', path.join(dir, 'root-cert.pem'), '-untrusted', path.join(dir, 'cert-chain.pem'), path.join(dir, 'cert-chain.pem')]);
}

/** An operator's PKI made with openssl alone: a root, an intermediate (SEC1 EC key), a CA:FALSE leaf. */
async function opensslPki(dir: string): Promise<void> {
  const ext = path.join(dir, 'ext.cnf');
  fs.writeFileSync(ext, '[ca]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n[leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n');
  const steps: string[][] = [
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${dir}/root.key`, '-out', `${dir}/root.pem`, '-subj', '/O=example.org/CN=Corp Root', '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${dir}/int.key`],
    ['req', '-new', '-key', `${dir}/int.key`, '-out', `${dir}/int.csr`, '-subj', '/O=example.org/CN=Corp Mesh Intermediate'],
    ['x509', '-req', '-in', `${dir}/int.csr`, '-CA', `${dir}/root.pem`, '-CAkey', `${dir}/root.key`, '-CAcreateserial', '-out', `${dir}/int.pem`, '-days', '10', '-extfile', ext, '-extensions', 'ca'],
    ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${dir}/leaf.key`],
    ['req', '-new', '-key', `${dir}/leaf.key`, '-out', `${dir}/leaf.csr`, '-subj', '/CN=not-a-ca'],
    ['x509', '-req', '-in', `${dir}/leaf.csr`, '-CA', `${dir}/int.pem`, '-CAkey', `${dir}/int.key`, '-CAcreateserial', '-out', `${dir}/leaf.pem`, '-days', '1', '-extfile', ext, '-extensions', 'leaf'],
  ];
  for (const step of steps) {
    const res = await openssl(step);
    if (res.code !== 0) throw new Error(`openssl ${step.join(' ')}: ${res.stderr}`);
  }
  expect(fs.readFileSync(`${dir}/int.key`, 'utf8')).toContain('BEGIN EC PRIVATE KEY');
}

describe('mesh-agent ca', { timeout: 120_000 }, () => {
  it('init, intermediate, issue, show: a root, a host CA, a workload certificate openssl verifies; says what it wrote and what next', async () => {
    const dir = scratch();
    const init = await agent(['ca', 'init', '--dir', `${dir}/root`, '--trust-domain', 'example.org']);
    expect(init.stderr).toBe('');
    expect(init.code).toBe(0);
    expect(init.stdout).toContain(`created a mesh root CA for trust domain example.org in ${dir}/root`);
    expect(init.stdout).toContain(`${dir}/root/ca-key.pem     its private key (mode 0600)`);
    expect(init.stdout).toContain(`mesh-agent ca intermediate --root-dir ${dir}/root --dir OUT --name HOST`);
    expect(fs.statSync(`${dir}/root/ca-key.pem`).mode & 0o777).toBe(0o600);
    expect(fs.statSync(`${dir}/root`).mode & 0o777).toBe(0o700);

    const before = fs.readFileSync(`${dir}/root/ca-key.pem`, 'utf8');
    const again = await agent(['ca', 'init', '--dir', `${dir}/root`]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain(`[MESH_PKI_CA_EXISTS]: ${dir}/root already holds a CA`);
    expect(again.stderr).toContain('--force');
    expect(fs.readFileSync(`${dir}/root/ca-key.pem`, 'utf8')).toBe(before);

    const inter = await agent(['ca', 'intermediate', '--root-dir', `${dir}/root`, '--dir', `${dir}/host-a`, '--name', 'host-a', '--ttl-days', '7']);
    expect(inter.code).toBe(0);
    expect(inter.stdout).toContain(`created the CA of host-a in ${dir}/host-a, signed by ${dir}/root`);
    expect(inter.stdout).toContain('set mtls.ca.dir');

    const issue = await agent(['ca', 'issue', '--ca-dir', `${dir}/host-a`, '--service', 'order', '--out', `${dir}/order`, '--ttl-hours', '2']);
    expect(issue.code).toBe(0);
    // the trust domain comes from the CA when not given
    expect(issue.stdout).toContain('issued spiffe://example.org/ns/default/sa/order');
    expect(fs.statSync(`${dir}/order/key.pem`).mode & 0o777).toBe(0o600);
    const verified = await verifyLeaf(`${dir}/order`);
    expect(verified.stdout).toContain(': OK');
    const text = await openssl(['x509', '-noout', '-ext', 'subjectAltName', '-in', `${dir}/order/cert-chain.pem`]);
    expect(text.stdout).toContain('URI:spiffe://example.org/ns/default/sa/order');

    const byId = await agent(['ca', 'issue', '--ca-dir', `${dir}/root`, '--spiffe-id', 'spiffe://example.org/ns/pay/sa/api', '--out', `${dir}/api`]);
    expect(byId.code).toBe(0);
    expect((await verifyLeaf(`${dir}/api`)).code).toBe(0);

    const show = await agent(['ca', 'show', '--dir', `${dir}/host-a`]);
    expect(show.code).toBe(0);
    expect(show.stdout).toContain(`${dir}/host-a/ca-cert.pem (chain of 2: 1 parent(s) up to the root)`);
    expect(show.stdout).toMatch(/subject: +O=example\.org, CN=host-a/);
    expect(show.stdout).toMatch(/not after: +\S+ \(6 days left\)/);
    expect(show.stdout).toContain(`${dir}/host-a/root-cert.pem`);
    expect(show.stdout).toMatch(/serial: +[0-9a-f]{32}/);
  });

  it("init --from-intermediate takes an operator's openssl-made intermediate (SEC1 key) and issues leaves that chain to the operator's root", async () => {
    const pki = scratch();
    await opensslPki(pki);
    const dir = `${pki}/mesh-ca`;
    const res = await agent(['ca', 'init', '--dir', dir, '--from-intermediate', `${pki}/int.pem`, '--key', `${pki}/int.key`, '--root', `${pki}/root.pem`]);
    expect(res.stderr).toBe('');
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(`imported the intermediate CA O=example.org, CN=Corp Mesh Intermediate into ${dir}`);
    expect(fs.readFileSync(`${dir}/cert-chain.pem`, 'utf8').match(/BEGIN CERTIFICATE/g)).toHaveLength(2);
    expect(fs.statSync(`${dir}/ca-key.pem`).mode & 0o777).toBe(0o600);
    const issue = await agent(['ca', 'issue', '--ca-dir', dir, '--service', 'user', '--out', `${pki}/user`]);
    expect(issue.code).toBe(0);
    const verified = await openssl(['verify', '-CAfile', `${pki}/root.pem`, '-untrusted', `${pki}/user/cert-chain.pem`, `${pki}/user/cert-chain.pem`]);
    expect(verified.stdout).toContain(': OK');
  });

  it('refuses bad input with exit 2, naming the file and the fix, and writes nothing', async () => {
    const pki = scratch();
    await opensslPki(pki);
    const mismatch = await agent(['ca', 'init', '--dir', `${pki}/a`, '--from-intermediate', `${pki}/int.pem`, '--key', `${pki}/leaf.key`, '--root', `${pki}/root.pem`]);
    expect(mismatch.code).toBe(2);
    expect(mismatch.stderr).toContain(`[MESH_PKI_CA_INVALID]: the key in ${pki}/leaf.key does not match the certificate in ${pki}/int.pem`);
    expect(fs.existsSync(`${pki}/a`)).toBe(false);

    const notCa = await agent(['ca', 'init', '--dir', `${pki}/b`, '--from-intermediate', `${pki}/leaf.pem`, '--key', `${pki}/leaf.key`, '--root', `${pki}/root.pem`, '--chain', `${pki}/int.pem`]);
    expect(notCa.code).toBe(2);
    expect(notCa.stderr).toContain(`${pki}/leaf.pem is not a CA certificate (basicConstraints CA:TRUE is missing)`);
    expect(fs.existsSync(`${pki}/b`)).toBe(false);

    const other = scratch();
    await agent(['ca', 'init', '--dir', `${other}/root`]);
    const wrongRoot = await agent(['ca', 'init', '--dir', `${pki}/c`, '--from-intermediate', `${pki}/int.pem`, '--key', `${pki}/int.key`, '--root', `${other}/root/root-cert.pem`]);
    expect(wrongRoot.code).toBe(2);
    expect(wrongRoot.stderr).toContain(`${pki}/int.pem does not chain to ${other}/root/root-cert.pem`);
    expect(fs.existsSync(`${pki}/c`)).toBe(false);

    const missing = await agent(['ca', 'issue', '--ca-dir', `${pki}/none`, '--service', 'x', '--out', `${pki}/x`]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`[MESH_PKI_CA_UNREADABLE]: cannot read the CA file ${pki}/none/ca-cert.pem: no such file`);
    expect(missing.stderr).toContain('mesh-agent ca init');
    expect(fs.existsSync(`${pki}/x`)).toBe(false);
    const missingInput = await agent(['ca', 'init', '--dir', `${pki}/d`, '--from-intermediate', `${pki}/nope.pem`, '--key', `${pki}/int.key`, '--root', `${pki}/root.pem`]);
    expect(missingInput.code).toBe(2);
    expect(missingInput.stderr).toContain(`cannot read the intermediate certificate ${pki}/nope.pem: no such file`);

    for (const [args, message] of [
      [['ca'], 'ca needs a command: init, intermediate, issue or show'],
      [['ca', 'frob'], 'unknown ca command "frob"'],
      [['ca', 'init'], 'ca init: --dir is required'],
      [['ca', 'issue', '--ca-dir', pki, '--out', `${pki}/y`], 'give exactly one of --spiffe-id ID or --service NAME'],
      [['ca', 'issue', '--ca-dir', pki, '--out', `${pki}/y`, '--service', 'a', '--spiffe-id', 'spiffe://x/y'], 'give exactly one of --spiffe-id ID or --service NAME'],
      [['ca', 'intermediate', '--root-dir', pki, '--dir', `${pki}/y`, '--name', 'h', '--ttl-days', 'soon'], '--ttl-days: "soon" is not a positive number'],
      [['ca', 'init', '--dir', `${pki}/y`, '--key', 'k'], '--key, --root and --chain go with --from-intermediate'],
    ] as Array<[string[], string]>) {
      const res = await agent(args);
      expect(res.code, args.join(' ')).toBe(2);
      expect(res.stderr).toContain(message);
    }
    expect(fs.existsSync(`${pki}/y`)).toBe(false);
    const help = await agent(['ca', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('ca intermediate --root-dir D --dir OUT --name HOST');
    expect((await agent(['--help'])).stdout).toContain('ca init|intermediate|issue|show');
  });
});
