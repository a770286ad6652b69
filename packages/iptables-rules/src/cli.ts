export function runCli(argv: string[]): void {
  console.log('mesh-iptables', argv.join(' '));
}
