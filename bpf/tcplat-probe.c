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
#include <poll.h>
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
#include "tls_user.h"

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
enum probe_mode { MODE_STREAM, MODE_HIST };

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
	enum probe_mode mode;
	double hist_interval; /* seconds */
	uint32_t inflight_max;
	uint32_t inflight_fast; /* slots, a power of 2, or 0 */
	uint32_t hist_keys;
	uint32_t sessions_max;
	bool no_close;
	bool zero_windows;
	bool no_connect_exit;
	bool verbose;
	bool tls_off;
} opt = {
	.stats_interval = 10,
	.ringbuf_mb = 4,
	.attach = ATTACH_AUTO,
	.mode = MODE_STREAM,
	.hist_interval = 10,
	.inflight_max = TCPLAT_MAX_INFLIGHT,
	.inflight_fast = 4096,
	.hist_keys = TCPLAT_MAX_HIST,
	.sessions_max = TCPLAT_MAX_SESSIONS,
};

static volatile sig_atomic_t exiting; /* number of SIGINT/SIGTERM received */
static uint64_t n_events;      /* connect lines written (hist mode: attempts in hist lines) */
static uint64_t n_closes;      /* close lines written */
static bool close_on;          /* close events are reported */
static bool zw_on;             /* ... with zero-window counts (--zero-windows) */
static bool stdout_broken;
static int64_t started_ns;     /* Unix ns at attach: identifies this run */

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
"eBPF (tracepoints sock:inet_sock_set_state, tcp:tcp_retransmit_skb and\n"
"syscalls:sys_exit_connect; no kprobes) and prints one JSON object per attempt\n"
"(--mode stream) or per-window histograms (--mode hist) on stdout. Needs root\n"
"(or CAP_BPF+CAP_PERFMON) and a kernel with BTF (/sys/kernel/btf/vmlinux).\n"
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
"Mode:\n"
"  --mode stream        (default) one \"connect\" line per attempt\n"
"  --mode hist          no per-attempt lines: exact latency histograms per\n"
"                       (cgroup, process, destination, result) are kept in the\n"
"                       kernel and printed as \"hist\" lines every window; the\n"
"                       cheapest mode, for busy hosts (see bpf/README.md)\n"
"  --hist-interval S    hist mode: window length in seconds (default 10)\n"
"  --hist-keys N        hist mode: distinct keys per window (default 4096); more\n"
"                       are counted in stats drops.hist_full\n"
"\n"
"Close events (stream mode):\n"
"  (default)            one \"close\" line per outbound connection that reached\n"
"                       ESTABLISHED, when it reaches CLOSE: lifespan, bytes,\n"
"                       retransmits, smoothed RTT, who closed it (adds the\n"
"                       tracepoints tcp:tcp_receive_reset, tcp:tcp_send_reset)\n"
"  --no-close           no close lines: only connect attempts (cheaper: no\n"
"                       per-connection state after the handshake); hist mode\n"
"                       never reports closes\n"
"  --zero-windows       close lines also count the times the peer advertised a\n"
"                       zero window (zero_windows); attaches tcp:tcp_probe,\n"
"                       which runs for every segment received on an\n"
"                       established socket (see bpf/README.md for its cost;\n"
"                       BTF raw tracepoints only)\n"
"  --sessions-max N     established connections tracked at once (default\n"
"                       65536, preallocated); more are not reported and are\n"
"                       counted in stats drops.session_full\n"
"\n"
"Output and tuning:\n"
"  --stats-interval S   print a \"stats\" line every S seconds (decimals allowed;\n"
"                       default 10; 0 disables stats lines except the last)\n"
"  --ringbuf-mb N       size of the kernel->user ring buffer in MiB, a power of 2\n"
"                       (default 4); raise it if stats report drops.ringbuf_full\n"
"  --inflight-fast N    BTF path: slots of the direct-mapped in-flight table, the\n"
"                       cheapest place for an attempt (a power of 2, default\n"
"                       4096; 0: none). A taken slot sends it to the hash:\n"
"  --inflight-max N     attempts in flight kept in the preallocated hash\n"
"                       (default 16384). More go to socket storage (BTF path: no\n"
"                       limit, nothing lost) or, on the classic-tracepoint\n"
"                       fallback, are counted in drops.inflight_full\n"
"  --no-connect-exit    do not attach syscalls:sys_exit_connect. Any syscall\n"
"                       tracepoint puts every syscall of the host on the kernel's\n"
"                       syscall-tracing path (tens of ns each); without it, a\n"
"                       connect() failing inside the kernel (EADDRNOTAVAIL,\n"
"                       ENETUNREACH, EACCES) shows as aborted or not at all\n"
"  --attach MODE        auto (default): BTF raw tracepoints (tp_btf), falling back\n"
"                       to classic tracepoints; btf or tracepoint force one\n"
"  --tls on|off         TLS client handshakes through OpenSSL (shared libssl, node):\n"
"                       `tls` lines (default on when the uprobes attach; see\n"
"                       bpf/README.md, \"TLS handshakes\", for what is covered)\n"
"  --verbose            also print libbpf's log (e.g. the verifier's) on stderr\n"
"  --version            print the version and exit\n"
"  -h, --help           print this help and exit\n"
"\n"
"Output (stdout, one JSON object per line, written in whole lines and flushed\n"
"after every batch read from the kernel: a line reaches a reader within ~20 ms):\n"
"  {\"type\":\"connect\",\"ts_ns\":1764100000123456789,\"latency_ns\":1023456789,\n"
"   \"result\":\"ok\",\"errno\":0,\"syn_retrans\":1,\"pid\":1234,\"tid\":1240,\n"
"   \"comm\":\"ruby\",\"thread\":\"puma srv tp 0\",\"cgroup_id\":5678,\"family\":\"ipv4\",\n"
"   \"saddr\":\"127.0.0.1\",\"sport\":43340,\"daddr\":\"127.0.0.1\",\"dport\":5432}\n"
"  {\"type\":\"close\",\"ts_ns\":1764100000123456789,\"lifespan_ns\":1512000000,\n"
"   \"pid\":1234,\"tid\":1240,\"comm\":\"ruby\",\"thread\":\"puma srv tp 0\",\n"
"   \"cgroup_id\":5678,\"family\":\"ipv4\",\"saddr\":\"127.0.0.1\",\"sport\":43340,\n"
"   \"daddr\":\"127.0.0.1\",\"dport\":5432,\"bytes_sent\":104857,\n"
"   \"bytes_received\":2048,\"retrans\":2,\"srtt_us\":350,\"closed_by\":\"local\"}\n"
"  {\"type\":\"stats\",\"ts_ns\":1764100001000000000,\"events\":1200,\"dropped\":0,...}\n"
"\n"
"  ts_ns        Unix time (ns) when the SYN was sent; strictly increasing in SYN\n"
"               order and unique on this host. Lines come out in completion\n"
"               order, so a slow attempt prints after faster, later ones.\n"
"  latency_ns   from the SYN to the end of the handshake (ok) or of the attempt;\n"
"               0 when connect() failed before sending anything\n"
"  result       ok | refused (ECONNREFUSED) | timeout (ETIMEDOUT) |\n"
"               unreachable (EHOSTUNREACH, ENETUNREACH) | aborted (no error: the\n"
"               application closed the socket first, e.g. its own timeout) |\n"
"               error (any other errno, e.g. EADDRNOTAVAIL: no free local port)\n"
"  errno        the socket error, or connect()'s own errno when it failed inside\n"
"               the kernel (0 for ok and aborted)\n"
"  syn_retrans  SYNs the kernel had to resend (explains 1 s / 3 s / 7 s steps)\n"
"  pid, tid     process (tgid) and thread that called connect()\n"
"  comm         the process's name (its thread-group leader's), thread: the\n"
"               calling thread's own name; both JSON-escaped (bytes that are\n"
"               not UTF-8 as \\u00XX)\n"
"  cgroup_id    cgroup v2 id of the caller (the inode number of its directory)\n"
"  family       ipv4 | ipv6; an IPv6 socket connected to a v4-mapped address\n"
"               (::ffff:a.b.c.d) is reported as ipv4 with plain IPv4 addresses\n"
"  saddr/sport  local address and port; daddr/dport remote address and port\n"
"  close        ts_ns is its connect's ts_ns (the join key); lifespan_ns from the\n"
"               SYN to CLOSE; bytes_sent = bytes the peer acknowledged,\n"
"               bytes_received; retrans = segments retransmitted (SYNs\n"
"               included); srtt_us = smoothed RTT at close; closed_by: local\n"
"               (this end's FIN came first, or it gave up after retransmit\n"
"               timeouts) | peer (the peer's FIN came first) | reset_in (the\n"
"               peer reset it) | reset_out (this end reset it: close() with\n"
"               unread data or SO_LINGER 0)\n"
"  stats        totals since started_ns: events = connect lines written (hist:\n"
"               attempts in hist lines), dropped = attempts lost, by reason in\n"
"               drops (close losses included: session_full,\n"
"               close_ringbuf_full, session_stale); closes = close lines\n"
"               written; missed = program runs the kernel skipped, per hook\n"
"               tls (unless --tls off): on, handshakes ok/failed, unjoined\n"
"               (without their socket), drops, not_reported, files by\n"
"               outcome (attached, not_openssl, go_crypto_tls, java,\n"
"               attach_failed, unreadable); on:false = uprobes not loaded\n"
"\n"
"stderr gets logs; once the probe is attached it prints a line starting with\n"
"\"" PROG ": attached\". SIGINT/SIGTERM: what was read from the kernel is still\n"
"written (waiting for a slow reader; a second signal gives up and says how many\n"
"lines were not written). Exit status: 0 after SIGINT, SIGTERM or a closed\n"
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
	       O_RINGBUF, O_ATTACH, O_VERBOSE, O_VERSION, O_MODE, O_HIST_INTERVAL,
	       O_HIST_KEYS, O_INFLIGHT_MAX, O_NO_CONNECT_EXIT, O_INFLIGHT_FAST, O_NO_CLOSE,
	       O_SESSIONS_MAX, O_ZERO_WINDOWS, O_TLS };
	static const struct option longopts[] = {
		{ "pid", required_argument, NULL, O_PID },
		{ "exclude-pid", required_argument, NULL, O_EXCLUDE_PID },
		{ "cgroup", required_argument, NULL, O_CGROUP },
		{ "dport", required_argument, NULL, O_DPORT },
		{ "min-latency-us", required_argument, NULL, O_MIN_LAT },
		{ "stats-interval", required_argument, NULL, O_STATS },
		{ "ringbuf-mb", required_argument, NULL, O_RINGBUF },
		{ "attach", required_argument, NULL, O_ATTACH },
		{ "mode", required_argument, NULL, O_MODE },
		{ "hist-interval", required_argument, NULL, O_HIST_INTERVAL },
		{ "hist-keys", required_argument, NULL, O_HIST_KEYS },
		{ "inflight-max", required_argument, NULL, O_INFLIGHT_MAX },
		{ "no-connect-exit", no_argument, NULL, O_NO_CONNECT_EXIT },
		{ "inflight-fast", required_argument, NULL, O_INFLIGHT_FAST },
		{ "no-close", no_argument, NULL, O_NO_CLOSE },
		{ "sessions-max", required_argument, NULL, O_SESSIONS_MAX },
		{ "zero-windows", no_argument, NULL, O_ZERO_WINDOWS },
		{ "tls", required_argument, NULL, O_TLS },
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
		case O_MODE:
			if (strcmp(optarg, "stream") == 0)
				opt.mode = MODE_STREAM;
			else if (strcmp(optarg, "hist") == 0)
				opt.mode = MODE_HIST;
			else
				usage_error("--mode must be stream or hist, got '%s'", optarg);
			break;
		case O_HIST_INTERVAL: {
			char *end;
			double v;

			errno = 0;
			v = strtod(optarg, &end);
			if (errno || end == optarg || *end || !isfinite(v) || v < 0.05 || v > 86400)
				usage_error("--hist-interval needs seconds from 0.05 to 86400, got '%s'", optarg);
			opt.hist_interval = v;
			break;
		}
		case O_HIST_KEYS:
			opt.hist_keys = parse_uint("--hist-keys", optarg, 1, 1 << 22);
			break;
		case O_INFLIGHT_MAX:
			opt.inflight_max = parse_uint("--inflight-max", optarg, 1, 1 << 24);
			break;
		case O_INFLIGHT_FAST: {
			uint64_t n = parse_uint("--inflight-fast", optarg, 0, 1 << 20);

			if (n & (n - 1))
				usage_error("--inflight-fast must be 0 or a power of 2, got '%s'", optarg);
			opt.inflight_fast = n;
			break;
		}
		case O_NO_CONNECT_EXIT:
			opt.no_connect_exit = true;
			break;
		case O_NO_CLOSE:
			opt.no_close = true;
			break;
		case O_ZERO_WINDOWS:
			opt.zero_windows = true;
			break;
		case O_SESSIONS_MAX:
			opt.sessions_max = parse_uint("--sessions-max", optarg, 1, 1 << 24);
			break;
		case O_VERBOSE:
			opt.verbose = true;
			break;
		case O_TLS:
			if (strcmp(optarg, "on") && strcmp(optarg, "off"))
				usage_error("--tls must be on or off, got '%s'", optarg);
			opt.tls_off = !strcmp(optarg, "off");
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

/* ---- kernel time -> Unix time ----
 *
 * The kernel stamps attempts with CLOCK_BOOTTIME (bpf_ktime_get_boot_ns: it
 * keeps counting during a suspend). Unix time = boot time + offset, and the
 * offset moves when the wall clock is stepped (or slewed by NTP) and when the
 * machine resumes from a suspend. It is re-measured every second; a change
 * opens a new epoch that applies from the kernel instant it was measured. A
 * forward change applies at once (order kept: later SYNs get later times). A
 * backward change is applied at half speed (wall time advances at half rate
 * until the new offset is reached), so ts_ns keeps increasing in SYN order.
 */
struct clock_epoch {
	int64_t from_k;     /* CLOCK_BOOTTIME ns from which this epoch applies */
	int64_t off_before; /* offset in force before it */
	int64_t off;        /* the new offset */
};
#define CLOCK_EPOCHS 256
#define CLOCK_CHECK_NS 1000000000LL
#define CLOCK_STEP_LOG_NS 1000000LL  /* log changes of 1 ms or more */
#define CLOCK_NOISE_NS 20000LL       /* smaller changes: measurement noise, kept */
static struct clock_epoch epochs[CLOCK_EPOCHS];
static unsigned n_epochs; /* total ever opened; the last CLOCK_EPOCHS are kept */
static int64_t next_clock_check;
/* Tests only: a file holding a number of ns added to every CLOCK_REALTIME
 * reading, so a test can "step the wall clock" of this process without
 * stepping the machine's (TCPLAT_PROBE_TEST_CLOCK_SHIFT_FILE). */
static const char *test_clock_shift_file;

static int64_t test_clock_shift(void)
{
	char buf[64] = "";
	FILE *f;

	if (!test_clock_shift_file)
		return 0;
	f = fopen(test_clock_shift_file, "r");
	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = 0;
	fclose(f);
	return strtoll(buf, NULL, 10);
}

/* CLOCK_REALTIME - CLOCK_BOOTTIME, from the reading with the tightest bracket;
 * *at gets the boot time of that reading. */
static int64_t measure_offset(int64_t *at)
{
	int64_t best_gap = INT64_MAX, off = 0, shift = test_clock_shift();

	for (int i = 0; i < 16; i++) {
		int64_t b1 = ts_of(CLOCK_BOOTTIME);
		int64_t r = ts_of(CLOCK_REALTIME);
		int64_t b2 = ts_of(CLOCK_BOOTTIME);

		if (b2 - b1 < best_gap) {
			best_gap = b2 - b1;
			off = r + shift - (b1 + (b2 - b1) / 2);
			*at = b2;
		}
	}
	return off;
}

static int64_t epoch_wall(const struct clock_epoch *ep, int64_t k)
{
	int64_t slewed;

	if (ep->off >= ep->off_before)
		return k + ep->off;
	slewed = ep->off_before - (k - ep->from_k) / 2;
	return k + (slewed > ep->off ? slewed : ep->off);
}

/* Unix ns of a CLOCK_BOOTTIME instant. */
static int64_t wall_of(int64_t k)
{
	unsigned first = n_epochs > CLOCK_EPOCHS ? n_epochs - CLOCK_EPOCHS : 0;

	/* newest first: almost every attempt is recent */
	for (unsigned i = n_epochs; i-- > first;) {
		const struct clock_epoch *ep = &epochs[i % CLOCK_EPOCHS];

		if (k >= ep->from_k || i == first)
			return epoch_wall(ep, k);
	}
	return k; /* not reached: the first epoch is opened before attaching */
}

static void clock_check(bool first)
{
	int64_t at = 0, off = measure_offset(&at), cur;

	next_clock_check = at + CLOCK_CHECK_NS;
	if (first) {
		epochs[0] = (struct clock_epoch){ .from_k = INT64_MIN, .off_before = off, .off = off };
		n_epochs = 1;
		return;
	}
	cur = epochs[(n_epochs - 1) % CLOCK_EPOCHS].off;
	if (llabs(off - cur) < CLOCK_NOISE_NS)
		return;
	/* In force at `at` (a backward epoch may still be slewing). */
	epochs[n_epochs % CLOCK_EPOCHS] = (struct clock_epoch){
		.from_k = at,
		.off_before = wall_of(at) - at,
		.off = off,
	};
	n_epochs++;
	if (llabs(off - cur) >= CLOCK_STEP_LOG_NS)
		logf_("wall clock moved by %+.3f ms against the boot-time clock (clock step or "
		      "resume); timestamps follow it from now on%s", (off - cur) / 1e6,
		      off < cur ? " (gradually, at half speed, so they keep increasing)" : "");
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

static const char *result_of(bool ok, int err)
{
	if (ok)
		return "ok";
	switch (err) {
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

/* Our own output buffer and write(2) loop instead of stdio: a signal that
 * interrupts a write blocked on a full pipe (EINTR) must not be taken for a
 * closed stdout, and what was read from the kernel must not be lost. */
static char obuf[1 << 16];
static size_t olen;
static uint64_t olines;     /* lines in obuf */
static uint64_t unwritten;  /* lines given up on (second signal while the reader is stalled) */
static bool gave_up;        /* ... and from then on every line is counted there */

static void flush_out(void)
{
	size_t off = 0;

	while (off < olen && !stdout_broken) {
		ssize_t n = write(STDOUT_FILENO, obuf + off, olen - off);

		if (n > 0) {
			off += n;
			continue;
		}
		if (n < 0 && errno == EINTR) {
			if (exiting >= 2)
				break; /* asked twice: stop waiting for the reader */
			continue;
		}
		if (n < 0 && errno == EAGAIN) { /* a non-blocking stdout */
			struct pollfd pfd = { .fd = STDOUT_FILENO, .events = POLLOUT };

			if (exiting >= 2)
				break;
			poll(&pfd, 1, 100);
			continue;
		}
		stdout_broken = true; /* EPIPE (reader gone) or a real error */
		exiting = exiting ? exiting : 1;
	}
	if (off < olen) {
		if (!stdout_broken) {
			gave_up = true;
			/* whole lines not written: count them; keep a cut line's
			 * remainder out of the stream */
			uint64_t cut = 0;

			for (size_t i = off; i < olen; i++)
				cut += obuf[i] == '\n';
			unwritten += cut;
			n_events -= cut < n_events ? cut : n_events;
		}
		stdout_broken = true;
	}
	olen = 0;
	olines = 0;
}

static void write_out(const char *buf, size_t len)
{
	if (olen + len > sizeof(obuf) && !stdout_broken)
		flush_out();
	if (stdout_broken) {
		unwritten += gave_up; /* not for a reader that is gone (EPIPE) */
		return;
	}
	memcpy(obuf + olen, buf, len);
	olen += len;
	olines++;
}

static const char *closed_by_name(uint32_t c)
{
	switch (c) {
	case TCPLAT_CLOSED_PEER:
		return "peer";
	case TCPLAT_CLOSED_RESET_IN:
		return "reset_in";
	case TCPLAT_CLOSED_RESET_OUT:
		return "reset_out";
	default:
		return "local";
	}
}

/* The fields connect and close lines share: who connected (pid, tid, comm,
 * thread, cgroup_id) and the socket (family, addresses, ports), from
 * ",\"pid\":" to the dport's digits. */
static char *put_who(char *p, const struct tcplat_event *e)
{
	int af = e->family == 10 ? AF_INET6 : AF_INET;

	p = put_str(p, ",\"pid\":");
	p = put_u64(p, e->pid);
	p = put_str(p, ",\"tid\":");
	p = put_u64(p, e->tid);
	p = put_str(p, ",\"comm\":\"");
	p = put_json_str(p, e->comm, TCPLAT_COMM_LEN);
	p = put_str(p, "\",\"thread\":\"");
	p = put_json_str(p, e->thread, TCPLAT_COMM_LEN);
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
	return p;
}

static void handle_close(const struct tcplat_close *r)
{
	const struct tcplat_event *e = &r->c;
	char line[768], *p = line;

	p = put_str(p, "{\"type\":\"close\",\"ts_ns\":");
	p = put_i64(p, wall_of((int64_t)e->start_ns));
	p = put_str(p, ",\"lifespan_ns\":");
	p = put_u64(p, r->lifespan_ns);
	p = put_who(p, e);
	p = put_str(p, ",\"bytes_sent\":");
	p = put_u64(p, r->bytes_sent);
	p = put_str(p, ",\"bytes_received\":");
	p = put_u64(p, r->bytes_received);
	p = put_str(p, ",\"retrans\":");
	p = put_u64(p, r->retrans);
	p = put_str(p, ",\"srtt_us\":");
	p = put_u64(p, r->srtt_us);
	p = put_str(p, ",\"closed_by\":\"");
	p = put_str(p, closed_by_name(r->closed_by));
	if (zw_on) {
		p = put_str(p, "\",\"zero_windows\":");
		p = put_u64(p, r->zero_windows);
		p = put_str(p, "}\n");
	} else {
		p = put_str(p, "\"}\n");
	}
	write_out(line, p - line);
	n_closes++;
}

static int handle_event(void *ctx, void *data, size_t size)
{
	const struct tcplat_event *e = data;
	char line[640], *p = line;

	(void)ctx;
	if (size < sizeof(*e))
		return 0;
	if (stdout_broken) {
		unwritten += gave_up;
		return 0;
	}
	/* The two record kinds differ in size (tcplat.h). */
	if (size >= sizeof(struct tcplat_close)) {
		handle_close(data);
		return 0;
	}

	p = put_str(p, "{\"type\":\"connect\",\"ts_ns\":");
	p = put_i64(p, wall_of((int64_t)e->start_ns));
	p = put_str(p, ",\"latency_ns\":");
	p = put_u64(p, e->latency_ns);
	p = put_str(p, ",\"result\":\"");
	p = put_str(p, result_of(e->ok, e->err));
	p = put_str(p, "\",\"errno\":");
	p = put_i64(p, e->ok ? 0 : e->err);
	p = put_str(p, ",\"syn_retrans\":");
	p = put_u64(p, e->syn_retrans);
	p = put_who(p, e);
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

	if (!prog || bpf_program__fd(prog) < 0 ||
	    bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len) != 0)
		return 0;
	return info.recursion_misses;
}

static struct bpf_program *state_prog, *retrans_prog, *exit_prog; /* attached programs */
static struct bpf_program *rst_in_prog, *rst_out_prog, *zw_prog;
static uint64_t misses_reported;

static void print_stats(struct tcplat_bpf *skel)
{
	static const struct { const char *name; uint32_t idx; } drops[] = {
		{ "ringbuf_full", TCPLAT_CNT_DROP_RINGBUF },
		{ "storage_alloc", TCPLAT_CNT_DROP_STORAGE },
		{ "inflight_full", TCPLAT_CNT_DROP_INFLIGHT },
		{ "pending_full", TCPLAT_CNT_DROP_PENDING },
		{ "hist_full", TCPLAT_CNT_DROP_HIST },
		{ "session_full", TCPLAT_CNT_DROP_SESSION },
		{ "close_ringbuf_full", TCPLAT_CNT_DROP_CLOSE_RINGBUF },
		{ "session_stale", TCPLAT_CNT_DROP_SESSION_STALE },
	};
	enum { NDROPS = sizeof(drops) / sizeof(drops[0]) };
	char line[1024], *p = line;
	uint64_t m_state = recursion_misses(state_prog), m_retrans = recursion_misses(retrans_prog);
	uint64_t m_exit = recursion_misses(exit_prog), vals[NDROPS], total = 0;
	uint64_t m_reset = recursion_misses(rst_in_prog) + recursion_misses(rst_out_prog);
	uint64_t m_zw = recursion_misses(zw_prog);

	if (m_state + m_retrans + m_exit + m_reset + m_zw > misses_reported) {
		logf_("warning: the kernel skipped %llu runs of the probe's hooks (a tracepoint "
		      "fired inside another BPF program on the same CPU); up to that many "
		      "attempts may be missing or incomplete (stats: missed)",
		      (unsigned long long)(m_state + m_retrans + m_exit + m_reset + m_zw - misses_reported));
		misses_reported = m_state + m_retrans + m_exit + m_reset + m_zw;
	}
	for (int i = 0; i < NDROPS; i++)
		total += vals[i] = read_counter(skel, drops[i].idx);
	p = put_str(p, "{\"type\":\"stats\",\"ts_ns\":");
	p = put_i64(p, wall_of(ts_of(CLOCK_BOOTTIME)));
	p = put_str(p, ",\"events\":");
	p = put_u64(p, n_events);
	p = put_str(p, ",\"dropped\":");
	p = put_u64(p, total);
	p = put_str(p, opt.mode == MODE_HIST ? ",\"mode\":\"hist\"" : ",\"mode\":\"stream\"");
	p = put_str(p, ",\"started_ns\":");
	p = put_i64(p, started_ns);
	if (close_on) {
		p = put_str(p, ",\"closes\":");
		p = put_u64(p, n_closes);
	}
	p = put_str(p, ",\"drops\":{");
	for (int i = 0; i < NDROPS; i++) {
		p = put_str(p, i ? ",\"" : "\"");
		p = put_str(p, drops[i].name);
		p = put_str(p, "\":");
		p = put_u64(p, vals[i]);
	}
	p = put_str(p, "},\"missed\":{\"state\":");
	p = put_u64(p, m_state);
	p = put_str(p, ",\"retransmit\":");
	p = put_u64(p, m_retrans);
	p = put_str(p, ",\"connect_exit\":");
	p = put_u64(p, m_exit);
	if (close_on) {
		p = put_str(p, ",\"reset\":");
		p = put_u64(p, m_reset);
	}
	if (zw_on) {
		p = put_str(p, ",\"zero_window\":");
		p = put_u64(p, m_zw);
	}
	p = put_str(p, "}");
	if (!opt.tls_off)
		p += tls_stats_json(p, line + sizeof(line) - 2 - p);
	p = put_str(p, "}\n");
	write_out(line, p - line);
	flush_out();
}

/* ---- --mode hist ---- */

static struct tcplat_hist_key *hist_keys_buf;
static bool hist_on_b;            /* the kernel currently adds to hist_b */
static int64_t hist_window_start; /* CLOCK_BOOTTIME of the last swap */

/* Close the window: put the other (empty) map in place, then print and clear
 * the one the kernel was adding to. The map-in-map update returns only after
 * every BPF program that could still hold the old map has finished
 * (kernel/bpf/syscall.c, maybe_wait_bpf_programs), so the old map is final. */
static int hist_swap_and_print(struct tcplat_bpf *skel)
{
	struct bpf_map *next = hist_on_b ? skel->maps.hist_a : skel->maps.hist_b;
	struct bpf_map *done = hist_on_b ? skel->maps.hist_b : skel->maps.hist_a;
	int outer = bpf_map__fd(skel->maps.hist_current), fd = bpf_map__fd(done);
	uint32_t zero = 0, next_fd = bpf_map__fd(next), n = 0;
	int64_t now, window;
	struct tcplat_hist_key *prev = NULL;

	if (bpf_map_update_elem(outer, &zero, &next_fd, BPF_ANY)) {
		logf_("swapping the histogram maps failed: %s", strerror(errno));
		return -1;
	}
	hist_on_b = !hist_on_b;
	now = ts_of(CLOCK_BOOTTIME);
	window = now - hist_window_start;
	hist_window_start = now;

	while (n < opt.hist_keys && bpf_map_get_next_key(fd, prev, &hist_keys_buf[n]) == 0) {
		prev = &hist_keys_buf[n];
		n++;
	}
	for (uint32_t i = 0; i < n; i++) {
		const struct tcplat_hist_key *k = &hist_keys_buf[i];
		struct tcplat_hist_val v;
		char line[1024], *p = line;
		int af = k->family == 10 ? AF_INET6 : AF_INET;

		if (bpf_map_lookup_elem(fd, k, &v) != 0 || v.count == 0)
			continue;
		p = put_str(p, "{\"type\":\"hist\",\"ts_ns\":");
		p = put_i64(p, wall_of(now));
		p = put_str(p, ",\"window_ns\":");
		p = put_i64(p, window);
		p = put_str(p, ",\"cgroup_id\":");
		p = put_u64(p, k->cgroup_id);
		p = put_str(p, ",\"pid\":");
		p = put_u64(p, k->pid);
		p = put_str(p, ",\"comm\":\"");
		p = put_json_str(p, k->comm, TCPLAT_COMM_LEN);
		p = put_str(p, af == AF_INET6 ? "\",\"family\":\"ipv6\",\"daddr\":\"" :
						"\",\"family\":\"ipv4\",\"daddr\":\"");
		p = put_addr(p, af, k->daddr);
		p = put_str(p, "\",\"dport\":");
		p = put_u64(p, k->dport);
		p = put_str(p, ",\"result\":\"");
		p = put_str(p, result_of(k->ok, k->err));
		p = put_str(p, "\",\"errno\":");
		p = put_i64(p, k->ok ? 0 : k->err);
		p = put_str(p, ",\"count\":");
		p = put_u64(p, v.count);
		p = put_str(p, ",\"sum_ns\":");
		p = put_u64(p, v.sum_ns);
		p = put_str(p, ",\"min_ns\":");
		p = put_u64(p, v.min_ns);
		p = put_str(p, ",\"max_ns\":");
		p = put_u64(p, v.max_ns);
		p = put_str(p, ",\"syn_retrans\":");
		p = put_u64(p, v.syn_retrans);
		p = put_str(p, ",\"buckets\":[");
		for (int b = 0; b < TCPLAT_NBUCKETS; b++) {
			if (b)
				*p++ = ',';
			p = put_u64(p, v.buckets[b]);
		}
		p = put_str(p, "]}\n");
		write_out(line, p - line);
		n_events += v.count;
	}
	for (uint32_t i = 0; i < n; i++)
		bpf_map_delete_elem(fd, &hist_keys_buf[i]);
	flush_out();
	return 0;
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

/* syscalls:sys_exit_connect needs CONFIG_FTRACE_SYSCALLS and tracefs. */
static bool have_exit_tp;

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
	skel->rodata->hist_mode = opt.mode == MODE_HIST;
	skel->rodata->exit_hook = have_exit_tp;
	skel->rodata->close_events = close_on;
	skel->rodata->zero_windows = zw_on && use_btf;
	bpf_map__set_max_entries(skel->maps.sessions, close_on ? opt.sessions_max : 1);
	/* hist mode sends nothing per attempt: a token ring buffer */
	bpf_map__set_max_entries(skel->maps.events,
				 opt.mode == MODE_HIST ? 4096 : opt.ringbuf_mb << 20);
	{
		int ncpu = libbpf_num_possible_cpus(); /* checked in main() */

		skel->rodata->ring_bytes = opt.mode == MODE_HIST ? 4096 : (uint64_t)opt.ringbuf_mb << 20;
		/* unique_start_ns(): room for every possible CPU's number in the low bits */
		while ((1 << skel->rodata->cpu_bits) < ncpu)
			skel->rodata->cpu_bits++;
	}
	bpf_map__set_max_entries(skel->maps.inflight, opt.inflight_max);
	bpf_map__set_max_entries(skel->maps.inflight_fast,
				 use_btf && opt.inflight_fast ? opt.inflight_fast : 1);
	skel->rodata->fast_bits = use_btf && opt.inflight_fast ? __builtin_ctz(opt.inflight_fast) : 0;
	bpf_map__set_max_entries(skel->maps.hist_a, opt.mode == MODE_HIST ? opt.hist_keys : 1);
	bpf_map__set_max_entries(skel->maps.hist_b, opt.mode == MODE_HIST ? opt.hist_keys : 1);
	/* hash maps are preallocated: size the filter sets to what they hold */
	bpf_map__set_max_entries(skel->maps.pids, opt.n_pids ? opt.n_pids : 1);
	bpf_map__set_max_entries(skel->maps.exclude_pids, opt.n_exclude_pids ? opt.n_exclude_pids : 1);
	bpf_map__set_max_entries(skel->maps.dports, opt.n_dports ? opt.n_dports : 1);
	bpf_map__set_max_entries(skel->maps.cgroups, opt.n_cgroups ? opt.n_cgroups : 1);

	bpf_program__set_autoload(skel->progs.btf_inet_sock_set_state, use_btf);
	bpf_program__set_autoload(skel->progs.btf_tcp_retransmit_skb, use_btf);
	bpf_program__set_autoload(skel->progs.tp_inet_sock_set_state, !use_btf);
	bpf_program__set_autoload(skel->progs.tp_tcp_retransmit_skb, !use_btf);
	bpf_program__set_autoload(skel->progs.tp_sys_exit_connect, have_exit_tp);
	bpf_program__set_autoload(skel->progs.btf_tcp_receive_reset, use_btf && close_on);
	bpf_program__set_autoload(skel->progs.btf_tcp_send_reset, use_btf && close_on);
	bpf_program__set_autoload(skel->progs.tp_tcp_receive_reset, !use_btf && close_on);
	bpf_program__set_autoload(skel->progs.tp_tcp_send_reset, !use_btf && close_on);
	bpf_program__set_autoload(skel->progs.btf_tcp_probe, use_btf && zw_on);

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
	struct bpf_program *progs[6];
	int n = 0;

	progs[n++] = use_btf ? skel->progs.btf_inet_sock_set_state : skel->progs.tp_inet_sock_set_state;
	progs[n++] = use_btf ? skel->progs.btf_tcp_retransmit_skb : skel->progs.tp_tcp_retransmit_skb;
	if (have_exit_tp)
		progs[n++] = skel->progs.tp_sys_exit_connect;
	if (close_on) {
		rst_in_prog = use_btf ? skel->progs.btf_tcp_receive_reset : skel->progs.tp_tcp_receive_reset;
		rst_out_prog = use_btf ? skel->progs.btf_tcp_send_reset : skel->progs.tp_tcp_send_reset;
		progs[n++] = rst_in_prog;
		progs[n++] = rst_out_prog;
	}
	if (zw_on && use_btf) {
		zw_prog = skel->progs.btf_tcp_probe;
		progs[n++] = zw_prog;
	}
	for (int i = 0; i < n; i++) {
		struct bpf_link *link = bpf_program__attach(progs[i]);

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
		else if (progs[i] == skel->progs.tp_tcp_retransmit_skb)
			skel->links.tp_tcp_retransmit_skb = link;
		else if (progs[i] == skel->progs.btf_tcp_receive_reset)
			skel->links.btf_tcp_receive_reset = link;
		else if (progs[i] == skel->progs.btf_tcp_send_reset)
			skel->links.btf_tcp_send_reset = link;
		else if (progs[i] == skel->progs.tp_tcp_receive_reset)
			skel->links.tp_tcp_receive_reset = link;
		else if (progs[i] == skel->progs.tp_tcp_send_reset)
			skel->links.tp_tcp_send_reset = link;
		else if (progs[i] == skel->progs.btf_tcp_probe)
			skel->links.btf_tcp_probe = link;
		else
			skel->links.tp_sys_exit_connect = link;
	}
	state_prog = progs[0];
	retrans_prog = progs[1];
	exit_prog = have_exit_tp ? progs[2] : NULL;
	return 0;
}

static void on_signal(int sig)
{
	(void)sig;
	exiting++;
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

/* ---- TLS handshakes (tls.c) ---- */

static void tls_emit(const char *line, size_t len)
{
	write_out(line, len);
}

/* The connect filters, for TLS handshakes (in user space; --cgroup: the exact
 * cgroup, not its descendants). dport 0: the socket is unknown. */
static bool tls_wanted(uint32_t pid, uint64_t cgroup_id, uint16_t dport)
{
	bool in = opt.n_pids == 0;

	for (int i = 0; i < opt.n_pids && !in; i++)
		in = opt.pids[i] == pid;
	for (int i = 0; i < opt.n_exclude_pids && in; i++)
		in = opt.exclude_pids[i] != pid;
	if (in && opt.n_cgroups) {
		in = false;
		for (int i = 0; i < opt.n_cgroups && !in; i++)
			in = opt.cgroup_ids[i] == cgroup_id;
	}
	if (in && opt.n_dports) {
		in = false;
		for (int i = 0; i < opt.n_dports && !in; i++)
			in = opt.dports[i] == dport;
	}
	return in;
}

int main(int argc, char **argv)
{
	struct tcplat_bpf *skel = NULL;
	struct ring_buffer *rb = NULL;
	struct btf *vmlinux = NULL;
	bool use_btf, have_btf_tp;
	int retrans_nargs, err = 0, ret = 1, busy_rounds = 0;
	int64_t next_stats = 0, stats_ns, hist_ns, next_hist = 0;
	char filters[2048];
	struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: see flush_out */

	parse_args(argc, argv);
	stats_ns = (int64_t)(opt.stats_interval * 1e9);
	hist_ns = (int64_t)(opt.hist_interval * 1e9);
	test_clock_shift_file = getenv("TCPLAT_PROBE_TEST_CLOCK_SHIFT_FILE");
	check_prerequisites();
	libbpf_set_print(libbpf_print);

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
	close_on = !opt.no_close && opt.mode == MODE_STREAM;
	if (opt.zero_windows && !close_on)
		usage_error("--zero-windows counts per connection in close events: not with --no-close or --mode hist");
	if (opt.zero_windows && opt.attach == ATTACH_TRACEPOINT)
		usage_error("--zero-windows needs BTF raw tracepoints (tp_btf/tcp_probe): not with --attach tracepoint");
	zw_on = opt.zero_windows;

	/* The syscall exit hook is a classic tracepoint on both paths. */
	have_exit_tp = !opt.no_connect_exit && ensure_tracefs() == 0 &&
		       (access(TRACEFS "/events/syscalls/sys_exit_connect", F_OK) == 0 ||
			access("/sys/kernel/debug/tracing/events/syscalls/sys_exit_connect", F_OK) == 0);
	if (opt.no_connect_exit)
		logf_("--no-connect-exit: a connect() that fails inside the kernel (EADDRNOTAVAIL, "
		      "ENETUNREACH, EACCES) will show as aborted or not at all");
	else if (!have_exit_tp)
		logf_("warning: tracepoint syscalls:sys_exit_connect is missing (needs "
		      "CONFIG_FTRACE_SYSCALLS and tracefs): a connect() that fails inside the kernel "
		      "(EADDRNOTAVAIL, ENETUNREACH, EACCES) will show as aborted or not at all");

	/* unique_start_ns() gives each possible CPU its own low bits: without
	 * their number CPUs could stamp alike */
	if (libbpf_num_possible_cpus() <= 0) {
		logf_("cannot read the number of possible CPUs (/sys/devices/system/cpu/possible): %s",
		      strerror(-libbpf_num_possible_cpus()));
		goto out;
	}
	for (;;) {
		bool loaded;

		if (!use_btf && (ensure_tracefs() || check_tracepoint("sock", "inet_sock_set_state") ||
				 check_tracepoint("tcp", "tcp_retransmit_skb") ||
				 (close_on && (check_tracepoint("tcp", "tcp_receive_reset") ||
					       check_tracepoint("tcp", "tcp_send_reset")))))
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
			if (zw_on) {
				logf_("--zero-windows needs BTF raw tracepoints: close lines carry no "
				      "zero_windows");
				zw_on = false;
			}
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
	if (opt.mode == MODE_HIST) {
		hist_keys_buf = calloc(opt.hist_keys, sizeof(*hist_keys_buf));
		if (!hist_keys_buf) {
			logf_("out of memory for %u histogram keys", opt.hist_keys);
			goto out;
		}
	}

	clock_check(true);
	if (!opt.tls_off) {
		static const struct tls_ops tls_ops = { tls_emit, wall_of, logf_, tls_wanted, false };

		tls_start(rb, &tls_ops); /* on failure: logged, the rest runs on */
	}
	started_ns = wall_of(ts_of(CLOCK_BOOTTIME));
	hist_window_start = ts_of(CLOCK_BOOTTIME);
	describe_filters(filters, sizeof(filters));
	logf_("attached (%s: sock:inet_sock_set_state, tcp:tcp_retransmit_skb%s%s) pid=%d mode=%s "
	      "close=%s %s",
	      use_btf ? (opt.inflight_fast ? "tp_btf, in-flight slots + hash + socket storage" :
			 "tp_btf, in-flight hash + socket storage") : "tracepoint, in-flight hash",
	      have_exit_tp ? ", syscalls:sys_exit_connect" : "",
	      close_on ? (zw_on ? ", tcp:tcp_receive_reset, tcp:tcp_send_reset, tcp:tcp_probe" :
			  ", tcp:tcp_receive_reset, tcp:tcp_send_reset") : "", getpid(),
	      opt.mode == MODE_HIST ? "hist" : "stream", close_on ? "on" : "off", filters);

	if (stats_ns > 0)
		next_stats = ts_of(CLOCK_BOOTTIME) + stats_ns;
	if (opt.mode == MODE_HIST)
		next_hist = ts_of(CLOCK_BOOTTIME) + hist_ns;
	while (!exiting) {
		/* The kernel side wakes us only for the first event after a quiet
		 * period (see WAKEUP_NS in tcplat.bpf.c); while events flow, poll
		 * every 10 ms, and keep doing so for two empty rounds. */
		int timeout_ms = busy_rounds > 0 ? 10 : 1000;
		int64_t now = ts_of(CLOCK_BOOTTIME);
		int n;

		if (stats_ns > 0 && (next_stats - now) / 1000000 < timeout_ms)
			timeout_ms = next_stats <= now ? 0 : (int)((next_stats - now + 999999) / 1000000);
		if (opt.mode == MODE_HIST && (next_hist - now) / 1000000 < timeout_ms)
			timeout_ms = next_hist <= now ? 0 : (int)((next_hist - now + 999999) / 1000000);
		timeout_ms = tls_timeout_ms(timeout_ms);
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
		tls_tick();
		flush_out();
		now = ts_of(CLOCK_BOOTTIME);
		if (now >= next_clock_check)
			clock_check(false);
		if (opt.mode == MODE_HIST && now >= next_hist) {
			if (hist_swap_and_print(skel))
				goto out;
			next_hist += hist_ns;
			if (next_hist < now) /* we fell behind: do not burst */
				next_hist = now + hist_ns;
		}
		if (stats_ns > 0 && now >= next_stats) {
			print_stats(skel);
			next_stats += stats_ns;
			if (next_stats < now)
				next_stats = now + stats_ns;
		}
	}

	/* Whatever already completed in the kernel still gets written, if the
	 * reader is still there (a second signal stops waiting for it). */
	ring_buffer__consume(rb);
	if (opt.mode == MODE_HIST)
		hist_swap_and_print(skel);
	flush_out();
	if (!stdout_broken || unwritten) {
		bool broken = stdout_broken;

		/* the last stats line, even with --stats-interval 0: the totals */
		stdout_broken = false;
		if (!broken)
			print_stats(skel);
		stdout_broken = stdout_broken || broken;
	}
	ret = 0;
	if (unwritten)
		logf_("stopped waiting for the reader (second signal): %llu lines not written",
		      (unsigned long long)unwritten);
	else if (stdout_broken)
		logf_("stdout closed; exiting");
out:
	tls_stop();
	ring_buffer__free(rb);
	tcplat_bpf__destroy(skel);
	free(hist_keys_buf);
	return ret;
}
