/*
 * Skeleton enclave runtime PAL for the tests: exactly the PAL API of one version, no
 * enclave. It records every call with its arguments and really runs the payload.
 *
 * Build: cc -shared -fPIC -DSKELETON_PAL_VERSION=1|2|3 -o liberpal-skeleton-vN.so skeleton_pal.c
 *   -DSKELETON_PAL_VERSION=4          pal_get_version() returns 4 (v3 ABI otherwise)
 *   -DSKELETON_REPORTED_VERSION=N     pal_get_version() returns N (ABI still that of the version)
 *   -DSKELETON_OMIT_KILL / _CREATE_PROCESS / _GET_LOCAL_REPORT   leave that symbol out
 * Version 1 does not export pal_get_version.
 *
 * pal_init args (space separated; rune turns the annotation's commas into spaces):
 *   record=PATH      append one JSON object per call to PATH (calls made before pal_init
 *                    are buffered and written when the path becomes known)
 *   fail=CALL:ERRNO  make pal_CALL return -ERRNO (e.g. fail=exec:22, fail=init:2)
 *
 * Payloads are host child processes (fork, dup2 of the given stdio, execve); pal_exec waits
 * and reports the wait(2) status (v2/v3 exit_value) or the exit code (v1 exit_code);
 * pal_kill signals one child or all (-1); pal_destroy SIGKILLs what is left.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SKELETON_PAL_VERSION
#error "define SKELETON_PAL_VERSION (1, 2 or 3)"
#endif
#define ABI (SKELETON_PAL_VERSION > 3 ? 3 : SKELETON_PAL_VERSION)
#ifndef SKELETON_REPORTED_VERSION
#define SKELETON_REPORTED_VERSION SKELETON_PAL_VERSION
#endif

extern char **environ;

typedef struct {
	const char *args;
	const char *log_level;
} pal_attr_t;

typedef struct {
	pal_attr_t attr_v1;
	int fd;
	uint64_t addr;
} pal_attr_v3_t;

struct pal_stdio_fds {
	int stdin, stdout, stderr;
};

struct pal_create_process_args {
	char *path;
	char **argv;
	char **env;
	struct pal_stdio_fds *stdio;
	int *pid;
};

struct pal_exec_args {
	int pid;
	int *exit_value;
};

#define MAX_CHILDREN 256
#define MAX_FAILS 16

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char record_path[4096];
static char pending[65536];
static size_t pending_len;
static int initialized;
static pid_t children[MAX_CHILDREN];
static struct {
	char call[32];
	int err;
} fails[MAX_FAILS];
static int nfails;

/* ---- recording ------------------------------------------------------------------ */

struct buf {
	char *p;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->cap + n + 1) * 2;
		char *p = realloc(b->p, cap);
		if (!p)
			return;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void putf(struct buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n > 0)
		put(b, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

static void put_json_string(struct buf *b, const char *s)
{
	if (!s) {
		put(b, "null", 4);
		return;
	}
	put(b, "\"", 1);
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c == '"' || *c == '\\') {
			put(b, "\\", 1);
			put(b, (const char *)c, 1);
		} else if (*c < 0x20) {
			putf(b, "\\u%04x", *c);
		} else {
			put(b, (const char *)c, 1);
		}
	}
	put(b, "\"", 1);
}

__attribute__((unused)) static void put_json_strings(struct buf *b, char *const *v)
{
	if (!v) {
		put(b, "null", 4);
		return;
	}
	put(b, "[", 1);
	for (int i = 0; v[i]; i++) {
		if (i)
			put(b, ",", 1);
		put_json_string(b, v[i]);
	}
	put(b, "]", 1);
}

__attribute__((unused)) static void put_stdio(struct buf *b, const struct pal_stdio_fds *s)
{
	if (!s)
		put(b, "null", 4);
	else
		putf(b, "[%d,%d,%d]", s->stdin, s->stdout, s->stderr);
}

static void append_line(const char *line, size_t len)
{
	if (record_path[0]) {
		int fd = open(record_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (fd >= 0) {
			ssize_t w = write(fd, line, len);
			(void)w;
			close(fd);
		}
	} else if (pending_len + len < sizeof(pending)) {
		memcpy(pending + pending_len, line, len);
		pending_len += len;
	}
}

/* Finish the JSON object in b and append it as one line. */
static void emit(struct buf *b)
{
	put(b, "}\n", 2);
	if (b->p) {
		pthread_mutex_lock(&lock);
		append_line(b->p, b->len);
		pthread_mutex_unlock(&lock);
	}
	free(b->p);
}

static void begin(struct buf *b, const char *call)
{
	memset(b, 0, sizeof(*b));
	put(b, "{\"call\":", 8);
	put_json_string(b, call);
}

static int injected_failure(const char *call)
{
	for (int i = 0; i < nfails; i++)
		if (!strcmp(fails[i].call, call))
			return -fails[i].err;
	return 0;
}

static void parse_args(const char *args)
{
	char *copy = strdup(args ? args : "");
	char *save = NULL;
	if (!copy)
		return;
	for (char *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		if (!strncmp(tok, "record=", 7)) {
			snprintf(record_path, sizeof(record_path), "%s", tok + 7);
		} else if (!strncmp(tok, "fail=", 5) && nfails < MAX_FAILS) {
			char *colon = strchr(tok + 5, ':');
			if (colon) {
				*colon = '\0';
				snprintf(fails[nfails].call, sizeof(fails[nfails].call), "%s", tok + 5);
				fails[nfails].err = atoi(colon + 1);
				nfails++;
			}
		}
	}
	free(copy);
}

/* ---- processes ------------------------------------------------------------------ */

static int track(pid_t pid)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (!children[i]) {
			children[i] = pid;
			pthread_mutex_unlock(&lock);
			return 0;
		}
	pthread_mutex_unlock(&lock);
	return -EAGAIN;
}

static int is_child(pid_t pid)
{
	int found = 0;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			found = 1;
	pthread_mutex_unlock(&lock);
	return found;
}

static void untrack(pid_t pid)
{
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
	pthread_mutex_unlock(&lock);
}

/* In the child: only async-signal-safe calls. Reports execve's errno through the pipe. */
static void child(int report, const char *path, char *const argv[], char *const envp[],
		  const struct pal_stdio_fds *stdio)
{
	sigset_t none;
	int fds[3] = { stdio->stdin, stdio->stdout, stdio->stderr };
	int high[3];

	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int i = 0; i < 3; i++) {
		high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
		if (high[i] < 0)
			goto fail;
	}
	for (int i = 0; i < 3; i++)
		if (dup2(high[i], i) < 0)
			goto fail;
	execve(path, argv, envp);
fail:;
	int err = errno;
	ssize_t w = write(report, &err, sizeof(err));
	(void)w;
	_exit(127);
}

/* Fork and exec; returns the pid or -errno (execve failures included). */
__attribute__((unused)) static int spawn(const char *path, char *const argv[], char *const envp[],
		 const struct pal_stdio_fds *stdio)
{
	int report[2], err = 0;
	pid_t pid;

	if (!path || !argv || !stdio)
		return -EINVAL;
	if (pipe2(report, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		err = errno;
		close(report[0]);
		close(report[1]);
		return -err;
	}
	if (pid == 0)
		child(report[1], path, argv, envp, stdio);
	close(report[1]);
	ssize_t n;
	do
		n = read(report[0], &err, sizeof(err));
	while (n < 0 && errno == EINTR);
	close(report[0]);
	if (n == sizeof(err)) {
		while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
			;
		return -err;
	}
	int t = track(pid);
	return t < 0 ? t : pid;
}

/* Wait for a child; returns its wait status or -errno. */
static int wait_child(pid_t pid)
{
	int status;
	if (!is_child(pid))
		return -ESRCH;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			int err = errno;
			untrack(pid);
			return -err;
		}
	}
	untrack(pid);
	return status;
}

/* ---- the PAL API ------------------------------------------------------------------ */

#if SKELETON_PAL_VERSION >= 2
int pal_get_version(void)
{
	struct buf b;
	begin(&b, "pal_get_version");
	emit(&b);
	return SKELETON_REPORTED_VERSION;
}
#endif

#if ABI >= 3
int pal_init(pal_attr_v3_t *attr3)
{
	pal_attr_t *attr = attr3 ? &attr3->attr_v1 : NULL;
#else
int pal_init(pal_attr_t *attr)
{
#endif
	struct buf b;
	if (attr) {
		parse_args(attr->args);
		pthread_mutex_lock(&lock);
		if (record_path[0] && pending_len) {
			char saved[sizeof(pending)];
			size_t len = pending_len;
			memcpy(saved, pending, len);
			pending_len = 0;
			append_line(saved, len);
		}
		pthread_mutex_unlock(&lock);
	}
	begin(&b, "pal_init");
	put(&b, ",\"args\":", 8);
	put_json_string(&b, attr ? attr->args : NULL);
	put(&b, ",\"log_level\":", 13);
	put_json_string(&b, attr ? attr->log_level : NULL);
#if ABI >= 3
	if (attr3)
		putf(&b, ",\"fd\":%d,\"addr\":%llu", attr3->fd, (unsigned long long)attr3->addr);
#endif
	emit(&b);
	if (!attr)
		return -EINVAL;
	int f = injected_failure("init");
	if (f)
		return f;
	initialized = 1;
	return 0;
}

#if ABI == 1
int pal_exec(char *path, char *argv[], struct pal_stdio_fds *stdio, int *exit_code)
{
	struct buf b;
	begin(&b, "pal_exec");
	put(&b, ",\"path\":", 8);
	put_json_string(&b, path);
	put(&b, ",\"argv\":", 8);
	put_json_strings(&b, argv);
	put(&b, ",\"stdio\":", 9);
	put_stdio(&b, stdio);
	emit(&b);
	if (!initialized || !exit_code)
		return -EINVAL;
	int f = injected_failure("exec");
	if (f)
		return f;
	int pid = spawn(path, argv, environ, stdio);
	if (pid < 0)
		return pid;
	int status = wait_child(pid);
	if (status < 0)
		return status;
	*exit_code = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
	return 0;
}
#else
#ifndef SKELETON_OMIT_CREATE_PROCESS
int pal_create_process(struct pal_create_process_args *args)
{
	struct buf b;
	begin(&b, "pal_create_process");
	if (args) {
		put(&b, ",\"path\":", 8);
		put_json_string(&b, args->path);
		put(&b, ",\"argv\":", 8);
		put_json_strings(&b, args->argv);
		put(&b, ",\"env\":", 7);
		put_json_strings(&b, args->env);
		put(&b, ",\"stdio\":", 9);
		put_stdio(&b, args->stdio);
	}
	emit(&b);
	if (!initialized || !args || !args->pid)
		return -EINVAL;
	int f = injected_failure("create_process");
	if (f)
		return f;
	int pid = spawn(args->path, args->argv, args->env, args->stdio);
	if (pid < 0)
		return pid;
	*args->pid = pid;
	return 0;
}
#endif

int pal_exec(struct pal_exec_args *args)
{
	struct buf b;
	begin(&b, "pal_exec");
	if (args)
		putf(&b, ",\"pid\":%d", args->pid);
	emit(&b);
	if (!initialized || !args || !args->exit_value)
		return -EINVAL;
	int f = injected_failure("exec");
	if (f)
		return f;
	int status = wait_child(args->pid);
	if (status < 0)
		return status;
	*args->exit_value = status;
	return 0;
}

#ifndef SKELETON_OMIT_KILL
int pal_kill(int pid, int sig)
{
	struct buf b;
	begin(&b, "pal_kill");
	putf(&b, ",\"pid\":%d,\"sig\":%d", pid, sig);
	emit(&b);
	if (!initialized)
		return -EINVAL;
	int f = injected_failure("kill");
	if (f)
		return f;
	if (pid == -1) {
		pthread_mutex_lock(&lock);
		for (int i = 0; i < MAX_CHILDREN; i++)
			if (children[i])
				kill(children[i], sig);
		pthread_mutex_unlock(&lock);
		return 0;
	}
	if (pid <= 0)
		return -EINVAL;
	if (!is_child(pid))
		return -ESRCH;
	return kill(pid, sig) < 0 ? -errno : 0;
}
#endif
#endif /* ABI >= 2 */

int pal_destroy(void)
{
	struct buf b;
	begin(&b, "pal_destroy");
	emit(&b);
	if (!initialized)
		return -EINVAL;
	int f = injected_failure("destroy");
	if (f)
		return f;
	pthread_mutex_lock(&lock);
	for (int i = 0; i < MAX_CHILDREN; i++)
		if (children[i])
			kill(children[i], SIGKILL);
	pthread_mutex_unlock(&lock);
	initialized = 0;
	return 0;
}

#if ABI >= 3 && !defined(SKELETON_OMIT_GET_LOCAL_REPORT)
/* A recognisably fake report: "SKELETON" then bytes derived from the target info. */
int pal_get_local_report(void *targetinfo, int targetinfo_len, void *report, int *report_len)
{
	struct buf b;
	begin(&b, "pal_get_local_report");
	putf(&b, ",\"targetinfo_len\":%d,\"report_len\":%d", targetinfo_len,
	     report_len ? *report_len : -1);
	emit(&b);
	if (!initialized || !targetinfo || !report || !report_len)
		return -EINVAL;
	int f = injected_failure("get_local_report");
	if (f)
		return f;
	if (targetinfo_len != 512 || *report_len < 432)
		return -EINVAL;
	unsigned char *out = report;
	const unsigned char *ti = targetinfo;
	memcpy(out, "SKELETON", 8);
	for (int i = 8; i < 432; i++)
		out[i] = ti[i % 512] ^ 0x5a;
	*report_len = 432;
	return 0;
}
#endif
