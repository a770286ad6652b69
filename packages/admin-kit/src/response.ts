import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import type { AdminResponse, AdminResult } from './types';

export const TEXT_TYPE = 'text/plain; charset=utf-8';
export const JSON_TYPE = 'application/json';
export const BINARY_TYPE = 'application/octet-stream';

const EXPLICIT = Symbol.for('@mesh-agent/admin-kit/response');

/** An explicit answer: status, body (string, Buffer or an object sent as JSON) and extra headers. */
export function adminResponse(status: number, body: string | Buffer | object, headers: Record<string, string> = {}): AdminResponse {
  const response: AdminResponse = { status, headers, body };
  Object.defineProperty(response, EXPLICIT, { value: true, enumerable: false });
  return response;
}

export function isAdminResponse(value: unknown): value is AdminResponse {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[EXPLICIT] === true;
}

const HTTP_ERROR = Symbol.for('@mesh-agent/admin-kit/http-error');

/** Throw from a handler to answer with this status and message (text), e.g. 404 for an unknown component. */
export class AdminHttpError extends MeshError {
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, opts: { code?: string; hint?: string; headers?: Record<string, string>; cause?: unknown } = {}) {
    super(opts.code ?? `MESH_ADMIN_HTTP_${status}`, message, {
      hint: opts.hint,
      cause: opts.cause,
      exitCode: status >= 500 ? EXIT_CODES.failure : EXIT_CODES.usage,
    });
    this.name = 'AdminHttpError';
    this.status = status;
    this.headers = opts.headers ?? {};
    Object.defineProperty(this, HTTP_ERROR, { value: true, enumerable: false });
  }
}

/**
 * True for an AdminHttpError, also one made by another copy of this package (the ESM and the CJS
 * build loaded side by side), where `instanceof` would say no.
 */
export function isAdminHttpError(err: unknown): err is AdminHttpError {
  return typeof err === 'object' && err !== null && (err as Record<symbol, unknown>)[HTTP_ERROR] === true;
}

/** What goes on the wire. */
export interface RenderedResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Pretty JSON (2 spaces) with a trailing newline; bigints become strings instead of throwing. */
export function renderJson(value: unknown): string {
  return `${JSON.stringify(value, (_key, v) => (typeof v === 'bigint' ? v.toString() : v), 2) ?? 'null'}\n`;
}

/** Turns a handler's result into status, headers and bytes (see AdminResult for the rules). */
export function renderResult(result: AdminResult): RenderedResponse {
  if (isAdminResponse(result)) {
    const body = renderBody(result.body);
    return {
      status: result.status ?? 200,
      headers: { 'content-type': body.type, ...lowerCaseKeys(result.headers ?? {}) },
      body: body.bytes,
    };
  }
  if (result === undefined || result === null) {
    return { status: 200, headers: { 'content-type': TEXT_TYPE }, body: Buffer.alloc(0) };
  }
  const body = renderBody(result as string | Buffer | object);
  return { status: 200, headers: { 'content-type': body.type }, body: body.bytes };
}

export function textResponse(status: number, text: string, headers: Record<string, string> = {}): RenderedResponse {
  return { status, headers: { 'content-type': TEXT_TYPE, ...lowerCaseKeys(headers) }, body: Buffer.from(text, 'utf8') };
}

function renderBody(body: string | Buffer | object): { type: string; bytes: Buffer } {
  if (typeof body === 'string') return { type: TEXT_TYPE, bytes: Buffer.from(body, 'utf8') };
  if (Buffer.isBuffer(body)) return { type: BINARY_TYPE, bytes: body };
  if (body instanceof Uint8Array) return { type: BINARY_TYPE, bytes: Buffer.from(body) };
  return { type: JSON_TYPE, bytes: Buffer.from(renderJson(body), 'utf8') };
}

function lowerCaseKeys(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}
