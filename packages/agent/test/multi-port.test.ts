// Issue 12 item 3: a service with several ports. The registry has one port per instance, so a node
// serving 8090 and 8091 is two instances (same metadata.node); each port is its own cluster
// (out#PORT#SERVICE) and a call to NAME:PORT reaches that port only. Real agent, real proxy, real
// upstream servers on ephemeral ports. (Copies of one service on different ports, each its own node,
// still share one cluster: agent.test.ts' "alternating between the instances".)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApp, startTestAgent, type TestAgent, type TestApp } from './agent-fixture';
import { eventually, httpGet } from './helpers';

const CALLS = 20;

let multiA: TestApp;
let multiB: TestApp;
let userA: TestApp;
let userB: TestApp;
let t: TestAgent;

beforeAll(async () => {
  [multiA, multiB, userA, userB] = await Promise.all([startApp('multi-a'), startApp('multi-b'), startApp('user-a'), startApp('user-b')]);
  t = await startTestAgent({
    appPort: userA.port,
    // the local service declares two ports in spec.yaml: the agent registers one instance per port
    services: [{ name: 'user', ports: [{ targetPort: userA.port }, { targetPort: userB.port }], healthCheck: { path: '/health' } }],
    registry: {
      services: [
        {
          name: 'multi',
          instances: [
            // one node serving two ports, as the agent registers a spec.yaml service with two ports
            { id: 'multi-1:a', address: '127.0.0.1', port: multiA.port, metadata: { node: 'multi~127.0.0.1' } },
            { id: 'multi-1:b', address: '127.0.0.1', port: multiB.port, metadata: { node: 'multi~127.0.0.1' } },
          ],
        },
      ],
    },
  });
});

afterAll(async () => {
  await t?.stop();
  await Promise.all([multiA, multiB, userA, userB].map((a) => a?.close()));
});

/** `CALLS` requests to http://HOST/ through the explicit proxy; the bodies that came back, counted. */
async function answers(host: string): Promise<Record<string, number>> {
  const seen: Record<string, number> = {};
  for (let i = 0; i < CALLS; i++) {
    const res = await httpGet(`http://${host}/`, { proxy: t.proxy });
    const key = `${res.status} ${res.body.trim()}`;
    seen[key] = (seen[key] ?? 0) + 1;
  }
  return seen;
}

describe('a service with several ports', () => {
  it('a registry service on two ports of one host: every call to NAME:PORT reaches that port', async () => {
    expect(await answers(`multi:${multiA.port}`)).toEqual({ '200 multi-a': CALLS });
    expect(await answers(`multi:${multiB.port}`)).toEqual({ '200 multi-b': CALLS });
    expect(await answers(`multi.default.svc.cluster.local:${multiB.port}`)).toEqual({ '200 multi-b': CALLS });
    // the bare name (port 80) goes to the default port: both ports have one instance, so the lower one
    const low = multiA.port < multiB.port ? 'multi-a' : 'multi-b';
    expect(await answers('multi')).toEqual({ [`200 ${low}`]: CALLS });
  });

  it("spec.yaml's two ports: registered as two instances, called by port through the mesh", async () => {
    await eventually(async () => (await httpGet(`${t.admin}/status`)).body === '<SERVICE_REGISTERED>\n', '<SERVICE_REGISTERED>');
    const registered = JSON.parse((await httpGet(`${t.admin}/config/services`)).body).registered;
    expect(registered.map((r: { port: number }) => r.port).sort()).toEqual([userA.port, userB.port].sort());
    await eventually(async () => (await answers(`user:${userB.port}`))['200 user-b'] === CALLS, `user:${userB.port} -> user-b only`);
    expect(await answers(`user:${userA.port}`)).toEqual({ '200 user-a': CALLS });
    expect(await answers(`user:${userB.port}`)).toEqual({ '200 user-b': CALLS });
  });

  it('/clusters shows one cluster per service and port, each with the instances of that port only', async () => {
    const text = (await httpGet(`${t.proxyAdmin}/clusters`)).body;
    const hosts = (cluster: string) => [...new Set(text.split('\n').filter((l) => l.startsWith(`${cluster}::127.0.0.1:`)).map((l) => l.split('::')[1]))];
    expect(hosts(`out#${multiA.port}#multi`)).toEqual([`127.0.0.1:${multiA.port}`]);
    expect(hosts(`out#${multiB.port}#multi`)).toEqual([`127.0.0.1:${multiB.port}`]);
    expect(hosts(`out#${userA.port}#user`)).toEqual([`127.0.0.1:${userA.port}`]);
    expect(hosts(`out#${userB.port}#user`)).toEqual([`127.0.0.1:${userB.port}`]);
    expect(hosts(`in#${userA.port}#user`)).toEqual([`127.0.0.1:${userA.port}`]);
    expect(hosts(`in#${userB.port}#user`)).toEqual([`127.0.0.1:${userB.port}`]);
  });
});
