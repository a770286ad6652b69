import { spawn } from 'node:child_process';
import { EXIT_CODES, MeshError } from '@mesh-agent/shared-config';
import { commandText } from './render-save';

export interface ExecRequest {
  command: string;
  args: string[];
  /** written to the command's stdin (restore input) */
  input?: string;
  /** true when the command changes the host (a dry run records it instead of running it) */
  mutates: boolean;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** How the library runs iptables: real (spawn) or recorded (dry run). */
export interface Executor {
  readonly dryRun: boolean;
  /** a short description, e.g. `ip netns exec test-ns` */
  readonly description: string;
  run(request: ExecRequest): Promise<ExecResult>;
}

export interface SpawnExecutorOptions {
  /** argv put in front of every command, e.g. ['ip', 'netns', 'exec', 'NS'] */
  prefix?: string[];
  env?: NodeJS.ProcessEnv;
}

function notFound(command: string, detail: string): MeshError {
  return new MeshError('MESH_IPT_NOT_FOUND', `cannot run ${command}: ${detail}`, {
    exitCode: EXIT_CODES.permission,
    hint: 'install the iptables package (Debian: apt-get install iptables) and make sure /usr/sbin is on PATH',
  });
}

/** Runs commands for real with spawn (no shell), optionally inside `ip netns exec NS`. */
export class SpawnExecutor implements Executor {
  readonly dryRun = false;
  readonly description: string;
  private readonly prefix: string[];
  private readonly env: NodeJS.ProcessEnv;

  constructor(opts: SpawnExecutorOptions = {}) {
    this.prefix = opts.prefix ?? [];
    // iptables lives in /usr/sbin, which a non-login PATH may lack
    const basePath = opts.env?.PATH ?? process.env.PATH ?? '';
    const path = [basePath, '/usr/sbin', '/sbin'].filter(Boolean).join(':');
    this.env = { ...process.env, ...opts.env, PATH: path, LC_ALL: 'C' };
    this.description = this.prefix.length > 0 ? this.prefix.join(' ') : 'local';
  }

  run(request: ExecRequest): Promise<ExecResult> {
    const argv = [...this.prefix, request.command, ...request.args];
    return new Promise((resolve, reject) => {
      const child = spawn(argv[0], argv.slice(1), { env: this.env, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      child.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') reject(notFound(argv[0], 'not found on PATH'));
        else if (err.code === 'EACCES') reject(notFound(argv[0], 'permission denied'));
        else reject(err);
      });
      child.stdin.on('error', () => {
        /* the command exited before reading its input; its exit status tells why */
      });
      child.on('close', (code) => {
        // `ip netns exec` and `env` report a missing program this way (127: command not found)
        if (code === 127 || (code !== 0 && /exec of "[^"]+" failed: No such file or directory/.test(stderr))) {
          reject(notFound(request.command, stderr.trim()));
          return;
        }
        resolve({ code: code ?? 1, stdout, stderr });
      });
      child.stdin.end(request.input ?? '');
    });
  }
}

export interface RecordedCommand extends ExecRequest {
  text: string;
}

export interface DryRunExecutorOptions {
  /** runs the read-only commands (iptables-save, -V) for real so the plan reflects the host; without it they answer "nothing there" */
  reader?: Executor;
  /** where each recorded command is printed as it happens */
  write?: (text: string) => void;
}

/** Records (and prints) every command that would change the host instead of running it. */
export class DryRunExecutor implements Executor {
  readonly dryRun = true;
  readonly description: string;
  readonly commands: RecordedCommand[] = [];
  private readonly reader?: Executor;
  private readonly write?: (text: string) => void;

  constructor(opts: DryRunExecutorOptions = {}) {
    this.reader = opts.reader;
    this.write = opts.write;
    this.description = `dry run${opts.reader ? ` (reading from ${opts.reader.description})` : ''}`;
  }

  async run(request: ExecRequest): Promise<ExecResult> {
    if (!request.mutates) {
      if (this.reader) return this.reader.run(request);
      if (request.args.includes('-V') || request.args.includes('--version')) {
        return { code: 0, stdout: `${request.command} v0.0.0 (dry-run)\n`, stderr: '' };
      }
      return { code: 0, stdout: '', stderr: '' };
    }
    let text = commandText(request.command, request.args);
    if (request.input !== undefined) text += ` <<'EOF'\n${request.input}${request.input.endsWith('\n') ? '' : '\n'}EOF`;
    this.commands.push({ ...request, text });
    this.write?.(`${text}\n`);
    return { code: 0, stdout: '', stderr: '' };
  }
}
