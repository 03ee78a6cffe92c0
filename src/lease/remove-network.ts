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
  // The config goes first, then the leases, then the rest: a holder that renews while its lease is being
  // deleted acquires again, and that must fail for want of a config (with the leases first, it could take a
  // subnet back, and its agent would keep the network for good: a missing config with live leases is
  // kept); and a renewal that still finds its lease rewrites its host record, so the records go after.
  await store.delete(keys.config);
  for (const e of await store.list(keys.subnetsPrefix)) await store.delete(e.key);
  for (const prefix of keys.ownedPrefixes) {
    for (const e of await store.list(prefix)) await store.delete(e.key);
  }
}
