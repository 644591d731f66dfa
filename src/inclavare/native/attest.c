/*
 * attest: the in-container client of the enclave agent.
 *
 * Statically linked so that it runs in any image, even one holding only busybox. It speaks
 * HTTP/1.1 over the enclave agent's socket, /run/inclavare/agent.sock inside the container,
 * using CoCo's attestation-agent / confidential-data-hub REST paths. The enclave agent runs
 * inside the enclave boundary: it generates the keys, runs the key broker protocol and decrypts
 * secrets there; it admits only processes of its own container (kernel facts, never anything
 * sent here).
 *
 *   attest evidence [--runtime-data STRING]   print the evidence JSON ({"quote": "<base64>"})
 *   attest token                              print a key broker attestation token
 *   attest resource kbs:///REPO/TYPE/TAG      print the secret stored at that path
 *   attest unseal SEALED                      print the plaintext of a sealed secret ("-": stdin)
 *   attest seal [--policy mrenclave|mrsigner] [--svn N] [IN|- [OUT]]
 *                                             seal data to this enclave's identity
 *   attest unseal -|FILE [OUT]                open a sealed secret or sealed data read from stdin or
 *                                             FILE (by its first bytes: "sealed." or "INCLSEAL")
 *   attest extend DOMAIN OPERATION CONTENT [--index N]
 *                                             record a runtime measurement (TDX RTMR; CoCo's
 *                                             ExtendRuntimeMeasurement, N a PCR index)
 *
 * IN and OUT default to stdin and stdout; OUT is written only on success (a temporary file
 * renamed into place). At most 1 MiB is read.
 *
 * Exit status: 0 on success, 1 when the agent refused or failed (its reason on stderr), 2 for
 * usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/inclavare/agent.sock"
#define MAX_RESPONSE (64 * 1024 * 1024)
#define MAX_INPUT (1 << 20) /* the enclave agent's request body cap */
#define SEALED_PREFIX "sealed."
#define DATA_MAGIC "INCLSEAL"

static const char *out_path; /* where a successful answer goes (NULL: stdout) */

static void usage(void)
{
	fprintf(stderr,
		"usage: attest evidence [--runtime-data STRING]\n"
		"       attest token\n"
		"       attest resource kbs:///REPO/TYPE/TAG\n"
		"       attest unseal sealed.HEADER.PAYLOAD.SIGNATURE|-|FILE [OUT]\n"
		"       attest seal [--policy mrenclave|mrsigner] [--svn N] [IN|- [OUT]]\n"
		"       attest extend DOMAIN OPERATION CONTENT [--index N]\n");
	exit(2);
}

/* Write everything; on a socket (sock != 0) without SIGPIPE when the agent has already closed. */
static int write_all(int fd, const char *buf, size_t len, int sock)
{
	while (len > 0) {
		ssize_t n = sock ? send(fd, buf, len, MSG_NOSIGNAL) : write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Percent-encode everything but RFC 3986 unreserved characters. */
static char *url_encode(const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(s);
	char *out = malloc(3 * n + 1), *p = out;
	if (!out)
		return NULL;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			*p++ = (char)c;
		} else {
			*p++ = '%';
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
	}
	*p = '\0';
	return out;
}

/* A path segment of a resource URI, as the key broker's: [A-Za-z0-9_-][A-Za-z0-9_.-]* */
static int valid_segment(const char *s, size_t len)
{
	if (len == 0 || s[0] == '.')
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

static int request_body(const char *method, const char *path, const char *body, size_t body_size);

/* Write OUT whole or not at all: a temporary sibling, renamed into place. */
static int write_out(const char *path, const char *data, size_t len)
{
	size_t n = strlen(path) + 32;
	char *tmp = malloc(n);
	if (!tmp)
		return 1;
	snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write_all(fd, data, len, 0) < 0 || fsync(fd) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
		fprintf(stderr, "attest: cannot write %s: %s\n", path, strerror(errno));
		unlink(tmp);
		return 1;
	}
	free(tmp);
	return 0;
}

/* Read at most MAX_INPUT bytes of PATH ("-": stdin); exits 2 when larger or unreadable. */
static char *read_input(const char *path, size_t *len)
{
	int fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
	char *buf = malloc(MAX_INPUT + 1);
	size_t n = 0;
	if (fd < 0 || !buf) {
		fprintf(stderr, "attest: cannot read %s: %s\n", path, strerror(errno));
		exit(2);
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, MAX_INPUT + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "attest: cannot read %s: %s\n", path, strerror(errno));
			exit(2);
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > MAX_INPUT) {
			fprintf(stderr, "attest: %s is larger than %d bytes\n", strcmp(path, "-") ? path : "stdin",
				MAX_INPUT);
			exit(2);
		}
	}
	if (fd > 0)
		close(fd);
	*len = n;
	return buf;
}

/* attest seal [--policy P] [--svn N] [IN|- [OUT]] */
static int seal_command(int argc, char **argv)
{
	const char *policy = "mrenclave", *svn = NULL, *files[2] = { "-", NULL };
	int nfiles = 0;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--policy") == 0 && i + 1 < argc)
			policy = argv[++i];
		else if (strcmp(argv[i], "--svn") == 0 && i + 1 < argc)
			svn = argv[++i];
		else if (nfiles < 2 && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0))
			files[nfiles++] = argv[i];
		else
			usage();
	}
	if (strcmp(policy, "mrenclave") != 0 && strcmp(policy, "mrsigner") != 0) {
		fprintf(stderr, "attest: --policy is mrenclave or mrsigner\n");
		return 2;
	}
	if (svn && (strlen(svn) == 0 || strlen(svn) > 5 || strspn(svn, "0123456789") != strlen(svn))) {
		fprintf(stderr, "attest: --svn is an integer from 0 to 65535\n");
		return 2;
	}
	size_t len = 0;
	char *data = read_input(files[0], &len);
	char path[96];
	snprintf(path, sizeof(path), "/inclavare/seal?policy=%s%s%s", policy, svn ? "&isv_svn=" : "", svn ? svn : "");
	out_path = files[1];
	return request_body("POST", path, data, len);
}

/* attest unseal -|FILE [OUT]: a sealed secret or sealed data, told apart by its first bytes. */
static int unseal_input(const char *in, const char *out)
{
	size_t len = 0;
	char *data = read_input(in, &len);
	out_path = out;
	if (len >= strlen(DATA_MAGIC) && memcmp(data, DATA_MAGIC, strlen(DATA_MAGIC)) == 0)
		return request_body("POST", "/inclavare/unseal", data, len);
	if (len >= strlen(SEALED_PREFIX) && memcmp(data, SEALED_PREFIX, strlen(SEALED_PREFIX)) == 0)
		return request_body("POST", "/cdh/secret/unseal", data, len);
	fprintf(stderr, "attest: %s is neither a sealed secret (sealed.…) nor sealed data (INCLSEAL…)\n",
		strcmp(in, "-") ? in : "stdin");
	return 2;
}

/* Append s to out as a JSON string (quotes, backslashes and control characters escaped). */
static char *json_string(char *out, const char *s)
{
	*out++ = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			*out++ = '\\';
			*out++ = (char)c;
		} else if (c < 0x20) {
			out += sprintf(out, "\\u%04x", c);
		} else {
			*out++ = (char)c;
		}
	}
	*out++ = '"';
	*out = '\0';
	return out;
}

/* POST /aa/aael {"domain", "operation", "content"[, "register_index"]} */
static int extend(int argc, char **argv)
{
	const char *fields[3];
	const char *index = NULL;
	int n = 0;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--index") == 0 && i + 1 < argc)
			index = argv[++i];
		else if (n < 3)
			fields[n++] = argv[i];
		else
			usage();
	}
	if (n != 3 || (index && (strspn(index, "0123456789") != strlen(index) || !*index || strlen(index) > 9)))
		usage();
	size_t size = 128;
	for (int k = 0; k < 3; k++)
		size += 6 * strlen(fields[k]) + 32;
	char *body = malloc(size), *p = body;
	if (!body)
		return 1;
	static const char *names[3] = { "domain", "operation", "content" };
	*p++ = '{';
	for (int k = 0; k < 3; k++) {
		p += sprintf(p, "%s\"%s\":", k ? "," : "", names[k]);
		p = json_string(p, fields[k]);
	}
	if (index)
		p += sprintf(p, ",\"register_index\":%s", index);
	*p++ = '}';
	return request_body("POST", "/aa/aael", body, (size_t)(p - body));
}

static int request(const char *path)
{
	return request_body("GET", path, NULL, 0);
}

static int request_body(const char *method, const char *path, const char *req_body, size_t body_size)
{
	const char *sock_path = getenv("INCLAVARE_AGENT_SOCKET");
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (!sock_path || !*sock_path)
		sock_path = DEFAULT_SOCKET;
	if (strlen(sock_path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "attest: socket path too long: %s\n", sock_path);
		return 1;
	}
	strcpy(addr.sun_path, sock_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* a secret fetch may start the agent and attest to a remote key broker: generous, bounded */
	struct timeval tv = { .tv_sec = 120, .tv_usec = 0 };
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		fprintf(stderr, "attest: cannot reach the enclave agent at %s: %s\n", sock_path, strerror(errno));
		return 1;
	}
	size_t hlen = strlen(path) + 128;
	char *head = malloc(hlen);
	if (!head)
		return 1;
	snprintf(head, hlen, "%s %s HTTP/1.1\r\nHost: inclavare-agent\r\nConnection: close\r\n"
		 "Content-Length: %zu\r\n\r\n", method, path, body_size);
	if ((write_all(fd, head, strlen(head), 1) < 0 ||
	     (body_size > 0 && write_all(fd, req_body, body_size, 1) < 0)) && errno != EPIPE) {
		/* EPIPE: the agent answered (e.g. "busy") and closed before reading; read its answer */
		fprintf(stderr, "attest: write to the enclave agent failed: %s\n", strerror(errno));
		return 1;
	}
	free(head);

	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf) {
			fprintf(stderr, "attest: out of memory\n");
			return 1;
		}
		if (len == cap) {
			if (cap >= MAX_RESPONSE) {
				fprintf(stderr, "attest: response too large\n");
				return 1;
			}
			cap *= 2;
			buf = realloc(buf, cap);
			continue;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECONNRESET && len > 0)
				break; /* the answer arrived; the agent just closed hard */
			fprintf(stderr, "attest: read from the enclave agent failed: %s\n", strerror(errno));
			return 1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);

	int status = 0;
	char *body = NULL;
	for (size_t i = 0; i + 3 < len; i++) {
		if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
			body = buf + i + 4;
			break;
		}
	}
	if (!body || len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || sscanf(buf + 9, "%3d", &status) != 1) {
		fprintf(stderr, "attest: malformed response from the enclave agent\n");
		return 1;
	}
	size_t body_len = len - (size_t)(body - buf);
	if (status != 200) {
		fprintf(stderr, "attest: the enclave agent refused (%d): ", status);
		fwrite(body, 1, body_len, stderr);
		fputc('\n', stderr);
		return 1;
	}
	if (out_path)
		return write_out(out_path, body, body_len);
	if (write_all(1, body, body_len, 0) < 0)
		return 1;
	if (body_len > 0 && body[body_len - 1] != '\n' && isatty(1))
		write_all(1, "\n", 1, 0);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	if (strcmp(argv[1], "evidence") == 0) {
		const char *data = "";
		for (int i = 2; i < argc; i++) {
			if (strcmp(argv[i], "--runtime-data") == 0 && i + 1 < argc)
				data = argv[++i];
			else if (strncmp(argv[i], "--runtime-data=", 15) == 0)
				data = argv[i] + 15;
			else
				usage();
		}
		char *enc = url_encode(data);
		char *path = malloc(strlen(enc) + 64);
		if (!enc || !path)
			return 1;
		sprintf(path, "/aa/evidence?runtime_data=%s", enc);
		return request(path);
	}
	if (strcmp(argv[1], "token") == 0 && argc == 2)
		return request("/aa/token?token_type=kbs");
	if (strcmp(argv[1], "resource") == 0 && argc == 3) {
		const char *uri = argv[2];
		if (strncmp(uri, "kbs://", 6) != 0) {
			fprintf(stderr, "attest: resource URI must look like kbs:///REPO/TYPE/TAG\n");
			return 2;
		}
		const char *p = strchr(uri + 6, '/'); /* skip the (ignored) host part */
		if (!p) {
			fprintf(stderr, "attest: resource URI must look like kbs:///REPO/TYPE/TAG\n");
			return 2;
		}
		p++;
		const char *segs[3];
		size_t lens[3];
		const char *q = p;
		for (int k = 0; k < 3; k++) {
			const char *slash = strchr(q, '/');
			size_t n = slash ? (size_t)(slash - q) : strlen(q);
			if ((k < 2 && !slash) || (k == 2 && slash) || !valid_segment(q, n)) {
				fprintf(stderr, "attest: resource URI must look like kbs:///REPO/TYPE/TAG "
						"(letters, digits, '-', '_', '.')\n");
				return 2;
			}
			segs[k] = q;
			lens[k] = n;
			q = slash ? slash + 1 : q + n;
		}
		char path[4096];
		if (snprintf(path, sizeof(path), "/cdh/resource/%.*s/%.*s/%.*s", (int)lens[0], segs[0],
			     (int)lens[1], segs[1], (int)lens[2], segs[2]) >= (int)sizeof(path))
			return 2;
		return request(path);
	}
	if (strcmp(argv[1], "seal") == 0)
		return seal_command(argc, argv);
	if (strcmp(argv[1], "unseal") == 0 && (argc == 3 || argc == 4)) {
		const char *sealed = argv[2];
		if (strncmp(sealed, SEALED_PREFIX, strlen(SEALED_PREFIX)) != 0)
			return unseal_input(sealed, argc == 4 ? argv[3] : NULL);
		out_path = argc == 4 ? argv[3] : NULL;
		return request_body("POST", "/cdh/secret/unseal", sealed, strlen(sealed));
	}
	if (strcmp(argv[1], "extend") == 0)
		return extend(argc, argv);
	usage();
	return 2;
}
