// Issue 14: HTTP/2 and gRPC through the sidecars, with real peers and the real capture path. B
// serves `order` (HTTP/1.1, the plain app), `inventory` (a @grpc/grpc-js server, port declared
// grpc) and `static` (Debian's nghttpd, h2c only, port declared http2). A's application calls them
// by name (captured: DNS to mesh-dns, the VIP DNATed to 15001) and through 15001 directly, with
// curl --http2-prior-knowledge, nghttp, h2load and a grpc-js client: the four call shapes with
// deadlines, cancellations and 4 MiB messages, and a hot restart of A's proxy during long-lived
// streams. Run twice: h2c between the sidecars, and h2 over mTLS (ALPN) between them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { preflight, IN_CI } from './support/preflight.js';
import { nsArgv, nsRun, run, waitFor, withLog, type Managed } from './support/exec.js';
import { createWorld, hostRules, APP_PORT, type World } from './support/world.js';
import { APP_USER } from './support/infra.js';
import { admin, adminJson, appCurl, AGENT_BIN, clusterStat, startSidecar, statSum, type Role, type Sidecar } from './support/mesh.js';
import { GRPC_JS, GRPC_SERVICE, parseResult, writeGrpcScripts } from './support/grpc.js';
import { parseClustersText } from '../../packages/agent/src/diagnostics/envoy-formats.js';

const H2_TOOLS = ['nghttpd', 'nghttp', 'h2load'] as const;
const pre = preflight(H2_TOOLS);
if (!pre.ok && !IN_CI) console.warn(`e2e HTTP/2 lab skipped: ${pre.reason}`);

const AGENT_ADMIN = 15020;
const PROXY_ADMIN = 15000;
const GRPC_PORT = 50051;
const H2_PORT = 8090;
const TRUST_DOMAIN = 'cluster.local';
const INVENTORY_OUT = `out#${GRPC_PORT}#inventory`;
const STATIC_OUT = `out#${H2_PORT}#static`;
const ORDER_OUT = `out#${APP_PORT}#order`;
const BIG_FILE_BYTES = 1024 * 1024;



/** The first object in a JSON tree whose `name` is `name` (a cluster in /config_dump, wherever the dump nests it). */
function findNamed(tree: unknown, name: string): Record<string, unknown> | undefined {
  if (!tree || typeof tree !== 'object') return undefined;
  if (!Array.isArray(tree) && (tree as { name?: unknown }).name === name) return tree as Record<string, unknown>;
  for (const value of Object.values(tree as Record<string, unknown>)) {
    const found = findNamed(value, name);
    if (found) return found;
  }
  return undefined;
}

/** A gRPC message frame (uncompressed) of a JSON request, for curl. */
function grpcFrame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** Response headers (and trailers) of a `curl -D -` output, lower-cased names. */
function headersOf(out: string): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const line of out.split(/\r?\n/)) {
    const m = /^([a-z0-9-]+): ?(.*)$/i.exec(line);
    if (m) headers[m[1].toLowerCase()] = m[2].trim();
  }
  return headers;
}

const MODES = [
  { name: 'h2c between the sidecars', mtls: false },
  { name: 'h2 over mTLS (ALPN) between the sidecars', mtls: true },
] as const;

// in CI a missing tool fails (the describe below would only skip)
describe.runIf(IN_CI)('e2e HTTP/2 lab preconditions', () => {
  it('CI has root, namespaces, nghttp2-client and nghttp2-server', () => {
    expect(pre.reason ?? 'ok', `the HTTP/2 lab cannot run in CI: ${pre.reason}`).toBe('ok');
  });
});

describe.skipIf(!pre.ok)('e2e: HTTP/2 and gRPC through the sidecars (issue 14)', () => {
  for (const mode of MODES) {
    describe(mode.name, () => {
      let world: World;
      const sidecars: Partial<Record<Role, Sidecar>> = {};
      let grpcScripts: { server: string; client: string };
      let grpcServer: Managed;
      let filesDir: string;
      let bigSha: string;
      let pki: string;
      let userCert: { cert: string; key: string } | undefined;

      /** Runs the grpc-js client in A's namespace as the application's user; its `result` line. */
      const grpcCall = async (scenario: string, opts: { target?: string; authority?: string; arg?: string } = {}) => {
        const args = [grpcScripts.client, GRPC_JS, opts.target ?? `inventory:${GRPC_PORT}`, opts.authority ?? '-', scenario, ...(opts.arg ? [opts.arg] : [])];
        const res = await nsRun(world.host('a').ns, process.execPath, args, { as: APP_USER, allowFail: true, timeoutMs: 100_000 });
        const result = parseResult(res.stdout.split('\n'));
        if (!result) throw new Error(`grpc client ${scenario} printed no result (exit ${res.code}):\n${res.stdout}\n${res.stderr}`);
        return result;
      };
      const a = () => world.host('a').ns;
      const b = () => world.host('b').ns;

      beforeAll(async () => {
        world = await createWorld({ apps: ['a', 'b'] });
        // nghttpd on B: h2c only (it refuses HTTP/1.1), serving a small file and 1 MiB of random bytes
        filesDir = join(world.dir, 'h2files');
        mkdirSync(filesDir, { recursive: true });
        writeFileSync(join(filesDir, 'hello.txt'), 'hello over h2 from nghttpd\n', { mode: 0o644 });
        const big = randomBytes(BIG_FILE_BYTES);
        writeFileSync(join(filesDir, 'big.bin'), big, { mode: 0o644 });
        bigSha = (await run('sha256sum', [join(filesDir, 'big.bin')])).stdout.split(' ')[0];
        const nghttpd = world.procs.start('nghttpd-b', nsArgv(b(), 'nghttpd', ['--no-tls', '-d', filesDir, String(H2_PORT)], APP_USER));
        await waitFor('nghttpd on B', async () => (await nsRun(b(), 'curl', ['-s', '--http2-prior-knowledge', '--max-time', '2', `http://127.0.0.1:${H2_PORT}/hello.txt`], { allowFail: true })).stdout.includes('nghttpd'), { timeoutMs: 15_000 })
          .catch((err) => { throw withLog(err, nghttpd); });
        grpcScripts = writeGrpcScripts(world.dir);
        grpcServer = world.procs.start('grpc-b', nsArgv(b(), process.execPath, [grpcScripts.server, GRPC_JS, 'host-b', String(GRPC_PORT)], APP_USER));
        await waitFor('the gRPC server on B', async () => grpcServer.lines.some((l) => l.includes('listening')), { timeoutMs: 15_000 }).catch((err) => { throw withLog(err, grpcServer); });

        const extraServices = [
          { name: 'inventory', ports: [{ targetPort: GRPC_PORT, protocol: 'grpc' }] },
          { name: 'static', ports: [{ targetPort: H2_PORT, protocol: 'http2' }] },
        ];
        const mtlsConfig = (caDir: string, modeLine: string) => ['mtls:', `  trustDomain: ${TRUST_DOMAIN}`, '  ca:', `    dir: ${caDir}`, modeLine];
        let mtlsB: string[] = [];
        let mtlsA: string[] = [];
        if (mode.mtls) {
          pki = join(world.dir, 'pki');
          mkdirSync(pki, { recursive: true });
          const ca = async (args: string[]) => {
            const res = await run(process.execPath, [AGENT_BIN, 'ca', ...args], { allowFail: true, timeoutMs: 60_000 });
            expect(res.code, `mesh-agent ca ${args.join(' ')}\n${res.stdout}${res.stderr}`).toBe(0);
          };
          await ca(['init', '--dir', join(pki, 'root'), '--trust-domain', TRUST_DOMAIN]);
          for (const host of ['a', 'b']) await ca(['intermediate', '--root-dir', join(pki, 'root'), '--dir', join(pki, `ca-${host}`), '--name', `host-${host}`]);
          await ca(['issue', '--ca-dir', join(pki, 'ca-a'), '--service', 'user', '--trust-domain', TRUST_DOMAIN, '--out', join(pki, 'client-user')]);
          userCert = { cert: join(pki, 'client-user', 'cert-chain.pem'), key: join(pki, 'client-user', 'key.pem') };
          // strict on B: nothing reaches inventory or static in plaintext, so every call below went over mTLS
          mtlsB = mtlsConfig(join(pki, 'ca-b'), '  mode: strict');
          mtlsA = mtlsConfig(join(pki, 'ca-a'), '  mode: permissive');
        }
        sidecars.b = await startSidecar(world, 'b', { extraServices, extraConfig: mtlsB });
        // a long drain: the hot restart test's streams (about 8 s) finish on the old epoch
        sidecars.a = await startSidecar(world, 'a', { extraConfig: mtlsA, drainTimeMs: 30_000 });
        await waitFor('A to know inventory and static on B', async () => {
          const { stdout } = await admin(a(), PROXY_ADMIN, '/clusters');
          return stdout.includes(`${INVENTORY_OUT}::${world.host('b').address}:${GRPC_PORT}::`) && stdout.includes(`${STATIC_OUT}::${world.host('b').address}:${H2_PORT}::`);
        }, { timeoutMs: 30_000 });
      }, 300_000);

      afterAll(async () => {
        await world?.teardown();
        if (world) expect(await hostRules()).toBe(world.hostRulesBefore);
      }, 120_000);

      it('B captures its grpc and http2 ports and registers them with metadata.protocol; A\'s proxy gets HTTP/2 clusters for them', async () => {
        const { stdout: nat } = await nsRun(b(), 'iptables-save', ['-t', 'nat']);
        for (const port of [APP_PORT, GRPC_PORT, H2_PORT]) expect(nat).toMatch(new RegExp(`-A ISTIO_INBOUND .*--dport ${port} -j ISTIO_REDIRECT`));
        const health = await adminJson(b(), AGENT_ADMIN, '/health');
        const registered = Object.fromEntries(health.registry.registered.map((r: { port: number; metadata: Record<string, string> }) => [r.port, r.metadata.protocol]));
        expect(registered).toEqual({ [APP_PORT]: 'http', [GRPC_PORT]: 'grpc', [H2_PORT]: 'http2' });
        const bootstrapA = JSON.parse(readFileSync(join(sidecars.a!.dir, 'run', 'proxy-bootstrap.json'), 'utf8'));
        const protocolOf = (name: string) => bootstrapA.clusters.find((c: { name: string }) => c.name === name)?.protocol;
        expect([protocolOf(INVENTORY_OUT), protocolOf(STATIC_OUT), protocolOf(ORDER_OUT)]).toEqual(['http2', 'http2', 'http1']);
        const bootstrapB = JSON.parse(readFileSync(join(sidecars.b!.dir, 'run', 'proxy-bootstrap.json'), 'utf8'));
        expect(bootstrapB.clusters.find((c: { name: string }) => c.name === `in#${GRPC_PORT}#inventory`)?.protocol).toBe('http2');
      });

      it('curl --http2-prior-knowledge by name through the capture path: nghttpd answers over HTTP/2 end to end, both proxies count an HTTP/2 connection', async () => {
        const before = { a: await statSum(a(), /downstream_cx_http2_total$/), b: await statSum(b(), /downstream_cx_http2_total$/) };
        const res = await appCurl(a(), `http://static:${H2_PORT}/hello.txt`, ['--http2-prior-knowledge', '-D', '-']);
        expect(res.stdout).toMatch(/^HTTP\/2 200/);
        expect(res.stdout).toContain('hello over h2 from nghttpd');
        expect(headersOf(res.stdout).server).toMatch(/nghttpd/);
        expect(await statSum(a(), /downstream_cx_http2_total$/)).toBeGreaterThan(before.a);
        // B's inbound side: A's proxy spoke HTTP/2 to it (the port is declared http2)
        expect(await statSum(b(), /downstream_cx_http2_total$/)).toBeGreaterThan(before.b);
        expect(await statSum(a(), clusterStat(STATIC_OUT, 'upstream_cx_http2_total'))).toBeGreaterThan(0);
      });

      it('an HTTP/2 caller reaches the HTTP/1.1 app (h2 downstream, h1 upstream)', async () => {
        const res = await appCurl(a(), 'http://order/h2-to-h1', ['--http2-prior-knowledge', '-D', '-']);
        expect(res.stdout).toMatch(/^HTTP\/2 200/);
        expect(res.stdout).toContain('hello from host-b path /h2-to-h1');
      });

      it('1 MiB bodies arrive intact (sha256), and nghttp gets 20 of them multiplexed on one connection', async () => {
        const sum = await nsRun(a(), 'sh', ['-c', `curl -s --max-time 20 --http2-prior-knowledge http://static:${H2_PORT}/big.bin | sha256sum`], { as: APP_USER });
        expect(sum.stdout.split(' ')[0]).toBe(bigSha);
        const nghttp = await nsRun(a(), 'nghttp', ['-ns', '-m', '20', `http://static:${H2_PORT}/big.bin`], { as: APP_USER, allowFail: true, timeoutMs: 60_000 });
        expect(nghttp.code, nghttp.stdout + nghttp.stderr).toBe(0);
        const rows = nghttp.stdout.split('\n').filter((l) => /\s\/big\.bin$/.test(l));
        expect(rows, nghttp.stdout).toHaveLength(20);
        for (const row of rows) expect(row).toMatch(/\s200\s+1M\s/);
      });

      it('h2load: 2000 requests, 20 concurrent streams on each of 4 connections, all succeed', async () => {
        const res = await nsRun(a(), 'h2load', ['-n', '2000', '-c', '4', '-m', '20', '-T', '20', `http://static:${H2_PORT}/hello.txt`], { as: APP_USER, allowFail: true, timeoutMs: 90_000 });
        expect(res.stdout).toMatch(/requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored/);
        expect(res.stdout).toMatch(/status codes: 2000 2xx/);
      });

      it('through 15001 directly: curl --http2-prior-knowledge and a grpc-js client with the service as :authority', async () => {
        const res = await appCurl(a(), `http://static:${H2_PORT}/hello.txt`, ['--http2-prior-knowledge', '--connect-to', `static:${H2_PORT}:127.0.0.1:15001`, '-D', '-']);
        expect(res.stdout).toMatch(/^HTTP\/2 200/);
        expect(res.stdout).toContain('hello over h2 from nghttpd');
        const unary = await grpcCall('unary', { target: '127.0.0.1:15001', authority: `inventory:${GRPC_PORT}` });
        expect(unary).toMatchObject({ code: 0, reply: { host: 'host-b', got: 4 } });
      });

      it('gRPC unary by name: the reply and the server\'s trailing metadata arrive', async () => {
        const r = await grpcCall('unary');
        expect(r).toMatchObject({ code: 0, reply: { host: 'host-b', got: 4 } });
        expect(r.trailers['x-served-by']).toBe('host-b');
      });

      it('gRPC server streaming, client streaming and bidirectional streaming, in order and complete', async () => {
        const server = await grpcCall('serverStream');
        expect(server).toMatchObject({ code: 0, received: 50, inOrder: true });
        expect(server.trailers).toMatchObject({ 'x-served-by': 'host-b', 'x-sent': '50' });
        const client = await grpcCall('clientStream');
        expect(client).toEqual({ code: 0, details: 'OK', count: 64, bytesOk: true, shaOk: true });
        const bidi = await grpcCall('bidi');
        expect(bidi).toEqual({ code: 0, details: 'OK', received: 50, inOrder: true, sizesOk: true });
      });

      it('gRPC 4 MiB request and 4 MiB reply, byte for byte', async () => {
        expect(await grpcCall('large')).toEqual({ code: 0, details: 'OK', shaOk: true, replyBytes: 4 * 1024 * 1024 });
      });

      it('an application\'s gRPC error keeps its grpc-status, grpc-message and trailing metadata', async () => {
        const r = await grpcCall('error');
        expect(r.code).toBe(5);
        expect(r.details).toBe('no such item: 42');
        expect(r.trailers).toMatchObject({ 'x-item': '42', 'x-served-by': 'host-b' });
      });

      it('a client deadline ends the call with DEADLINE_EXCEEDED and the server sees the cancellation', async () => {
        const r = await grpcCall('deadline', { arg: '300' });
        expect(r.code).toBe(4);
        expect(r.elapsedMs).toBeLessThan(2_500);
        await waitFor('the gRPC server to see the deadline\'s cancellation', async () => (await grpcCall('stats')).reply.cancelled.includes('deadline'), { timeoutMs: 10_000, intervalMs: 500 });
      });

      it('grpc-timeout is honoured as the route timeout: the proxy answers a trailers-only DEADLINE_EXCEEDED (HTTP 200, grpc-status 4)', async () => {
        const frame = join(world.dir, 'slow-unary.bin');
        writeFileSync(frame, grpcFrame({ delayMs: 3000, tag: 'grpc-timeout' }), { mode: 0o644 });
        const started = Date.now();
        const res = await appCurl(a(), `http://inventory:${GRPC_PORT}/${GRPC_SERVICE}/Unary`, [
          '--http2-prior-knowledge', '-D', '-', '-o', '/dev/null', '-H', 'content-type: application/grpc', '-H', 'te: trailers', '-H', 'grpc-timeout: 200m', '--data-binary', `@${frame}`,
        ]);
        expect(Date.now() - started).toBeLessThan(2_500);
        expect(res.stdout).toMatch(/^HTTP\/2 200/);
        const headers = headersOf(res.stdout);
        expect(headers['content-type']).toMatch(/^application\/grpc/);
        expect(headers['grpc-status']).toBe('4');
      });

      it('a client cancellation of a server stream reaches the server (RST_STREAM relayed by both proxies)', async () => {
        const tag = `cancel-${mode.mtls ? 'mtls' : 'h2c'}`;
        const r = await grpcCall('cancel', { arg: tag });
        expect(r).toMatchObject({ code: 1, received: 5 });
        await waitFor('the gRPC server to see the cancellation', async () => (await grpcCall('stats')).reply.cancelled.includes(tag), { timeoutMs: 10_000, intervalMs: 500 });
      });

      it('admin: /stats count gRPC statuses per cluster, /clusters and /config_dump show each cluster\'s protocol', async () => {
        expect(await statSum(a(), clusterStat(INVENTORY_OUT, 'upstream_cx_http2_total'))).toBeGreaterThan(0);
        expect(await statSum(a(), clusterStat(INVENTORY_OUT, `grpc.${GRPC_SERVICE}.Unary.0`))).toBeGreaterThan(0);
        expect(await statSum(a(), clusterStat(INVENTORY_OUT, `grpc.${GRPC_SERVICE}.Unary.5`))).toBeGreaterThan(0);
        expect(await statSum(a(), clusterStat(INVENTORY_OUT, `grpc.${GRPC_SERVICE}.Unary.failure`))).toBeGreaterThan(0);
        const clusters = parseClustersText((await admin(a(), PROXY_ADMIN, '/clusters')).stdout);
        expect([INVENTORY_OUT, STATIC_OUT, ORDER_OUT].map((name) => clusters.get(name)?.settings.protocol)).toEqual(['http2', 'http2', 'http1']);
        const dump = await adminJson(a(), PROXY_ADMIN, '/config_dump');
        expect(JSON.stringify(findNamed(dump, INVENTORY_OUT))).toContain('http2_protocol_options');
        expect(JSON.stringify(findNamed(dump, ORDER_OUT))).not.toContain('http2_protocol_options');
      });

      // only the mTLS run has an ALPN to negotiate: the test exists there alone (no skipped test in the h2c run)
      if (mode.mtls) it('B\'s captured gRPC port negotiates h2 by ALPN over mTLS (openssl s_client from outside the mesh)', async () => {
        const args = ['s_client', '-connect', `${world.host('b').address}:${GRPC_PORT}`, '-servername', `outbound_.${GRPC_PORT}_._.inventory.default.svc.cluster.local`,
          '-CAfile', join(pki, 'root', 'root-cert.pem'), '-cert', userCert!.cert, '-cert_chain', userCert!.cert, '-key', userCert!.key, '-alpn', 'h2,http/1.1', '-verify_return_error'];
        const res = await nsRun(world.host('infra').ns, 'openssl', args, { input: '', allowFail: true, timeoutMs: 15_000 });
        const output = `${res.stdout}\n${res.stderr}`;
        expect(output).toMatch(/Verify return code: 0 \(ok\)/);
        expect(output).toMatch(/ALPN protocol: h2\b/);
        expect(await statSum(a(), clusterStat(INVENTORY_OUT, 'ssl.handshake'))).toBeGreaterThan(0);
      });

      it('hot restart of A\'s proxy during 20 long-lived gRPC streams (server and bidirectional): no stream lost, every message in order', async () => {
        const long = world.procs.start('grpc-long', nsArgv(a(), process.execPath, [grpcScripts.client, GRPC_JS, `inventory:${GRPC_PORT}`, '-', 'long', '10'], APP_USER));
        await waitFor('the 20 streams to flow', async () => long.lines.includes('streaming'), { timeoutMs: 30_000 }).catch((err) => { throw withLog(err, long); });
        const epoch = Number((await admin(a(), AGENT_ADMIN, '/epoch/envoy')).stdout.trim());
        const hot = await admin(a(), AGENT_ADMIN, '/hot_restart/envoy', 'POST');
        expect(hot.code).toBe(0);
        await waitFor('the new epoch', async () => Number((await admin(a(), AGENT_ADMIN, '/epoch/envoy')).stdout.trim()) === epoch + 1, { timeoutMs: 30_000 });
        // a new call while the old epoch drains goes to the new one
        expect(await grpcCall('unary')).toMatchObject({ code: 0, reply: { host: 'host-b' } });
        await Promise.race([long.exited, new Promise((resolve) => setTimeout(resolve, 60_000))]);
        const result = parseResult(long.lines);
        expect(result, long.lines.slice(-5).join('\n')).toBeDefined();
        expect(result.streams).toHaveLength(20);
        for (const s of result.streams) expect(s).toEqual({ code: 0, details: 'OK', received: 80, inOrder: true });
      });

      it('no healthy upstream for a gRPC call: the proxy answers a gRPC error, HTTP 200 with grpc-status 14 UNAVAILABLE', async () => {
        await world.procs.stop(grpcServer);
        // B's agent sees the port closed (TCP check), the registry marks the instance unhealthy, A's cluster follows
        await waitFor('A to see inventory without a healthy endpoint', async () => {
          const inventory = parseClustersText((await admin(a(), PROXY_ADMIN, '/clusters')).stdout).get(INVENTORY_OUT);
          return Boolean(inventory) && !inventory!.hosts.some((h) => h.healthy);
        }, { timeoutMs: 30_000 });
        const frame = join(world.dir, 'unary.bin');
        writeFileSync(frame, grpcFrame({ pad: 'ping' }), { mode: 0o644 });
        const res = await appCurl(a(), `http://inventory:${GRPC_PORT}/${GRPC_SERVICE}/Unary`, [
          '--http2-prior-knowledge', '-D', '-', '-o', '/dev/null', '-H', 'content-type: application/grpc', '-H', 'te: trailers', '--data-binary', `@${frame}`,
        ]);
        expect(res.stdout).toMatch(/^HTTP\/2 200/);
        const headers = headersOf(res.stdout);
        expect(headers['content-type']).toMatch(/^application\/grpc/);
        expect(headers['grpc-status']).toBe('14');
        // A's own "no healthy upstream", or, with every endpoint unhealthy, panic routing (Envoy's) tries B anyway and B's connect failure comes back
        expect(headers['grpc-message']).toMatch(/^(no healthy upstream|upstream connect error or disconnect\/reset before headers\. reset reason: connection failure)$/);
        expect(await grpcCall('unary')).toMatchObject({ code: 14 });
      });
    });
  }
});
