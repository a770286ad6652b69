import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { MeshLogger } from './logger';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';
export const HTTP_METHODS: readonly HttpMethod[] = ['GET', 'POST', 'PUT', 'DELETE'];

/**
 * How `/help` (and the 404 body) is rendered.
 * - `istio`: pilot-agent / mesh-dns: `admin commands are:` then `\tMETHOD /path: help`, in registration order.
 * - `envoy`: the proxy: `admin commands are:` then `  /path: help`, sorted by path, one line per path.
 */
export type HelpStyle = 'istio' | 'envoy';

export interface AdminRequest {
  method: string;
  /** the request path without the query string, as sent (not decoded) */
  path: string;
  /** path parameters of the matched route, percent-decoded */
  params: Record<string, string>;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** the request body as UTF-8 text (read once, at most 1 MiB) */
  body(): Promise<string>;
  raw: IncomingMessage;
  /** the admin server answering (for /help, /latest_error and the like) */
  server: AdminServer;
}

/** What a handler returns and how it is sent. Make an explicit answer with `adminResponse()`. */
export interface AdminResponse {
  status?: number;
  headers?: Record<string, string>;
  body: string | Buffer | object;
}

/**
 * A handler's result: a string is sent as text/plain, a Buffer as application/octet-stream,
 * any other object (or array) as pretty JSON. Only values made by `adminResponse()` are read
 * as `{status, headers, body}`; a plain object with a `body` field is still sent as JSON.
 */
export type AdminResult = string | Buffer | object | AdminResponse | undefined | null | void;

export interface AdminRoute {
  method: HttpMethod;
  /** e.g. `/config_dump/{component}`, `/logging/{scope}/{level}` */
  path: string;
  /** the exact help line text */
  help: string;
  /** true: a GET is refused with 405 and a hint to use the route's method */
  mutatesState?: boolean;
  /** true: not listed in /help */
  hidden?: boolean;
  handler: (req: AdminRequest) => AdminResult | Promise<AdminResult>;
}

export interface AdminServerOptions {
  /** the component's name, used in logs and error messages (e.g. `pilot-agent`, `mesh-dns`, `envoy`) */
  component: string;
  helpStyle: HelpStyle;
  /** default 127.0.0.1 */
  host?: string;
  /** default 0 (ephemeral) */
  port?: number;
  /** must be true to bind a host that is not a loopback address */
  allowNonLoopback?: boolean;
  /** request and error logs go to its `admin` scope (or its first scope) */
  logger?: MeshLogger;
}

export interface AdminAddress {
  address: string;
  port: number;
}

export interface LatestError {
  /** ISO 8601 */
  time: string;
  /** `METHOD /pattern` of the route whose handler threw */
  route?: string;
  /** the request path that failed, when it came from a request */
  path?: string;
  message: string;
  code?: string;
}

export interface AdminServer {
  /** registers a route; registration order is the /help order of the istio style */
  add(route: AdminRoute): this;
  listen(): Promise<AdminAddress>;
  /** serves on a socket that is already listening (e.g. handed over by a parent process) */
  listenOn(handle: import('node:net').Server | { fd: number }): Promise<AdminAddress>;
  /** stops listening and destroys every open connection, keep-alive ones included */
  close(): Promise<void>;
  readonly address: AdminAddress | undefined;
  recordError(err: unknown, route?: string): void;
  readonly latestError: LatestError | undefined;
  helpText(): string;
  /** the registered routes, in registration order */
  readonly routes: readonly AdminRoute[];
}
