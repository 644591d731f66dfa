/*
 * rune: the native launcher of Inclavare's OCI runtime.
 *
 * Container engines call the runtime four or more times per container, so its start-up cost is
 * paid on every one. This launcher makes rune's decision without starting an interpreter and
 * execs runc directly whenever runc can take the call unchanged (the same decision as
 * inclavare/runtime/rune_entry.py, which tests/runtime/test_launchers.py keeps in step):
 *
 *   create, run                 the bundle's config.json mentions "enclave." or "ENCLAVE_"?
 *                                 no:  exec runc
 *                                 yes: ask the node agent to plan it (POST /v1/prepare on its
 *                                      control socket); 200: run runc with the argv it returns
 *                                      as a child, and once runc no longer knows the container
 *                                      (failed create, ended run) tell the agent to forget it
 *                                      (DELETE), which removes rune's record and private bundle;
 *                                      409, 404 (an older agent) or agent unreachable: rune's
 *                                      Python slow path;
 *                                      otherwise: report the agent's reason as runc reports errors
 *                               runc is started before the agent answers (see early_start), so
 *                               its own start-up overlaps the agent's planning
 *   exec                        rune holds state for the container and it runs a runelet? Python
 *   delete, state               rune holds state for the container? Python
 *   attest, --version           Python
 *   anything else               exec runc
 *
 * Build-time constants (inclavare install-rune): RUNE_RUNC, RUNE_PYTHON, RUNE_PYCODE, and the
 * defaults of INCLAVARE_AGENT_SOCKET / INCLAVARE_RUNE_STATE (RUNE_AGENT_SOCKET, RUNE_STATE_DIR):
 * engines such as podman do not pass their environment to the runtime.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#ifndef RUNE_RUNC
#define RUNE_RUNC "/usr/sbin/runc"
#endif
#ifndef RUNE_PYTHON
#define RUNE_PYTHON "/usr/bin/python3"
#endif
#ifndef RUNE_PYCODE
#define RUNE_PYCODE "from inclavare.runtime.rune_entry import console_main; console_main()"
#endif

#ifndef RUNE_STATE_DIR
#define RUNE_STATE_DIR "/run/inclavare/rune"
#endif
#ifndef RUNE_AGENT_SOCKET
#define RUNE_AGENT_SOCKET "/run/inclavare/agent.sock"
#endif
#define DEFAULT_STATE_DIR RUNE_STATE_DIR
#define DEFAULT_AGENT_SOCKET RUNE_AGENT_SOCKET
#define MAX_CONFIG (64u << 20)
#define MAX_RESPONSE (1u << 20)

static const char *runc_path;
static int g_argc;
static char **g_argv;
static const char *log_path, *log_format = "text", *root_dir = "/run/runc", *g_container_id = "";
static int g_foreground_run; /* run without --detach */
static int g_command_index; /* argv index of the runc command (create, run, ...) */
static int want_version, explain;

static const char *GLOBAL_VALUE[] = {"log", "log-format", "root", "criu", "rootless", NULL};
static const char *RUN_VALUE[] = {"bundle", "b", "console-socket", "pid-file", "preserve-fds", NULL};
static const char *EXEC_VALUE[] = {"console-socket", "cwd", "env", "e", "user", "u", "additional-gids", "g",
				   "process", "p", "pid-file", "process-label", "apparmor", "cap", "c",
				   "preserve-fds", "cgroup", NULL};
static const char *FORMAT_VALUE[] = {"format", "f", NULL};
static const char *EVENTS_VALUE[] = {"interval", NULL};
static const char *SPEC_VALUE[] = {"bundle", "b", NULL};
static const char *ATTEST_VALUE[] = {"runtime-data", "quote-type", "spid", "subscription-key", "key",
				     "reportFile", NULL};
static const char *UPDATE_VALUE[] = {"resources", "r", "blkio-weight", "cpu-period", "cpu-quota", "cpu-share",
				     "cpu-rt-period", "cpu-rt-runtime", "cpuset-cpus", "cpuset-mems",
				     "kernel-memory", "kernel-memory-tcp", "memory", "memory-reservation",
				     "memory-swap", "pids-limit", "l3-cache-schema", "mem-bw-schema", NULL};
static const char *CHECKPOINT_VALUE[] = {"image-path", "work-path", "parent-path", "status-fd", "page-server",
					 "manage-cgroups-mode", "empty-ns", NULL};
static const char *RESTORE_VALUE[] = {"console-socket", "image-path", "work-path", "manage-cgroups-mode", "bundle",
				      "b", "pid-file", "empty-ns", "lsm-profile", "lsm-mount-context", NULL};
static const char *NONE[] = {NULL};

static int in(const char *const *list, const char *s, size_t n)
{
	for (; *list; list++)
		if (strlen(*list) == n && strncmp(*list, s, n) == 0)
			return 1;
	return 0;
}

static const char *const *value_flags(const char *cmd)
{
	if (!strcmp(cmd, "create") || !strcmp(cmd, "run"))
		return RUN_VALUE;
	if (!strcmp(cmd, "exec"))
		return EXEC_VALUE;
	if (!strcmp(cmd, "list") || !strcmp(cmd, "ps"))
		return FORMAT_VALUE;
	if (!strcmp(cmd, "events"))
		return EVENTS_VALUE;
	if (!strcmp(cmd, "spec"))
		return SPEC_VALUE;
	if (!strcmp(cmd, "attest"))
		return ATTEST_VALUE;
	if (!strcmp(cmd, "update"))
		return UPDATE_VALUE;
	if (!strcmp(cmd, "checkpoint"))
		return CHECKPOINT_VALUE;
	if (!strcmp(cmd, "restore"))
		return RESTORE_VALUE;
	return NONE;
}

static void decided(const char *what)
{
	if (explain) {
		printf("%s\n", what);
		exit(0);
	}
}

static void report_error(const char *msg);

static void exec_runc(char **argv)
{
	decided("runc");
	argv[0] = (char *)runc_path;
	execv(runc_path, argv);
	char msg[1024];
	snprintf(msg, sizeof(msg), "rune: cannot execute runc at %s: %s (set INCLAVARE_RUNC or reinstall rune "
				   "with `inclavare install-rune --runc PATH`)", runc_path, strerror(errno));
	report_error(msg);
}

static void exec_python(void)
{
	decided("rune");
	char **argv = calloc((size_t)g_argc + 4, sizeof(char *));
	if (!argv)
		exit(1);
	argv[0] = RUNE_PYTHON;
	argv[1] = "-IS";
	argv[2] = "-c";
	argv[3] = RUNE_PYCODE;
	for (int i = 1; i < g_argc; i++)
		argv[3 + i] = g_argv[i];
	execv(RUNE_PYTHON, argv);
	fprintf(stderr, "rune: cannot execute %s: %s (reinstall with `inclavare install-rune`)\n", RUNE_PYTHON,
		strerror(errno));
	exit(1);
}

/* --- paths -------------------------------------------------------------------------------- */

/* os.path.abspath: absolute and normalised ("." and ".." resolved lexically). */
static char *abspath(const char *path)
{
	char cwd[4096] = "";
	size_t cap = strlen(path) + 4100;
	char *in = malloc(cap), *out = malloc(cap);
	if (!in || !out)
		exit(1);
	if (path[0] != '/') {
		if (!getcwd(cwd, sizeof(cwd)))
			strcpy(cwd, "/");
		snprintf(in, cap, "%s/%s", cwd, path);
	} else {
		snprintf(in, cap, "%s", path);
	}
	size_t len = 0;
	out[0] = '\0';
	for (char *save = NULL, *part = strtok_r(in, "/", &save); part; part = strtok_r(NULL, "/", &save)) {
		if (!strcmp(part, "."))
			continue;
		if (!strcmp(part, "..")) {
			while (len > 0 && out[len - 1] != '/')
				len--;
			if (len > 0)
				len--;
			out[len] = '\0';
			continue;
		}
		len += (size_t)snprintf(out + len, cap - len, "/%s", part);
	}
	if (len == 0)
		strcpy(out, "/");
	free(in);
	return out;
}

static int valid_id(const char *id)
{
	if (!*id || !strcmp(id, ".") || !strcmp(id, ".."))
		return 0;
	for (const char *p = id; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '+' || c == '-' || c == '.'))
			return 0;
	}
	return 1;
}

static char *state_path(const char *id)
{
	const char *base = getenv("INCLAVARE_RUNE_STATE");
	char *b = abspath(base && *base ? base : DEFAULT_STATE_DIR), *r = abspath(root_dir);
	size_t n = strlen(b) + strlen(r) + strlen(id) + 16;
	char *out = malloc(n);
	if (!out)
		exit(1);
	snprintf(out, n, "%s%s/%s", strcmp(b, "/") ? b : "", r, id);
	return out;
}

static int exists(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0;
}

/* --- runc-style error reporting ----------------------------------------------------------- */

static void json_escape(FILE *f, const char *s)
{
	fputc('"', f);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p == '\n')
			fputs("\\n", f);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

static void report_error(const char *msg)
{
	/* as runc: a line in --log (json or logrus text), the plain message on stderr, exit 1 */
	char ts[32];
	time_t now = time(NULL);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	int to_file = log_path && *log_path && strcmp(log_path, "/dev/stderr");
	FILE *f = to_file ? fopen(log_path, "a") : stderr;
	if (!f)
		f = stderr;
	if (!strcmp(log_format, "json")) {
		/* engines that read the JSON log name the runtime themselves (podman: "rune: <msg>") */
		fputs("{\"level\":\"error\",\"msg\":", f);
		json_escape(f, strncmp(msg, "rune: ", 6) ? msg : msg + 6);
		fprintf(f, ",\"time\":\"%s\"}\n", ts);
	} else {
		fprintf(f, "time=\"%s\" level=error msg=", ts);
		json_escape(f, msg);
		fputc('\n', f);
	}
	if (f != stderr) {
		fclose(f);
		fprintf(stderr, "%s\n", msg);
	}
	exit(1);
}

/* --- the agent's prepare RPC --------------------------------------------------------------- */

struct buf {
	char *data;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->data = realloc(b->data, b->cap);
		if (!b->data)
			exit(1);
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void puts_b(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* What ``fd`` holds, read to its end or until more than ``max`` bytes (then 0); closes ``fd``. */
static int read_all(int fd, struct buf *data, size_t max)
{
	char chunk[65536];
	for (;;) {
		ssize_t r = read(fd, chunk, sizeof(chunk));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		put(data, chunk, (size_t)r);
		if (data->len > max)
			break;
	}
	close(fd);
	return data->len <= max;
}

/* JSON string; returns 0 when the text is not plain ASCII (the Python path handles that). */
static int put_json_string(struct buf *b, const char *s)
{
	char esc[8];
	puts_b(b, "\"");
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p >= 0x80)
			return 0;
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			put(b, esc, 2);
		} else if (*p < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", *p);
			puts_b(b, esc);
		} else {
			put(b, (const char *)p, 1);
		}
	}
	puts_b(b, "\"");
	return 1;
}

/* The "detail" string of the agent's JSON error body (ASCII-escaped by Python's json). */
static char *detail_of(const char *body)
{
	const char *p = strstr(body, "\"detail\": \"");
	size_t skip = 11;
	if (!p) {
		p = strstr(body, "\"detail\":\"");
		skip = 10;
	}
	if (!p)
		return strdup(body);
	p += skip;
	char *out = malloc(strlen(p) * 3 + 1), *o = out;
	if (!out)
		exit(1);
	for (; *p && *p != '"'; p++) {
		if (*p != '\\') {
			*o++ = *p;
			continue;
		}
		p++;
		switch (*p) {
		case 'n': *o++ = '\n'; break;
		case 't': *o++ = '\t'; break;
		case 'r': *o++ = '\r'; break;
		case 'u': {
			unsigned v = 0;
			if (sscanf(p + 1, "%4x", &v) != 1)
				break;
			p += 4;
			if (v < 0x80) {
				*o++ = (char)v;
			} else if (v < 0x800) {
				*o++ = (char)(0xC0 | (v >> 6));
				*o++ = (char)(0x80 | (v & 0x3F));
			} else {
				*o++ = (char)(0xE0 | (v >> 12));
				*o++ = (char)(0x80 | ((v >> 6) & 0x3F));
				*o++ = (char)(0x80 | (v & 0x3F));
			}
			break;
		}
		case '\0': p--; break;
		default: *o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

#define AGENT_UNREACHABLE (-1)
#define AGENT_LOST (-2)

/* A connection to the agent's control socket, or AGENT_UNREACHABLE. Opened before the request is
 * ready when the agent's accept may overlap rune's own work. */
static int agent_connect(void)
{
	const char *sock_path = getenv("INCLAVARE_AGENT_SOCKET");
	if (!sock_path || !*sock_path)
		sock_path = DEFAULT_AGENT_SOCKET;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(sock_path) >= sizeof(addr.sun_path))
		return AGENT_UNREACHABLE;
	strcpy(addr.sun_path, sock_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		if (fd >= 0)
			close(fd);
		return AGENT_UNREACHABLE;
	}
	return fd;
}

/* One HTTP/1.1 request on ``fd`` (from agent_connect; AGENT_UNREACHABLE is passed through). Returns
 * the status code and the body (NUL-terminated, *plen bytes), or AGENT_UNREACHABLE / AGENT_LOST
 * with *error set. */
static int agent_request_on(int fd, const char *method, const char *target, const struct buf *body, char **payload,
			    size_t *plen, const char **error)
{
	*error = "rune: cannot reach the node agent";
	if (fd < 0)
		return AGENT_UNREACHABLE;
	struct timeval tv = {.tv_sec = 600};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	size_t body_len = body ? body->len : 0;
	struct buf req = {0};
	char head[256];
	snprintf(head, sizeof(head), "%s ", method);
	puts_b(&req, head);
	puts_b(&req, target);
	snprintf(head, sizeof(head), " HTTP/1.1\r\nHost: inclavare-agent\r\nConnection: close\r\n"
				     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", body_len);
	puts_b(&req, head);
	if (body_len)
		put(&req, body->data, body_len);
	for (size_t off = 0; off < req.len;) {
		ssize_t n = write(fd, req.data + off, req.len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			*error = "rune: lost the node agent while sending the request";
			return AGENT_LOST;
		}
		off += (size_t)n;
	}
	free(req.data);
	struct buf resp = {0};
	char chunk[65536];
	long want = -1; /* total bytes (headers + Content-Length); stop there, not at the close */
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(fd);
			*error = "rune: no answer from the node agent";
			return AGENT_LOST;
		}
		if (n == 0)
			break;
		put(&resp, chunk, (size_t)n);
		if (resp.len > MAX_RESPONSE) {
			close(fd);
			*error = "rune: the node agent's answer is too large";
			return AGENT_LOST;
		}
		if (want < 0) {
			char *end = memmem(resp.data, resp.len, "\r\n\r\n", 4);
			char *cl = end ? strcasestr(resp.data, "\r\nContent-Length:") : NULL;
			if (cl && cl < end)
				want = (long)(end + 4 - resp.data) + strtol(cl + 17, NULL, 10);
		}
		if (want >= 0 && (long)resp.len >= want)
			break;
	}
	close(fd);
	int status = 0;
	char *sep = resp.data ? memmem(resp.data, resp.len, "\r\n\r\n", 4) : NULL;
	if (!sep || resp.len < 12 || sscanf(resp.data + 9, "%3d", &status) != 1) {
		*error = "rune: malformed answer from the node agent";
		return AGENT_LOST;
	}
	*payload = sep + 4;
	*plen = resp.len - (size_t)(*payload - resp.data);
	return status;
}

static int agent_request(const char *method, const char *target, const struct buf *body, char **payload,
			 size_t *plen, const char **error)
{
	return agent_request_on(agent_connect(), method, target, body, payload, plen, error);
}

/* --- runc as a child: what the agent prepared is released when runc no longer knows the container */

static volatile pid_t g_child;

static void forward_signal(int sig)
{
	if (g_child > 0)
		kill(g_child, sig);
}

static void put_quoted(struct buf *b, const char *s)
{
	/* percent-encoding as Python's urllib.parse.quote (safe: letters, digits, "_.-~/") */
	char esc[4];
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		    strchr("_.-~/", *p)) {
			put(b, (const char *)p, 1);
		} else {
			snprintf(esc, sizeof(esc), "%%%02X", *p);
			puts_b(b, esc);
		}
	}
}

/* Start runc with our stdio (argv[0] becomes runc's path), forwarding our signals to it. */
static pid_t start_runc(char **argv)
{
	argv[0] = (char *)runc_path;
	pid_t pid = fork();
	if (pid < 0)
		report_error("rune: cannot start runc (fork failed)");
	if (pid == 0) {
		signal(SIGPIPE, SIG_DFL); /* an ignored signal would stay ignored across execve */
		execv(runc_path, argv);
		char msg[1024];
		snprintf(msg, sizeof(msg), "rune: cannot execute runc at %s: %s (set INCLAVARE_RUNC or reinstall "
					   "rune with `inclavare install-rune --runc PATH`)", runc_path, strerror(errno));
		report_error(msg);
	}
	g_child = pid;
	struct sigaction sa = {.sa_handler = forward_signal};
	sigemptyset(&sa.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP && sig != SIGCHLD && sig != SIGPIPE)
			sigaction(sig, &sa, NULL);
	signal(SIGPIPE, SIG_IGN); /* a closed agent connection or pipe is an error return, not our death */
	return pid;
}

static int g_reaped, g_status;

/* 1 once runc has ended (its wait status in g_status); with WNOHANG 0 while it runs. */
static int reap_runc(pid_t pid, int options)
{
	if (g_reaped)
		return 1;
	for (;;) {
		pid_t r = waitpid(pid, &g_status, options);
		if (r == pid) {
			g_reaped = 1;
			g_child = 0; /* no signal may reach a recycled pid */
			return 1;
		}
		if (r == 0)
			return 0;
		if (errno != EINTR) {
			g_status = 1 << 8;
			g_reaped = 1;
			g_child = 0;
			return 1;
		}
	}
}

/* Wait for runc; once it no longer knows the container (a failed create, a foreground run that
 * ended) ask the agent to forget it, which also removes rune's record and private bundle. Exits
 * with runc's status (128+N for death by signal N). */
static void finish_runc(pid_t pid)
{
	reap_runc(pid, 0);
	int status = g_status;
	int rc = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
	char *root = abspath(root_dir);
	size_t n = strlen(root) + strlen(g_container_id) + 16;
	char *state = malloc(n);
	if (!state)
		exit(rc);
	snprintf(state, n, "%s/%s/state.json", strcmp(root, "/") ? root : "", g_container_id);
	/* after a foreground run that succeeded the agent's GC forgets the container (within its
	 * grace), so what it relayed stays readable; every failure is released at once */
	if (!exists(state) && !(g_foreground_run && rc == 0)) {
		struct buf target = {0};
		puts_b(&target, "/v1/containers/");
		put_quoted(&target, g_container_id);
		puts_b(&target, "?root=");
		put_quoted(&target, root);
		char *payload;
		size_t plen;
		const char *error;
		agent_request("DELETE", target.data, NULL, &payload, &plen, &error); /* best effort: else GC */
	}
	exit(rc);
}

static void supervise_runc(char **argv)
{
	decided("runc");
	g_reaped = 0;
	finish_runc(start_runc(argv));
}

/* --- early start: runc starts up while the agent plans --------------------------------------
 *
 * runc spends about 2.5 ms starting (the Go runtime, its own set-up) before it opens
 * config.json, and the agent needs about as long to plan an enclave container, so rune starts
 * runc first. The private bundle the agent will write is known in advance
 * (<state>/<root>/<id>/bundle: rune_state.state_path and enclave_create.with_bundle), so rune
 * knows the argv the agent is going to answer. runc gets that argv with a sibling directory as
 * its bundle (<id>/early, rune_state.EARLY_BUNDLE), whose config.json is a symlink to a pipe
 * held by rune (/proc/<rune>/fd/N): runc's read waits there. When the agent answers the argv
 * rune expected, rune copies the config.json the agent wrote into the pipe, then points the
 * symlink at ../bundle/config.json, so the early bundle shows what runc read.
 *
 * The agent never writes into the early bundle, so until rune copies the config runc has none:
 * whatever else the agent answers, the early runc is killed having created nothing, and rune
 * goes on as it would have without it. If rune dies first, runc fails by itself: the /proc path
 * is gone, or the pipe has no writer left; it never waits forever. Only for a record directory
 * rune creates itself: if <state>/<root>/<id> exists, the agent decides alone, as before. */
struct early {
	pid_t pid;
	int rfd, wfd;
	char *dir, *bundle, *early, *link;
	char **argv; /* what runc was given */
	char **expected; /* what the agent answers when it planned as rune expects */
	int argc;
};

static size_t g_config_len; /* size of the caller's config.json */

static void make_parents(const char *path)
{
	char *p = strdup(path);
	if (!p)
		exit(1);
	for (char *s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		mkdir(p, 0777);
		*s = '/';
	}
	free(p);
}

/* The argv the agent answers (enclave_create.with_bundle): the caller's, with --bundle <bundle>
 * right after the command and the caller's bundle flag dropped. */
static char **bundle_argv(const char *bundle, int *argc_out)
{
	char **out = calloc((size_t)g_argc + 4, sizeof(char *));
	if (!out)
		exit(1);
	int k = 0;
	out[k++] = (char *)runc_path;
	for (int i = 1; i <= g_command_index; i++)
		out[k++] = g_argv[i];
	out[k++] = "--bundle";
	out[k++] = (char *)bundle;
	const char *const *vflags = value_flags(g_argv[g_command_index]);
	for (int i = g_command_index + 1; i < g_argc; i++) {
		const char *arg = g_argv[i];
		if (!strcmp(arg, "--") || arg[0] != '-' || !strcmp(arg, "-")) {
			while (i < g_argc)
				out[k++] = g_argv[i++];
			break;
		}
		const char *a = arg;
		while (*a == '-')
			a++;
		const char *eq = strchr(a, '=');
		size_t n = eq ? (size_t)(eq - a) : strlen(a);
		if ((n == 6 && !strncmp(a, "bundle", 6)) || (n == 1 && a[0] == 'b')) {
			if (!eq)
				i++;
			continue;
		}
		out[k++] = g_argv[i];
		if (!eq && in(vflags, a, n) && i + 1 < g_argc)
			out[k++] = g_argv[++i];
	}
	out[k] = NULL;
	*argc_out = k;
	return out;
}

static void early_close(struct early *e)
{
	if (e->wfd >= 0)
		close(e->wfd);
	if (e->rfd >= 0)
		close(e->rfd);
	e->wfd = e->rfd = -1;
}

/* Remove what early_make made, and nothing the agent wrote (no recursion). */
static void early_unmake(struct early *e)
{
	struct stat st;
	if (lstat(e->link, &st) == 0 && S_ISLNK(st.st_mode))
		unlink(e->link);
	rmdir(e->early);
	rmdir(e->dir);
}

/* The early bundle, made before the request leaves (the agent must find the record directory
 * rune's, not the other way round); 0 when there is none (the agent decides alone). */
static int early_make(struct early *e)
{
	*e = (struct early){.rfd = -1, .wfd = -1};
	if (!valid_id(g_container_id))
		return 0;
	e->dir = state_path(g_container_id);
	size_t n = strlen(e->dir) + 32;
	e->bundle = malloc(n);
	e->early = malloc(n);
	e->link = malloc(n);
	if (!e->bundle || !e->early || !e->link)
		exit(1);
	snprintf(e->bundle, n, "%s/bundle", e->dir);
	snprintf(e->early, n, "%s/early", e->dir);
	snprintf(e->link, n, "%s/early/config.json", e->dir);
	/* EEXIST: rune has a record of this id (or any other failure): the agent decides alone */
	if (mkdir(e->dir, 0777) < 0) {
		if (errno != ENOENT)
			return 0;
		make_parents(e->dir); /* the first container under this runc root */
		if (mkdir(e->dir, 0777) < 0)
			return 0;
	}
	int p[2];
	if (mkdir(e->early, 0700) < 0 || pipe2(p, O_CLOEXEC) < 0) {
		early_unmake(e);
		return 0;
	}
	e->rfd = p[0];
	e->wfd = p[1];
	fcntl(e->wfd, F_SETPIPE_SZ, 1 << 20); /* best effort: the size is read back below */
	int capacity = fcntl(e->wfd, F_GETPIPE_SZ);
	char target[64];
	snprintf(target, sizeof(target), "/proc/%d/fd/%d", (int)getpid(), e->rfd);
	/* the private config is the caller's plus the enclave's mounts: it must fit in the pipe */
	if (capacity <= 0 || g_config_len * 2 + 65536 > (size_t)capacity || symlink(target, e->link) < 0) {
		early_close(e);
		early_unmake(e);
		return 0;
	}
	int argc;
	e->argv = bundle_argv(e->early, &argc);
	e->expected = bundle_argv(e->bundle, &e->argc);
	return 1;
}

static void early_start(struct early *e)
{
	g_reaped = 0;
	e->pid = start_runc(e->argv);
}

/* Kill the early runc (it has no config yet, so it created nothing) and wait for it. */
static void early_stop(struct early *e)
{
	kill(e->pid, SIGKILL);
	reap_runc(e->pid, 0);
	g_reaped = 0;
	early_close(e);
}

/* Copy the config.json the agent wrote into runc's pipe, then point the early bundle's
 * config.json at it (runc, if it has not opened the pipe yet, reads the same bytes through the
 * new link). 0 when the agent wrote none. */
static int early_feed(struct early *e)
{
	size_t n = strlen(e->bundle) + 32;
	char *config = malloc(n), *tmp = malloc(n + 16);
	if (!config || !tmp)
		exit(1);
	snprintf(config, n, "%s/config.json", e->bundle);
	int fd = open(config, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(config);
	if (fd < 0)
		return 0;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return 0;
	}
	struct buf data = {0};
	if (!read_all(fd, &data, MAX_CONFIG)) {
		free(data.data);
		return 0;
	}
	fcntl(e->wfd, F_SETFL, O_NONBLOCK);
	for (size_t off = 0; off < data.len;) {
		ssize_t w = write(e->wfd, data.data + off, data.len - off);
		if (w > 0) {
			off += (size_t)w;
		} else if (w < 0 && errno == EAGAIN) {
			/* larger than the pipe (not expected: see early_make); runc reads or has ended */
			if (reap_runc(e->pid, WNOHANG))
				break;
			struct pollfd pfd = {.fd = e->wfd, .events = POLLOUT};
			poll(&pfd, 1, 100);
		} else if (!(w < 0 && errno == EINTR)) {
			break;
		}
	}
	free(data.data);
	/* relink before closing: a runc that has not opened the pipe yet must not find it gone */
	snprintf(tmp, n + 16, "%s.tmp", e->link);
	unlink(tmp);
	if (symlink("../bundle/config.json", tmp) == 0 && rename(tmp, e->link) < 0)
		unlink(tmp);
	free(tmp);
	close(e->wfd); /* runc sees the end of the config */
	e->wfd = -1;
	/* the read end stays open while runc runs: a runc that read the old link just before the
	 * relink still opens /proc/<rune>/fd/N (a pipe without writers: the config, then its end) */
	return 1;
}

/* 1 when the agent's argv (NUL-separated) is the one rune expected: the early runc's, with the
 * private bundle in place of the early one. */
static int same_argv(const struct early *e, const char *payload, size_t plen)
{
	size_t off = 0;
	for (int i = 1; i < e->argc; i++) {
		size_t n = strlen(e->expected[i]);
		if (off + n > plen || memcmp(payload + off, e->expected[i], n) != 0 ||
		    (off + n < plen && payload[off + n] != '\0'))
			return 0;
		off += n + 1;
	}
	return off >= plen;
}

static void prepare_enclave(void)
{
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)))
		exec_python();
	const char *state = getenv("INCLAVARE_RUNE_STATE");
	struct buf body = {0};
	puts_b(&body, "{\"argv\":[");
	for (int i = 1; i < g_argc; i++) {
		if (i > 1)
			puts_b(&body, ",");
		if (!put_json_string(&body, g_argv[i]))
			exec_python();
	}
	puts_b(&body, "],\"cwd\":");
	if (!put_json_string(&body, cwd))
		exec_python();
	puts_b(&body, ",\"runc\":");
	if (!put_json_string(&body, runc_path))
		exec_python();
	puts_b(&body, ",\"state_base\":");
	if (!put_json_string(&body, state && *state ? state : ""))
		exec_python();
	puts_b(&body, "}");
	decided("prepare");

	char *payload;
	size_t plen;
	const char *error;
	int fd = agent_connect(); /* the agent accepts while rune starts runc */
	struct early e;
	int early = fd >= 0 && early_make(&e);
	if (early)
		early_start(&e); /* runc starts up while the agent plans */
	int status = agent_request_on(fd, "POST", "/v1/prepare", &body, &payload, &plen, &error);
	if (early && status != 200) {
		early_stop(&e);
		early_unmake(&e);
	}
	if (status == AGENT_UNREACHABLE)
		exec_python(); /* the slow path reports the unreachable agent (fail closed) */
	if (status < 0)
		report_error(error);
	if (status == 409 || status == 404) /* rune's own work, or an agent without /v1/prepare */
		exec_python();
	if (status != 200) {
		char *detail = detail_of(payload);
		size_t n = strlen(detail) + 8;
		char *msg = malloc(n);
		if (!msg)
			exit(1);
		snprintf(msg, n, "rune: %s", detail);
		report_error(msg);
	}
	if (early) {
		if (same_argv(&e, payload, plen) && early_feed(&e))
			finish_runc(e.pid);
		early_stop(&e); /* the agent planned otherwise: runc as it says, from the start */
		early_unmake(&e);
	}
	/* NUL-separated argv for runc */
	size_t count = 1;
	for (size_t i = 0; i < plen; i++)
		count += payload[i] == '\0';
	char **argv = calloc(count + 2, sizeof(char *));
	if (!argv)
		exit(1);
	size_t k = 1;
	argv[k++] = payload;
	for (size_t i = 0; i < plen; i++)
		if (payload[i] == '\0' && i + 1 < plen)
			argv[k++] = payload + i + 1;
	argv[k] = NULL;
	supervise_runc(argv);
}

/* --- main ------------------------------------------------------------------------------------ */

static int mentions_enclave(const char *bundle)
{
	size_t n = strlen(bundle) + 16;
	char *path = malloc(n);
	if (!path)
		exit(1);
	snprintf(path, n, "%s/config.json", bundle);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	free(path);
	if (fd < 0)
		return 0; /* runc reports the missing or unreadable bundle itself */
	struct buf data = {0};
	read_all(fd, &data, MAX_CONFIG);
	int hit = data.data && (memmem(data.data, data.len, "enclave.", 8) || memmem(data.data, data.len, "ENCLAVE_", 8));
	g_config_len = data.len;
	free(data.data);
	return hit;
}

int main(int argc, char **argv)
{
	g_argc = argc;
	g_argv = argv;
	const char *env_runc = getenv("INCLAVARE_RUNC");
	runc_path = env_runc && *env_runc ? env_runc : RUNE_RUNC;
	const char *ex = getenv("INCLAVARE_RUNE_EXPLAIN");
	explain = ex && *ex;
	/* the baked-in locations, for this process and the Python path it may start */
	setenv("INCLAVARE_AGENT_SOCKET", RUNE_AGENT_SOCKET, 0);
	setenv("INCLAVARE_RUNE_STATE", RUNE_STATE_DIR, 0);

	int i = 1;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (a[0] != '-' || !strcmp(a, "-"))
			break;
		while (*a == '-')
			a++;
		const char *eq = strchr(a, '=');
		size_t n = eq ? (size_t)(eq - a) : strlen(a);
		const char *value = eq ? eq + 1 : NULL;
		if (in(GLOBAL_VALUE, a, n) && !eq)
			value = i + 1 < argc ? argv[++i] : "";
		if (n == 4 && !strncmp(a, "root", 4))
			root_dir = value && *value ? value : "/run/runc";
		else if (n == 3 && !strncmp(a, "log", 3))
			log_path = value;
		else if (n == 10 && !strncmp(a, "log-format", 10))
			log_format = value && *value ? value : "text";
		else if ((n == 7 && !strncmp(a, "version", 7)) || (n == 1 && a[0] == 'v'))
			want_version = 1;
		else if ((n == 4 && !strncmp(a, "help", 4)) || (n == 1 && a[0] == 'h'))
			want_version = 1; /* rune's own help (runc's, plus what rune adds): Python */
	}
	if (want_version)
		exec_python();
	if (i >= argc)
		exec_runc(argv);
	g_command_index = i;
	const char *cmd = argv[i];
	const char *const *vflags = value_flags(cmd);
	const char *bundle = ".", *process_flag = NULL, *first_positional = "";
	for (i++; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--")) {
			if (i + 1 < argc)
				first_positional = argv[i + 1];
			break;
		}
		if (a[0] != '-' || !strcmp(a, "-")) {
			first_positional = a;
			break;
		}
		while (*a == '-')
			a++;
		const char *eq = strchr(a, '=');
		size_t n = eq ? (size_t)(eq - a) : strlen(a);
		const char *value = eq ? eq + 1 : NULL;
		if (!eq && in(vflags, a, n))
			value = i + 1 < argc ? argv[++i] : "";
		if ((n == 6 && !strncmp(a, "bundle", 6)) || (n == 1 && a[0] == 'b'))
			bundle = value && *value ? value : ".";
		if ((n == 7 && !strncmp(a, "process", 7)) || (n == 1 && a[0] == 'p'))
			process_flag = value;
		if (((n == 6 && !strncmp(a, "detach", 6)) || (n == 1 && a[0] == 'd')) &&
		    !(value && (!strcmp(value, "false") || !strcmp(value, "0"))))
			g_foreground_run = -1;
	}
	(void)process_flag;
	g_container_id = first_positional;
	g_foreground_run = !strcmp(cmd, "run") && g_foreground_run != -1;
	if (!strcmp(cmd, "create") || !strcmp(cmd, "run")) {
		if (!mentions_enclave(bundle))
			exec_runc(argv);
		prepare_enclave();
	}
	if (!strcmp(cmd, "attest"))
		exec_python();
	if (!strcmp(cmd, "exec") || !strcmp(cmd, "delete") || !strcmp(cmd, "state")) {
		if (!valid_id(first_positional))
			exec_runc(argv);
		char *path = state_path(first_positional);
		if (!strcmp(cmd, "exec")) {
			size_t n = strlen(path) + 16;
			char *marker = malloc(n);
			if (!marker)
				exit(1);
			snprintf(marker, n, "%s/runelet", path);
			if (exists(marker))
				exec_python();
		} else if (exists(path)) {
			exec_python();
		}
	}
	exec_runc(argv);
	return 1;
}
