import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Server as NetServer, Socket } from 'node:net';
import { ADMIN_HOST, EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import { renderHelp, renderNotFound } from './help-text';
import { browserRefusal } from './browser-guard';
import { isLoopbackHost } from './loopback';
import { AdminHttpError, isAdminHttpError, renderResult, textResponse, type RenderedResponse } from './response';
import { BadPathEncodingError, compareSpecificity, compilePattern, type RoutePattern } from './route-pattern';
import { HTTP_METHODS, type AdminAddress, type AdminRequest, type AdminRoute, type AdminServer, type AdminServerOptions, type LatestError } from './types';

/** Request bodies of admin calls are small; anything larger is refused rather than buffered. */
const MAX_BODY_BYTES = 1024 * 1024;

interface Entry {
  route: AdminRoute;
  pattern: RoutePattern;
}

/**
 * Creates a component's admin HTTP server. Routes are added with `add()`; /help and the 404
 * body are generated from them. Nothing listens until `listen()` or `listenOn()`.
 */
export function createAdminServer(opts: AdminServerOptions): AdminServer {
  const host = opts.host ?? ADMIN_HOST;
  const port = opts.port ?? 0;
  if (!isLoopbackHost(host) && !opts.allowNonLoopback) {
    throw new MeshError(
      'MESH_ADMIN_NON_LOOPBACK',
      `admin server of ${opts.component} would listen on ${host}, which is not a loopback address; its endpoints change the sidecar's state and must not be reachable from the network by accident`,
      {
        hint: 'bind 127.0.0.1 (the default), or set allowNonLoopback: true (the admin address option of the component) if you really mean to expose it',
        exitCode: EXIT_CODES.usage,
      },
    );
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new MeshError('MESH_ADMIN_BAD_PORT', `admin port of ${opts.component} must be an integer 0..65535, got ${String(port)}`, {
      hint: 'use 0 for an ephemeral port',
      exitCode: EXIT_CODES.usage,
    });
  }

  const entries: Entry[] = [];
  const sockets = new Set<Socket>();
  let boundAddress: AdminAddress | undefined;
  let latest: LatestError | undefined;
  let closing: Promise<void> | undefined;
  // a deliberately exposed admin port is reached under names; a loopback one only as an IP or localhost
  const checkHost = !opts.allowNonLoopback;
  const log = opts.logger ? opts.logger.scope(opts.logger.scopes.includes('admin') ? 'admin' : opts.logger.scopes[0]) : undefined;

  const server = http.createServer((req, res) => {
    void handle(req, res);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  const admin: AdminServer = {
    add(route) {
      if (!HTTP_METHODS.includes(route.method)) {
        throw new MeshError('MESH_ADMIN_BAD_ROUTE', `admin route ${route.path} has method "${String(route.method)}"`, {
          hint: `use one of ${HTTP_METHODS.join(', ')}`,
          exitCode: EXIT_CODES.usage,
        });
      }
      const pattern = compilePattern(route.path);
      if (entries.some((e) => e.route.method === route.method && e.route.path === route.path)) {
        throw new MeshError('MESH_ADMIN_DUPLICATE_ROUTE', `admin route ${route.method} ${route.path} of ${opts.component} is registered twice`, {
          hint: 'register each method and path once',
          exitCode: EXIT_CODES.usage,
        });
      }
      entries.push({ route, pattern });
      return this;
    },
    listen() {
      return start(() => server.listen({ host, port, exclusive: true }), `${host}:${port}`);
    },
    listenOn(handle) {
      return start(() => server.listen(handle as NetServer), 'fd' in handle ? `fd ${handle.fd}` : 'a handed-over socket');
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        if (!server.listening) {
          for (const socket of sockets) socket.destroy();
          resolve();
          return;
        }
        server.close(() => resolve());
        // keep-alive and in-flight connections would hold the port and the event loop
        server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      });
      return closing;
    },
    get address() {
      return boundAddress;
    },
    recordError(err, route) {
      latest = toLatestError(err, route);
    },
    get latestError() {
      return latest;
    },
    helpText() {
      return renderHelp(entries.map((e) => e.route), opts.helpStyle);
    },
    get routes() {
      return entries.map((e) => e.route);
    },
  };

  function start(listen: () => void, where: string): Promise<AdminAddress> {
    if (closing) return Promise.reject(new MeshError('MESH_ADMIN_CLOSED', `admin server of ${opts.component} is closed`, { hint: 'create a new admin server' }));
    if (server.listening) return Promise.reject(new MeshError('MESH_ADMIN_ALREADY_LISTENING', `admin server of ${opts.component} already listens on ${boundAddress?.address}:${boundAddress?.port}`));
    return new Promise<AdminAddress>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.off('listening', onListening);
        reject(listenError(err, opts.component, where));
      };
      const onListening = () => {
        server.off('error', onError);
        const addr = server.address();
        boundAddress = typeof addr === 'object' && addr !== null ? { address: addr.address, port: addr.port } : { address: String(addr), port: 0 };
        log?.info({ address: boundAddress }, 'admin server listening');
        resolve(boundAddress);
      };
      server.once('error', onError);
      server.once('listening', onListening);
      try {
        listen();
      } catch (err) {
        server.off('error', onError);
        server.off('listening', onListening);
        reject(listenError(err as NodeJS.ErrnoException, opts.component, where));
      }
    });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    let path = '/';
    let routeName: string | undefined;
    let answer: RenderedResponse;
    try {
      const url = parseTarget(req.url ?? '/');
      path = normalisePath(url.pathname);
      const found = resolve(method === 'HEAD' ? 'GET' : method, path);
      if (found.kind === 'not-found') {
        answer = textResponse(404, renderNotFound(path, admin.helpText(), opts.helpStyle));
      } else if (found.kind === 'wrong-method') {
        answer = methodNotAllowed(method, path, found.allowed, found.mutating);
      } else {
        routeName = `${found.entry.route.method} ${found.entry.route.path}`;
        const refusal = browserRefusal(req.headers, { checkHost: checkHost, mutatesState: found.entry.route.mutatesState === true, method });
        if (refusal) throw new AdminHttpError(403, refusal, { code: 'MESH_ADMIN_FORBIDDEN' });
        const request = toAdminRequest(req, method, url, found.params, admin);
        answer = renderResult(await found.entry.route.handler(request));
      }
    } catch (err) {
      answer = errorAnswer(err, method, path, routeName);
    }
    log?.debug({ method, path, status: answer.status }, 'admin request');
    try {
      send(res, answer);
    } catch (err) {
      // a handler's answer Node refuses (an invalid status or header) is the handler's bug: a 500 like any other
      try {
        send(res, errorAnswer(new Error(`invalid answer from the handler: ${messageOf(err)}`), method, path, routeName));
      } catch {
        res.destroy();
      }
    }
  }

  type Resolution =
    | { kind: 'found'; entry: Entry; params: Record<string, string> }
    | { kind: 'wrong-method'; allowed: string[]; mutating: boolean }
    | { kind: 'not-found' };

  /** The most specific pattern that matches and has this method; else the methods the path does have. */
  function resolve(method: string, path: string): Resolution {
    const matches: Array<{ entry: Entry; params: Record<string, string> }> = [];
    for (const entry of entries) {
      const params = entry.pattern.match(path);
      if (params) matches.push({ entry, params });
    }
    if (matches.length === 0) return { kind: 'not-found' };
    matches.sort((a, b) => compareSpecificity(a.entry.pattern, b.entry.pattern));
    const hit = matches.find((m) => m.entry.route.method === method);
    if (hit) return { kind: 'found', ...hit };
    const allowed = [...new Set(matches.map((m) => m.entry.route.method))];
    return { kind: 'wrong-method', allowed, mutating: matches.some((m) => m.entry.route.mutatesState) };
  }

  function methodNotAllowed(method: string, path: string, allowed: string[], mutating: boolean): RenderedResponse {
    const list = allowed.join(', ');
    // envoy style keeps Envoy's own sentence, which scripts written against Envoy may look for
    let text =
      opts.helpStyle === 'envoy' ? `Method ${method} not allowed, ${allowed.join(' or ')} required.\n` : `method ${method} not allowed on ${path}; allowed: ${list}\n`;
    if (method === 'GET' && mutating) {
      text += `this endpoint changes state: use ${allowed.join(' or ')}, e.g. curl -X ${allowed[0]} http://HOST:PORT${path}\n`;
    }
    return textResponse(405, text, { allow: list });
  }

  function errorAnswer(err: unknown, method: string, path: string, routeName: string | undefined): RenderedResponse {
    if (isAdminHttpError(err)) {
      if (err.status >= 500) recordAndLog(err, routeName, path);
      return textResponse(err.status, withNewline(err.message), err.headers);
    }
    if (err instanceof BadPathEncodingError) return textResponse(400, withNewline(err.message));
    recordAndLog(err, routeName, path);
    return textResponse(500, withNewline(`error in ${method} ${path}: ${messageOf(err)}`));
  }

  function recordAndLog(err: unknown, routeName: string | undefined, path: string): void {
    latest = { ...toLatestError(err, routeName), path };
    log?.error({ err, route: routeName, path }, 'admin handler failed');
  }

  return admin;
}

interface Target {
  pathname: string;
  searchParams: URLSearchParams;
}

/** Splits the request target by hand: `new URL()` would read `//x` as a host name. */
function parseTarget(target: string): Target {
  let rest = target;
  const absolute = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i.exec(rest);
  if (absolute) rest = rest.slice(absolute[0].length) || '/';
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  const pathname = q >= 0 ? rest.slice(0, q) : rest;
  return { pathname: pathname.startsWith('/') ? pathname : `/${pathname}`, searchParams: new URLSearchParams(q >= 0 ? rest.slice(q + 1) : '') };
}

function toAdminRequest(req: IncomingMessage, method: string, url: Target, params: Record<string, string>, server: AdminServer): AdminRequest {
  let body: Promise<string> | undefined;
  return {
    method,
    path: url.pathname,
    params,
    query: url.searchParams,
    headers: req.headers,
    raw: req,
    server,
    body() {
      body ??= readBody(req);
      return body;
    },
  };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        // stop buffering but keep reading (and dropping) so the 413 answer reaches the client
        req.off('data', onData);
        req.resume();
        chunks.length = 0;
        reject(new AdminHttpError(413, `request body larger than ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}

function send(res: ServerResponse, answer: RenderedResponse): void {
  if (res.headersSent || res.destroyed) return;
  // nosniff: a browser never renders a text or JSON answer as HTML
  res.writeHead(answer.status, { 'x-content-type-options': 'nosniff', ...answer.headers, 'content-length': String(answer.body.length) });
  res.end(answer.body);
}

/** `/help/` is `/help`; the root stays `/`. */
function normalisePath(pathname: string): string {
  return pathname.length > 1 && pathname.endsWith('/') ? pathname.slice(0, -1) : pathname;
}

function toLatestError(err: unknown, route: string | undefined): LatestError {
  const code = typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : undefined;
  return {
    time: new Date().toISOString(),
    ...(route === undefined ? {} : { route }),
    message: messageOf(err),
    ...(code === undefined ? {} : { code }),
  };
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withNewline(text: string): string {
  return text.endsWith('\n') ? text : `${text}\n`;
}

function listenError(err: NodeJS.ErrnoException, component: string, where: string): MeshError {
  if (err.code === 'EADDRINUSE') {
    return new MeshError('MESH_ADMIN_PORT_IN_USE', `admin server of ${component} cannot listen on ${where}: the address is already in use`, {
      hint: 'stop the process that holds the port (ss -ltnp) or choose another admin port',
      exitCode: EXIT_CODES.unavailable,
      cause: err,
    });
  }
  if (err.code === 'EACCES') {
    return new MeshError('MESH_ADMIN_LISTEN_DENIED', `admin server of ${component} is not allowed to listen on ${where}`, {
      hint: 'ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a higher port',
      exitCode: EXIT_CODES.permission,
      cause: err,
    });
  }
  return new MeshError('MESH_ADMIN_LISTEN_FAILED', `admin server of ${component} cannot listen on ${where}: ${err.message}`, {
    hint: 'check the admin address and port',
    exitCode: EXIT_CODES.failure,
    cause: err,
  });
}
