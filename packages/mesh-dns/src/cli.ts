export function runCli(argv: string[]): void {
  console.log('mesh-dns', argv.join(' '));
}
