export function runCli(argv: string[]): void {
  console.log('mesh-agent', argv.join(' '));
}
