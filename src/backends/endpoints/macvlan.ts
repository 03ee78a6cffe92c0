import { kernelFailure } from '../../system/exec.js';
import { getLink, ipBatch } from '../../system/ip.js';
import { createLink } from '../../system/kernel.js';
import { netnsArg } from '../../system/netns.js';
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
    await createLink(
      'macvlan',
      { name: s.ifname, mtu: s.mtu, linkArgs: ['link', s.parent, 'address', mac, 'netns', netnsArg(s.netns)], args: ['mode', 'bridge'] },
      { netns: s.hostNetns },
    );
    const inner = ['link set lo up', `addr add ${s.address} dev ${s.ifname}`, `link set ${s.ifname} up`];
    if (s.gateway) inner.push(`route add ${s.routeTo} via ${s.gateway} dev ${s.ifname}`);
    try {
      await ipBatch(inner, { netns: s.netns });
    } catch (e) {
      await ipBatch([`link del ${s.ifname}`], { netns: s.netns, force: true }).catch(() => {});
      throw e;
    }
    return { mac };
  },

  async prepare(s) {
    if (!s.parent) throw new WeftError('macvlan: the network names no parent interface');
    const mac = s.mac ?? randomMac();
    if (await getLink(s.peerIf, { netns: s.hostNetns })) await ipBatch([`link del ${s.peerIf}`], { netns: s.hostNetns }); // a crashed run's leftover
    await createLink('macvlan', { name: s.peerIf, mtu: s.mtu, linkArgs: ['link', s.parent, 'address', mac], args: ['mode', 'bridge'] }, { netns: s.hostNetns });
    // Docker moves the interface itself; it has no host end that stays, so both names are the same.
    return { ifname: s.peerIf, hostIf: s.peerIf, mac };
  },

  async leave(ep: EndpointRef) {
    const where = ep.netns ?? ep.hostNetns;
    const name = ep.netns ? ep.ifname : ep.hostIf;
    try {
      if (!(await getLink(name, { netns: where }))) return false;
      await ipBatch([`link del ${name}`], { netns: where });
      return true;
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
