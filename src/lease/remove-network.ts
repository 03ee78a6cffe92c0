import { getNetwork } from '../config/registry.js';
import { networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { WeftError } from '../util/errors.js';
import { describeHolders, listLeases } from './leases.js';

/** Removes a network and everything under it; refused while leases are held unless `force`. */
export async function removeNetwork(store: Store, name: string, opts: { force?: boolean } = {}): Promise<void> {
  await getNetwork(store, name);
  const leases = await listLeases(store, name);
  if (leases.length && !opts.force) {
    throw new WeftError(
      `network "${name}" has ${leases.length} live lease${leases.length === 1 ? '' : 's'} (${describeHolders(leases)}); stop those agents or use --force`,
    );
  }
  const keys = networkKeys(store, name);
  for (const prefix of keys.ownedPrefixes) {
    for (const e of await store.list(prefix)) await store.delete(e.key);
  }
}
