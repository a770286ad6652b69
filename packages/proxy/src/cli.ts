export function runCli(argv: string[]): void {
  console.log('mesh-proxy', argv.join(' '));
}
