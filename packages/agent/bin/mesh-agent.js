#!/usr/bin/env node
// Thin bin: the CLI module parses argv, calls the library and turns errors into exit codes.
// The agent is the control plane, not the data path: before any module loads, V8 is told to trade
// speed for memory (bench/footprint, packages/agent/README.md "Memory": about 45 MiB less resident).
// These flags act when set at run time, so they apply however the bin is started (`node bin`,
// npx, a unit file); MESH_AGENT_V8_FLAGS replaces them ('' = none). Dynamic import: static imports
// would load the CLI before the flags are set.
import v8 from 'node:v8';

const DEFAULT_V8_FLAGS = '--no-opt --no-sparkplug --max-lazy --optimize-for-size';
for (const flag of (process.env.MESH_AGENT_V8_FLAGS ?? DEFAULT_V8_FLAGS).split(/\s+/).filter(Boolean)) v8.setFlagsFromString(flag);

const { runCli } = await import('../dist/cli.js');
runCli(process.argv.slice(2));
