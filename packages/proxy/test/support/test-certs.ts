import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

// Test certificates made with the real openssl CLI (ECDSA P-256, SHA-256, the workload profile of
// docs/security.md): a CA, and leaves with a SPIFFE URI SAN in Istio's file names.

export interface TestCa { dir: string; cert: string; key: string }

export interface TestLeaf {
  /** Istio's names: cert-chain.pem (leaf first), key.pem, root-cert.pem (the trust bundle). */
  certChain: string;
  privateKey: string;
  trustBundle: string;
  /** lower-case hex, as Node's X509Certificate and the proxy's /certs print it */
  serial: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

function newKey(file: string, cwd: string): void {
  // PKCS#8, as most issuers write it
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file], cwd);
  fs.chmodSync(path.join(cwd, file), 0o600);
}

export function createTestCa(dir: string, name = 'mesh-test-ca'): TestCa {
  fs.mkdirSync(dir, { recursive: true });
  newKey('ca-key.pem', dir);
  openssl(['req', '-x509', '-new', '-key', 'ca-key.pem', '-sha256', '-subj', `/O=${name}`, '-days', '30',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', 'ca-cert.pem'], dir);
  return { dir, cert: path.join(dir, 'ca-cert.pem'), key: path.join(dir, 'ca-key.pem') };
}

/**
 * A workload leaf signed by `ca` with `uri` as its only SAN, written to `<dir>/{cert-chain,key,root-cert}.pem`
 * (rename-replaced, so a watcher never sees half a file). `expired`: valid for one day in 2020.
 * `trustBundle`: which CA certificate goes to root-cert.pem (default: `ca`'s).
 */
export function issueLeaf(ca: TestCa, dir: string, uri: string, opts: { expired?: boolean; trustBundle?: string } = {}): TestLeaf {
  fs.mkdirSync(dir, { recursive: true });
  const work = fs.mkdtempSync(path.join(dir, '.issue-'));
  try {
    newKey('key.pem', work);
    openssl(['req', '-new', '-key', 'key.pem', '-subj', '/', '-out', 'leaf.csr'], work);
    fs.writeFileSync(path.join(work, 'ext'), `subjectAltName=URI:${uri}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n`);
    const serial = `1${crypto.randomBytes(8).toString('hex').slice(1)}`; // 16 hex digits, no leading zero, high bit clear
    if (opts.expired) {
      fs.writeFileSync(path.join(work, 'index.txt'), '');
      fs.writeFileSync(path.join(work, 'serial'), `${serial}\n`);
      fs.writeFileSync(path.join(work, 'ca.cnf'), '[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n[p]\n');
      openssl(['ca', '-batch', '-config', 'ca.cnf', '-cert', ca.cert, '-keyfile', ca.key, '-in', 'leaf.csr', '-startdate', '20200101000000Z', '-enddate', '20200102000000Z',
        '-extfile', 'ext', '-notext', '-out', 'cert.pem'], work);
    } else {
      openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', ca.cert, '-CAkey', ca.key, '-set_serial', `0x${serial}`, '-days', '2', '-sha256', '-extfile', 'ext', '-out', 'cert.pem'], work);
    }
    fs.copyFileSync(opts.trustBundle ?? ca.cert, path.join(work, 'root.pem'));
    const leaf: TestLeaf = { certChain: path.join(dir, 'cert-chain.pem'), privateKey: path.join(dir, 'key.pem'), trustBundle: path.join(dir, 'root-cert.pem'), serial: serial.toLowerCase() };
    fs.renameSync(path.join(work, 'cert.pem'), leaf.certChain);
    fs.renameSync(path.join(work, 'key.pem'), leaf.privateKey);
    fs.renameSync(path.join(work, 'root.pem'), leaf.trustBundle);
    return leaf;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
