// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcplat-probe: loads tcplat.bpf.c, prints one JSON object per TCP connect
 * attempt on stdout (NDJSON), logs on stderr. See bpf/README.md.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "tcplat.h"
#include "tcplat.skel.h"

#define PROG "tcplat-probe"
#define VERSION "0.1.0"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef TRACEFS_MAGIC
#define TRACEFS_MAGIC 0x74726163
#endif

#define EXIT_USAGE 2
#define VMLINUX_BTF "/sys/kernel/btf/vmlinux"
#define TRACEFS "/sys/kernel/tracing"

enum attach_mode { ATTACH_AUTO, ATTACH_BTF, ATTACH_TRACEPOINT };

static struct {
	uint32_t pids[TCPLAT_MAX_FILTER];
	int n_pids;
	uint32_t exclude_pids[TCPLAT_MAX_FILTER];
	int n_exclude_pids;
	uint16_t dports[TCPLAT_MAX_FILTER];
	int n_dports;
	uint64_t cgroup_ids[TCPLAT_MAX_FILTER];
	const char *cgroup_paths[TCPLAT_MAX_FILTER];
	int n_cgroups;
	uint64_t min_latency_us;
	double stats_interval; /* seconds; 0 disables */
	uint32_t ringbuf_mb;
	enum attach_mode attach;
	bool verbose;
} opt = {
	.stats_interval = 10,
	.ringbuf_mb = 4,
	.attach = ATTACH_AUTO,
};

static volatile sig_atomic_t exiting;
static int64_t wall_offset_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC, fixed at start */
static uint64_t n_events;      /* connect lines written */
static bool stdout_broken;

/* One stderr line: the program name, the message, then `end` (a newline, or a hint and a newline). */
static void vlogf_(const char *end, const char *fmt, va_list ap)
{
	fputs(PROG ": ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(end, stderr);
}

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlogf_("\n", fmt, ap);
	va_end(ap);
}

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " PROG " [FLAGS]\n"
"\n"
"Measures the TCP handshake time of every outgoing connect() on this host with\n"
"eBPF (tracepoint sock:inet_sock_set_state; no kprobes) and prints one JSON\n"
"object per attempt on stdout. Needs root (or CAP_BPF+CAP_PERFMON) and a kernel\n"
"with BTF (/sys/kernel/btf/vmlinux).\n"
"\n"
"Filters (applied in the kernel; repeat a flag to match any of its values):\n"
"  --pid N              only connects made by process N (its tgid; any thread)\n"
"  --exclude-pid N      never report connects made by process N (e.g. the agent\n"
"                       reading this output)\n"
"  --cgroup PATH        only connects made by tasks in this cgroup v2 directory or\n"
"                       any cgroup below it; PATH is absolute, or relative to the\n"
"                       cgroup v2 mount point\n"
"  --dport N            only connects to remote port N (1-65535)\n"
"  --min-latency-us N   only attempts that took at least N microseconds (applies to\n"
"                       every result, failures included)\n"
"\n"
"Output and tuning:\n"
"  --stats-interval S   print a \"stats\" line every S seconds (decimals allowed;\n"
"                       default 10; 0 disables stats lines)\n"
"  --ringbuf-mb N       size of the kernel->user ring buffer in MiB, a power of 2\n"
"                       (default 4); raise it if stats report dropped > 0\n"
"  --attach MODE        auto (default): BTF raw tracepoints (tp_btf), falling back\n"
"                       to classic tracepoints; btf or tracepoint force one\n"
"  --verbose            also print libbpf's log (e.g. the verifier's) on stderr\n"
"  --version            print the version and exit\n"
"  -h, --help           print this help and exit\n"
"\n"
"Output (stdout, one JSON object per line, written in whole lines and flushed\n"
"after every batch read from the kernel: a line reaches a reader within ~20 ms):\n"
"  {\"type\":\"connect\",\"ts_ns\":1764100000123456789,\"latency_ns\":1023456789,\n"
"   \"result\":\"ok\",\"errno\":0,\"syn_retrans\":1,\"pid\":1234,\"tid\":1234,\n"
"   \"comm\":\"ruby\",\"cgroup_id\":5678,\"family\":\"ipv4\",\"saddr\":\"127.0.0.1\",\n"
"   \"sport\":43340,\"daddr\":\"127.0.0.1\",\"dport\":5432}\n"
"  {\"type\":\"stats\",\"ts_ns\":1764100001000000000,\"events\":1200,\"dropped\":0}\n"
"\n"
"  ts_ns        Unix time (ns) when the SYN was sent; strictly increasing in SYN\n"
"               order and unique on this host. Lines come out in completion\n"
"               order, so a slow attempt prints after faster, later ones.\n"
"  latency_ns   from the SYN to the end of the handshake (ok) or of the attempt\n"
"  result       ok | refused (ECONNREFUSED) | timeout (ETIMEDOUT) |\n"
"               unreachable (EHOSTUNREACH, ENETUNREACH) | aborted (no error: the\n"
"               application closed the socket first, e.g. its own timeout) |\n"
"               error (any other errno)\n"
"  errno        the socket error (0 for ok and aborted)\n"
"  syn_retrans  SYNs the kernel had to resend (explains 1 s / 3 s / 7 s steps)\n"
"  pid, tid     process (tgid) and thread that called connect()\n"
"  comm         that thread's name, JSON-escaped (bytes that are not UTF-8 as\n"
"               \\u00XX)\n"
"  cgroup_id    cgroup v2 id of the caller (the inode number of its directory)\n"
"  family       ipv4 | ipv6; an IPv6 socket connected to a v4-mapped address\n"
"               (::ffff:a.b.c.d) is reported as ipv4 with plain IPv4 addresses\n"
"  saddr/sport  local address and port; daddr/dport remote address and port\n"
"  stats        totals since start: events = connect lines written, dropped =\n"
"               events lost because the ring buffer was full (exact, counted in\n"
"               the kernel)\n"
"\n"
"stderr gets logs; once the probe is attached it prints a line starting with\n"
"\"" PROG ": attached\". Exit status: 0 after SIGINT, SIGTERM or a closed\n"
"stdout; 1 on a runtime error; 2 on a usage error.\n");
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlogf_(" (see " PROG " --help)\n", fmt, ap);
	va_end(ap);
	exit(EXIT_USAGE);
}

static uint64_t parse_uint(const char *flag, const char *s, uint64_t min, uint64_t max)
{
	unsigned long long v;
	char *end;

	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		usage_error("%s needs an integer between %llu and %llu, got '%s'", flag,
			    (unsigned long long)min, (unsigned long long)max, s ? s : "");
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		usage_error("%s needs an integer between %llu and %llu, got '%s'", flag,
			    (unsigned long long)min, (unsigned long long)max, s);
	return v;
}

/* Path of the cgroup v2 mount (first one in /proc/self/mounts), or NULL. */
static const char *cgroup2_mount(void)
{
	static char path[PATH_MAX];
	char line[4096], dev[256], mnt[PATH_MAX], type[64];
	FILE *f;

	if (path[0])
		return path;
	f = fopen("/proc/self/mounts", "r");
	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%255s %4095s %63s", dev, mnt, type) == 3 &&
		    strcmp(type, "cgroup2") == 0) {
			snprintf(path, sizeof(path), "%s", mnt);
			break;
		}
	}
	fclose(f);
	return path[0] ? path : NULL;
}

static uint64_t cgroup_id_of(const char *arg)
{
	const char *mnt = cgroup2_mount();
	struct {
		struct file_handle fh;
		uint64_t id;
	} h;
	char path[2 * PATH_MAX];
	struct statfs sfs;
	struct stat st;
	int mount_id;

	if (arg[0] == '/') {
		snprintf(path, sizeof(path), "%s", arg);
	} else {
		if (!mnt)
			usage_error("--cgroup %s: no cgroup v2 hierarchy is mounted; pass an "
				    "absolute path or mount one (mount -t cgroup2 none /sys/fs/cgroup)",
				    arg);
		snprintf(path, sizeof(path), "%s/%s", mnt, arg);
	}
	if (stat(path, &st) != 0)
		usage_error("--cgroup %s: %s", path, strerror(errno));
	if (statfs(path, &sfs) != 0 || sfs.f_type != CGROUP2_SUPER_MAGIC || !S_ISDIR(st.st_mode))
		usage_error("--cgroup %s: not a cgroup v2 directory (cgroup v2 is mounted at %s)",
			    path, mnt ? mnt : "nowhere");
	/* The cgroup id is what the kernel puts in the file handle (as bpftool
	 * does); the inode number is the same thing on 64-bit kernels. */
	h.fh.handle_bytes = sizeof(h.id);
	if (name_to_handle_at(AT_FDCWD, path, &h.fh, &mount_id, 0) == 0 &&
	    h.fh.handle_bytes == sizeof(uint64_t)) {
		uint64_t id;

		memcpy(&id, h.fh.f_handle, sizeof(id));
		return id;
	}
	return st.st_ino;
}

static void parse_args(int argc, char **argv)
{
	enum { O_PID = 256, O_EXCLUDE_PID, O_CGROUP, O_DPORT, O_MIN_LAT, O_STATS,
	       O_RINGBUF, O_ATTACH, O_VERBOSE, O_VERSION };
	static const struct option longopts[] = {
		{ "pid", required_argument, NULL, O_PID },
		{ "exclude-pid", required_argument, NULL, O_EXCLUDE_PID },
		{ "cgroup", required_argument, NULL, O_CGROUP },
		{ "dport", required_argument, NULL, O_DPORT },
		{ "min-latency-us", required_argument, NULL, O_MIN_LAT },
		{ "stats-interval", required_argument, NULL, O_STATS },
		{ "ringbuf-mb", required_argument, NULL, O_RINGBUF },
		{ "attach", required_argument, NULL, O_ATTACH },
		{ "verbose", no_argument, NULL, O_VERBOSE },
		{ "version", no_argument, NULL, O_VERSION },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	opterr = 0; /* we print our own messages */
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case O_PID:
			if (opt.n_pids == TCPLAT_MAX_FILTER)
				usage_error("at most %d --pid flags", TCPLAT_MAX_FILTER);
			opt.pids[opt.n_pids++] = parse_uint("--pid", optarg, 1, 4194304);
			break;
		case O_EXCLUDE_PID:
			if (opt.n_exclude_pids == TCPLAT_MAX_FILTER)
				usage_error("at most %d --exclude-pid flags", TCPLAT_MAX_FILTER);
			opt.exclude_pids[opt.n_exclude_pids++] =
				parse_uint("--exclude-pid", optarg, 1, 4194304);
			break;
		case O_CGROUP:
			if (opt.n_cgroups == TCPLAT_MAX_FILTER)
				usage_error("at most %d --cgroup flags", TCPLAT_MAX_FILTER);
			opt.cgroup_paths[opt.n_cgroups] = optarg;
			opt.cgroup_ids[opt.n_cgroups++] = cgroup_id_of(optarg);
			break;
		case O_DPORT:
			if (opt.n_dports == TCPLAT_MAX_FILTER)
				usage_error("at most %d --dport flags", TCPLAT_MAX_FILTER);
			opt.dports[opt.n_dports++] = parse_uint("--dport", optarg, 1, 65535);
			break;
		case O_MIN_LAT:
			opt.min_latency_us = parse_uint("--min-latency-us", optarg, 0,
							UINT64_MAX / 1000);
			break;
		case O_STATS: {
			char *end;
			double v;

			errno = 0;
			v = strtod(optarg, &end);
			if (errno || end == optarg || *end || !isfinite(v) || v < 0 || v > 86400 ||
			    (v > 0 && v < 0.01))
				usage_error("--stats-interval needs seconds: 0 (off) or 0.01 to 86400, got '%s'",
					    optarg);
			opt.stats_interval = v;
			break;
		}
		case O_RINGBUF: {
			uint64_t mb = parse_uint("--ringbuf-mb", optarg, 1, 1024);

			if (mb & (mb - 1))
				usage_error("--ringbuf-mb must be a power of 2, got '%s'", optarg);
			opt.ringbuf_mb = mb;
			break;
		}
		case O_ATTACH:
			if (strcmp(optarg, "auto") == 0)
				opt.attach = ATTACH_AUTO;
			else if (strcmp(optarg, "btf") == 0)
				opt.attach = ATTACH_BTF;
			else if (strcmp(optarg, "tracepoint") == 0)
				opt.attach = ATTACH_TRACEPOINT;
			else
				usage_error("--attach must be auto, btf or tracepoint, got '%s'", optarg);
			break;
		case O_VERBOSE:
			opt.verbose = true;
			break;
		case O_VERSION:
			printf(PROG " " VERSION "\n");
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			usage_error("%s needs a value", argv[optind - 1]);
		default:
			if (optopt)
				usage_error("unknown flag '-%c'", optopt);
			usage_error("unknown flag '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (!opt.verbose && level != LIBBPF_WARN)
		return 0;
	if (!opt.verbose)
		return 0; /* warnings are summarised by our own error messages */
	return vfprintf(stderr, fmt, ap);
}

/* Effective capability bit from /proc/self/status. */
static bool has_cap(int cap)
{
	char line[256];
	unsigned long long eff = 0;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	fclose(f);
	return eff & (1ULL << cap);
}

static void check_prerequisites(void)
{
	const int CAP_SYS_ADMIN_ = 21, CAP_PERFMON_ = 38, CAP_BPF_ = 39;

	if (geteuid() != 0 && !has_cap(CAP_SYS_ADMIN_) &&
	    !(has_cap(CAP_BPF_) && has_cap(CAP_PERFMON_))) {
		logf_("not running as root: loading eBPF programs needs root (or CAP_BPF and "
		      "CAP_PERFMON); run it with sudo");
		exit(1);
	}
	if (access(VMLINUX_BTF, R_OK) != 0) {
		logf_("this kernel has no BTF (%s: %s): the probe is CO-RE and needs a kernel "
		      "built with CONFIG_DEBUG_INFO_BTF=y (default on most distributions since "
		      "2020; on Debian/Ubuntu use the distribution kernel)",
		      VMLINUX_BTF, strerror(errno));
		exit(1);
	}
}

static int64_t ts_of(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* bpf_ktime_get_ns() is CLOCK_MONOTONIC. Take the realtime reading with the
 * tightest monotonic bracket; the offset stays fixed for the whole run, so
 * ts_ns keeps the kernel's order (a later clock step does not reorder events). */
static void init_wall_offset(void)
{
	int64_t best_gap = INT64_MAX;

	for (int i = 0; i < 16; i++) {
		int64_t m1 = ts_of(CLOCK_MONOTONIC);
		int64_t r = ts_of(CLOCK_REALTIME);
		int64_t m2 = ts_of(CLOCK_MONOTONIC);

		if (m2 - m1 < best_gap) {
			best_gap = m2 - m1;
			wall_offset_ns = r - (m1 + (m2 - m1) / 2);
		}
	}
}

/* ---- output ---- */

static char *put_str(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

static char *put_u64(char *p, uint64_t v)
{
	char tmp[20];
	int n = 0;

	do {
		tmp[n++] = '0' + v % 10;
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *put_i64(char *p, int64_t v)
{
	if (v < 0) {
		*p++ = '-';
		return put_u64(p, -(uint64_t)v);
	}
	return put_u64(p, v);
}

/* Length of a valid UTF-8 sequence at s (n bytes available), 0 if invalid. */
static int utf8_len(const unsigned char *s, int n)
{
	int len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (int i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

/* JSON string body: quotes, backslashes and control characters escaped; bytes
 * that are not valid UTF-8 (comm is cut at 15 bytes, possibly mid-character)
 * become \u00XX so the line stays valid JSON. */
static char *put_json_str(char *p, const char *s, int max)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	int n = strnlen(s, max);

	for (int i = 0; i < n;) {
		unsigned char c = u[i];
		int len;

		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = c;
			i++;
		} else if (c < 0x20 || c == 0x7f || !(len = utf8_len(u + i, n - i))) {
			p = put_str(p, "\\u00");
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
			i++;
		} else {
			memcpy(p, u + i, len);
			p += len;
			i += len;
		}
	}
	return p;
}

/* Dotted quad; glibc's inet_ntop goes through sprintf, a third of the
 * per-event cost of the whole output path. */
static char *put_ipv4(char *p, const uint8_t *a)
{
	for (int i = 0; i < 4; i++) {
		if (i)
			*p++ = '.';
		p = put_u64(p, a[i]);
	}
	return p;
}

static char *put_addr(char *p, int af, const uint8_t *a)
{
	char buf[INET6_ADDRSTRLEN];

	if (af == AF_INET)
		return put_ipv4(p, a);
	if (!inet_ntop(AF_INET6, a, buf, sizeof(buf)))
		buf[0] = 0;
	return put_str(p, buf);
}

static const char *result_of(const struct tcplat_event *e)
{
	if (e->ok)
		return "ok";
	switch (e->err) {
	case 0:
		return "aborted";
	case ECONNREFUSED:
		return "refused";
	case ETIMEDOUT:
		return "timeout";
	case EHOSTUNREACH:
	case ENETUNREACH:
		return "unreachable";
	default:
		return "error";
	}
}

static void write_out(const char *buf, size_t len)
{
	if (stdout_broken)
		return;
	if (fwrite(buf, 1, len, stdout) != len) {
		stdout_broken = true;
		exiting = 1;
	}
}

static void flush_out(void)
{
	if (!stdout_broken && fflush(stdout) != 0) {
		stdout_broken = true;
		exiting = 1;
	}
}

static int handle_event(void *ctx, void *data, size_t size)
{
	const struct tcplat_event *e = data;
	char line[512], *p = line;
	int af = e->family == 10 ? AF_INET6 : AF_INET;

	(void)ctx;
	if (size < sizeof(*e))
		return 0;

	p = put_str(p, "{\"type\":\"connect\",\"ts_ns\":");
	p = put_i64(p, (int64_t)e->start_ns + wall_offset_ns);
	p = put_str(p, ",\"latency_ns\":");
	p = put_u64(p, e->latency_ns);
	p = put_str(p, ",\"result\":\"");
	p = put_str(p, result_of(e));
	p = put_str(p, "\",\"errno\":");
	p = put_i64(p, e->ok ? 0 : e->err);
	p = put_str(p, ",\"syn_retrans\":");
	p = put_u64(p, e->syn_retrans);
	p = put_str(p, ",\"pid\":");
	p = put_u64(p, e->pid);
	p = put_str(p, ",\"tid\":");
	p = put_u64(p, e->tid);
	p = put_str(p, ",\"comm\":\"");
	p = put_json_str(p, e->comm, TCPLAT_COMM_LEN);
	p = put_str(p, "\",\"cgroup_id\":");
	p = put_u64(p, e->cgroup_id);
	p = put_str(p, af == AF_INET6 ? ",\"family\":\"ipv6\",\"saddr\":\"" :
					",\"family\":\"ipv4\",\"saddr\":\"");
	p = put_addr(p, af, e->saddr);
	p = put_str(p, "\",\"sport\":");
	p = put_u64(p, e->sport);
	p = put_str(p, ",\"daddr\":\"");
	p = put_addr(p, af, e->daddr);
	p = put_str(p, "\",\"dport\":");
	p = put_u64(p, e->dport);
	p = put_str(p, "}\n");
	write_out(line, p - line);
	n_events++;
	return 0;
}

static uint64_t read_counter(struct tcplat_bpf *skel, uint32_t idx)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t sum = 0;
	uint64_t *vals;

	if (ncpu <= 0)
		return 0;
	vals = calloc(ncpu, sizeof(*vals));
	if (!vals)
		return 0;
	if (bpf_map_lookup_elem(bpf_map__fd(skel->maps.counters), &idx, vals) == 0)
		for (int i = 0; i < ncpu; i++)
			sum += vals[i];
	free(vals);
	return sum;
}

static uint64_t recursion_misses(struct bpf_program *prog)
{
	struct bpf_prog_info info = {};
	uint32_t len = sizeof(info);

	if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) != 0)
		return 0;
	return info.recursion_misses;
}

static struct bpf_program *state_prog; /* the attached inet_sock_set_state program */
static uint64_t misses_reported;

static void print_stats(struct tcplat_bpf *skel)
{
	char line[160], *p = line;
	uint64_t misses = recursion_misses(state_prog);

	if (misses > misses_reported) {
		logf_("warning: the kernel skipped %llu runs of the state hook (a tracepoint "
		      "fired inside another BPF program on the same CPU); up to that many "
		      "attempts may be missing",
		      (unsigned long long)(misses - misses_reported));
		misses_reported = misses;
	}
	p = put_str(p, "{\"type\":\"stats\",\"ts_ns\":");
	p = put_i64(p, ts_of(CLOCK_MONOTONIC) + wall_offset_ns);
	p = put_str(p, ",\"events\":");
	p = put_u64(p, n_events);
	p = put_str(p, ",\"dropped\":");
	p = put_u64(p, read_counter(skel, TCPLAT_CNT_DROPPED));
	p = put_str(p, "}\n");
	write_out(line, p - line);
	flush_out();
}

/* ---- loading ---- */

static bool btf_has_typedef(const struct btf *btf, const char *name)
{
	return btf && btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF) >= 0;
}

/* Number of arguments of a raw tracepoint (btf_trace_X is a pointer to a
 * function whose first argument is the void *__data cookie). */
static int tp_btf_nargs(const struct btf *btf, const char *name)
{
	const struct btf_type *t;
	int id = btf ? btf__find_by_name_kind(btf, name, BTF_KIND_TYPEDEF) : -1;

	if (id < 0)
		return -1;
	t = btf__type_by_id(btf, btf__type_by_id(btf, id)->type); /* PTR */
	if (!t || !btf_is_ptr(t))
		return -1;
	t = btf__type_by_id(btf, t->type);
	if (!t || !btf_is_func_proto(t))
		return -1;
	return btf_vlen(t) - 1;
}

static bool is_tracefs(const char *path)
{
	struct statfs sfs;

	return statfs(path, &sfs) == 0 && sfs.f_type == TRACEFS_MAGIC;
}

/* Classic tracepoints are attached through tracefs; libbpf looks at
 * /sys/kernel/debug/tracing if it exists, else /sys/kernel/tracing. */
static int ensure_tracefs(void)
{
	if (access("/sys/kernel/debug/tracing/events", F_OK) == 0 ||
	    access(TRACEFS "/events", F_OK) == 0)
		return 0;
	if (!is_tracefs(TRACEFS)) {
		if (mount("nodev", TRACEFS, "tracefs", 0, NULL) != 0) {
			logf_("tracefs is not mounted and mounting it at %s failed: %s; mount it "
			      "yourself: mount -t tracefs nodev %s",
			      TRACEFS, strerror(errno), TRACEFS);
			return -1;
		}
		logf_("mounted tracefs at %s", TRACEFS);
	}
	return 0;
}

static int check_tracepoint(const char *cat, const char *name)
{
	char p1[256], p2[256];

	snprintf(p1, sizeof(p1), TRACEFS "/events/%s/%s", cat, name);
	snprintf(p2, sizeof(p2), "/sys/kernel/debug/tracing/events/%s/%s", cat, name);
	if (access(p1, F_OK) == 0 || access(p2, F_OK) == 0)
		return 0;
	logf_("tracepoint %s:%s is missing (no %s): it needs Linux >= 4.16 with "
	      "CONFIG_TRACEPOINTS and CONFIG_INET; upgrade the kernel",
	      cat, name, p1);
	return -1;
}

static void explain_load_error(int err)
{
	FILE *f;
	char lockdown[128] = "";

	if (err == -EPERM || err == -EACCES) {
		f = fopen("/sys/kernel/security/lockdown", "r");
		if (f) {
			if (!fgets(lockdown, sizeof(lockdown), f))
				lockdown[0] = 0;
			fclose(f);
		}
		if (strstr(lockdown, "[confidentiality]"))
			logf_("BPF not permitted: the kernel is locked down (lockdown=confidentiality "
			      "forbids reading kernel memory); boot with lockdown=integrity or none");
		else
			logf_("BPF not permitted (%s): run as root on the host, or give the container "
			      "CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE (or --privileged) and no "
			      "seccomp filter that blocks bpf(2)",
			      strerror(-err));
	} else {
		logf_("loading the BPF programs failed: %s; rerun with --verbose to see the "
		      "libbpf/verifier log", strerror(-err));
	}
}

static struct tcplat_bpf *open_and_load(bool use_btf, int retrans_nargs, int *errp)
{
	struct tcplat_bpf *skel;
	int err;

	skel = tcplat_bpf__open();
	if (!skel) {
		*errp = -errno;
		return NULL;
	}
	skel->rodata->filter_pid = opt.n_pids > 0;
	skel->rodata->filter_exclude_pid = opt.n_exclude_pids > 0;
	skel->rodata->filter_dport = opt.n_dports > 0;
	skel->rodata->filter_cgroup = opt.n_cgroups > 0;
	skel->rodata->min_latency_ns = opt.min_latency_us * 1000;
	skel->rodata->retrans_has_err = retrans_nargs >= 3;
	bpf_map__set_max_entries(skel->maps.events, opt.ringbuf_mb << 20);
	/* hash maps are preallocated: size the filter sets to what they hold */
	bpf_map__set_max_entries(skel->maps.pids, opt.n_pids ? opt.n_pids : 1);
	bpf_map__set_max_entries(skel->maps.exclude_pids, opt.n_exclude_pids ? opt.n_exclude_pids : 1);
	bpf_map__set_max_entries(skel->maps.dports, opt.n_dports ? opt.n_dports : 1);
	bpf_map__set_max_entries(skel->maps.cgroups, opt.n_cgroups ? opt.n_cgroups : 1);

	bpf_program__set_autoload(skel->progs.btf_inet_sock_set_state, use_btf);
	bpf_program__set_autoload(skel->progs.btf_tcp_retransmit_skb, use_btf);
	bpf_program__set_autoload(skel->progs.tp_inet_sock_set_state, !use_btf);
	bpf_program__set_autoload(skel->progs.tp_tcp_retransmit_skb, !use_btf);

	err = tcplat_bpf__load(skel);
	if (err) {
		tcplat_bpf__destroy(skel);
		*errp = err;
		return NULL;
	}
	return skel;
}

static int fill_filters(struct tcplat_bpf *skel)
{
	uint8_t one = 1;
	int err = 0;

	for (int i = 0; i < opt.n_pids && !err; i++)
		err = bpf_map_update_elem(bpf_map__fd(skel->maps.pids), &opt.pids[i], &one, BPF_ANY);
	for (int i = 0; i < opt.n_exclude_pids && !err; i++)
		err = bpf_map_update_elem(bpf_map__fd(skel->maps.exclude_pids), &opt.exclude_pids[i],
					  &one, BPF_ANY);
	for (int i = 0; i < opt.n_dports && !err; i++)
		err = bpf_map_update_elem(bpf_map__fd(skel->maps.dports), &opt.dports[i], &one, BPF_ANY);
	for (int i = 0; i < opt.n_cgroups && !err; i++)
		err = bpf_map_update_elem(bpf_map__fd(skel->maps.cgroups), &opt.cgroup_ids[i], &one,
					  BPF_ANY);
	if (err)
		logf_("filling the filter maps failed: %s", strerror(errno));
	return err;
}

static int attach(struct tcplat_bpf *skel, bool use_btf)
{
	struct bpf_program *progs[2];
	struct bpf_link *link;
	int n = 2;

	progs[0] = use_btf ? skel->progs.btf_inet_sock_set_state : skel->progs.tp_inet_sock_set_state;
	progs[1] = use_btf ? skel->progs.btf_tcp_retransmit_skb : skel->progs.tp_tcp_retransmit_skb;
	for (int i = 0; i < n; i++) {
		link = bpf_program__attach(progs[i]);
		if (!link) {
			int err = -errno;

			logf_("attaching %s failed: %s", bpf_program__section_name(progs[i]),
			      strerror(-err));
			return err;
		}
		/* the skeleton destroys links it knows about; keep ours there */
		if (progs[i] == skel->progs.btf_inet_sock_set_state)
			skel->links.btf_inet_sock_set_state = link;
		else if (progs[i] == skel->progs.btf_tcp_retransmit_skb)
			skel->links.btf_tcp_retransmit_skb = link;
		else if (progs[i] == skel->progs.tp_inet_sock_set_state)
			skel->links.tp_inet_sock_set_state = link;
		else
			skel->links.tp_tcp_retransmit_skb = link;
	}
	state_prog = progs[0];
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	exiting = 1;
}

static void describe_filters(char *buf, size_t len)
{
	size_t n = 0;

#define ADD(...) do { if (n < len) n += snprintf(buf + n, len - n, __VA_ARGS__); } while (0)
	ADD("filters:");
	for (int i = 0; i < opt.n_pids; i++)
		ADD(" pid=%u", opt.pids[i]);
	for (int i = 0; i < opt.n_exclude_pids; i++)
		ADD(" exclude-pid=%u", opt.exclude_pids[i]);
	for (int i = 0; i < opt.n_cgroups; i++)
		ADD(" cgroup=%s(id %llu)", opt.cgroup_paths[i], (unsigned long long)opt.cgroup_ids[i]);
	for (int i = 0; i < opt.n_dports; i++)
		ADD(" dport=%u", opt.dports[i]);
	if (opt.min_latency_us)
		ADD(" min-latency-us=%llu", (unsigned long long)opt.min_latency_us);
	if (!opt.n_pids && !opt.n_exclude_pids && !opt.n_cgroups && !opt.n_dports && !opt.min_latency_us)
		ADD(" none");
#undef ADD
}

int main(int argc, char **argv)
{
	static char outbuf[1 << 16];
	struct tcplat_bpf *skel = NULL;
	struct ring_buffer *rb = NULL;
	struct btf *vmlinux = NULL;
	bool use_btf, have_btf_tp;
	int retrans_nargs, err = 0, ret = 1, busy_rounds = 0;
	int64_t next_stats = 0, stats_ns = (int64_t)(opt.stats_interval * 1e9);
	char filters[2048];
	struct sigaction sa = { .sa_handler = on_signal };

	parse_args(argc, argv);
	stats_ns = (int64_t)(opt.stats_interval * 1e9);
	check_prerequisites();
	libbpf_set_print(libbpf_print);

	/* Full buffering, flushed after every ring-buffer batch and stats line:
	 * readers get whole lines without delay, and a burst costs one write(2)
	 * per batch instead of one per line. */
	setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN); /* a closed stdout shows up as EPIPE: exit 0 */

	vmlinux = btf__load_vmlinux_btf();
	if (!vmlinux) {
		logf_("cannot parse the kernel BTF at %s: %s", VMLINUX_BTF, strerror(errno));
		return 1;
	}
	have_btf_tp = btf_has_typedef(vmlinux, "btf_trace_inet_sock_set_state") &&
		      btf_has_typedef(vmlinux, "btf_trace_tcp_retransmit_skb");
	retrans_nargs = tp_btf_nargs(vmlinux, "btf_trace_tcp_retransmit_skb");
	btf__free(vmlinux);

	if (opt.attach == ATTACH_BTF && !have_btf_tp) {
		logf_("--attach btf: the kernel BTF has no raw tracepoints inet_sock_set_state/"
		      "tcp_retransmit_skb; use --attach tracepoint (Linux >= 4.16) or upgrade the kernel");
		return 1;
	}
	use_btf = opt.attach == ATTACH_BTF || (opt.attach == ATTACH_AUTO && have_btf_tp);

	for (;;) {
		bool loaded;

		if (!use_btf && (ensure_tracefs() || check_tracepoint("sock", "inet_sock_set_state") ||
				 check_tracepoint("tcp", "tcp_retransmit_skb")))
			goto out;
		skel = open_and_load(use_btf, retrans_nargs, &err);
		loaded = skel != NULL;
		if (loaded) {
			err = fill_filters(skel);
			if (!err)
				err = attach(skel, use_btf);
			if (!err)
				break;
			tcplat_bpf__destroy(skel);
			skel = NULL;
		}
		if (use_btf && opt.attach == ATTACH_AUTO) {
			logf_("BTF raw tracepoints failed (%s); falling back to classic tracepoints",
			      strerror(-err));
			use_btf = false;
			continue;
		}
		if (!loaded || err == -EPERM || err == -EACCES)
			explain_load_error(err);
		goto out;
	}

	rb = ring_buffer__new(bpf_map__fd(skel->maps.events), handle_event, NULL, NULL);
	if (!rb) {
		logf_("creating the ring buffer reader failed: %s", strerror(errno));
		goto out;
	}

	init_wall_offset();
	describe_filters(filters, sizeof(filters));
	logf_("attached (%s: sock:inet_sock_set_state, tcp:tcp_retransmit_skb) pid=%d %s",
	      use_btf ? "tp_btf" : "tracepoint", getpid(), filters);

	if (stats_ns > 0)
		next_stats = ts_of(CLOCK_MONOTONIC) + stats_ns;
	while (!exiting) {
		/* The kernel side wakes us only for the first event after a quiet
		 * period (see WAKEUP_NS in tcplat.bpf.c); while events flow, poll
		 * every 10 ms, and keep doing so for two empty rounds. */
		int timeout_ms = busy_rounds > 0 ? 10 : 1000;
		int n;

		if (stats_ns > 0) {
			int64_t left = next_stats - ts_of(CLOCK_MONOTONIC);
			int to_stats = left <= 0 ? 0 : (int)((left + 999999) / 1000000);

			if (to_stats < timeout_ms)
				timeout_ms = to_stats;
		}
		n = ring_buffer__poll(rb, timeout_ms);
		if (n < 0 && n != -EINTR) {
			logf_("reading the ring buffer failed: %s", strerror(-n));
			goto out;
		}
		err = ring_buffer__consume(rb); /* records submitted without a wakeup */
		if (err < 0) {
			logf_("reading the ring buffer failed: %s", strerror(-err));
			goto out;
		}
		if (n > 0 || err > 0)
			busy_rounds = 2;
		else if (busy_rounds > 0)
			busy_rounds--;
		flush_out();
		if (stats_ns > 0 && ts_of(CLOCK_MONOTONIC) >= next_stats) {
			print_stats(skel);
			next_stats += stats_ns;
			if (next_stats < ts_of(CLOCK_MONOTONIC)) /* we fell behind: do not burst */
				next_stats = ts_of(CLOCK_MONOTONIC) + stats_ns;
		}
	}

	/* Whatever already completed in the kernel still gets written. */
	ring_buffer__consume(rb);
	if (stats_ns > 0)
		print_stats(skel);
	flush_out();
	ret = 0;
	if (stdout_broken)
		logf_("stdout closed; exiting");
out:
	ring_buffer__free(rb);
	tcplat_bpf__destroy(skel);
	return ret;
}
