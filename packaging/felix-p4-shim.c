/*
 * felix-p4-shim: the executable Felix starts as its external dataplane driver.
 *
 * calico-node has no Python, so Felix execs this static binary instead of felix-p4. It connects
 * to the felix-p4 driver's Unix stream socket and relays bytes, unchanged, both ways:
 * Felix's fd 3 (ToDataplane frames) to the socket, the socket to Felix's fd 4 (FromDataplane).
 * One connection is one Felix session. It parses nothing, so it never needs to change when
 * Felix's messages do.
 *
 * Environment (Felix passes calico-node's environment through; it passes no arguments):
 *   P4_SHIM_SOCKET           driver socket; default /var/lib/calico/felix-plugins/felix-p4.sock
 *   P4_SHIM_CONNECT_TIMEOUT  seconds to keep retrying a missing or refusing socket; default 20
 * Neither name starts with FELIX_: Felix would read that as one of its own settings and
 * felix-p4 rejects FELIX_P4_* names it does not know.
 *
 * Why 20 s: until connected the shim does not read fd 3; once the pipe is full Felix's
 * calculation graph blocks and its liveness report goes stale after 30 s. Exiting first makes
 * Felix restart itself (it treats a driver exit as fatal) instead of failing its liveness probe.
 *
 * Exit status (Felix logs it as "Driver process stopped"):
 *   0  Felix closed fd 3; the socket was half-closed and the driver's last replies forwarded
 *   1  the driver closed or reset the connection
 *   2  bad invocation: arguments, fd 3 or 4 not open, a bad environment value
 *   3  no connection within P4_SHIM_CONNECT_TIMEOUT
 *   4  Felix's side is gone: fd 4 closed, or an error on fd 3 or 4
 *   5  an unexpected system call failure
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FELIX_IN 3  /* ToDataplane from Felix */
#define FELIX_OUT 4 /* FromDataplane to Felix */
#define DEFAULT_SOCKET "/var/lib/calico/felix-plugins/felix-p4.sock"
#define DEFAULT_TIMEOUT_S 20.0
#define BACKOFF_FIRST_MS 25
#define BACKOFF_MAX_MS 1000
/* fd 3 closes when Felix's process ends; the driver gets this long to finish its replies. */
#define LINGER_MS 5000
#define BUF_SIZE (64 * 1024)

/* Bytes read from one side and not yet written to the other. */
struct relay {
	char data[BUF_SIZE];
	size_t off, len;
	int eof;
};

static struct relay up;   /* fd 3 -> socket */
static struct relay down; /* socket -> fd 4 */

static void say(const char *fmt, ...)
{
	va_list ap;
	char line[512];
	int n = snprintf(line, sizeof line, "felix-p4-shim: ");
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	va_end(ap);
	/* One write per line, so it never interleaves with Felix's own log lines. */
	size_t len = strnlen(line, sizeof line - 2);
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0) {
		/* Nowhere left to report it. */
	}
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int retryable(void) { return errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK; }

/* Felix is gone when fd 4's reader closed (POLLERR) or fd 3 hung up; checked while waiting. */
static int felix_gone(int wait_ms)
{
	struct pollfd p[2] = {{.fd = FELIX_IN, .events = 0}, {.fd = FELIX_OUT, .events = 0}};
	if (poll(p, 2, wait_ms) < 0)
		return 0;
	return (p[0].revents & (POLLHUP | POLLERR)) || (p[1].revents & (POLLHUP | POLLERR));
}

static int connect_with_retry(const char *path, double timeout_s)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	memcpy(addr.sun_path, path, strlen(path) + 1);
	long long start = now_ms(), deadline = start + (long long)(timeout_s * 1000);
	int backoff = BACKOFF_FIRST_MS, failures = 0;
	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			say("socket: %s", strerror(errno));
			exit(5);
		}
		if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
			if (failures)
				say("connected to %s after %.1f s", path, (now_ms() - start) / 1000.0);
			else
				say("connected to %s", path);
			return fd;
		}
		int err = errno;
		close(fd);
		if (failures++ == 0)
			say("waiting for the felix-p4 driver at %s (%s), up to %.1f s", path,
			    strerror(err), timeout_s);
		long long left = deadline - now_ms();
		if (left <= 0) {
			say("gave up: no felix-p4 driver at %s after %.1f s (%s); is the felix-p4 pod "
			    "running on this node?", path, (now_ms() - start) / 1000.0, strerror(err));
			exit(3);
		}
		if (felix_gone(backoff < left ? backoff : (int)left)) {
			say("Felix closed its pipes before the driver was reachable");
			exit(4);
		}
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
}

/* Move bytes from `from` into r; 1 on progress, 0 on EOF, -1 on error (errno set). */
static int fill(struct relay *r, int from)
{
	ssize_t n = read(from, r->data, sizeof r->data);
	if (n > 0) {
		r->off = 0;
		r->len = (size_t)n;
		return 1;
	}
	if (n == 0)
		return 0;
	return retryable() ? 1 : -1;
}

/* Write what r holds to `to`, as much as it takes now; 0 ok, -1 on error (errno set). */
static int drain(struct relay *r, int to)
{
	ssize_t n = write(to, r->data + r->off, r->len);
	if (n >= 0) {
		r->off += (size_t)n;
		r->len -= (size_t)n;
		return 0;
	}
	return retryable() ? 0 : -1;
}

int main(int argc, char **argv)
{
	(void)argv;
	/* A closed peer must show up as EPIPE from write(), not as a silent death. */
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1) {
		say("takes no arguments; Felix runs it as its dataplane driver (see P4_SHIM_SOCKET)");
		return 2;
	}
	if (fcntl(FELIX_IN, F_GETFD) < 0 || fcntl(FELIX_OUT, F_GETFD) < 0) {
		say("fd 3 and fd 4 must be open: Felix starts this program with its pipes there");
		return 2;
	}
	const char *path = getenv("P4_SHIM_SOCKET");
	if (!path || !*path)
		path = DEFAULT_SOCKET;
	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		say("P4_SHIM_SOCKET is too long for a Unix socket path: %s", path);
		return 2;
	}
	double timeout_s = DEFAULT_TIMEOUT_S;
	const char *text = getenv("P4_SHIM_CONNECT_TIMEOUT");
	if (text && *text) {
		char *end;
		timeout_s = strtod(text, &end);
		/* Written so that NaN fails too. */
		if (end == text || *end || !(timeout_s >= 0 && timeout_s <= 86400)) {
			say("P4_SHIM_CONNECT_TIMEOUT=%s is not a number of seconds (0 to 86400)", text);
			return 2;
		}
	}

	int sock = connect_with_retry(path, timeout_s);
	/* Felix closed its copies of our pipe ends after the exec, so these flags are ours alone. */
	int relayed[] = {FELIX_IN, FELIX_OUT, sock};
	for (size_t i = 0; i < 3; i++)
		fcntl(relayed[i], F_SETFL, fcntl(relayed[i], F_GETFL) | O_NONBLOCK);

	long long linger_until = 0;
	for (;;) {
		/* Poll only what can make progress; fd 4 always, since POLLERR there ends it all. */
		int want_in = !up.eof && up.len == 0;
		int want_sock_in = !down.eof && down.len == 0;
		struct pollfd p[3] = {
		    {.fd = want_in ? FELIX_IN : -1, .events = POLLIN},
		    {.fd = (up.len || want_sock_in) ? sock : -1,
		     .events = (short)((up.len ? POLLOUT : 0) | (want_sock_in ? POLLIN : 0))},
		    {.fd = FELIX_OUT, .events = down.len ? POLLOUT : 0},
		};
		int wait_ms = -1;
		if (linger_until) {
			long long left = linger_until - now_ms();
			if (left <= 0) {
				say("Felix closed fd 3; the driver did not close within %d ms", LINGER_MS);
				return 0;
			}
			wait_ms = (int)left;
		}
		if (poll(p, 3, wait_ms) < 0) {
			if (errno == EINTR)
				continue;
			say("poll: %s", strerror(errno));
			return 5;
		}
		if (p[2].revents & (POLLERR | POLLHUP)) {
			say("Felix closed fd 4; ending the session");
			return 4;
		}
		if (p[0].revents) {
			int r = fill(&up, FELIX_IN);
			if (r < 0) {
				say("read fd 3: %s", strerror(errno));
				return 4;
			}
			if (r == 0) {
				/* Pass the EOF on, as if the driver held fd 3 itself, and forward its last replies. */
				up.eof = 1;
				shutdown(sock, SHUT_WR);
				linger_until = now_ms() + LINGER_MS;
			}
		}
		if ((p[1].revents & (POLLOUT | POLLERR | POLLHUP)) && up.len && drain(&up, sock) < 0) {
			say("the driver closed the connection (%s)", strerror(errno));
			return 1;
		}
		if ((p[1].revents & (POLLIN | POLLERR | POLLHUP)) && want_sock_in) {
			int r = fill(&down, sock);
			if (r <= 0) {
				if (up.eof) {
					say("session ended: Felix closed fd 3 and the driver closed the connection");
					return 0;
				}
				say("the driver closed the connection%s%s", r ? ": " : "", r ? strerror(errno) : "");
				return 1;
			}
		}
		if ((p[2].revents & POLLOUT) && down.len && drain(&down, FELIX_OUT) < 0) {
			say("write fd 4: %s", strerror(errno));
			return 4;
		}
	}
}
