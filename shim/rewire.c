/*
 * rewire: the CNI plugin the container runtime executes for every pod ADD
 * and DEL. It is C so that it starts in about a millisecond (a Go binary's
 * runtime alone takes several), which the runtime pays on every call: it
 * forwards the request to rewired over its root-only unix socket (the
 * CNI_* environment in the query of POST /cni/raw, the network config as
 * the body) and prints the answer (the body; the exit code in the
 * Rewire-Exit-Code header).
 *
 * Everything off that path is left to the Go plugin installed next to it
 * as rewire-plugin (cmd/rewire), executed with the same environment and
 * stdin: VERSION and a run by hand, a config it cannot read the socket
 * path from, and a daemon it cannot reach (the Go plugin waits for a
 * restarting daemon, runs rewire-offline for a DEL while none runs, and
 * says why a non-root caller was refused). Nothing has reached rewired
 * then, so the request is sent once. Once it is sent, a broken answer is a
 * CNI "try again later" error, as in the Go plugin.
 *
 * Build: hack/build-plugin.sh (make build does): on x86-64 without a C
 * library (nolibc.h), elsewhere cc -O2 -static -o rewire shim/rewire.c.
 */
#ifdef REWIRE_NOLIBC
#include "nolibc.h"
#else
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#endif

#define DEFAULT_SOCKET "/run/rewire/rewire.sock" /* wire.DefaultSocket */
#define RAW_PATH "/cni/raw"                      /* wire.RawPath */
#define EXIT_HEADER "Rewire-Exit-Code:"          /* wire.ExitCodeHeader */
#define FALLBACK "rewire-plugin"
#define MAX_CONFIG (1 << 20) /* the daemon's maxRequest */
#define MAX_REPLY (16 << 20)

/* buf is a growable byte buffer. */
struct buf {
	char *p;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (b->len + n + 1 > cap)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			fputs("rewire: out of memory\n", stderr);
			exit(1);
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = 0;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

/* json_string appends s as a JSON string. */
static void json_string(struct buf *b, const char *s)
{
	puts_(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(b, esc, 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", c);
			puts_(b, esc);
		} else {
			put(b, (const char *)&c, 1);
		}
	}
	puts_(b, "\"");
}

/* cni_error prints a CNI error result and exits 1. */
static void cni_error(const char *version, int code, const char *msg, const char *details)
{
	struct buf b = {0};
	puts_(&b, "{\"cniVersion\":");
	json_string(&b, version && *version ? version : "1.1.0");
	char num[32];
	snprintf(num, sizeof num, ",\"code\":%d,\"msg\":", code);
	puts_(&b, num);
	json_string(&b, msg);
	puts_(&b, ",\"details\":");
	json_string(&b, details ? details : "");
	puts_(&b, "}");
	if (write(1, b.p, b.len) < 0)
		exit(1);
	exit(1);
}

/* fallback executes the Go plugin next to this binary with the same
 * environment; stdin is what was read of it (consumed), or left as it is. */
static void fallback(const struct buf *in, int consumed)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		cni_error(NULL, 999, "rewire: cannot find its own path", strerror(errno));
	self[n] = 0;
	char *slash = strrchr(self, '/');
	struct buf path = {0};
	put(&path, self, slash ? (size_t)(slash - self + 1) : 0);
	puts_(&path, FALLBACK);
	if (consumed) {
		int fd = memfd_create("rewire-stdin", 0);
		if (fd < 0)
			cni_error(NULL, 999, "rewire: memfd_create", strerror(errno));
		for (size_t off = 0; off < in->len;) {
			ssize_t w = write(fd, in->p + off, in->len - off);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				cni_error(NULL, 999, "rewire: buffering stdin", strerror(errno));
			off += (size_t)w;
		}
		if (lseek(fd, 0, SEEK_SET) < 0 || dup2(fd, 0) < 0)
			cni_error(NULL, 999, "rewire: replaying stdin", strerror(errno));
		close(fd);
	}
	char *argv[] = {path.p, NULL};
	execv(path.p, argv);
	char details[PATH_MAX + 64];
	snprintf(details, sizeof details, "%s: %s", path.p, strerror(errno));
	cni_error(NULL, 999, "rewire: cannot run the Go plugin it leaves this request to", details);
}

/* --- A reader of the top level of a JSON object: the config's
 * "socketPath" and "cniVersion". Anything it does not expect sends the
 * request to the Go plugin, whose decoder has the last word. --- */

struct scan {
	const char *p, *end;
};

static void ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* str reads a JSON string into out (when not NULL); \u escapes are not
 * decoded (returns 0: the caller falls back). */
static int str(struct scan *s, struct buf *out)
{
	if (s->p >= s->end || *s->p != '"')
		return 0;
	for (s->p++; s->p < s->end; s->p++) {
		char c = *s->p;
		if (c == '"') {
			s->p++;
			return 1;
		}
		if ((unsigned char)c < 0x20)
			return 0;
		if (c == '\\') {
			if (++s->p >= s->end)
				return 0;
			const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
			const char *k = strchr(from, *s->p);
			if (!k || !*s->p)
				return 0;
			c = to[k - from];
		}
		if (out)
			put(out, &c, 1);
	}
	return 0;
}

/* skip passes over one JSON value. */
static int skip(struct scan *s, int depth)
{
	ws(s);
	if (s->p >= s->end || depth > 64)
		return 0;
	char c = *s->p;
	if (c == '"')
		return str(s, NULL);
	if (c == '{' || c == '[') {
		char close = c == '{' ? '}' : ']';
		s->p++;
		ws(s);
		if (s->p < s->end && *s->p == close) {
			s->p++;
			return 1;
		}
		for (;;) {
			if (c == '{') {
				ws(s);
				if (!str(s, NULL))
					return 0;
				ws(s);
				if (s->p >= s->end || *s->p++ != ':')
					return 0;
			}
			if (!skip(s, depth + 1))
				return 0;
			ws(s);
			if (s->p >= s->end)
				return 0;
			if (*s->p == ',') {
				s->p++;
				continue;
			}
			if (*s->p++ == close)
				return 1;
			return 0;
		}
	}
	/* number, true, false, null */
	const char *start = s->p;
	while (s->p < s->end && strchr("+-.0123456789eEtruefalsn", *s->p))
		s->p++;
	return s->p > start;
}

/* top reads the top-level string members socketPath and cniVersion. */
static int top(const struct buf *in, struct buf *socket, struct buf *version)
{
	struct scan s = {in->p, in->p + in->len};
	ws(&s);
	if (s.p >= s.end || *s.p++ != '{')
		return 0;
	ws(&s);
	if (s.p < s.end && *s.p == '}')
		return 1;
	for (;;) {
		struct buf key = {0};
		ws(&s);
		int ok = str(&s, &key);
		ws(&s);
		if (!ok || s.p >= s.end || *s.p++ != ':') {
			free(key.p);
			return 0;
		}
		ws(&s);
		struct buf *want = NULL;
		if (key.p && strcmp(key.p, "socketPath") == 0)
			want = socket;
		else if (key.p && strcmp(key.p, "cniVersion") == 0)
			want = version;
		free(key.p);
		if (want) {
			want->len = 0;
			if (want->p)
				want->p[0] = 0;
			if (!str(&s, want))
				return 0;
		} else if (!skip(&s, 1)) {
			return 0;
		}
		ws(&s);
		if (s.p >= s.end)
			return 0;
		if (*s.p == ',') {
			s.p++;
			continue;
		}
		if (*s.p++ != '}')
			return 0;
		ws(&s);
		return s.p == s.end;
	}
}

/* query appends &name=value, value percent-encoded. */
static void query(struct buf *b, const char *name, const char *env)
{
	const char *v = getenv(env);
	if (!v)
		return;
	puts_(b, b->p[b->len - 1] == '?' ? "" : "&");
	puts_(b, name);
	puts_(b, "=");
	for (; *v; v++) {
		unsigned char c = (unsigned char)*v;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
			put(b, (const char *)&c, 1);
		} else {
			char hex[4];
			snprintf(hex, sizeof hex, "%%%02X", c);
			put(b, hex, 3);
		}
	}
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return 0;
		p += w;
		n -= (size_t)w;
	}
	return 1;
}

/* http_status returns the status of an "HTTP/1.x NNN ..." status line
 * (0: none). */
static int http_status(const char *line)
{
	if (strncasecmp(line, "HTTP/1.", 7) != 0 || line[7] < '0' || line[7] > '9' || line[8] != ' ')
		return 0;
	int status = 0;
	for (const char *p = line + 9; p < line + 12; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		status = status * 10 + (*p - '0');
	}
	return status;
}

/* header returns the value of a header (name with its colon) in head. */
static const char *header(const char *head, const char *name)
{
	size_t n = strlen(name);
	for (const char *l = strstr(head, "\r\n"); l; l = strstr(l, "\r\n")) {
		l += 2;
		if (strncasecmp(l, name, n) == 0)
			return l + n;
	}
	return NULL;
}

int main(void)
{
	const char *cmd = getenv("CNI_COMMAND");
	if (!cmd || !*cmd || strcmp(cmd, "VERSION") == 0)
		fallback(NULL, 0);

	struct buf in = {0};
	for (;;) {
		char chunk[65536];
		ssize_t r = read(0, chunk, sizeof chunk);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			cni_error(NULL, 5, "reading stdin", strerror(errno));
		if (r == 0)
			break;
		put(&in, chunk, (size_t)r);
		if (in.len > MAX_CONFIG)
			cni_error(NULL, 7, "network config larger than rewired accepts (1 MiB)", "");
	}
	struct buf socket_path = {0}, version = {0};
	puts_(&socket_path, "");
	puts_(&version, "");
	if (!top(&in, &socket_path, &version))
		fallback(&in, 1);
	const char *sock = socket_path.len ? socket_path.p : DEFAULT_SOCKET;

	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(sock) >= sizeof addr.sun_path)
		fallback(&in, 1);
	strcpy(addr.sun_path, sock);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
		fallback(&in, 1); /* down, restarting, not ours to reach: the Go plugin says */

	struct buf req = {0};
	puts_(&req, "POST " RAW_PATH "?");
	query(&req, "command", "CNI_COMMAND");
	query(&req, "containerID", "CNI_CONTAINERID");
	query(&req, "netns", "CNI_NETNS");
	query(&req, "ifName", "CNI_IFNAME");
	query(&req, "args", "CNI_ARGS");
	query(&req, "path", "CNI_PATH");
	char head[160];
	snprintf(head, sizeof head,
		 " HTTP/1.1\r\nHost: rewired\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
		 in.len);
	puts_(&req, head);
	put(&req, in.p, in.len);
	if (!send_all(fd, req.p, req.len))
		fallback(&in, 1); /* rewired cannot have read a whole request */

	struct buf reply = {0};
	for (;;) {
		char chunk[65536];
		ssize_t r = read(fd, chunk, sizeof chunk);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			cni_error(version.p, 11, "try again later: rewired is not reachable", strerror(errno));
		if (r == 0)
			break;
		put(&reply, chunk, (size_t)r);
		if (reply.len > MAX_REPLY)
			cni_error(version.p, 11, "try again later: rewired's reply is too large", "");
	}
	char *body = reply.p ? strstr(reply.p, "\r\n\r\n") : NULL;
	int status = 0;
	if (!body || !(status = http_status(reply.p)))
		cni_error(version.p, 11, "try again later: rewired is not reachable", "no complete reply from rewired");
	*body = 0;
	body += 4;
	size_t blen = reply.len - (size_t)(body - reply.p);
	const char *cl = header(reply.p, "Content-Length:");
	if (cl) {
		size_t want = strtoul(cl, NULL, 10);
		if (want > blen)
			cni_error(version.p, 11, "try again later: rewired is not reachable", "truncated reply from rewired");
		blen = want;
	}
	const char *exit_code = header(reply.p, EXIT_HEADER);
	if (status != 200 || !exit_code) {
		while (blen > 0 && (body[blen - 1] == '\n' || body[blen - 1] == ' '))
			body[--blen] = 0;
		char details[256];
		snprintf(details, sizeof details, "daemon answered %d: %.200s", status, body);
		if (status == 403)
			cni_error(version.p, 999, "permission denied by rewired: the plugin must run as root", details);
		cni_error(version.p, 11, "try again later: rewired is not reachable", details);
	}
	for (size_t off = 0; off < blen;) {
		ssize_t w = write(1, body + off, blen - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return 1;
		off += (size_t)w;
	}
	return atoi(exit_code);
}
