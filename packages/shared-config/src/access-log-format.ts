/**
 * Envoy's access log format strings (`%START_TIME% %REQ(:METHOD)% ...`), parsed into tokens. Shared by
 * the schema (an unknown operator is a config error naming it, found when the agent or the proxy
 * validates) and the proxy's access logger (which compiles the tokens once per config).
 * Syntax as Envoy's: `%NAME%`, `%NAME(ARG)%`, `%NAME(ARG):MAXLEN%`; `%%` is a literal `%`.
 */

/** The command operators the proxy fills; any other name is refused. */
export const ACCESS_LOG_OPERATORS = [
  'START_TIME', 'REQ', 'RESP', 'RESPONSE_CODE', 'RESPONSE_FLAGS', 'RESPONSE_CODE_DETAILS', 'BYTES_RECEIVED', 'BYTES_SENT',
  'DURATION', 'PROTOCOL', 'ROUTE_NAME', 'UPSTREAM_HOST', 'UPSTREAM_CLUSTER', 'UPSTREAM_TRANSPORT_FAILURE_REASON',
  'DOWNSTREAM_REMOTE_ADDRESS', 'DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT', 'HOSTNAME',
] as const;
export type AccessLogOperator = (typeof ACCESS_LOG_OPERATORS)[number];

/** Operators that take a header argument (`%REQ(X-FORWARDED-FOR)%`, `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`). */
const HEADER_OPERATORS = new Set<string>(['REQ', 'RESP']);
/** Operators that may take an argument: the headers above, and START_TIME's strftime format. */
const ARG_OPERATORS = new Set<string>(['REQ', 'RESP', 'START_TIME']);

export type AccessLogToken =
  | { kind: 'text'; text: string }
  | { kind: 'operator'; name: AccessLogOperator; arg?: string; maxLength?: number };

export class AccessLogFormatError extends Error {
  constructor(message: string, readonly operator: string | undefined) {
    super(message);
    this.name = 'AccessLogFormatError';
  }
}

const KNOWN = new Set<string>(ACCESS_LOG_OPERATORS);
// Envoy's operator grammar: NAME, optional (ARG) without ')', optional :MAXLEN
const OPERATOR_AT = /%([A-Z0-9_]+)(\(([^)]*)\))?(:([0-9]+))?%/y;

/** Tokens of `format`; throws AccessLogFormatError naming the first unknown or malformed operator. */
export function parseAccessLogFormat(format: string): AccessLogToken[] {
  const tokens: AccessLogToken[] = [];
  let text = '';
  let i = 0;
  while (i < format.length) {
    const c = format[i]!;
    if (c !== '%') { text += c; i++; continue; }
    if (format[i + 1] === '%') { text += '%'; i += 2; continue; }
    OPERATOR_AT.lastIndex = i;
    const m = OPERATOR_AT.exec(format);
    if (!m) {
      const name = /^%([A-Za-z0-9_]*)/.exec(format.slice(i))?.[1] ?? '';
      throw new AccessLogFormatError(`malformed command operator at column ${i + 1}${name ? ` (%${name}...)` : ''}: expected %NAME%, %NAME(ARG)% or %NAME(ARG):LENGTH% (write %% for a literal %)`, name || undefined);
    }
    const name = m[1]!;
    if (!KNOWN.has(name)) {
      throw new AccessLogFormatError(`unknown command operator %${name}% at column ${i + 1}; known operators: ${ACCESS_LOG_OPERATORS.map((o) => `%${o}%`).join(', ')}`, name);
    }
    const arg = m[3];
    if (arg !== undefined && !ARG_OPERATORS.has(name)) throw new AccessLogFormatError(`%${name}% takes no argument (column ${i + 1})`, name);
    if (HEADER_OPERATORS.has(name) && (arg === undefined || arg.length === 0)) throw new AccessLogFormatError(`%${name}(HEADER)% needs a header name (column ${i + 1})`, name);
    if (text) { tokens.push({ kind: 'text', text }); text = ''; }
    tokens.push({ kind: 'operator', name: name as AccessLogOperator, ...(arg !== undefined ? { arg } : {}), ...(m[5] !== undefined ? { maxLength: Number(m[5]) } : {}) });
    i += m[0].length;
  }
  if (text) tokens.push({ kind: 'text', text });
  return tokens;
}
