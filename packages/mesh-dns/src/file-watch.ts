import fs from 'node:fs';
import path from 'node:path';

/**
 * Calls `onChange` when `file` changes: fs.watch on its directory (so an atomic rename-over is
 * seen, as resolvconf and kubelet write it) plus a stat poll as the fallback for file systems
 * where inotify says nothing (NFS, some overlays, bind mounts). Returns a stop function.
 */
export function watchFile(file: string, pollMs: number, onChange: () => void): () => void {
  const base = path.basename(file);
  let watcher: fs.FSWatcher | undefined;
  try {
    watcher = fs.watch(path.dirname(file), { persistent: false }, (_event, name) => {
      if (name === null || name.toString() === base) onChange();
    });
    watcher.on('error', () => undefined);
  } catch {
    watcher = undefined; // directory missing or not watchable: the poll still works
  }
  const poll = (curr: fs.Stats, prev: fs.Stats): void => {
    if (curr.mtimeMs !== prev.mtimeMs || curr.size !== prev.size || curr.ino !== prev.ino) onChange();
  };
  fs.watchFile(file, { interval: pollMs, persistent: false }, poll);
  return () => {
    watcher?.close();
    fs.unwatchFile(file, poll);
  };
}
