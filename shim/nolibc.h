/*
 * nolibc.h: the few C library functions rewire.c uses, on raw Linux system
 * calls, for x86-64. Without a C library the plugin's process starts with
 * nothing to initialise and a few pages to map: about 0.8 ms less per exec
 * than a static glibc binary on the VMs measured (BenchmarkPluginStart),
 * paid by the runtime on every pod ADD and DEL. Constants and system call
 * numbers come from the kernel's headers (linux-libc-dev). Other
 * architectures build rewire.c against the C library (hack/build-plugin.sh).
 *
 * Build: cc -O2 -static -nostdlib -ffreestanding -fno-builtin
 *        -fno-stack-protector -DREWIRE_NOLIBC shim/rewire.c
 */
#ifndef REWIRE_NOLIBC_H
#define REWIRE_NOLIBC_H

#if !defined(__x86_64__)
#error "nolibc.h supports x86-64 only: build rewire.c against the C library"
#endif

#include <stdarg.h>
#include <stddef.h>
#include <asm/unistd.h>
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/limits.h>
#include <linux/mman.h>
#include <linux/un.h>

typedef long ssize_t;
typedef long off_t;

#define AF_UNIX 1
#define SOCK_STREAM 1
#define SOCK_CLOEXEC O_CLOEXEC
#define MSG_NOSIGNAL 0x4000
#define SEEK_SET 0
#define stderr 2

struct sockaddr;

static int errno;
static char **environ;

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

/* sys returns a system call's result, or -1 with errno set. */
static long sys(long n, long a, long b, long c, long d, long e, long f)
{
	long r = sys6(n, a, b, c, d, e, f);
	if (r < 0 && r > -4096) {
		errno = (int)-r;
		return -1;
	}
	return r;
}

static ssize_t read(int fd, void *p, size_t n) { return sys(__NR_read, fd, (long)p, (long)n, 0, 0, 0); }
static ssize_t write(int fd, const void *p, size_t n) { return sys(__NR_write, fd, (long)p, (long)n, 0, 0, 0); }
static int close(int fd) { return (int)sys(__NR_close, fd, 0, 0, 0, 0, 0); }
static off_t lseek(int fd, off_t off, int whence) { return sys(__NR_lseek, fd, off, whence, 0, 0, 0); }
static int dup2(int from, int to) { return (int)sys(__NR_dup2, from, to, 0, 0, 0, 0); }
static int socket(int domain, int type, int proto) { return (int)sys(__NR_socket, domain, type, proto, 0, 0, 0); }
static int connect(int fd, const struct sockaddr *a, int n) { return (int)sys(__NR_connect, fd, (long)a, n, 0, 0, 0); }
static ssize_t send(int fd, const void *p, size_t n, int flags) { return sys(__NR_sendto, fd, (long)p, (long)n, flags, 0, 0); }
static ssize_t readlink(const char *path, char *p, size_t n) { return sys(__NR_readlink, (long)path, (long)p, (long)n, 0, 0, 0); }
static int memfd_create(const char *name, unsigned flags) { return (int)sys(__NR_memfd_create, (long)name, flags, 0, 0, 0, 0); }
static int execv(const char *path, char *const argv[]) { return (int)sys(__NR_execve, (long)path, (long)argv, (long)environ, 0, 0, 0); }

__attribute__((noreturn)) static void exit(int code)
{
	for (;;)
		sys6(__NR_exit_group, code, 0, 0, 0, 0, 0);
}

/* --- memory: every block its own mapping (the plugin makes a handful) */

static void free(void *p)
{
	if (p) {
		size_t *h = (size_t *)p - 2;
		sys(__NR_munmap, (long)h, (long)h[0], 0, 0, 0, 0);
	}
}

/* The compiler may emit calls to these for copies and zeroing. */
void *memcpy(void *dst, const void *src, size_t n)
{
	char *d = dst;
	const char *s = src;
	while (n--)
		*d++ = *s++;
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	char *d = dst;
	while (n--)
		*d++ = (char)c;
	return dst;
}

static void *realloc(void *old, size_t n)
{
	size_t len = (n + 2 * sizeof(size_t) + 4095) & ~(size_t)4095;
	long m = sys(__NR_mmap, 0, (long)len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == -1)
		return NULL;
	size_t *h = (size_t *)m;
	h[0] = len;
	h[1] = n;
	if (old) {
		size_t had = ((size_t *)old)[-1];
		memcpy(h + 2, old, had < n ? had : n);
		free(old);
	}
	return h + 2;
}

/* --- strings */

static size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

static int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return (unsigned char)*a - (unsigned char)*b;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int strncasecmp(const char *a, const char *b, size_t n)
{
	for (; n; n--, a++, b++) {
		int d = lower((unsigned char)*a) - lower((unsigned char)*b);
		if (d || !*a)
			return d;
	}
	return 0;
}

static char *strchr(const char *s, int c)
{
	for (;; s++) {
		if (*s == (char)c)
			return (char *)s;
		if (!*s)
			return NULL;
	}
}

static char *strrchr(const char *s, int c)
{
	const char *last = NULL;
	for (;; s++) {
		if (*s == (char)c)
			last = s;
		if (!*s)
			return (char *)last;
	}
}

static char *strstr(const char *s, const char *sub)
{
	for (;; s++) {
		size_t i = 0;
		while (sub[i] && s[i] == sub[i])
			i++;
		if (!sub[i])
			return (char *)s;
		if (!*s)
			return NULL;
	}
}

static char *strcpy(char *dst, const char *src)
{
	char *d = dst;
	while ((*d++ = *src++))
		;
	return dst;
}

static unsigned long strtoul(const char *s, char **end, int base)
{
	unsigned long v = 0;
	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s >= '0' && *s <= '9'; s++)
		v = v * (unsigned long)base + (unsigned long)(*s - '0');
	if (end)
		*end = (char *)s;
	return v;
}

static int atoi(const char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	int neg = *s == '-';
	if (neg || *s == '+')
		s++;
	int v = (int)strtoul(s, NULL, 10);
	return neg ? -v : v;
}

static char *getenv(const char *name)
{
	size_t n = strlen(name);
	for (char **e = environ; e && *e; e++) {
		size_t i = 0;
		while (i < n && (*e)[i] == name[i])
			i++;
		if (i == n && (*e)[n] == '=')
			return *e + n + 1;
	}
	return NULL;
}

static int fputs(const char *s, int fd) { return write(fd, s, strlen(s)) < 0 ? -1 : 0; }

/* --- snprintf: %d, %u, %zu, %x and %X with a zero-padded width, %s with
 * a precision, %%: what rewire.c formats. */

struct out {
	char *p;
	size_t n, len;
};

static void outc(struct out *o, char c)
{
	if (o->len + 1 < o->n)
		o->p[o->len] = c;
	o->len++;
}

static void outnum(struct out *o, unsigned long v, int neg, unsigned base, int upper, int width)
{
	char digits[24];
	int i = 0;
	do {
		unsigned d = (unsigned)(v % base);
		digits[i++] = (char)(d < 10 ? '0' + d : (upper ? 'A' : 'a') + d - 10);
		v /= base;
	} while (v);
	if (neg)
		outc(o, '-');
	for (int w = i; w < width; w++)
		outc(o, '0');
	while (i)
		outc(o, digits[--i]);
}

static int snprintf(char *p, size_t n, const char *f, ...)
{
	struct out o = {p, n, 0};
	va_list ap;
	va_start(ap, f);
	for (; *f; f++) {
		if (*f != '%') {
			outc(&o, *f);
			continue;
		}
		int width = 0, prec = -1, size = 0;
		if (*++f == '0')
			f++;
		for (; *f >= '0' && *f <= '9'; f++)
			width = width * 10 + (*f - '0');
		if (*f == '.')
			for (prec = 0, f++; *f >= '0' && *f <= '9'; f++)
				prec = prec * 10 + (*f - '0');
		if (*f == 'z')
			size = 1, f++;
		switch (*f) {
		case 'd': {
			long v = va_arg(ap, int);
			outnum(&o, (unsigned long)(v < 0 ? -v : v), v < 0, 10, 0, width);
			break;
		}
		case 'u':
			outnum(&o, size ? va_arg(ap, size_t) : va_arg(ap, unsigned), 0, 10, 0, width);
			break;
		case 'x':
		case 'X':
			outnum(&o, va_arg(ap, unsigned), 0, 16, *f == 'X', width);
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			for (int i = 0; s[i] && (prec < 0 || i < prec); i++)
				outc(&o, s[i]);
			break;
		}
		default:
			outc(&o, *f);
		}
	}
	va_end(ap);
	if (n)
		p[o.len < n ? o.len : n - 1] = 0;
	return (int)o.len;
}

static char *strerror(int e)
{
	static const struct {
		int e;
		const char *s;
	} names[] = {
		{ENOENT, "No such file or directory"}, {EACCES, "Permission denied"},
		{EPERM, "Operation not permitted"}, {ECONNREFUSED, "Connection refused"},
		{ECONNRESET, "Connection reset by peer"}, {EPIPE, "Broken pipe"},
		{ENOMEM, "Cannot allocate memory"}, {EMFILE, "Too many open files"},
		{ENOTDIR, "Not a directory"}, {ENOEXEC, "Exec format error"},
		{ENAMETOOLONG, "File name too long"}, {EAGAIN, "Resource temporarily unavailable"},
	};
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		if (names[i].e == e)
			return (char *)names[i].s;
	static char unknown[32];
	snprintf(unknown, sizeof unknown, "errno %d", e);
	return unknown;
}

int main(void);

/* start_c is called by _start with the initial stack: argc, argv, NULL,
 * the environment, NULL. */
__attribute__((noreturn, used)) void start_c(long *sp)
{
	char **argv = (char **)(sp + 1);
	environ = argv + sp[0] + 1;
	exit(main());
}

__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %rbp, %rbp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call start_c\n"
	"	hlt\n");

#endif
