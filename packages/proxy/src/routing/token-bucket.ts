import { performance } from 'node:perf_hooks';
import type { TokenBucketConfig } from '../config/types';

/**
 * Envoy's local_ratelimit token bucket: full at the start (`maxTokens`), `tokensPerFill` more every
 * `fillIntervalMs`, never above maxTokens. Refilled lazily when a request asks (no timer): whole
 * intervals elapsed since the last fill are credited, the remainder carries over.
 */
export class TokenBucket {
  private tokens: number;
  private lastFill: number;
  private readonly perFill: number;

  constructor(readonly config: TokenBucketConfig, now = performance.now()) {
    this.tokens = config.maxTokens;
    this.lastFill = now;
    this.perFill = config.tokensPerFill ?? 1;
  }

  /** Takes one token; false = over the limit (the request gets 429). */
  tryTake(now = performance.now()): boolean {
    const interval = this.config.fillIntervalMs;
    const elapsed = now - this.lastFill;
    if (elapsed >= interval) {
      const fills = Math.floor(elapsed / interval);
      this.tokens = Math.min(this.config.maxTokens, this.tokens + fills * this.perFill);
      this.lastFill += fills * interval;
    }
    if (this.tokens < 1) return false;
    this.tokens--;
    return true;
  }

  /** Tokens left now (for tests and the admin view). */
  available(now = performance.now()): number {
    const elapsed = now - this.lastFill;
    if (elapsed < this.config.fillIntervalMs) return this.tokens;
    return Math.min(this.config.maxTokens, this.tokens + Math.floor(elapsed / this.config.fillIntervalMs) * this.perFill);
  }
}
