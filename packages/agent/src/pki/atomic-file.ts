// Files a watcher (the proxy's secret store, Vault agent style tools) may read at any moment: never half written.
import fs from 'node:fs';
import path from 'node:path';

export interface FileOwner { uid?: number; gid?: number }

/** chown only when asked and when we can (root): a non-root agent keeps its own files. */
export function chownIfRoot(file: string, owner: FileOwner): void {
  if (owner.uid === undefined && owner.gid === undefined) return;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return;
  fs.chownSync(file, owner.uid ?? -1, owner.gid ?? -1);
}

/**
 * Writes `text` to a temporary file in the same directory (same filesystem, so the rename is atomic),
 * fsyncs it, sets mode and owner, then renames it over `file` and fsyncs the directory.
 */
export function writeFileAtomic(file: string, text: string, mode: number, owner: FileOwner = {}): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  let fd: number | undefined;
  try {
    // created with the final mode: a key is never readable by others, not even for a moment
    fd = fs.openSync(tmp, 'wx', mode);
    fs.writeSync(fd, text);
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    chownIfRoot(tmp, owner);
    fs.renameSync(tmp, file);
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  syncDir(dir);
}

function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // some filesystems refuse fsync on a directory; the rename itself is still atomic
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Creates `dir` if needed and makes it `mode` (and owned by `owner` when root), also when it existed. */
export function ensurePrivateDir(dir: string, mode: number, owner: FileOwner = {}): void {
  fs.mkdirSync(dir, { recursive: true, mode });
  fs.chmodSync(dir, mode);
  chownIfRoot(dir, owner);
}
