import { EventEmitter } from 'node:events';
import type http from 'node:http';
import type net from 'node:net';

/**
 * Drain for a graceful exit or a hand-over to a new process (Envoy's drain
 * manager): stop accepting, close idle keep-alive connections, answer the
 * requests still in flight with `Connection: close`, and when every connection
 * is gone, or the drain time is up (the rest are cut), resolve. /server_info
 * shows `DRAINING` meanwhile.
 */

export type ServerState = 'PRE_INITIALIZING' | 'INITIALIZING' | 'LIVE' | 'DRAINING';

/** One downstream connection as the drain manager sees it; the data plane keeps `inFlight` current. */
export interface DrainableConnection {
  /** requests on this connection whose response has not finished */
  inFlight: number;
  /** close gracefully (idle connection, or after its last response) */
  close(): void;
  /** cut at once (drain time is up) */
  destroy(): void;
}

export interface DrainResult {
  /** connections still open when the drain time ran out, cut */
  forced: number;
  durationMs: number;
}

export class DrainManager extends EventEmitter {
  private currentState: ServerState;
  private readonly connections = new Set<DrainableConnection>();
  private readonly listenerStops: (() => void | Promise<void>)[] = [];
  private drainPromise: Promise<DrainResult> | undefined;

  constructor(initialState: ServerState = 'LIVE') {
    super();
    this.currentState = initialState;
  }

  get state(): ServerState { return this.currentState; }
  get draining(): boolean { return this.currentState === 'DRAINING'; }
  get openConnections(): number { return this.connections.size; }

  /** PRE_INITIALIZING / INITIALIZING -> LIVE once the proxy serves (not after a drain started). */
  setState(state: Exclude<ServerState, 'DRAINING'>): void {
    if (this.draining) return;
    this.currentState = state;
  }

  /** The data plane asks this for each response: true = send `Connection: close` and close after it. */
  shouldCloseConnection(): boolean { return this.currentState === 'DRAINING'; }

  /** A function that stops accepting new connections (close a listening server); run first on drain. */
  addListenerStop(stop: () => void | Promise<void>): void { this.listenerStops.push(stop); }

  /** Tracks a downstream connection until the returned function is called (on close). */
  trackConnection(conn: DrainableConnection): () => void {
    this.connections.add(conn);
    if (this.draining && conn.inFlight === 0) conn.close();
    return () => {
      this.connections.delete(conn);
      if (this.draining && this.connections.size === 0) this.emit('empty');
    };
  }

  /** The data plane calls this when a response finished on `conn`: during a drain, an idle connection closes. */
  responseFinished(conn: DrainableConnection): void {
    if (this.draining && conn.inFlight === 0) conn.close();
  }

  /** Starts draining (once; later calls return the same promise). */
  drain(drainTimeMs: number): Promise<DrainResult> {
    this.drainPromise ??= this.runDrain(drainTimeMs);
    return this.drainPromise;
  }

  private async runDrain(drainTimeMs: number): Promise<DrainResult> {
    const started = Date.now();
    this.currentState = 'DRAINING';
    this.emit('draining');
    await Promise.all(this.listenerStops.map(async (stop) => { try { await stop(); } catch { /* already closed */ } }));
    for (const c of this.connections) if (c.inFlight === 0) c.close();
    let forced = 0;
    if (this.connections.size > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.off('empty', onEmpty);
          forced = this.connections.size;
          for (const c of [...this.connections]) c.destroy();
          this.connections.clear();
          resolve();
        }, drainTimeMs);
        const onEmpty = () => {
          clearTimeout(timer);
          resolve();
        };
        this.once('empty', onEmpty);
      });
    }
    const result = { forced, durationMs: Date.now() - started };
    this.emit('drained', result);
    return result;
  }

  /**
   * Tracks a node:http server: its listener stops on drain, its connections are
   * counted, and responses during a drain carry `Connection: close`.
   */
  trackHttpServer(server: http.Server): void {
    this.addListenerStop(() => new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      // close() resolves only when every connection is gone; the drain waits on its own terms
      setImmediate(resolve);
    }));
    const bySocket = new WeakMap<net.Socket, DrainableConnection>();
    // responses in flight when the drain starts still get `Connection: close` if their headers are not out yet
    const pending = new Set<http.ServerResponse>();
    this.on('draining', () => {
      for (const res of pending) if (!res.headersSent) res.shouldKeepAlive = false;
    });
    server.on('connection', (socket: net.Socket) => {
      const conn: DrainableConnection = {
        inFlight: 0,
        close: () => { if (conn.inFlight === 0) socket.end(); },
        destroy: () => socket.destroy(),
      };
      bySocket.set(socket, conn);
      const untrack = this.trackConnection(conn);
      socket.once('close', untrack);
    });
    server.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      const conn = bySocket.get(req.socket);
      if (!conn) return;
      conn.inFlight++;
      if (this.draining) res.shouldKeepAlive = false;
      pending.add(res);
      let done = false;
      const finished = () => {
        if (done) return;
        done = true;
        pending.delete(res);
        conn.inFlight--;
        this.responseFinished(conn);
      };
      res.once('finish', finished);
      res.once('close', finished);
    });
  }
}
