// Workload identity (issue 13): SPIFFE IDs in Istio's shape, so Istio's and SPIRE's tools read them.

/** `spiffe://<trust-domain>/ns/<namespace>/sa/<service>`: the identity a local service's certificate carries as its URI SAN. */
export function spiffeId(trustDomain: string, namespace: string, service: string): string {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${service}`;
}

export interface SpiffeIdParts { trustDomain: string; namespace: string; serviceAccount: string }

/** The parts of an Istio-shaped SPIFFE ID; undefined for anything else (another URI, another path shape). */
export function parseSpiffeId(id: string): SpiffeIdParts | undefined {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  return m ? { trustDomain: m[1]!, namespace: m[2]!, serviceAccount: m[3]! } : undefined;
}

/**
 * The URI SANs of a certificate as Node's `X509Certificate.subjectAltName` renders them
 * (`DNS:a, URI:spiffe://td/ns/x/sa/y, IP Address:1.2.3.4`). Values with a comma are quoted
 * by Node; a SPIFFE ID never holds one, so such entries are skipped, never misread.
 */
export function uriSans(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName.split(', ').filter((entry) => entry.startsWith('URI:')).map((entry) => entry.slice(4));
}

/** The first `spiffe://` URI SAN of a certificate, as Node renders its subjectAltName. */
export function spiffeIdOf(subjectAltName: string | undefined): string | undefined {
  return uriSans(subjectAltName).find((uri) => uri.startsWith('spiffe://'));
}

/** Istio's string match in policies: an exact value, `prefix*`, `*suffix`, or `*` (any value that is present). */
export function matchesIstioPattern(value: string | undefined, pattern: string): boolean {
  if (value === undefined) return false;
  if (pattern === '*') return true;
  if (pattern.endsWith('*')) return value.startsWith(pattern.slice(0, -1));
  if (pattern.startsWith('*')) return value.endsWith(pattern.slice(1));
  return value === pattern;
}
