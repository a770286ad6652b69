// Certificates for the mTLS benchmark, made with the openssl CLI (independent of the mesh's own issuer):
// an ECDSA P-256 root, one intermediate (as each host gets from `mesh-agent ca intermediate`) and
// one workload leaf per side with the SPIFFE URI SAN only (plus a CN nginx can check: nginx verifies
// a peer by host name, never by URI SAN). Files use Istio's names, one directory per identity.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const TRUST_DOMAIN = 'cluster.local';
export const spiffe = (sa) => `spiffe://${TRUST_DOMAIN}/ns/default/sa/${sa}`;
/** The CN of a leaf: what nginx's proxy_ssl_name checks. */
export const commonName = (sa) => `${sa}.default.svc.${TRUST_DOMAIN}`;

function openssl(args, cwd) {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`bench/tls: openssl ${args[0]} failed: ${err.stderr?.toString().trim() || err.message}`);
  }
}

const P256 = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];

/**
 * Writes `<dir>/ca/{root-cert.pem,root-key.pem,ca-cert.pem,ca-key.pem}` and, for each name,
 * `<dir>/<name>/{cert-chain.pem (leaf + intermediate),key.pem (0600),root-cert.pem}`.
 * Returns { [name]: { certChain, privateKey, trustBundle, identity, cn } }.
 */
export function makeCertificates(dir, names) {
  const ca = path.join(dir, 'ca');
  fs.mkdirSync(ca, { recursive: true });
  fs.writeFileSync(path.join(ca, 'ext.cnf'), `[intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
${names.map((n) => `[leaf_${n}]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = URI:${spiffe(n)}
authorityKeyIdentifier = keyid
`).join('')}`);
  openssl(['req', '-x509', ...P256, '-keyout', 'root-key.pem', '-out', 'root-cert.pem', '-days', '2', '-sha256', '-subj', '/O=bench-mesh/CN=bench root',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], ca);
  openssl(['req', '-new', ...P256, '-keyout', 'ca-key.pem', '-out', 'ca.csr', '-subj', '/O=bench-mesh/CN=bench host intermediate'], ca);
  openssl(['x509', '-req', '-in', 'ca.csr', '-CA', 'root-cert.pem', '-CAkey', 'root-key.pem', '-CAcreateserial', '-days', '1', '-sha256',
    '-extfile', 'ext.cnf', '-extensions', 'intermediate', '-out', 'ca-cert.pem'], ca);
  const out = {};
  for (const name of names) {
    const d = path.join(dir, name);
    fs.mkdirSync(d, { recursive: true });
    openssl(['req', '-new', ...P256, '-keyout', 'key.pem', '-out', 'leaf.csr', '-subj', `/CN=${commonName(name)}`], d);
    openssl(['x509', '-req', '-in', 'leaf.csr', '-CA', path.join(ca, 'ca-cert.pem'), '-CAkey', path.join(ca, 'ca-key.pem'), '-CAcreateserial',
      '-days', '1', '-sha256', '-extfile', path.join(ca, 'ext.cnf'), '-extensions', `leaf_${name}`, '-out', 'leaf.pem'], d);
    fs.writeFileSync(path.join(d, 'cert-chain.pem'), fs.readFileSync(path.join(d, 'leaf.pem'), 'utf8') + fs.readFileSync(path.join(ca, 'ca-cert.pem'), 'utf8'));
    fs.copyFileSync(path.join(ca, 'root-cert.pem'), path.join(d, 'root-cert.pem'));
    fs.chmodSync(path.join(d, 'key.pem'), 0o600);
    out[name] = {
      certChain: path.join(d, 'cert-chain.pem'), privateKey: path.join(d, 'key.pem'), trustBundle: path.join(d, 'root-cert.pem'),
      identity: spiffe(name), cn: commonName(name),
    };
  }
  return out;
}
