#!/usr/bin/env node
// Thin bin: the CLI module parses argv, calls the library and turns errors into exit codes.
import { runCli } from '../dist/cli.js';

runCli(process.argv.slice(2));
