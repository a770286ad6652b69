// Keys and PEM for the built-in issuer: @peculiar/x509 over Node's WebCrypto, keys in PKCS#8 PEM.
// @peculiar/x509's dependency injection (tsyringe) needs the Reflect metadata polyfill loaded first
import 'reflect-metadata';
import crypto, { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

// Node 20 has no global CryptoProvider default that @peculiar/x509 picks up reliably: set it once.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };

// the agent's tsconfig has no DOM lib: WebCrypto's types come from node:crypto
export type CryptoKey = webcrypto.CryptoKey;
export type CryptoKeyPair = webcrypto.CryptoKeyPair;
type Algorithm = webcrypto.Algorithm;
type EcdsaParams = webcrypto.EcdsaParams;

/** ECDSA P-256 with SHA-256 for every key the mesh makes (design decision, same as Istio). */
const EC_P256: webcrypto.EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };

export interface SigningKey {
  key: CryptoKey;
  /** the algorithm @peculiar/x509 signs with (hash chosen to match the key) */
  algorithm: Algorithm | EcdsaParams;
}

export async function generateKeyPair(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']);
}

export async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return crypto.createPrivateKey({ key: der, format: 'der', type: 'pkcs8' }).export({ format: 'pem', type: 'pkcs8' }).toString();
}

const CURVES: Record<string, { namedCurve: string; hash: string }> = {
  prime256v1: { namedCurve: 'P-256', hash: 'SHA-256' },
  secp384r1: { namedCurve: 'P-384', hash: 'SHA-384' },
  secp521r1: { namedCurve: 'P-521', hash: 'SHA-512' },
};

/**
 * A CA key from PEM (PKCS#8, SEC1 "EC PRIVATE KEY" or PKCS#1 RSA, as operators' CAs hand them out)
 * as a WebCrypto signing key. Throws an Error saying which kind of key is not supported.
 */
export async function importSigningKey(pem: string): Promise<SigningKey> {
  const keyObject = crypto.createPrivateKey(pem);
  const der = keyObject.export({ format: 'der', type: 'pkcs8' });
  if (keyObject.asymmetricKeyType === 'ec') {
    const curve = CURVES[keyObject.asymmetricKeyDetails?.namedCurve ?? ''];
    if (!curve) throw new Error(`EC curve ${keyObject.asymmetricKeyDetails?.namedCurve ?? '(unknown)'} is not supported (use P-256, P-384 or P-521)`);
    const key = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: curve.namedCurve }, false, ['sign']);
    return { key, algorithm: { name: 'ECDSA', hash: curve.hash } satisfies EcdsaParams };
  }
  if (keyObject.asymmetricKeyType === 'rsa') {
    const key = await webcrypto.subtle.importKey('pkcs8', der, { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }, false, ['sign']);
    return { key, algorithm: { name: 'RSASSA-PKCS1-v1_5' } };
  }
  throw new Error(`a ${keyObject.asymmetricKeyType ?? 'unknown'} key cannot sign certificates here (use an EC P-256 or RSA key)`);
}

/**
 * A random positive 128-bit serial as hex. The top bit is cleared (positive INTEGER) and the next one
 * set, so the DER encoding is always 16 bytes with no leading zero; 126 random bits (CA/B asks for 64).
 */
export function randomSerialHex(): string {
  const bytes = crypto.randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40;
  return bytes.toString('hex');
}

/** Every certificate in a PEM text, in order, as PEM blocks (anything between blocks is ignored). */
export function splitPemCertificates(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((block) => `${block}\n`) ?? [];
}

export function joinPem(blocks: string[]): string {
  return blocks.map((block) => (block.endsWith('\n') ? block : `${block}\n`)).join('');
}
