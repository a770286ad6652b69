import { describe, expect, it } from 'vitest';
import * as api from '../src/index';

describe('@mesh-agent/proxy', () => {
  it('exports its public API', () => {
    expect(Object.keys(api).length).toBeGreaterThan(0);
  });
});
