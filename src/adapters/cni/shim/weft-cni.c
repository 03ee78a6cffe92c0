/*
 * weft-cni: the CNI plugin executable a runtime runs once per ADD/DEL/CHECK/GC/STATUS/VERSION.
 *
 * It is only a forwarder: it sends the CNI_* environment and the config from stdin to the local weft agent
 * (POST /cni on its unix socket, default /run/weft/weft.sock, or the config's top-level "agentSocket") and
 * prints what the agent answers. The agent owns every rule of the spec (validation, error codes, results).
 * The shim itself knows only three facts: the VERSION answer (a runtime asks it before anything else, also
 * when the agent is down), the error to print when the agent cannot be reached (11 "try again later"; 50
 * "plugin not available" for STATUS), and the agent's answer format {"exit":N,"out":<stdout JSON or null>}.
 *
 * Written in C because a runtime pays the plugin's start-up on every call: this starts in about a
 * millisecond, where Node alone needs ~76 ms here (see bench/cni.ts).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* Keep in step with SUPPORTED_VERSIONS in src/adapters/cni/spec.ts (a unit test compares them). */
#define SUPPORTED_VERSIONS "[\"0.4.0\",\"1.0.0\",\"1.1.0\"]"
#define CURRENT_VERSION "1.1.0"
#define DEFAULT_SOCKET "/run/weft/weft.sock"
#define MAX_CONFIG (1u << 20)   /* stdin larger than this is refused (code 5) */
#define MAX_ANSWER (4u << 20)
#define TIMEOUT_SEC 120

static const char *const ENV_NAMES[] = {"CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH", NULL};

/* ---- a growable byte buffer ---- */
typedef struct {
  char *p;
  size_t n, cap;
} buf;

static void put(buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) abort();
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

/* Appends s (n bytes) as a JSON string literal. */
static void put_json_string(buf *b, const char *s, size_t n) {
  puts_(b, "\"");
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(b, e, 2);
    } else if (c < 0x20 || c == 0x7f) {
      char e[8];
      snprintf(e, sizeof e, "\\u%04x", c);
      puts_(b, e);
    } else {
      put(b, (const char *)&s[i], 1);
    }
  }
  puts_(b, "\"");
}

static void fail(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

/* ---- the two top-level string fields the shim needs from the config, found without a full parser ---- */
typedef struct {
  const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

/* Reads a JSON string; copies its plain characters into out (escapes other than \" \\ \/ make it unusable). */
static int read_string(cursor *c, char *out, size_t outlen, int *usable) {
  size_t k = 0;
  *usable = 1;
  if (c->p >= c->end || *c->p != '"') return -1;
  c->p++;
  while (c->p < c->end && *c->p != '"') {
    char ch = *c->p++;
    if (ch == '\\') {
      if (c->p >= c->end) return -1;
      char e = *c->p++;
      if (e == '"' || e == '\\' || e == '/') ch = e;
      else *usable = 0;
    } else if ((unsigned char)ch < 0x20) return -1;
    if (out && k + 1 < outlen) out[k++] = ch;
    else *usable = 0;
  }
  if (c->p >= c->end) return -1;
  c->p++;
  if (out) out[k < outlen ? k : outlen - 1] = 0;
  return 0;
}

static int skip_value(cursor *c, int depth) {
  int usable;
  if (depth > 64) return -1;
  skip_ws(c);
  if (c->p >= c->end) return -1;
  char ch = *c->p;
  if (ch == '"') return read_string(c, NULL, 0, &usable);
  if (ch == '{' || ch == '[') {
    char close = ch == '{' ? '}' : ']';
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == close) { c->p++; return 0; }
    for (;;) {
      if (ch == '{') {
        skip_ws(c);
        if (read_string(c, NULL, 0, &usable) < 0) return -1;
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++;
      }
      if (skip_value(c, depth + 1) < 0) return -1;
      skip_ws(c);
      if (c->p >= c->end) return -1;
      if (*c->p == ',') { c->p++; continue; }
      if (*c->p == close) { c->p++; return 0; }
      return -1;
    }
  }
  /* true, false, null, or a number as JSON writes it */
  static const char *const words[] = {"true", "false", "null"};
  for (int i = 0; i < 3; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(c->end - c->p) >= n && strncmp(c->p, words[i], n) == 0) { c->p += n; return 0; }
  }
  const char *start = c->p;
  if (c->p < c->end && *c->p == '-') c->p++;
  const char *digits = c->p;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
  if (c->p == digits) return -1;
  if (c->p < c->end && *c->p == '.') {
    c->p++;
    digits = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    if (c->p == digits) return -1;
  }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    digits = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    if (c->p == digits) return -1;
  }
  return c->p > start ? 0 : -1;
}

/*
 * Fills sock/ver from the top-level "agentSocket"/"cniVersion" when the config has them as plain strings.
 * Returns -1 when stdin is not a JSON object: then the shim cannot know where the agent is, and answers
 * the spec's "failed to decode" (6) itself, as the agent would.
 */
static int scan_config(const char *s, size_t n, char *sock, size_t socklen, char *ver, size_t verlen) {
  cursor c = {s, s + n};
  int usable;
  char key[32];
  skip_ws(&c);
  if (c.p >= c.end || *c.p != '{') return -1;
  c.p++;
  skip_ws(&c);
  if (c.p < c.end && *c.p == '}') {
    c.p++;
    skip_ws(&c);
    return c.p == c.end ? 0 : -1;
  }
  for (;;) {
    skip_ws(&c);
    if (read_string(&c, key, sizeof key, &usable) < 0) return -1;
    skip_ws(&c);
    if (c.p >= c.end || *c.p != ':') return -1;
    c.p++;
    skip_ws(&c);
    char *dst = NULL;
    size_t dstlen = 0;
    if (usable && strcmp(key, "agentSocket") == 0) dst = sock, dstlen = socklen;
    else if (usable && strcmp(key, "cniVersion") == 0) dst = ver, dstlen = verlen;
    if (dst && c.p < c.end && *c.p == '"') {
      char tmp[256];
      if (read_string(&c, tmp, sizeof tmp, &usable) < 0) return -1;
      if (usable && tmp[0]) {
        if (strlen(tmp) >= dstlen) fail(7, "\"%s\" is too long (at most %zu characters)", key, dstlen - 1);
        memcpy(dst, tmp, strlen(tmp) + 1);
      }
    } else if (skip_value(&c, 1) < 0) return -1;
    skip_ws(&c);
    if (c.p < c.end && *c.p == ',') { c.p++; continue; }
    if (c.p < c.end && *c.p == '}') {
      c.p++;
      skip_ws(&c);
      return c.p == c.end ? 0 : -1; /* nothing may follow the object */
    }
    return -1;
  }
}

/* ---- output ---- */
static int write_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

static char cni_version[64] = CURRENT_VERSION;

/* Prints a CNI error in the spec's shape and exits 1. */
static void fail(int code, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  buf b = {0};
  puts_(&b, "{\"cniVersion\":");
  put_json_string(&b, cni_version, strlen(cni_version));
  char num[32];
  snprintf(num, sizeof num, ",\"code\":%d,\"msg\":", code);
  puts_(&b, num);
  put_json_string(&b, msg, strlen(msg));
  puts_(&b, "}\n");
  write_all(1, b.p, b.n);
  exit(1);
}

int main(void) {
  /* an agent that hangs up mid-request must give error 11, not kill us with SIGPIPE */
  signal(SIGPIPE, SIG_IGN);
  const char *command = getenv("CNI_COMMAND");
  int is_status = command && strcmp(command, "STATUS") == 0;

  /* config from stdin (VERSION has one too, but needs nothing from it) */
  buf config = {0};
  put(&config, "", 0);
  char chunk[65536];
  for (;;) {
    ssize_t r = read(0, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EBADF) break; /* no stdin at all */
      fail(5, "cannot read the network configuration from stdin: %s", strerror(errno));
    }
    if (r == 0) break;
    if (config.n + (size_t)r > MAX_CONFIG) fail(5, "network configuration on stdin is larger than %u bytes", MAX_CONFIG);
    put(&config, chunk, (size_t)r);
  }
  char sock[sizeof(((struct sockaddr_un *)0)->sun_path)] = DEFAULT_SOCKET;
  if (command && strcmp(command, "VERSION") == 0) {
    const char *out = "{\"cniVersion\":\"" CURRENT_VERSION "\",\"supportedVersions\":" SUPPORTED_VERSIONS "}\n";
    write_all(1, out, strlen(out));
    return 0;
  }
  if (scan_config(config.p, config.n, sock, sizeof sock, cni_version, sizeof cni_version) < 0) {
    fail(6, "cannot decode the network configuration on stdin: not a JSON object");
  }
  if (sock[0] != '/') fail(7, "\"agentSocket\" must be an absolute path");
  char quoted[80];
  snprintf(quoted, sizeof quoted, "\"%s\"", cni_version);
  if (!strstr(SUPPORTED_VERSIONS, quoted)) strcpy(cni_version, CURRENT_VERSION); /* errors speak a version we know */
  int unreachable = is_status ? 50 : 11;

  /* request body: {"env":{...set CNI_* only...},"stdin":"<config as a string>"} */
  buf body = {0};
  puts_(&body, "{\"env\":{");
  int first = 1;
  for (const char *const *name = ENV_NAMES; *name; name++) {
    const char *v = getenv(*name);
    if (!v) continue;
    if (!first) puts_(&body, ",");
    first = 0;
    put_json_string(&body, *name, strlen(*name));
    puts_(&body, ":");
    put_json_string(&body, v, strlen(v));
  }
  puts_(&body, "},\"stdin\":");
  put_json_string(&body, config.p, config.n);
  puts_(&body, "}");

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(unreachable, "cannot create a socket: %s", strerror(errno));
  struct timeval tv = {TIMEOUT_SEC, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    fail(unreachable, "the weft agent is not reachable at %s (%s): start it with 'weft agent'", sock, strerror(errno));
  }
  char head[256];
  int hn = snprintf(head, sizeof head,
                    "POST /cni HTTP/1.1\r\nHost: weft\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                    body.n);
  if (write_all(fd, head, (size_t)hn) < 0 || write_all(fd, body.p, body.n) < 0) {
    fail(unreachable, "sending to the weft agent at %s failed: %s", sock, strerror(errno));
  }

  buf answer = {0};
  put(&answer, "", 0);
  for (;;) {
    ssize_t r = read(fd, chunk, sizeof chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) fail(11, "the weft agent at %s did not answer within %d s", sock, TIMEOUT_SEC);
      fail(unreachable, "reading the weft agent's answer at %s failed: %s", sock, strerror(errno));
    }
    if (r == 0) break;
    if (answer.n + (size_t)r > MAX_ANSWER) fail(100, "the weft agent's answer is too large");
    put(&answer, chunk, (size_t)r);
  }
  close(fd);

  int status = 0;
  if (sscanf(answer.p, "HTTP/1.%*d %d", &status) != 1) fail(unreachable, "the weft agent at %s closed the connection without an answer", sock);
  char *payload = strstr(answer.p, "\r\n\r\n");
  payload = payload ? payload + 4 : answer.p + answer.n;
  size_t plen = strlen(payload);
  while (plen > 0 && (payload[plen - 1] == '\n' || payload[plen - 1] == '\r' || payload[plen - 1] == ' ')) payload[--plen] = 0;

  static const char prefix[] = "{\"exit\":";
  int exit_code = -1, consumed = 0;
  if (status == 200 && strncmp(payload, prefix, sizeof prefix - 1) == 0 &&
      sscanf(payload + sizeof prefix - 1, "%d,\"out\":%n", &exit_code, &consumed) == 1 && consumed > 0 && plen > 0 &&
      payload[plen - 1] == '}') {
    char *out = payload + sizeof prefix - 1 + consumed;
    size_t olen = (size_t)(payload + plen - 1 - out);
    if (!(olen == 4 && strncmp(out, "null", 4) == 0)) {
      write_all(1, out, olen);
      write_all(1, "\n", 1);
    }
    return exit_code;
  }
  if (plen > 300) payload[300] = 0;
  fail(100, "the weft agent at %s answered HTTP %d: %s", sock, status, payload);
  return 1;
}
