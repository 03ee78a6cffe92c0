/*
 * weft-netlink: the kernel side of a container attach over rtnetlink, without a process per step. The agent
 * (src/system/netlink.ts) starts one and keeps it; each request is one line on stdin, each answer one line
 * on stdout, in order. Fields are separated by tabs; "-" is an absent optional field. Namespaces are paths
 * (/run/netns/NAME, /proc/PID/ns/net); "-" is this process's own namespace.
 *
 *   V ID HOSTNS HOSTIF PEERIF MTU MAC PEERNS MASTER
 *       `ip link add HOSTIF mtu MTU master MASTER up type veth peer name PEERIF mtu MTU address MAC netns PEERNS`
 *       in one RTM_NEWLINK (NLM_F_EXCL): the peer is made directly inside PEERNS (IFLA_NET_NS_FD), down;
 *       the host end is on MASTER and up. The kernel undoes the whole link when any part fails.
 *   C ID NS IFNAME CIDR GATEWAY ROUTETO
 *       Inside NS: lo up, CIDR on IFNAME, IFNAME up, then (GATEWAY not "-") a route to ROUTETO ("default" or
 *       a CIDR) via GATEWAY dev IFNAME. Stops at the first failing step (the caller deletes the veth).
 *   D ID NS IFNAME
 *       `ip link del IFNAME` inside NS.
 *   P ID
 *       Answers (a liveness check).
 *
 * Answer: "ID 0", or "ID ERRNO STEP: strerror(ERRNO)" (ERRNO positive, e.g. 17 for EEXIST). A malformed
 * request is answered with EINVAL. The process exits when stdin closes, and with its parent (PDEATHSIG).
 *
 * `weft-netlink monitor`: no requests; tells what kind of kernel state changed in this namespace, so that
 * the agent's periodic resync re-reads only what may differ (src/system/kernel-watch.ts). It listens on
 * rtnetlink's link, address, route and neighbour groups and on nf_tables' group (iptables-nft and
 * ebtables-nft rule changes), and after each wake-up writes one line per kind seen: "link", "addr",
 * "route", "neigh IFINDEX..." (up to 16 interfaces, else "neigh *"), "nft". A lost message (ENOBUFS)
 * is reported as every kind. First line: "ready" once listening, or "ready nonft" when the nf_tables
 * group could not be joined (then nft changes are not seen). Exits when stdin closes.
 *
 * `weft-netlink echo`: ICMP echo (ping) without a process per ping, for the agent's health probe
 * (src/system/ping.ts). Requests "E ID IPV4 TIMEOUT_MS", answered as above but out of order, as each
 * finishes: "ID 0" when IPV4 answered within TIMEOUT_MS, "ID 110 echo: ..." (ETIMEDOUT) when it did not,
 * "ID ERRNO STEP: ..." when it could not be sent (e.g. EPERM: no CAP_NET_RAW for the raw socket). Each
 * echo has a raw socket of its own, connected to the target and filtered to echo replies, open only while
 * it waits. Up to ECHO_MAX at once (more: EAGAIN). Exits when stdin closes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <net/if.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/icmp.h>
#include <linux/ip.h>
#include <netinet/in.h>
#include <time.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FIELDS 12
#define BUF 4096

static int self_ns = -1;
static unsigned seq = 1;
static char step[160];

struct req {
  struct nlmsghdr n;
  char buf[BUF];
};

static struct rtattr *add_attr(struct nlmsghdr *n, int type, const void *data, int len) {
  struct rtattr *rta = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));
  rta->rta_type = type;
  rta->rta_len = RTA_LENGTH(len);
  if (len) memcpy(RTA_DATA(rta), data, len);
  n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(rta->rta_len);
  return rta;
}
static struct rtattr *nest_begin(struct nlmsghdr *n, int type) { return add_attr(n, type, NULL, 0); }
static void nest_end(struct nlmsghdr *n, struct rtattr *nest) { nest->rta_len = (char *)n + n->nlmsg_len - (char *)nest; }
static void add_u32(struct nlmsghdr *n, int type, uint32_t v) { add_attr(n, type, &v, 4); }
static void add_str(struct nlmsghdr *n, int type, const char *s) { add_attr(n, type, s, strlen(s) + 1); }

static int nl_open(void) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (s < 0) return -errno;
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(s);
    return -e;
  }
  return s;
}

/* Sends one request and waits for its acknowledgement: 0 or a positive errno. */
static int nl_talk(int s, struct nlmsghdr *n) {
  n->nlmsg_seq = ++seq;
  n->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
  if (sendto(s, n, n->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0) return errno;
  char buf[8192];
  for (;;) {
    ssize_t r = recv(s, buf, sizeof buf, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    int len = (int)r;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != n->nlmsg_seq) continue;
      if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = (struct nlmsgerr *)NLMSG_DATA(h);
        return e->error < 0 ? -e->error : 0;
      }
    }
  }
}

/* Enters the namespace at `path` ("-": stay). Returns 0 or a positive errno. */
static int enter_ns(const char *path) {
  if (strcmp(path, "-") == 0) return 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  int r = setns(fd, CLONE_NEWNET) < 0 ? errno : 0;
  close(fd);
  return r;
}
static void leave_ns(const char *path) {
  if (strcmp(path, "-") == 0) return;
  if (setns(self_ns, CLONE_NEWNET) < 0) {
    /* every later request would run in the wrong namespace: better to die (the agent falls back to ip) */
    perror("weft-netlink: setns back");
    exit(70);
  }
}

static int ifindex(const char *name) {
  unsigned i = if_nametoindex(name);
  return i ? (int)i : -(errno ? errno : ENODEV);
}

static int parse_mac(const char *s, unsigned char mac[6]) {
  unsigned v[6];
  char tail;
  if (sscanf(s, "%x:%x:%x:%x:%x:%x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6) return -1;
  for (int i = 0; i < 6; i++) {
    if (v[i] > 255) return -1;
    mac[i] = (unsigned char)v[i];
  }
  return 0;
}

/* "10.1.2.3/24" → address and prefix length; "default" → 0.0.0.0/0. */
static int parse_cidr(const char *s, struct in_addr *a, int *len) {
  if (strcmp(s, "default") == 0) {
    a->s_addr = 0;
    *len = 0;
    return 0;
  }
  char tmp[64];
  if (strlen(s) >= sizeof tmp) return -1;
  strcpy(tmp, s);
  char *slash = strchr(tmp, '/');
  *len = 32;
  if (slash) {
    *slash = 0;
    char *end;
    long l = strtol(slash + 1, &end, 10);
    if (*end || l < 0 || l > 32 || end == slash + 1) return -1;
    *len = (int)l;
  }
  return inet_pton(AF_INET, tmp, a) == 1 ? 0 : -1;
}

static int link_up(int s, int idx) {
  struct req r = {0};
  r.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  r.n.nlmsg_type = RTM_NEWLINK;
  struct ifinfomsg *ifi = NLMSG_DATA(&r.n);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_index = idx;
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  return nl_talk(s, &r.n);
}

#define FAIL(e, ...)                                  \
  do {                                                \
    snprintf(step, sizeof step, __VA_ARGS__);         \
    err = (e);                                        \
    goto out;                                         \
  } while (0)

/* V ID HOSTNS HOSTIF PEERIF MTU MAC PEERNS MASTER */
static int op_veth(char **f) {
  int err = 0, s = -1, peerfd = -1;
  const char *hostns = f[2], *hostif = f[3], *peerif = f[4], *mac = f[6], *peerns = f[7], *master = f[8];
  char *end;
  long mtu = strtol(f[5], &end, 10);
  unsigned char hw[6];
  if (*end || mtu < 68 || mtu > 65535) FAIL(EINVAL, "mtu %s", f[5]);
  if (strlen(hostif) >= IFNAMSIZ || strlen(peerif) >= IFNAMSIZ) FAIL(EINVAL, "interface name too long");
  if (strcmp(mac, "-") != 0 && parse_mac(mac, hw) < 0) FAIL(EINVAL, "mac %s", mac);
  peerfd = open(peerns, O_RDONLY | O_CLOEXEC);
  if (peerfd < 0) FAIL(errno, "open %s", peerns);
  if ((err = enter_ns(hostns))) FAIL(err, "enter %s", hostns);
  s = nl_open();
  int master_idx = 0;
  if (s < 0) {
    err = -s;
    s = -1;
    snprintf(step, sizeof step, "netlink socket");
  } else if (strcmp(master, "-") != 0 && (master_idx = ifindex(master)) < 0) {
    err = -master_idx;
    snprintf(step, sizeof step, "bridge %s", master);
  }
  leave_ns(hostns);
  if (err) goto out;

  struct req r = {0};
  r.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  r.n.nlmsg_type = RTM_NEWLINK;
  r.n.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
  struct ifinfomsg *ifi = NLMSG_DATA(&r.n);
  ifi->ifi_family = AF_UNSPEC;
  ifi->ifi_flags = IFF_UP;
  ifi->ifi_change = IFF_UP;
  add_str(&r.n, IFLA_IFNAME, hostif);
  add_u32(&r.n, IFLA_MTU, (uint32_t)mtu);
  if (master_idx) add_u32(&r.n, IFLA_MASTER, (uint32_t)master_idx);
  struct rtattr *linkinfo = nest_begin(&r.n, IFLA_LINKINFO);
  add_str(&r.n, IFLA_INFO_KIND, "veth");
  struct rtattr *data = nest_begin(&r.n, IFLA_INFO_DATA);
  struct rtattr *peer = nest_begin(&r.n, VETH_INFO_PEER);
  struct ifinfomsg pifi = {.ifi_family = AF_UNSPEC};
  /* the peer's ifinfomsg sits in front of its attributes */
  memcpy((char *)&r.n + r.n.nlmsg_len, &pifi, sizeof pifi);
  r.n.nlmsg_len += NLMSG_ALIGN(sizeof pifi);
  add_str(&r.n, IFLA_IFNAME, peerif);
  add_u32(&r.n, IFLA_MTU, (uint32_t)mtu);
  if (strcmp(mac, "-") != 0) add_attr(&r.n, IFLA_ADDRESS, hw, 6);
  add_u32(&r.n, IFLA_NET_NS_FD, (uint32_t)peerfd);
  nest_end(&r.n, peer);
  nest_end(&r.n, data);
  nest_end(&r.n, linkinfo);
  if ((err = nl_talk(s, &r.n))) FAIL(err, "link add %s type veth peer name %s netns %s", hostif, peerif, peerns);
out:
  if (s >= 0) close(s);
  if (peerfd >= 0) close(peerfd);
  return err;
}

/* C ID NS IFNAME CIDR GATEWAY ROUTETO */
static int op_conf(char **f) {
  int err = 0, s = -1;
  const char *ns = f[2], *ifname = f[3], *cidr = f[4], *gw = f[5], *to = f[6];
  struct in_addr addr, gwa = {0}, dst;
  int plen, dlen = 0;
  if (parse_cidr(cidr, &addr, &plen) < 0) FAIL(EINVAL, "address %s", cidr);
  if (strcmp(gw, "-") != 0) {
    if (inet_pton(AF_INET, gw, &gwa) != 1) FAIL(EINVAL, "gateway %s", gw);
    if (parse_cidr(to, &dst, &dlen) < 0) FAIL(EINVAL, "route %s", to);
  }
  if ((err = enter_ns(ns))) {
    snprintf(step, sizeof step, "enter %s", ns);
    return err;
  }
  s = nl_open();
  if (s < 0) FAIL(-s, "netlink socket");
  int lo = ifindex("lo"), idx = ifindex(ifname);
  if (lo < 0) FAIL(-lo, "lo");
  if (idx < 0) FAIL(-idx, "device %s", ifname);
  if ((err = link_up(s, lo))) FAIL(err, "link set lo up");

  struct req r = {0};
  r.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
  r.n.nlmsg_type = RTM_NEWADDR;
  r.n.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
  struct ifaddrmsg *ifa = NLMSG_DATA(&r.n);
  ifa->ifa_family = AF_INET;
  ifa->ifa_prefixlen = (unsigned char)plen;
  ifa->ifa_scope = RT_SCOPE_UNIVERSE;
  ifa->ifa_index = (unsigned)idx;
  add_attr(&r.n, IFA_LOCAL, &addr, 4);
  add_attr(&r.n, IFA_ADDRESS, &addr, 4);
  if ((err = nl_talk(s, &r.n))) FAIL(err, "addr add %s dev %s", cidr, ifname);

  if ((err = link_up(s, idx))) FAIL(err, "link set %s up", ifname);

  if (strcmp(gw, "-") != 0) {
    struct req rt = {0};
    rt.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg));
    rt.n.nlmsg_type = RTM_NEWROUTE;
    rt.n.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    struct rtmsg *rtm = NLMSG_DATA(&rt.n);
    rtm->rtm_family = AF_INET;
    rtm->rtm_dst_len = (unsigned char)dlen;
    rtm->rtm_table = RT_TABLE_MAIN;
    rtm->rtm_protocol = RTPROT_BOOT;
    rtm->rtm_scope = RT_SCOPE_UNIVERSE;
    rtm->rtm_type = RTN_UNICAST;
    if (dlen) add_attr(&rt.n, RTA_DST, &dst, 4);
    add_attr(&rt.n, RTA_GATEWAY, &gwa, 4);
    add_u32(&rt.n, RTA_OIF, (uint32_t)idx);
    if ((err = nl_talk(s, &rt.n))) FAIL(err, "route add %s via %s dev %s", to, gw, ifname);
  }
out:
  if (s >= 0) close(s);
  leave_ns(ns);
  return err;
}

/* D ID NS IFNAME */
static int op_del(char **f) {
  int err = 0, s = -1;
  const char *ns = f[2], *ifname = f[3];
  if (strlen(ifname) >= IFNAMSIZ) FAIL(EINVAL, "interface name too long");
  if ((err = enter_ns(ns))) {
    snprintf(step, sizeof step, "enter %s", ns);
    return err;
  }
  s = nl_open();
  if (s < 0) FAIL(-s, "netlink socket");
  struct req r = {0};
  r.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
  r.n.nlmsg_type = RTM_DELLINK;
  struct ifinfomsg *ifi = NLMSG_DATA(&r.n);
  ifi->ifi_family = AF_UNSPEC;
  add_str(&r.n, IFLA_IFNAME, ifname);
  if ((err = nl_talk(s, &r.n))) FAIL(err, "link del %s", ifname);
out:
  if (s >= 0) close(s);
  leave_ns(ns);
  return err;
}

/* ---- monitor mode ---- */

#define MON_LINK 1
#define MON_ADDR 2
#define MON_ROUTE 4
#define MON_NEIGH 8
#define MON_NFT 16
#define MON_ALL 31
#define MON_MAX_IFS 16

static int mon_open(int proto, unsigned groups, int group) {
  int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, proto);
  if (s < 0) return -1;
  int big = 1 << 20;
  setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
  struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = groups};
  if (bind(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(s);
    return -1;
  }
  if (group > 0 && setsockopt(s, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof group) < 0) {
    close(s);
    return -1;
  }
  return s;
}

/* Reads every pending message of one socket; adds what changed to *kinds and the neighbours' interfaces. */
static void mon_drain(int s, int nft, unsigned *kinds, int *ifs, int *nifs) {
  static char buf[1 << 16];
  for (;;) {
    ssize_t n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == ENOBUFS) {
        *kinds |= MON_ALL; /* messages were lost: anything may have changed */
        *nifs = -1;
        continue;
      }
      return; /* EAGAIN: drained */
    }
    if (n == 0) return;
    if (nft) {
      *kinds |= MON_NFT;
      continue;
    }
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
      switch (h->nlmsg_type) {
        case RTM_NEWLINK: case RTM_DELLINK: *kinds |= MON_LINK; break;
        case RTM_NEWADDR: case RTM_DELADDR: *kinds |= MON_ADDR; break;
        case RTM_NEWROUTE: case RTM_DELROUTE: *kinds |= MON_ROUTE; break;
        case RTM_NEWNEIGH: case RTM_DELNEIGH: {
          *kinds |= MON_NEIGH;
          struct ndmsg *nd = NLMSG_DATA(h);
          if (*nifs < 0) break;
          int i;
          for (i = 0; i < *nifs && ifs[i] != nd->ndm_ifindex; i++);
          if (i == *nifs) {
            if (*nifs == MON_MAX_IFS) *nifs = -1;
            else ifs[(*nifs)++] = nd->ndm_ifindex;
          }
          break;
        }
      }
    }
  }
}

static int monitor(void) {
  int rt = mon_open(NETLINK_ROUTE, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE | RTMGRP_NEIGH, 0);
  if (rt < 0) {
    printf("error %d %s\n", errno, strerror(errno));
    return 1;
  }
  int nf = mon_open(NETLINK_NETFILTER, 0, NFNLGRP_NFTABLES);
  printf(nf < 0 ? "ready nonft\n" : "ready\n");
  fflush(stdout);
  struct pollfd p[3] = {{.fd = 0, .events = POLLIN}, {.fd = rt, .events = POLLIN}, {.fd = nf, .events = POLLIN}};
  for (;;) {
    if (poll(p, nf < 0 ? 2 : 3, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[0].revents) {
      char b[256];
      ssize_t n = read(0, b, sizeof b);
      if (n <= 0) return 0; /* stdin closed: the agent is gone or stopped us */
    }
    unsigned kinds = 0;
    int ifs[MON_MAX_IFS], nifs = 0;
    if (p[1].revents) mon_drain(rt, 0, &kinds, ifs, &nifs);
    if (nf >= 0 && p[2].revents) mon_drain(nf, 1, &kinds, ifs, &nifs);
    if (kinds & MON_LINK) printf("link\n");
    if (kinds & MON_ADDR) printf("addr\n");
    if (kinds & MON_ROUTE) printf("route\n");
    if (kinds & MON_NEIGH) {
      if (nifs < 0) printf("neigh *\n");
      else {
        printf("neigh");
        for (int i = 0; i < nifs; i++) printf(" %d", ifs[i]);
        printf("\n");
      }
    }
    if (kinds & MON_NFT) printf("nft\n");
    if (kinds) fflush(stdout);
  }
}


/* ---- echo mode ---- */

#define ECHO_MAX 64

struct echo {
  int fd; /* -1: free slot */
  char id[32];
  uint16_t seq;
  long long deadline;
};
static struct echo echoes[ECHO_MAX];
static uint16_t echo_seq;

static long long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static uint16_t inet_csum(const void *data, size_t len) {
  const uint16_t *p = data;
  uint32_t sum = 0;
  for (; len > 1; len -= 2) sum += *p++;
  if (len) sum += *(const uint8_t *)p;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (uint16_t)~sum;
}

static void echo_answer(struct echo *e, int err, const char *what) {
  if (err) printf("%s %d %s: %s\n", e->id, err, what, strerror(err));
  else printf("%s 0\n", e->id);
  fflush(stdout);
  if (e->fd >= 0) close(e->fd);
  e->fd = -1;
}

/* Starts one echo: f = {"E", ID, IPV4, TIMEOUT_MS}. Answers at once when it cannot be sent. */
static void echo_start(char **f) {
  struct echo *e = NULL;
  for (int i = 0; i < ECHO_MAX && !e; i++)
    if (echoes[i].fd < 0) e = &echoes[i];
  struct echo busy = {.fd = -1};
  if (!e) e = &busy;
  snprintf(e->id, sizeof e->id, "%s", f[1]);
  if (e == &busy) return echo_answer(e, EAGAIN, "echo: too many at once");
  struct sockaddr_in to = {.sin_family = AF_INET};
  char *end;
  long timeout = strtol(f[3], &end, 10);
  if (inet_pton(AF_INET, f[2], &to.sin_addr) != 1 || *end || timeout <= 0) return echo_answer(e, EINVAL, "malformed request");
  e->fd = socket(AF_INET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_ICMP);
  if (e->fd < 0) return echo_answer(e, errno, "socket");
  struct icmp_filter filter = {.data = ~(1U << ICMP_ECHOREPLY)};
  setsockopt(e->fd, SOL_RAW, ICMP_FILTER, &filter, sizeof filter);
  /* connected: only packets from the target reach this socket */
  if (connect(e->fd, (struct sockaddr *)&to, sizeof to) < 0) return echo_answer(e, errno, "connect");
  struct icmphdr h = {.type = ICMP_ECHO};
  e->seq = ++echo_seq;
  h.un.echo.id = htons(getpid() & 0xffff);
  h.un.echo.sequence = htons(e->seq);
  h.checksum = inet_csum(&h, sizeof h);
  if (send(e->fd, &h, sizeof h, 0) < 0) return echo_answer(e, errno, "send");
  e->deadline = now_ms() + timeout;
}

/* Reads what arrived on an echo's socket: answers it when its reply is there. */
static void echo_read(struct echo *e) {
  char buf[1500];
  for (;;) {
    ssize_t n = recv(e->fd, buf, sizeof buf, 0);
    if (n < 0) return; /* EAGAIN: nothing more (errors: the deadline answers) */
    struct iphdr *ip = (struct iphdr *)buf;
    size_t hl = (size_t)ip->ihl * 4;
    if ((size_t)n < hl + sizeof(struct icmphdr)) continue;
    struct icmphdr *h = (struct icmphdr *)(buf + hl);
    if (h->type == ICMP_ECHOREPLY && ntohs(h->un.echo.id) == (getpid() & 0xffff) && ntohs(h->un.echo.sequence) == e->seq) return echo_answer(e, 0, "");
  }
}

static int echo_mode(void) {
  for (int i = 0; i < ECHO_MAX; i++) echoes[i].fd = -1;
  char in[BUF];
  size_t have = 0;
  for (;;) {
    struct pollfd p[ECHO_MAX + 1] = {{.fd = 0, .events = POLLIN}};
    struct echo *of[ECHO_MAX + 1] = {0};
    int np = 1;
    long long now = now_ms(), next = -1;
    for (int i = 0; i < ECHO_MAX; i++) {
      struct echo *e = &echoes[i];
      if (e->fd < 0) continue;
      if (e->deadline <= now) {
        echo_answer(e, ETIMEDOUT, "echo: no reply in time");
        continue;
      }
      if (next < 0 || e->deadline < next) next = e->deadline;
      of[np] = e;
      p[np++] = (struct pollfd){.fd = e->fd, .events = POLLIN};
    }
    if (poll(p, np, next < 0 ? -1 : (int)(next - now)) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    for (int i = 1; i < np; i++)
      if (p[i].revents) echo_read(of[i]);
    if (!p[0].revents) continue;
    ssize_t n = read(0, in + have, sizeof in - 1 - have);
    if (n <= 0) return 0; /* stdin closed: the agent is gone or stopped us */
    have += (size_t)n;
    char *line = in, *nl;
    while ((nl = memchr(line, '\n', have - (size_t)(line - in)))) {
      *nl = 0;
      char *f[5] = {0};
      int nf = 0;
      for (char *q = line; q && nf < 5;) {
        f[nf++] = q;
        q = strchr(q, '\t');
        if (q) *q++ = 0;
      }
      if (nf == 4 && strcmp(f[0], "E") == 0) echo_start(f);
      else if (nf >= 2) {
        struct echo bad = {.fd = -1};
        snprintf(bad.id, sizeof bad.id, "%s", f[1]);
        echo_answer(&bad, EINVAL, "malformed request");
      }
      line = nl + 1;
    }
    have -= (size_t)(line - in);
    memmove(in, line, have);
    if (have == sizeof in - 1) have = 0; /* a line longer than the buffer: dropped */
  }
}

int main(int argc, char **argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  signal(SIGPIPE, SIG_IGN);
  if (argc > 1 && strcmp(argv[1], "monitor") == 0) {
    setvbuf(stdout, NULL, _IOFBF, 1 << 12);
    return monitor();
  }
  if (argc > 1 && strcmp(argv[1], "echo") == 0) return echo_mode();
  self_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self_ns < 0) {
    perror("weft-netlink: /proc/self/ns/net");
    return 1;
  }
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  char line[BUF];
  while (fgets(line, sizeof line, stdin)) {
    size_t n = strlen(line);
    if (n && line[n - 1] == '\n') line[--n] = 0;
    char *f[MAX_FIELDS] = {0};
    int nf = 0;
    for (char *p = line; p && nf < MAX_FIELDS;) {
      f[nf++] = p;
      p = strchr(p, '\t');
      if (p) *p++ = 0;
    }
    const char *id = nf >= 2 ? f[1] : "0";
    int err;
    step[0] = 0;
    if (nf == 2 && strcmp(f[0], "P") == 0) err = 0;
    else if (nf == 9 && strcmp(f[0], "V") == 0) err = op_veth(f);
    else if (nf == 7 && strcmp(f[0], "C") == 0) err = op_conf(f);
    else if (nf == 4 && strcmp(f[0], "D") == 0) err = op_del(f);
    else {
      err = EINVAL;
      snprintf(step, sizeof step, "malformed request");
    }
    if (err) printf("%s %d %s: %s\n", id, err, step, strerror(err));
    else printf("%s 0\n", id);
    fflush(stdout);
  }
  return 0;
}
