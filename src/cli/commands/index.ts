/** Every command of the CLI, in the order `--help` lists them. Each file registers one or a few. */
import type { Command } from 'commander';
import { registerSnapshot } from './snapshot.js';
import { registerCheckout } from './checkout.js';
import { registerInspect } from './inspect.js';
import { registerBlob } from './blob.js';
import { registerMaintenance } from './maintenance.js';
import { registerRemote } from './remote.js';
import { registerArchive } from './archive.js';

export const commands: ((program: Command) => void)[] = [
  registerSnapshot,
  registerCheckout,
  registerInspect,
  registerBlob,
  registerMaintenance,
  registerRemote,
  registerArchive,
];
