/**
 * At most one log line per `intervalMs` for a kind of event a peer can trigger at will (refused
 * handshakes, RBAC denials): `note()` returns how many happened since the last line when it is
 * time to log one, otherwise undefined. A scan or a misconfigured client must not flood the log.
 */
export class LogLimiter {
  private since = 0;
  private last = 0;

  constructor(private readonly intervalMs: number) {}

  note(now = Date.now()): number | undefined {
    this.since++;
    if (now - this.last < this.intervalMs) return undefined;
    const count = this.since;
    this.since = 0;
    this.last = now;
    return count;
  }
}
