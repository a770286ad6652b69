import { isIP } from 'node:net';
import { z } from 'zod';

/** Building blocks shared by every schema: small, strict, with messages that say what is expected. */

/** A port something listens on; 0 asks the OS for an ephemeral port (tests use it). */
export const listenPort = z
  .number({ error: 'expected a port number (0..65535)' })
  .int({ error: 'expected a whole port number' })
  .min(0, { error: 'a port is 0..65535' })
  .max(65535, { error: 'a port is 0..65535' });

/** A port something real listens on or is reached at: 1..65535. */
export const servicePort = z
  .number({ error: 'expected a port number (1..65535)' })
  .int({ error: 'expected a whole port number' })
  .min(1, { error: 'a port is 1..65535' })
  .max(65535, { error: 'a port is 1..65535' });

/** A Linux user or group id. */
export const posixId = z
  .number({ error: 'expected a numeric user/group id' })
  .int({ error: 'expected a whole user/group id' })
  .min(0, { error: 'a user/group id is 0..4294967294' })
  .max(4294967294, { error: 'a user/group id is 0..4294967294' });

export const ipv4Address = z.ipv4({ error: 'expected an IPv4 address such as 198.18.0.2' });
export const ipAddress = z.union([z.ipv4(), z.ipv6()], { error: 'expected an IPv4 or IPv6 address' });
export const cidr = z.union([z.cidrv4(), z.cidrv6()], { error: 'expected a CIDR such as 10.0.0.0/8 or fd00::/8' });

/** Non-negative milliseconds. */
export const millis = z
  .number({ error: 'expected a duration in milliseconds' })
  .int({ error: 'expected whole milliseconds' })
  .min(0, { error: 'a duration cannot be negative' });

export const positiveInt = z.number({ error: 'expected a number' }).int({ error: 'expected a whole number' }).min(1, { error: 'must be at least 1' });
export const nonNegativeInt = z.number({ error: 'expected a number' }).int({ error: 'expected a whole number' }).min(0, { error: 'cannot be negative' });
export const percent = z.number({ error: 'expected a percentage' }).min(0, { error: 'a percentage is 0..100' }).max(100, { error: 'a percentage is 0..100' });

export const nonEmptyString = z.string({ error: 'expected a string' }).min(1, { error: 'must not be empty' });

/** A DNS label-ish service name: lower-case letters, digits, '-' and '.', as Kubernetes and TSF accept. */
export const serviceName = z
  .string({ error: 'expected a service name' })
  .regex(/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/, { error: 'a service name is lower-case letters, digits, "-" and "."; it starts and ends with a letter or digit' });

export const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'none'] as const;
export const logLevel = z.enum(LOG_LEVELS, { error: `expected one of ${LOG_LEVELS.join(', ')}` });

/** `IP` or `IP:PORT` (`[v6]:PORT` for IPv6), as in resolv.conf and Envoy/Istio upstream lists. */
export function parseHostPort(value: string, defaultPort: number): { address: string; port: number } | undefined {
  if (isIP(value)) return { address: value, port: defaultPort };
  const match = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:]+):(\d+)$/.exec(value);
  if (!match) return undefined;
  const port = Number(match[2]);
  if (!isIP(match[1]) || port < 1 || port > 65535) return undefined;
  return { address: match[1], port };
}

export const upstreamAddress = z
  .string({ error: 'expected "IP" or "IP:PORT"' })
  .refine((v) => parseHostPort(v, 53) !== undefined, { error: 'expected "IP", "IP:PORT" or "[IPv6]:PORT", e.g. 127.0.0.1:5353' });

/** A file-system path (relative paths are relative to the working directory). */
export const filePath = z.string({ error: 'expected a file path' }).min(1, { error: 'a file path must not be empty' });

/** Free-form string metadata (labels). */
export const metadata = z.record(z.string(), z.string({ error: 'metadata values are strings' }));

/** A listen address and port. */
export function listenAddress(defaultAddress: string, defaultPort: number) {
  return z
    .strictObject({
      address: ipAddress.default(defaultAddress),
      port: listenPort.default(defaultPort),
    })
    .prefault({});
}

/**
 * The same object with every field optional and no defaults: the shape of an override, where an
 * absent field inherits instead of taking the default.
 */
export function overrideOf<T extends z.ZodObject>(object: T): z.ZodType<Partial<z.output<T>>, Partial<z.input<T>>> {
  const shape: Record<string, z.ZodType> = {};
  for (const [key, field] of Object.entries(object.shape as Record<string, z.ZodType>)) {
    let inner: z.ZodType = field;
    while (inner instanceof z.ZodDefault || inner instanceof z.ZodPrefault || inner instanceof z.ZodOptional) inner = inner.unwrap() as z.ZodType;
    shape[key] = inner.optional();
  }
  return z.strictObject(shape) as unknown as z.ZodType<Partial<z.output<T>>, Partial<z.input<T>>>;
}

/** The same object schema with descriptions added to the named fields (for schemas defined elsewhere). */
export function withDescriptions<T extends z.ZodObject>(object: T, descriptions: Partial<Record<keyof T['shape'] & string, string>>): T {
  const shape = object.shape as Record<string, z.ZodType>;
  const described: Record<string, z.ZodType> = {};
  for (const [key, text] of Object.entries(descriptions)) if (shape[key] && text) described[key] = shape[key].describe(text as string);
  return object.extend(described) as unknown as T;
}

/** An HTTP health-check path: visible ASCII only, since a space or a control character cannot be sent in a request line (Node's http.request throws). */
export const healthCheckPath = z
  .string({ error: 'expected a path such as /health' })
  .startsWith('/', { error: 'a health-check path starts with "/"', abort: true })
  .regex(/^\/[\x21-\x7e]*$/, { error: 'a health-check path is "/" followed by visible ASCII characters (no spaces; percent-encode anything else, e.g. %20)' });
