import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';

describe('e2e harness', () => {
  it('runs on a machine with ip(8) available or says why not', () => {
    let ok = true;
    try { execFileSync('ip', ['-V']); } catch { ok = false; }
    expect(typeof ok).toBe('boolean');
  });
});
