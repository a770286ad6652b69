// A gRPC server and client for the HTTP/2 lab (issue 14), on @grpc/grpc-js with a hand-written
// service definition and JSON serializers (no protoc, no proto-loader). Both know nothing of the
// mesh: the client calls a name (captured) or 127.0.0.1:15001 with an :authority. Every call and
// every stream is bounded in count and time; the client prints one `result {json}` line per run.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

/** The grpc-js entry point, loaded by absolute path from the scripts (they run as the app user, outside the workspace). */
export const GRPC_JS = createRequire(import.meta.url).resolve('@grpc/grpc-js');

export const GRPC_SERVICE = 'mesh.test.Echo';

/** Shared by both scripts: the service definition, JSON messages, random payloads and their digest. */
const COMMON = `
const crypto = require('node:crypto');
const grpc = require(process.argv[2]);
const ser = (v) => Buffer.from(JSON.stringify(v));
const de = (b) => JSON.parse(b.toString('utf8'));
const method = (name, requestStream, responseStream) => ({ path: '/${GRPC_SERVICE}/' + name, requestStream, responseStream, requestSerialize: ser, requestDeserialize: de, responseSerialize: ser, responseDeserialize: de });
const definition = { Unary: method('Unary', false, false), ServerStream: method('ServerStream', false, true), ClientStream: method('ClientStream', true, false), Bidi: method('Bidi', true, true), Stats: method('Stats', false, false) };
const pad = (n) => crypto.randomBytes(Math.ceil((n * 3) / 4)).toString('base64').slice(0, n);
const sha = (s) => crypto.createHash('sha256').update(s || '').digest('hex');
const MAX = 16 * 1024 * 1024;
`;

/** Usage: grpc-server.cjs GRPC_JS HOST_NAME PORT */
export const GRPC_SERVER_SOURCE = `${COMMON}
const [host, port] = [process.argv[3], Number(process.argv[4])];
// cancelled: tags of calls whose caller went away before the answer (a reset relayed by the proxies)
const stats = { cancelled: [], calls: 0 };
const cancelled = (req) => stats.cancelled.push((req && req.tag) || '?');
const trailer = (extra) => { const m = new grpc.Metadata(); m.set('x-served-by', host); for (const [k, v] of Object.entries(extra || {})) m.set(k, v); return m; };
const server = new grpc.Server({ 'grpc.max_receive_message_length': MAX, 'grpc.max_send_message_length': MAX });
server.addService(definition, {
  Unary(call, callback) {
    stats.calls++;
    const req = call.request;
    let done = false;
    call.on('cancelled', () => { if (!done) { done = true; cancelled(req); } });
    setTimeout(() => {
      if (done) return;
      done = true;
      if (req.fail) return callback({ code: req.fail.code, details: req.fail.message, metadata: trailer({ 'x-item': String(req.fail.item) }) });
      callback(null, { host, got: (req.pad || '').length, sha: sha(req.pad), pad: pad(req.replySize || 0) }, trailer());
    }, Math.min(req.delayMs || 0, 30000));
  },
  ServerStream(call) {
    stats.calls++;
    const { count, intervalMs, size } = call.request;
    let sent = 0;
    let done = false;
    call.on('cancelled', () => { if (!done) { done = true; cancelled(call.request); } });
    const tick = () => {
      if (done) return;
      if (sent >= Math.min(count, 10000)) { done = true; call.end(trailer({ 'x-sent': String(sent) })); return; }
      call.write({ seq: sent++, host, pad: pad(size || 0) });
      setTimeout(tick, Math.min(intervalMs || 0, 5000));
    };
    tick();
  },
  ClientStream(call, callback) {
    stats.calls++;
    let count = 0, bytes = 0;
    const hash = crypto.createHash('sha256');
    call.on('data', (m) => { count++; bytes += m.pad.length; hash.update(m.pad); });
    call.on('error', () => undefined);
    call.on('end', () => callback(null, { host, count, bytes, sha: hash.digest('hex') }, trailer()));
  },
  Bidi(call) {
    stats.calls++;
    let done = false;
    call.on('data', (m) => call.write({ seq: m.seq, host, got: m.pad.length, pad: pad(m.replySize || 0) }));
    call.on('error', () => undefined);
    call.on('cancelled', () => { if (!done) { done = true; cancelled(); } });
    call.on('end', () => { done = true; call.end(trailer()); });
  },
  Stats(call, callback) { callback(null, stats); },
});
server.bindAsync('0.0.0.0:' + port, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) { console.error('bind failed: ' + err.message); process.exit(1); }
  console.log('grpc ' + host + ' listening on ' + port);
});
process.on('SIGTERM', () => server.tryShutdown(() => process.exit(0)));
`;

/**
 * Usage: grpc-client.cjs GRPC_JS TARGET AUTHORITY SCENARIO [ARG]: TARGET host:port (a mesh name, or
 * 127.0.0.1:15001), AUTHORITY the :authority to send ('-' for the target's own).
 */
export const GRPC_CLIENT_SOURCE = `${COMMON}
const [target, authority, scenario, arg] = process.argv.slice(3);
const Client = grpc.makeGenericClientConstructor(definition, '${GRPC_SERVICE}');
const options = { 'grpc.max_receive_message_length': MAX, 'grpc.max_send_message_length': MAX, 'grpc.service_config_disable_resolution': 1 };
if (authority !== '-') options['grpc.default_authority'] = authority;
const client = new Client(target, grpc.credentials.createInsecure(), options);
const deadline = (ms) => new Date(Date.now() + ms);
const status = (err) => (err ? { code: err.code, details: err.details, trailers: err.metadata ? err.metadata.getMap() : {} } : { code: 0, details: 'OK' });
const unary = (name, req, ms = 20000) => new Promise((resolve) => {
  let reply;
  const call = client[name](req, { deadline: deadline(ms) }, (err, value) => { reply = value; });
  call.on('status', (s) => resolve({ code: s.code, details: s.details, reply, trailers: s.metadata.getMap() }));
});
/** A server stream; cancelAfter: cancel once that many messages arrived. */
const serverStream = (req, { cancelAfter, ms = 60000, onFirst } = {}) => new Promise((resolve) => {
  const call = client.ServerStream(req, { deadline: deadline(ms) });
  const seqs = [];
  call.on('data', (m) => {
    seqs.push(m.seq);
    if (seqs.length === 1 && onFirst) onFirst();
    if (cancelAfter && seqs.length === cancelAfter) call.cancel();
  });
  call.on('error', () => undefined);
  call.on('status', (s) => resolve({ code: s.code, details: s.details, received: seqs.length, inOrder: seqs.every((v, i) => v === i), trailers: s.metadata.getMap() }));
});
/** A bidirectional stream: \`rounds\` ping-pongs, each waiting for its answer, intervalMs apart. */
const bidi = ({ rounds, size, replySize, intervalMs = 0, ms = 60000, onFirst }) => new Promise((resolve) => {
  const call = client.Bidi({ deadline: deadline(ms) });
  const answers = [];
  let seq = 0;
  const send = () => call.write({ seq: seq++, pad: pad(size || 0), replySize });
  call.on('data', (m) => {
    answers.push(m);
    if (answers.length === 1 && onFirst) onFirst();
    if (answers.length >= rounds) call.end();
    else setTimeout(send, intervalMs);
  });
  call.on('error', () => undefined);
  call.on('status', (s) => resolve({ code: s.code, details: s.details, received: answers.length, inOrder: answers.every((a, i) => a.seq === i), sizesOk: answers.every((a) => a.got === (size || 0)) }));
  send();
});
const scenarios = {
  async unary() { return unary('Unary', { pad: 'ping' }); },
  async large() {
    const body = pad(4 * 1024 * 1024);
    const r = await unary('Unary', { pad: body, replySize: 4 * 1024 * 1024 });
    return { code: r.code, details: r.details, shaOk: r.reply ? r.reply.sha === sha(body) : false, replyBytes: r.reply ? r.reply.pad.length : 0 };
  },
  async error() { return unary('Unary', { fail: { code: 5, message: 'no such item: 42', item: 42 } }); },
  async deadline() {
    const started = Date.now();
    const r = await unary('Unary', { delayMs: 3000, tag: 'deadline' }, Number(arg || 300));
    return { ...r, elapsedMs: Date.now() - started };
  },
  async serverStream() { return serverStream({ count: 50, intervalMs: 0, size: 1024 }); },
  async cancel() { return serverStream({ count: 1000, intervalMs: 20, size: 16, tag: arg }, { cancelAfter: 5 }); },
  async clientStream() {
    const call = await new Promise((resolve) => {
      const hash = crypto.createHash('sha256');
      let bytes = 0;
      const c = client.ClientStream({ deadline: deadline(30000) }, (err, reply) => resolve({ ...status(err), reply, sha: hash.digest('hex'), bytes }));
      for (let i = 0; i < 64; i++) { const p = pad(64 * 1024); hash.update(p); bytes += p.length; c.write({ seq: i, pad: p }); }
      c.end();
    });
    return { code: call.code, details: call.details, count: call.reply && call.reply.count, bytesOk: call.reply ? call.reply.bytes === call.bytes : false, shaOk: call.reply ? call.reply.sha === call.sha : false };
  },
  async bidi() { return bidi({ rounds: 50, size: 2048, replySize: 2048 }); },
  async stats() { return unary('Stats', {}); },
  /** Long-lived streams: \`arg\` server streams and as many bidi streams, about 8 s each; prints 'streaming' once all flow. */
  async long() {
    const n = Number(arg || 10);
    let flowing = 0;
    const onFirst = () => { if (++flowing === 2 * n) console.log('streaming'); };
    const streams = [
      ...Array.from({ length: n }, () => serverStream({ count: 80, intervalMs: 100, size: 512 }, { onFirst })),
      ...Array.from({ length: n }, () => bidi({ rounds: 80, size: 256, replySize: 256, intervalMs: 100, onFirst })),
    ];
    const results = await Promise.all(streams);
    return { streams: results.map((r) => ({ code: r.code, details: r.details, received: r.received, inOrder: r.inOrder })) };
  },
};
const run = scenarios[scenario];
if (!run) { console.error('unknown scenario ' + scenario); process.exit(2); }
const guard = setTimeout(() => { console.log('result ' + JSON.stringify({ code: -1, details: 'client gave up after 90 s' })); process.exit(1); }, 90000);
run().then((r) => { clearTimeout(guard); console.log('result ' + JSON.stringify(r)); client.close(); process.exit(0); }, (err) => { console.log('result ' + JSON.stringify({ code: -2, details: String(err && err.stack || err) })); process.exit(1); });
`;

export function writeGrpcScripts(dir: string): { server: string; client: string } {
  const server = join(dir, 'grpc-server.cjs');
  const client = join(dir, 'grpc-client.cjs');
  writeFileSync(server, GRPC_SERVER_SOURCE, { mode: 0o644 });
  writeFileSync(client, GRPC_CLIENT_SOURCE, { mode: 0o644 });
  return { server, client };
}

/** The client's `result` line. */
export function parseResult<T = any>(lines: string[]): T | undefined {
  const line = lines.find((l) => l.startsWith('result '));
  return line ? (JSON.parse(line.slice('result '.length)) as T) : undefined;
}
