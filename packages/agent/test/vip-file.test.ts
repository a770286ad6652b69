// Per-service VIPs with the file backend: the hash slot with linear probing in a deterministic
// order (two hosts reading the same file compute the same VIPs), a `vip` in the file wins, and
// bad input (two services on one VIP, a range too small) is a clear error at the first load.
import fs from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import { FileRegistry } from '../src/registry/index';
import { preferredVip, VipRange } from '../src/vip-allocation';
import { tempDir } from './agent-fixture';

const SMALL = { vipCidr: '240.240.0.0/29', meshVip: '240.240.0.1' }; // .2 to .6: 5 addresses
const DEFAULT = { vipCidr: '240.240.0.0/16', meshVip: '240.240.0.1' };

describe('per-service VIPs, file backend', () => {
  const opened: FileRegistry[] = [];
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((r) => r.close()));
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  function registryFile(services: unknown[]): string {
    const dir = tempDir('mesh-agent-vip-');
    dirs.push(dir);
    const file = path.join(dir, 'registry.yaml');
    fs.writeFileSync(file, stringify({ services }));
    return file;
  }

  async function open(file: string, vips = SMALL): Promise<FileRegistry> {
    const r = new FileRegistry({ file, vips });
    opened.push(r);
    await r.start();
    return r;
  }

  const vipsOf = (r: FileRegistry) => Object.fromEntries(r.snapshot().services.map((s) => [s.name, s.vip]));

  it('gives colliding services distinct VIPs, the same on two hosts whatever order the file lists them in', async () => {
    const names = ['a', 'b', 'c', 'd', 'e'];
    const range = new VipRange(SMALL);
    // five services in five addresses: at least two share a hash slot (checked, so the test probes)
    expect(new Set(names.map((n) => range.slotOf({ name: n, namespace: 'default' }))).size).toBeLessThan(names.length);
    const one = await open(registryFile(names.map((name) => ({ name }))));
    const other = await open(registryFile([...names].reverse().map((name) => ({ name }))));
    expect(vipsOf(one)).toEqual(vipsOf(other));
    expect(Object.values(vipsOf(one)).sort()).toEqual(['240.240.0.2', '240.240.0.3', '240.240.0.4', '240.240.0.5', '240.240.0.6']);
  });

  it('keeps a vip written in the file, and the others probe around it', async () => {
    const r = await open(registryFile([{ name: 'pinned', vip: '240.240.0.3' }, { name: 'a' }, { name: 'b' }]));
    const vips = vipsOf(r);
    expect(vips.pinned).toBe('240.240.0.3');
    expect([vips.a, vips.b]).not.toContain('240.240.0.3');
    expect(vips.a).not.toBe(vips.b);
  });

  it('a service alone gets its hash slot in the default range', async () => {
    const r = await open(registryFile([{ name: 'order' }]), DEFAULT);
    expect(vipsOf(r).order).toBe(preferredVip({ name: 'order', namespace: 'default' }, DEFAULT));
    expect(vipsOf(r).order).not.toBe('240.240.0.1');
  });

  it('refuses a file giving two services the same vip, naming both', async () => {
    const file = registryFile([{ name: 'a', vip: '240.240.0.4' }, { name: 'b', vip: '240.240.0.4' }]);
    await expect(open(file)).rejects.toThrow(/services default\/a and default\/b both have vip 240\.240\.0\.4/);
  });

  it('refuses a registry that does not fit the range, with what to do', async () => {
    const file = registryFile(['a', 'b', 'c', 'd', 'e', 'f'].map((name) => ({ name })));
    const err = await open(file).then(
      () => undefined,
      (e: Error & { code?: string; hint?: string }) => e,
    );
    expect(err?.code).toBe('MESH_AGENT_VIP_RANGE_EXHAUSTED');
    expect(err?.message).toMatch(/all 5 usable addresses of mesh\.vipCidr 240\.240\.0\.0\/29 are taken/);
    expect(err?.hint).toMatch(/larger range/);
  });

  it('without vips (mesh.perServiceVips: false) every service keeps the shared VIP as before', async () => {
    const r = new FileRegistry({ file: registryFile([{ name: 'a' }, { name: 'b', vip: '240.240.0.9' }]) });
    opened.push(r);
    await r.start();
    expect(vipsOf(r)).toEqual({ a: undefined, b: '240.240.0.9' });
  });
});
