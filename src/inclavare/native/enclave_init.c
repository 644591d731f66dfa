/*
 * enclave-init: the first program of a simulated enclave container.
 *
 *   enclave-init [--image DIR [--drop-sys-chroot] [--drop-setpcap]] SOCKET AGENT-ARGV... -- PROGRAM [ARGS...]
 *
 * 1. Creates the enclave agent's listening socket at SOCKET (on the container's private tmpfs
 *    at /run/inclavare), so a workload can connect from its first instruction on.
 * 2. Forks a small supervisor that waits until someone connects and only then starts the
 *    enclave agent (AGENT-ARGV, with the listening socket as fd 3 and INCLAVARE_LISTEN_FD=3):
 *    a container that never asks for evidence or secrets never pays for the agent's
 *    interpreter. The supervisor restarts the agent on the next connection if it ever exits,
 *    and answers 503 (with the reason on the container's stderr) while it cannot start.
 * 3. Unseals the environment: each variable whose value starts with "sealed." (a CoCo sealed
 *    secret) is replaced by its plaintext, opened by the enclave agent (through the attest
 *    client); if one cannot be opened the workload does not start (exit 1, one line why).
 *    Files named by $INCLAVARE_SEALED_FILES (absolute paths or glob patterns, ':'-separated),
 *    typically a mounted Kubernetes Secret, whose content is a sealed secret ("sealed.") or
 *    sealed data ("INCLSEAL") are opened likewise into UNSEALED_DIR/<path> on the container's
 *    private tmpfs; the mounted file keeps its sealed form (it may be a host-visible volume, and
 *    the container may not bind over it). Other matched files are left alone.
 * 4. Execs PROGRAM in its own place, so the workload is the container's pid 1 exactly as
 *    without an enclave: same signals, same exit status, same stdio.
 *
 * With --image DIR (enclave.image, guest pull) PROGRAM is the enclave agent's pull step: it runs
 * first, as a child, and leaves the verified, decrypted, unpacked image in DIR/rootfs and what to
 * run in DIR/exec; enclave-init then chroots into DIR/rootfs and execs the image's entrypoint
 * (its Env under the container's variables, its WorkingDir and User). If the pull fails the
 * workload does not run (exit 1; the pull step said why on stderr). --drop-sys-chroot and
 * --drop-setpcap: rune granted these capabilities for the chroot alone (CAP_SETPCAP to take
 * CAP_SYS_CHROOT out of the bounding set); both leave every set before the workload runs.
 *
 * The supervisor and the agent live in the container's namespaces and cgroup: in the
 * simulated TEE that is the enclave boundary. Statically linked, like the attest client, so it
 * runs in any image.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BIN_LINK "/run/inclavare/bin"
#define BIN_TARGET "rt/tools"
#define FAILED_START_SECONDS 3
#define ATTEST BIN_LINK "/attest"
#define MAX_UNSEALED (1 << 20)
#define SEALED_FILES_ENV "INCLAVARE_SEALED_FILES"
#define UNSEALED_DIR "/run/inclavare/unsealed"
#define MAX_EXEC_PLAN (1 << 20)
#define EXEC_MAGIC "inclavare-exec-v1"

extern char **environ;

static void die(const char *what, const char *arg)
{
	fprintf(stderr, "enclave-init: %s%s%s: %s\n", what, arg ? " " : "", arg ? arg : "", strerror(errno));
	exit(127);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Answer every connection waiting in the backlog: the agent could not start. */
static void refuse_pending(int lfd, int status)
{
	char body[160], msg[320];
	int blen = snprintf(body, sizeof(body),
			    "{\"detail\": \"the enclave agent failed to start (status %d); its reason is on the "
			    "container's stderr\"}", status);
	int mlen = snprintf(msg, sizeof(msg),
			    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
			    "content-length: %d\r\nconnection: close\r\n\r\n%s", blen, body);
	for (;;) {
		int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (c < 0)
			return;
		struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
		char sink[4096];
		fcntl(c, F_SETFL, 0);
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		if (write(c, msg, (size_t)mlen) < 0) {
			/* nothing to do: the client will see the connection close */
		}
		shutdown(c, SHUT_WR);
		/* read what the client sent: closing with unread data would reset its connection
		 * before it reads the answer */
		for (int i = 0; i < 16 && read(c, sink, sizeof(sink)) > 0; i++)
			;
		close(c);
	}
}

static void supervise(int lfd, char **agent_argv)
{
	static char listen_fd[] = "INCLAVARE_LISTEN_FD=3";
	static char path[] = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
	char *envp[] = { listen_fd, path, NULL };
	int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);

	/* Out of the workload's session and process group: a Ctrl-C meant for the workload must not
	 * reach the agent. Its stderr stays the container's, for one-line start-up failures. */
	setsid();
	if (devnull >= 0) {
		dup2(devnull, 0);
		dup2(devnull, 1);
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };
		if (poll(&p, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll", NULL);
		}
		double started = now();
		pid_t pid = fork();
		if (pid < 0) {
			sleep(1);
			continue;
		}
		if (pid == 0) {
			/* the agent inherits the listening socket as fd 3 (dup2 clears close-on-exec; when
			 * it already is fd 3, clear the flag itself) */
			if (lfd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(lfd, 3) < 0)
				_exit(126);
			signal(SIGPIPE, SIG_DFL);
			signal(SIGHUP, SIG_DFL);
			execve(agent_argv[0], agent_argv, envp);
			fprintf(stderr, "enclave-init: cannot start the enclave agent %s: %s\n", agent_argv[0],
				strerror(errno));
			_exit(127);
		}
		int st = 0;
		while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
			;
		int status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		if (now() - started < FAILED_START_SECONDS) {
			refuse_pending(lfd, status);
			sleep(1); /* no hot loop while the agent cannot start */
		}
	}
}

/* The attest client's output for `attest ARGS...` (stdout and stderr, at most MAX_UNSEALED
 * bytes) in *out, its length in *len; returns its exit status. */
static int run_attest(const char *sock_path, char *const args[], char **out, size_t *len)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0)
		die("pipe", NULL);
	pid_t pid = fork();
	if (pid < 0)
		die("fork", NULL);
	if (pid == 0) {
		dup2(fds[1], 1);
		dup2(fds[1], 2);
		setenv("INCLAVARE_AGENT_SOCKET", sock_path, 1);
		execv(ATTEST, args);
		fprintf(stderr, "cannot run %s: %s", ATTEST, strerror(errno));
		_exit(1);
	}
	close(fds[1]);
	char *buf = malloc(MAX_UNSEALED + 1);
	size_t n = 0;
	if (!buf)
		die("malloc", NULL);
	for (;;) {
		ssize_t r = read(fds[0], buf + n, MAX_UNSEALED + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || (n += (size_t)r) > MAX_UNSEALED)
			break;
	}
	close(fds[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	*out = buf;
	*len = n;
	return n > MAX_UNSEALED ? 1 : WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

static int run_unseal(const char *sock_path, const char *value, char **out, size_t *len)
{
	char *args[] = { "attest", "unseal", (char *)value, NULL };
	return run_attest(sock_path, args, out, len);
}

/* The attest client's reason on one line: trailing newlines dropped, inner ones made spaces. */
static int one_line(char *out, size_t len)
{
	while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r'))
		len--;
	for (size_t i = 0; i < len; i++)
		if (out[i] == '\n')
			out[i] = ' ';
	return (int)len;
}

/* mkdir -p of PATH's parent directories (private to the container's user). */
static void make_parents(char *path)
{
	for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			die("cannot create", path);
		*p = '/';
	}
}

/* Where UNSEALED_DIR is for the workload: in a pulled image's root when it runs chrooted there. */
static const char *unsealed_base = UNSEALED_DIR;

/* Open one listed file if it is sealed: UNSEALED_DIR/<path> gets the plaintext, or exit 1. */
static void unseal_file(const char *sock_path, const char *path)
{
	char head[8];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "enclave-init: cannot read the sealed file %s (%s); the workload is not started\n", path,
			strerror(errno));
		exit(1);
	}
	ssize_t n = S_ISREG(st.st_mode) ? read(fd, head, sizeof(head)) : 0;
	close(fd);
	if (n < 7 || (memcmp(head, "sealed.", 7) != 0 && (n < 8 || memcmp(head, "INCLSEAL", 8) != 0)))
		return; /* not sealed: nothing to open */
	char *dest = malloc(strlen(unsealed_base) + strlen(path) + 1);
	if (!dest)
		die("malloc", NULL);
	strcpy(dest, unsealed_base);
	strcat(dest, path);
	make_parents(dest);
	char *out = NULL;
	size_t len = 0;
	char *args[] = { "attest", "unseal", (char *)path, dest, NULL };
	if (run_attest(sock_path, args, &out, &len) != 0) {
		fprintf(stderr, "enclave-init: cannot unseal %s (%.*s); the workload is not started\n", path,
			one_line(out, len), out);
		exit(1);
	}
	free(out);
	free(dest);
}

/* Every file $INCLAVARE_SEALED_FILES names (absolute paths or glob patterns, ':'-separated). */
static void unseal_files(const char *sock_path)
{
	const char *list = getenv(SEALED_FILES_ENV);
	if (!list || !*list)
		return;
	char *copy = strdup(list), *save = NULL;
	if (!copy)
		die("malloc", NULL);
	for (char *pattern = strtok_r(copy, ":", &save); pattern; pattern = strtok_r(NULL, ":", &save)) {
		glob_t g;
		int rc = pattern[0] == '/' ? glob(pattern, GLOB_NOSORT, NULL, &g) : GLOB_ABORTED;
		if (rc != 0) {
			fprintf(stderr, "enclave-init: $%s: %s %s; the workload is not started\n", SEALED_FILES_ENV, pattern,
				pattern[0] != '/' ? "is not an absolute path" : "matches no file");
			exit(1);
		}
		for (size_t i = 0; i < g.gl_pathc; i++)
			unseal_file(sock_path, g.gl_pathv[i]);
		globfree(&g);
	}
	free(copy);
}

/* Replace every NAME=sealed.... in the environment by NAME=plaintext, or exit 1 with one line. */
static void unseal_environment(const char *sock_path)
{
	for (char **e = environ; *e; e++) {
		char *eq = strchr(*e, '=');
		if (!eq || strncmp(eq + 1, "sealed.", 7) != 0)
			continue;
		int name_len = (int)(eq - *e);
		char *out = NULL;
		size_t len = 0;
		int status = run_unseal(sock_path, eq + 1, &out, &len);
		if (status == 0 && memchr(out, 0, len)) {
			fprintf(stderr, "enclave-init: the sealed secret in $%.*s holds a NUL byte, which an environment "
				"variable cannot; the workload is not started\n", name_len, *e);
			exit(1);
		}
		if (status != 0) {
			fprintf(stderr, "enclave-init: cannot unseal $%.*s (%.*s); the workload is not started\n",
				name_len, *e, one_line(out, len), out);
			exit(1);
		}
		char *entry = malloc((size_t)name_len + 2 + len);
		if (!entry)
			die("malloc", NULL);
		memcpy(entry, *e, (size_t)name_len + 1);
		memcpy(entry + name_len + 1, out, len);
		entry[name_len + 1 + len] = '\0';
		*e = entry; /* the sealed string stays nowhere in the workload's environment */
		free(out);
	}
}

static void image_fail(const char *what, const char *arg)
{
	fprintf(stderr, "enclave-init: %s%s%s; the workload is not started\n", what, arg ? " " : "", arg ? arg : "");
	exit(1);
}

/* Run the pull step (PROGRAM) to completion; any failure ends the container (exit 1). */
static void run_pull(char **pull_argv)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork", NULL);
	if (pid == 0) {
		execv(pull_argv[0], pull_argv);
		fprintf(stderr, "enclave-init: cannot run the image pull step %s: %s\n", pull_argv[0], strerror(errno));
		_exit(127);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFSIGNALED(st))
		image_fail("the image pull step was killed by a signal", NULL);
	if (WEXITSTATUS(st) != 0)
		exit(1); /* it said why, in one line */
}

/* The next NUL-terminated field of the exec plan, or fail. */
static char *plan_field(char **cur, char *end)
{
	char *f = *cur;
	char *nul = f < end ? memchr(f, 0, (size_t)(end - f)) : NULL;
	if (!nul)
		image_fail("the image exec plan is truncated", NULL);
	*cur = nul + 1;
	return f;
}

static long plan_number(char **cur, char *end, long min, long max)
{
	char *f = plan_field(cur, end), *stop = NULL;
	errno = 0;
	long v = strtol(f, &stop, 10);
	if (errno || stop == f || *stop || v < min || v > max)
		image_fail("the image exec plan holds a bad number", f);
	return v;
}

/* 1 if NAME=... (len = name length incl. '=') is in env. */
static int env_has(char **env, const char *entry, size_t len)
{
	for (; env && *env; env++)
		if (strncmp(*env, entry, len) == 0)
			return 1;
	return 0;
}

/* Drop the capabilities rune granted for the chroot (a bitmask of DROP_*) from every set, the
 * bounding set first (it needs CAP_SETPCAP, dropped last) so no later execve regains them. */
#define DROP_CHROOT 1
#define DROP_SETPCAP 2
static void drop_caps(int which)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2];
	int caps[2], n = 0;
	if (which & DROP_CHROOT)
		caps[n++] = CAP_SYS_CHROOT;
	if (which & DROP_SETPCAP)
		caps[n++] = CAP_SETPCAP;
	for (int i = 0; i < n; i++) {
		prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, caps[i], 0, 0);
		if (prctl(PR_CAPBSET_DROP, caps[i], 0, 0, 0) < 0)
			image_fail("cannot drop a capability from the bounding set:", strerror(errno));
	}
	if (syscall(SYS_capget, &h, d) < 0)
		image_fail("cannot read capabilities:", strerror(errno));
	for (int i = 0; i < n; i++) {
		unsigned int bit = 1u << (caps[i] % 32);
		d[caps[i] / 32].effective &= ~bit;
		d[caps[i] / 32].permitted &= ~bit;
		d[caps[i] / 32].inheritable &= ~bit;
	}
	if (syscall(SYS_capset, &h, d) < 0)
		image_fail("cannot drop the capabilities granted for the chroot:", strerror(errno));
}

/* chroot into DIR/rootfs and exec the image's entrypoint as DIR/exec says. */
static void exec_image(const char *dir, int drop)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/exec", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		image_fail("the pull step left no exec plan at", path);
	char *buf = malloc(MAX_EXEC_PLAN + 1);
	size_t n = 0;
	if (!buf)
		die("malloc", NULL);
	for (;;) {
		ssize_t r = read(fd, buf + n, MAX_EXEC_PLAN + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || (n += (size_t)r) > MAX_EXEC_PLAN)
			break;
	}
	close(fd);
	if (n > MAX_EXEC_PLAN)
		image_fail("the image exec plan is too large", NULL);
	char *cur = buf, *end = buf + n;
	if (strcmp(plan_field(&cur, end), EXEC_MAGIC) != 0)
		image_fail("the image exec plan has an unknown format", NULL);
	char *cwd = plan_field(&cur, end);
	long uid = plan_number(&cur, end, -1, 0x7fffffff);
	long gid = plan_number(&cur, end, -1, 0x7fffffff);
	long argc = plan_number(&cur, end, 1, 65536);
	char **args = calloc((size_t)argc + 1, sizeof(char *));
	if (!args)
		die("calloc", NULL);
	for (long i = 0; i < argc; i++)
		args[i] = plan_field(&cur, end);
	long envc = plan_number(&cur, end, 0, 65536);
	size_t own = 0;
	for (char **e = environ; *e; e++)
		own++;
	char **env = calloc((size_t)envc + own + 1, sizeof(char *));
	if (!env)
		die("calloc", NULL);
	size_t k = 0;
	int image_path = 0;
	/* the image's Env first; the container's variables win, but PATH stays the image's when it
	 * sets one (the container's PATH describes the bootstrap image, not this one) */
	for (long i = 0; i < envc; i++) {
		char *e = plan_field(&cur, end), *eq = strchr(e, '=');
		if (!eq)
			continue;
		size_t len = (size_t)(eq - e) + 1;
		if (len == 5 && strncmp(e, "PATH=", 5) == 0)
			image_path = 1;
		else if (env_has(environ, e, len))
			continue;
		env[k++] = e;
	}
	for (char **e = environ; *e; e++) {
		if (image_path && strncmp(*e, "PATH=", 5) == 0)
			continue;
		env[k++] = *e;
	}
	env[k] = NULL;
	snprintf(path, sizeof(path), "%s/rootfs", dir);
	if (chroot(path) < 0)
		image_fail("cannot chroot into the pulled image:", strerror(errno));
	if (drop)
		drop_caps(drop);
	if (chdir(cwd) < 0 && chdir("/") < 0)
		image_fail("cannot enter the image's working directory", cwd);
	if (gid >= 0) {
		gid_t g = (gid_t)gid;
		if (geteuid() == 0 && setgroups(1, &g) < 0)
			image_fail("cannot take the image's groups:", strerror(errno));
		if (getegid() != g && setgid(g) < 0)
			image_fail("cannot take the image's group:", strerror(errno));
	}
	if (uid >= 0 && geteuid() != (uid_t)uid && setuid((uid_t)uid) < 0)
		image_fail("cannot take the image's user:", strerror(errno));
	environ = env;
	execvp(args[0], args);
	int err = errno;
	fprintf(stderr, "enclave-init: cannot execute the image's %s: %s\n", args[0], strerror(err));
	exit(err == ENOENT ? 127 : 126);
}

int main(int argc, char **argv)
{
	const char *image_dir = NULL;
	int drop = 0;
	if (argc > 2 && strcmp(argv[1], "--image") == 0) {
		image_dir = argv[2];
		argv += 2;
		argc -= 2;
		for (;;) {
			if (argc > 1 && strcmp(argv[1], "--drop-sys-chroot") == 0)
				drop |= DROP_CHROOT;
			else if (argc > 1 && strcmp(argv[1], "--drop-setpcap") == 0)
				drop |= DROP_SETPCAP;
			else
				break;
			argv++;
			argc--;
		}
	}
	int sep = 0;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			sep = i;
			break;
		}
	}
	if (argc < 5 || sep < 3 || sep + 1 >= argc) {
		fprintf(stderr, "usage: enclave-init [--image DIR] SOCKET AGENT-ARGV... -- PROGRAM [ARGS...]\n");
		return 127;
	}
	const char *sock_path = argv[1];
	argv[sep] = NULL; /* agent argv: argv[2..sep-1] */

	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(sock_path) >= sizeof(addr.sun_path)) {
		errno = ENAMETOOLONG;
		die("socket path", sock_path);
	}
	strcpy(addr.sun_path, sock_path);
	/* the workload expects the attest client at /run/inclavare/bin: a link into the runtime folder */
	if (symlink(BIN_TARGET, BIN_LINK) < 0 && errno != EEXIST)
		die("cannot create", BIN_LINK);
	int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket", NULL);
	unlink(sock_path);
	mode_t old = umask(0);
	/* any user of the container may ask; the agent checks every caller's namespaces */
	if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		die("cannot create the enclave agent's socket", sock_path);
	umask(old);
	if (listen(lfd, 128) < 0)
		die("listen", sock_path);

	pid_t pid = fork();
	if (pid < 0)
		die("fork", NULL);
	if (pid == 0) {
		supervise(lfd, argv + 2);
		_exit(0);
	}
	close(lfd);
	if (image_dir)
		run_pull(argv + sep + 1);
	unseal_environment(sock_path);
	const char *sealed_files = getenv(SEALED_FILES_ENV);
	if (image_dir && sealed_files && *sealed_files) { /* the workload sees UNSEALED_DIR inside the image's root */
		char *base = malloc(strlen(image_dir) + strlen("/rootfs" UNSEALED_DIR) + 1);
		if (!base)
			die("malloc", NULL);
		strcpy(base, image_dir);
		strcat(base, "/rootfs" UNSEALED_DIR);
		/* the image's own /run, /run/inclavare, .../unsealed must not be symlinks out of its tree */
		size_t root_len = strlen(image_dir) + strlen("/rootfs");
		for (size_t i = root_len + 1;; i++) {
			char c = base[i];
			if (c != '/' && c != '\0')
				continue;
			struct stat st;
			base[i] = '\0';
			if (lstat(base, &st) == 0 && S_ISLNK(st.st_mode)) {
				fprintf(stderr, "enclave-init: the pulled image's %s is a symlink; sealed files are not "
						"opened through it; the workload is not started\n", base + root_len);
				exit(1);
			}
			base[i] = c;
			if (c == '\0')
				break;
		}
		unsealed_base = base;
	}
	unseal_files(sock_path);
	if (image_dir)
		exec_image(image_dir, drop);
	execvp(argv[sep + 1], argv + sep + 1);
	int err = errno;
	fprintf(stderr, "enclave-init: cannot execute %s: %s\n", argv[sep + 1], strerror(err));
	return err == ENOENT ? 127 : 126;
}
