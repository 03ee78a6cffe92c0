import { kernelFailure } from '../../system/exec.js';
import { getLink } from '../../system/ip.js';
import { createLink } from '../../system/kernel.js';
import { configureInterface, deleteLink, removeLink } from '../../system/links.js';
import { randomMac } from '../../system/veth.js';
import { WeftError } from '../../util/errors.js';
import { registerEndpointDriver } from './registry.js';
import type { EndpointDriver, EndpointRef, JoinSpec } from './types.js';

/**
 * A macvlan interface (bridge mode) on the parent NIC, created directly inside the container's namespace:
 * containers sit on the parent's L2 segment with no host bridge. macvlan children cannot talk to their
 * parent, so the host reaches its own containers through a shim macvlan of its own (backends/macvlan).
 * The interface lives only in the container: leave/exists look there.
 */
export const macvlanDriver: EndpointDriver = {
  name: 'macvlan',

  async join(s: JoinSpec) {
    if (!s.parent) throw new WeftError('macvlan: the network names no parent interface');
    const mac = s.mac ?? randomMac();
    await createLink('macvlan', { name: s.ifname, mtu: s.mtu, parent: s.parent, address: mac, netns: s.netns, macvlanMode: 'bridge' }, { netns: s.hostNetns });
    try {
      await configureInterface({ netns: s.netns, ifname: s.ifname, address: s.address, gateway: s.gateway, routeTo: s.routeTo });
    } catch (e) {
      await deleteLink(s.ifname, s.netns).catch(() => {});
      throw e;
    }
    return { mac };
  },

  async prepare(s) {
    if (!s.parent) throw new WeftError('macvlan: the network names no parent interface');
    const mac = s.mac ?? randomMac();
    await removeLink(s.peerIf, { netns: s.hostNetns }); // a crashed run's leftover
    await createLink('macvlan', { name: s.peerIf, mtu: s.mtu, parent: s.parent, address: mac, macvlanMode: 'bridge' }, { netns: s.hostNetns });
    // Docker moves the interface itself; it has no host end that stays, so both names are the same.
    return { ifname: s.peerIf, hostIf: s.peerIf, mac };
  },

  async leave(ep: EndpointRef) {
    const where = ep.netns ?? ep.hostNetns;
    const name = ep.netns ? ep.ifname : ep.hostIf;
    try {
      return await removeLink(name, { netns: where });
    } catch (e) {
      const k = kernelFailure(e);
      if (k === 'missing') return false; // the container (and its interface) is gone
      throw e;
    }
  },

  async exists(ep: EndpointRef) {
    if (!ep.netns) return false;
    try {
      const link = await getLink(ep.ifname, { netns: ep.netns });
      return link?.linkinfo?.info_kind === 'macvlan';
    } catch {
      return false; // the namespace is gone
    }
  },
};

registerEndpointDriver(macvlanDriver);
