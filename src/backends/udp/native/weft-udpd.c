/*
 * weft-udpd: the data path of weft's `udp` backend (flannel's UDP mode): IPv4 packets from a TUN device are
 * sent in UDP datagrams to the peer host that leases their destination subnet; datagrams from peers are
 * checked and written to the TUN device. The agent (TypeScript) keeps the routing table and all control
 * logic; it writes the table to a file and sends SIGHUP. This process only forwards, filters and counts.
 *
 *   weft-udpd run DEVICE LISTEN_IP PORT TABLE_FILE STATS_FILE
 *       Opens (or re-attaches to) the persistent TUN device DEVICE (IFF_TUN|IFF_NO_PI), binds UDP LISTEN_IP:PORT,
 *       reads TABLE_FILE at start and on SIGHUP, writes counters as JSON to STATS_FILE (atomically: tmp+rename)
 *       every second when they changed and at once on SIGUSR1. Exits on SIGTERM/SIGINT; the device stays
 *       (persistent), so addresses and routes the agent put on it survive a restart of this process.
 *   weft-udpd check TABLE_FILE FROM_IP FROM_PORT HEX_PACKET
 *       Prints the verdict for one datagram (what `run` does with it), without root: for unit tests.
 *   weft-udpd route TABLE_FILE HEX_PACKET
 *       Prints where `run` sends a packet read from the TUN device (peer ip:port or a drop reason).
 *
 * TABLE_FILE lines (anything else is ignored; at most MAX_PEERS peers):
 *   own NET/LEN                 this host's lease: datagrams must carry packets addressed into it
 *   peer NET/LEN IP PORT        a peer host: its lease NET/LEN, reached at (and only accepted from) IP:PORT
 *   allow NET/LEN               a connected network: inner sources any peer may send from besides its lease
 *
 * Why a separate process in C: the data path keeps running while the agent restarts (the agent adopts it by
 * its PID file), and no packet crosses into JavaScript. Batching: recvmmsg/sendmmsg move up to BATCH datagrams
 * per system call; the TUN side needs one read/write per packet (a TUN fd has no batch call).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef BATCH
#define BATCH 64
#endif
#define MAX_PEERS 4096
#define BUF 65536

struct peer {
  uint32_t net, mask; /* host order */
  uint32_t ip;        /* network order */
  uint16_t port;      /* network order */
};

#define MAX_ALLOW 256

struct table {
  int has_own;
  uint32_t own_net, own_mask;
  int n;
  struct peer p[MAX_PEERS];
  /* inner sources any peer may send from besides its lease: the networks connected to this one */
  int na;
  uint32_t allow_net[MAX_ALLOW], allow_mask[MAX_ALLOW];
};

/* Counters (the agent reads them from STATS_FILE for `weft status` and /metrics). */
enum {
  C_TX_PACKETS, C_TX_BYTES, C_RX_PACKETS, C_RX_BYTES,
  D_UNKNOWN_PEER, D_SPOOFED_SOURCE, D_NOT_LOCAL, D_MALFORMED, D_NOT_IPV4, D_NO_ROUTE, D_TUN_WRITE, D_SEND,
  C_RELOADS, C_N
};
static const char *cname[C_N] = {
  "txPackets", "txBytes", "rxPackets", "rxBytes",
  "unknownPeer", "spoofedSource", "notLocal", "malformed", "notIpv4", "noRoute", "tunWrite", "send",
  "reloads",
};
static unsigned long long ctr[C_N];

static struct table *tab;
static volatile sig_atomic_t want_reload, want_stats, want_exit;

static int parse_cidr(const char *s, uint32_t *net, uint32_t *mask) {
  char buf[64];
  const char *slash = strchr(s, '/');
  if (!slash || (size_t)(slash - s) >= sizeof buf) return -1;
  memcpy(buf, s, slash - s);
  buf[slash - s] = 0;
  char *end;
  long len = strtol(slash + 1, &end, 10);
  if (*end || len < 0 || len > 32) return -1;
  struct in_addr a;
  if (inet_pton(AF_INET, buf, &a) != 1) return -1;
  *mask = len == 0 ? 0 : 0xffffffffu << (32 - len);
  *net = ntohl(a.s_addr) & *mask;
  return 0;
}

/* Reads a table file; returns 0 and fills *t, or -1 (t untouched on error opening). Bad lines are skipped. */
static int load_table(const char *path, struct table *t) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  struct table *n = calloc(1, sizeof *n);
  if (!n) {
    fclose(f);
    return -1;
  }
  char line[256];
  while (fgets(line, sizeof line, f)) {
    char a[64], b[64];
    unsigned port;
    if (sscanf(line, "own %63s", a) == 1 && strncmp(line, "own ", 4) == 0) {
      if (parse_cidr(a, &n->own_net, &n->own_mask) == 0) n->has_own = 1;
    } else if (strncmp(line, "allow ", 6) == 0 && sscanf(line, "allow %63s", a) == 1 && n->na < MAX_ALLOW) {
      if (parse_cidr(a, &n->allow_net[n->na], &n->allow_mask[n->na]) == 0) n->na++;
    } else if (strncmp(line, "peer ", 5) == 0 && sscanf(line, "peer %63s %63s %u", a, b, &port) == 3 && n->n < MAX_PEERS) {
      struct peer *p = &n->p[n->n];
      struct in_addr ip;
      if (parse_cidr(a, &p->net, &p->mask) || inet_pton(AF_INET, b, &ip) != 1 || port < 1 || port > 65535) continue;
      p->ip = ip.s_addr;
      p->port = htons((uint16_t)port);
      n->n++;
    }
  }
  fclose(f);
  memcpy(t, n, sizeof *n);
  free(n);
  return 0;
}

/* A TUN packet: which peer leases its destination (longest prefix), or -1. */
static int route_of(const struct table *t, const uint8_t *pkt, size_t len) {
  if (len < 20 || (pkt[0] >> 4) != 4) return -2;
  uint32_t dst = ((uint32_t)pkt[16] << 24) | ((uint32_t)pkt[17] << 16) | ((uint32_t)pkt[18] << 8) | pkt[19];
  int best = -1;
  uint32_t bestmask = 0;
  for (int i = 0; i < t->n; i++) {
    const struct peer *p = &t->p[i];
    if ((dst & p->mask) == p->net && (best < 0 || p->mask > bestmask)) {
      best = i;
      bestmask = p->mask;
    }
  }
  return best;
}

/* The verdict on a datagram from ip:port (network order) carrying pkt: a counter index, C_RX_PACKETS = accept. */
static int judge(const struct table *t, uint32_t ip, uint16_t port, const uint8_t *pkt, size_t len) {
  const struct peer *from = NULL;
  for (int i = 0; i < t->n; i++)
    if (t->p[i].ip == ip && t->p[i].port == port) {
      from = &t->p[i];
      break;
    }
  if (!from) return D_UNKNOWN_PEER;
  if (len < 20 || (pkt[0] >> 4) != 4 || (pkt[0] & 15) < 5) return D_MALFORMED;
  size_t total = ((size_t)pkt[2] << 8) | pkt[3];
  if (total != len) return D_MALFORMED;
  uint32_t src = ((uint32_t)pkt[12] << 24) | ((uint32_t)pkt[13] << 16) | ((uint32_t)pkt[14] << 8) | pkt[15];
  uint32_t dst = ((uint32_t)pkt[16] << 24) | ((uint32_t)pkt[17] << 16) | ((uint32_t)pkt[18] << 8) | pkt[19];
  if ((src & from->mask) != from->net) {
    int ok = 0;
    for (int i = 0; i < t->na && !ok; i++) ok = (src & t->allow_mask[i]) == t->allow_net[i];
    if (!ok) return D_SPOOFED_SOURCE;
  }
  if (!t->has_own || (dst & t->own_mask) != t->own_net) return D_NOT_LOCAL;
  return C_RX_PACKETS;
}

static void write_stats(const char *path, const char *dev, int peers) {
  char tmp[4096];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return;
  char out[2048];
  int n = snprintf(out, sizeof out, "{\"pid\":%d,\"device\":\"%s\",\"peers\":%d,\"at\":%lld", (int)getpid(), dev, peers, (long long)time(NULL));
  for (int i = 0; i < C_N && n < (int)sizeof out - 64; i++) n += snprintf(out + n, sizeof out - n, ",\"%s\":%llu", cname[i], ctr[i]);
  n += snprintf(out + n, sizeof out - n, "}\n");
  int ok = write(fd, out, n) == n;
  close(fd);
  if (ok) rename(tmp, path);
  else unlink(tmp);
}

static void on_signal(int s) {
  if (s == SIGHUP) want_reload = 1;
  else if (s == SIGUSR1) want_stats = 1;
  else want_exit = 1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static size_t unhex(const char *s, uint8_t *out, size_t max) {
  size_t n = 0;
  while (s[0] && s[1] && n < max) {
    int a = hexval(s[0]), b = hexval(s[1]);
    if (a < 0 || b < 0) break;
    out[n++] = (uint8_t)(a * 16 + b);
    s += 2;
  }
  return n;
}

static int open_tun(const char *dev) {
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "weft-udpd: open /dev/net/tun: %s (the kernel needs CONFIG_TUN)\n", strerror(errno));
    return -1;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
  strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    fprintf(stderr, "weft-udpd: TUNSETIFF %s: %s\n", dev, strerror(errno));
    close(fd);
    return -1;
  }
  /* persistent: the device, its address and routes stay while this process restarts */
  if (ioctl(fd, TUNSETPERSIST, 1) < 0) fprintf(stderr, "weft-udpd: TUNSETPERSIST %s: %s\n", dev, strerror(errno));
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

static int open_udp(const char *ip, int port) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int sz = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
    fprintf(stderr, "weft-udpd: bind %s:%d: %s\n", ip, port, strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

static uint8_t (*txbuf)[BUF], (*rxbuf)[BUF];

static int run(const char *dev, const char *ip, int port, const char *table_file, const char *stats_file) {
  tab = calloc(1, sizeof *tab);
  txbuf = malloc((size_t)BATCH * BUF);
  rxbuf = malloc((size_t)BATCH * BUF);
  if (!tab || !txbuf || !rxbuf) return 1;
  if (load_table(table_file, tab) < 0) fprintf(stderr, "weft-udpd: no table yet at %s (%s): forwarding nothing until SIGHUP\n", table_file, strerror(errno));
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  int tun = open_tun(dev);
  if (tun < 0) return 1;
  int udp = open_udp(ip, port);
  if (udp < 0) return 1;
  fprintf(stderr, "weft-udpd: %s ⇄ udp %s:%d, %d peers\n", dev, ip, port, tab->n);
  write_stats(stats_file, dev, tab->n);

  static struct mmsghdr tx[BATCH], rx[BATCH];
  static struct iovec txv[BATCH], rxv[BATCH];
  static struct sockaddr_in txa[BATCH], rxa[BATCH];
  for (int i = 0; i < BATCH; i++) {
    txv[i].iov_base = txbuf[i];
    tx[i].msg_hdr.msg_iov = &txv[i];
    tx[i].msg_hdr.msg_iovlen = 1;
    tx[i].msg_hdr.msg_name = &txa[i];
    tx[i].msg_hdr.msg_namelen = sizeof txa[i];
    txa[i].sin_family = AF_INET;
  }
  unsigned long long last[C_N];
  memset(last, 0, sizeof last);
  time_t lastWrite = time(NULL);
  struct pollfd pf[2] = {{.fd = tun, .events = POLLIN}, {.fd = udp, .events = POLLIN}};
  int tun_ready = 1, udp_ready = 1;

  while (!want_exit) {
    if (want_reload) {
      want_reload = 0;
      if (load_table(table_file, tab) == 0) ctr[C_RELOADS]++;
      else fprintf(stderr, "weft-udpd: cannot read %s: %s (keeping the old table)\n", table_file, strerror(errno));
      want_stats = 1;
    }
    time_t now = time(NULL);
    if (want_stats || (now != lastWrite && memcmp(last, ctr, sizeof ctr))) {
      want_stats = 0;
      lastWrite = now;
      memcpy(last, ctr, sizeof ctr);
      write_stats(stats_file, dev, tab->n);
    }
    /* TUN → UDP: read up to BATCH packets, one sendmmsg */
    int m = 0, reads = 0;
    for (int i = 0; tun_ready && i < BATCH; i++) {
      ssize_t n = read(tun, txbuf[m], BUF);
      if (n < 0) break;
      reads++;
      int r = route_of(tab, txbuf[m], (size_t)n);
      if (r < 0) {
        ctr[r == -2 ? D_NOT_IPV4 : D_NO_ROUTE]++;
        continue;
      }
      txv[m].iov_len = (size_t)n;
      txa[m].sin_addr.s_addr = tab->p[r].ip;
      txa[m].sin_port = tab->p[r].port;
      m++;
    }
    tun_ready = reads == BATCH; /* fewer: the TUN queue is empty, wait for poll */
    for (int off = 0; off < m;) {
      int s = sendmmsg(udp, tx + off, m - off, 0);
      if (s < 0) {
        if (errno == EINTR) continue;
        /* ECONNREFUSED etc. from an earlier ICMP error: drop this one, go on */
        ctr[D_SEND]++;
        off++;
        continue;
      }
      for (int i = off; i < off + s; i++) {
        ctr[C_TX_PACKETS]++;
        ctr[C_TX_BYTES] += txv[i].iov_len;
      }
      off += s;
    }
    /* UDP → TUN: one recvmmsg, a write per accepted packet */
    for (int i = 0; i < BATCH; i++) {
      rxv[i].iov_base = rxbuf[i];
      rxv[i].iov_len = BUF;
      rx[i].msg_hdr.msg_iov = &rxv[i];
      rx[i].msg_hdr.msg_iovlen = 1;
      rx[i].msg_hdr.msg_name = &rxa[i];
      rx[i].msg_hdr.msg_namelen = sizeof rxa[i];
      rx[i].msg_hdr.msg_control = NULL;
      rx[i].msg_hdr.msg_controllen = 0;
      rx[i].msg_hdr.msg_flags = 0;
    }
    int k = udp_ready ? recvmmsg(udp, rx, BATCH, MSG_DONTWAIT, NULL) : 0;
    udp_ready = k == BATCH;
    for (int i = 0; i < k; i++) {
      size_t len = rx[i].msg_len;
      if (rx[i].msg_hdr.msg_flags & MSG_TRUNC) {
        ctr[D_MALFORMED]++;
        continue;
      }
      int v = judge(tab, rxa[i].sin_addr.s_addr, rxa[i].sin_port, rxbuf[i], len);
      if (v != C_RX_PACKETS) {
        ctr[v]++;
        continue;
      }
      if (write(tun, rxbuf[i], len) != (ssize_t)len) {
        ctr[D_TUN_WRITE]++;
        continue;
      }
      ctr[C_RX_PACKETS]++;
      ctr[C_RX_BYTES] += len;
    }
    if (tun_ready || udp_ready) continue; /* a full batch: more may be waiting */
    /* both drained: sleep until one has something (no system call is spent on the idle side) */
    pf[0].revents = pf[1].revents = 0;
    if (poll(pf, 2, 1000) < 0) continue;
    tun_ready = pf[0].revents != 0;
    udp_ready = pf[1].revents != 0;
  }
  write_stats(stats_file, dev, tab->n);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 7 && strcmp(argv[1], "run") == 0) {
    int port = atoi(argv[4]);
    if (strlen(argv[2]) >= IFNAMSIZ || port < 1 || port > 65535) {
      fprintf(stderr, "weft-udpd: bad device name or port\n");
      return 2;
    }
    return run(argv[2], argv[3], port, argv[5], argv[6]);
  }
  if ((argc == 6 && strcmp(argv[1], "check") == 0) || (argc == 4 && strcmp(argv[1], "route") == 0)) {
    static struct table t;
    static uint8_t pkt[BUF];
    if (load_table(argv[2], &t) < 0) {
      perror(argv[2]);
      return 1;
    }
    if (argv[1][0] == 'r') {
      size_t len = unhex(argv[3], pkt, sizeof pkt);
      int r = route_of(&t, pkt, len);
      if (r == -2) puts("notIpv4");
      else if (r < 0) puts("noRoute");
      else {
        struct in_addr a = {.s_addr = t.p[r].ip};
        printf("%s:%d\n", inet_ntoa(a), ntohs(t.p[r].port));
      }
      return 0;
    }
    struct in_addr ip;
    if (inet_pton(AF_INET, argv[3], &ip) != 1) return 2;
    size_t len = unhex(argv[5], pkt, sizeof pkt);
    int v = judge(&t, ip.s_addr, htons((uint16_t)atoi(argv[4])), pkt, len);
    puts(v == C_RX_PACKETS ? "accept" : cname[v]);
    return 0;
  }
  fprintf(stderr, "usage: weft-udpd run DEVICE LISTEN_IP PORT TABLE_FILE STATS_FILE\n"
                  "       weft-udpd check TABLE_FILE FROM_IP FROM_PORT HEX_PACKET\n"
                  "       weft-udpd route TABLE_FILE HEX_PACKET\n");
  return 2;
}
