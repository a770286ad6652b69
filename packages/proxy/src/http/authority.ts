import net from 'node:net';

/*
 * RFC 9112 3.2: a server MUST answer 400 to a request with more than one Host field line or with
 * a Host whose value is not `uri-host [ ":" port ]` (RFC 3986: IP-literal / IPv4address / reg-name).
 * Checked here for the Host header and for the authority of an absolute-form target alike.
 */

// reg-name (and IPv4address, a subset): unreserved / pct-encoded / sub-delims, without the comma.
// The comma is a sub-delim, but Host is a singleton field and a comma is how recipients join
// repeated field lines (RFC 9110 5.3): "a,b" cannot be told from two Host lines, and no DNS name
// or address contains one. Userinfo ("user@up"), a path ("up/x") or spaces never match.
const REG_NAME_WITH_PORT = /^(?:[A-Za-z0-9\-._~!$&'()*+;=]|%[0-9A-Fa-f]{2})+(?::[0-9]*)?$/;
// IP-literal: "[" IPv6address "]" (IPvFuture and zone identifiers are not accepted).
const IP_LITERAL_WITH_PORT = /^\[([0-9A-Fa-f:.]+)\](?::[0-9]*)?$/;

/** `uri-host [ ":" port ]` with a non-empty host (an "http" URI must not have an empty host, RFC 9110 4.2.1). */
export function isValidAuthority(value: string): boolean {
  if (value.charCodeAt(0) === 91 /* [ */) {
    const m = IP_LITERAL_WITH_PORT.exec(value);
    return m !== null && net.isIPv6(m[1]!);
  }
  return REG_NAME_WITH_PORT.test(value);
}

/** The authority of an absolute-form `http://` target, or undefined for other forms. */
export function absoluteFormAuthority(target: string): string | undefined {
  if (target.length < 7 || (target.charCodeAt(0) | 0x20) !== 104 /* h */ || !/^http:\/\//i.test(target)) return undefined;
  const rest = target.slice(7);
  const end = rest.search(/[/?#]/);
  return end < 0 ? rest : rest.slice(0, end);
}
