// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TLS handshakes, user space: finds OpenSSL targets (the host's libssl, the
 * libssl mapped by running processes, also inside containers via
 * /proc/PID/root, and executables with OpenSSL built in such as node), attaches
 * tls.bpf.c's uprobes to each file once (by device + inode), reads the events
 * and prints `tls` lines through the probe's writer. See bpf/README.md.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tls.h"
#include "tls.skel.h"
#include "tls_user.h"

#define RESCAN_NS (10LL * 1000000000) /* full /proc scan */
#define MAX_TARGETS 1024
#define MAX_PENDING 256

static const struct tls_ops *ops;
static struct tls_bpf *skel;
static struct bpf_link **links;
static size_t n_links, cap_links;
static int64_t next_rescan;

/* Every file looked at once: attached or why not. */
enum why { W_ATTACHED, W_NOT_OPENSSL, W_GO, W_JAVA, W_ATTACH_FAILED, W_UNREADABLE, W_MAX };
static const char *why_name[W_MAX] = { "attached", "not_openssl", "go_crypto_tls", "java",
				       "attach_failed", "unreadable" };
static struct { dev_t dev; ino_t ino; } seen[MAX_TARGETS * 8];
static size_t n_seen;
static uint64_t why_count[W_MAX];
static uint64_t n_ok, n_failed, n_unjoined_lines;

/* Processes that exec'd: scanned again as their libraries load. */
static const int64_t exec_delays_ms[] = { 0, 50, 300, 1000, 3000 };
#define N_DELAYS (sizeof(exec_delays_ms) / sizeof(exec_delays_ms[0]))
static struct { uint32_t pid; int64_t t0; unsigned next; } pending[MAX_PENDING];
static size_t n_pending;

static int64_t boot_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static bool seen_before(dev_t dev, ino_t ino)
{
	for (size_t i = 0; i < n_seen; i++)
		if (seen[i].dev == dev && seen[i].ino == ino)
			return true;
	if (n_seen < sizeof(seen) / sizeof(seen[0])) {
		seen[n_seen].dev = dev;
		seen[n_seen].ino = ino;
		n_seen++;
	}
	return false;
}

/* What the ELF file holds: OpenSSL's handshake function, the client state
 * machine (symbol table), or the marks of TLS stacks we do not cover. */
struct elf_info {
	bool do_handshake, statem_connect, go;
};

static int elf_inspect(const char *path, struct elf_info *info)
{
	Elf *elf;
	Elf_Scn *scn = NULL;
	size_t shstrndx;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	memset(info, 0, sizeof(*info));
	if (fd < 0)
		return -errno;
	elf_version(EV_CURRENT);
	elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (!elf || elf_kind(elf) != ELF_K_ELF || elf_getshdrstrndx(elf, &shstrndx)) {
		if (elf)
			elf_end(elf);
		close(fd);
		return -ENOEXEC;
	}
	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr sh;
		Elf_Data *data;
		const char *sname;

		if (!gelf_getshdr(scn, &sh))
			continue;
		sname = elf_strptr(elf, shstrndx, sh.sh_name);
		if (sname && !strcmp(sname, ".go.buildinfo"))
			info->go = true;
		if (sh.sh_type != SHT_SYMTAB && sh.sh_type != SHT_DYNSYM)
			continue;
		data = elf_getdata(scn, NULL);
		if (!data || !sh.sh_entsize)
			continue;
		for (size_t i = 0; i < sh.sh_size / sh.sh_entsize; i++) {
			GElf_Sym sym;
			const char *name;

			if (!gelf_getsym(data, i, &sym) || GELF_ST_TYPE(sym.st_info) != STT_FUNC ||
			    sym.st_shndx == SHN_UNDEF)
				continue;
			name = elf_strptr(elf, sh.sh_link, sym.st_name);
			if (!name || (name[0] != 'S' && name[0] != 'o'))
				continue;
			if (!strcmp(name, "SSL_do_handshake"))
				info->do_handshake = true;
			else if (!strcmp(name, "ossl_statem_connect"))
				info->statem_connect = true;
		}
	}
	elf_end(elf);
	close(fd);
	return 0;
}

static int attach_one(struct bpf_program *prog, const char *path, const char *func, bool ret)
{
	LIBBPF_OPTS(bpf_uprobe_opts, uo, .func_name = func, .retprobe = ret);
	struct bpf_link *l = bpf_program__attach_uprobe_opts(prog, -1, path, 0, &uo);

	if (!l)
		return -errno;
	if (n_links == cap_links) {
		size_t cap = cap_links ? cap_links * 2 : 64;
		struct bpf_link **n = realloc(links, cap * sizeof(*n));

		if (!n) {
			bpf_link__destroy(l);
			return -ENOMEM;
		}
		links = n;
		cap_links = cap;
	}
	links[n_links++] = l;
	return 0;
}

/* path: as this process can open it (/proc/PID/root/..., /proc/PID/exe);
 * shown: as the target process sees it. */
static void consider(const char *path, const char *shown, bool is_lib)
{
	struct stat st;
	struct elf_info info;
	enum why why;
	int err;
	const char *mode;

	if (stat(path, &st) || !S_ISREG(st.st_mode) || seen_before(st.st_dev, st.st_ino))
		return;
	err = elf_inspect(path, &info);
	if (err) {
		why = W_UNREADABLE;
		if (is_lib)
			ops->log("tls: cannot read %s: %s; its handshakes are not covered", shown,
				 strerror(-err));
		goto out;
	}
	if (!info.do_handshake) {
		const char *base = strrchr(shown, '/');

		base = base ? base + 1 : shown;
		why = info.go ? W_GO : !strcmp(base, "java") ? W_JAVA : W_NOT_OPENSSL;
		if (why == W_GO || why == W_JAVA || is_lib)
			ops->log("tls: %s: %s; its TLS handshakes are not covered", shown,
				 why == W_GO ? "a Go binary (crypto/tls has no uprobe target)" :
				 why == W_JAVA ? "Java (JSSE runs in the JVM)" :
				 "no SSL_do_handshake symbol (stripped, or not OpenSSL)");
		goto out;
	}
	/* The client state machine, when the symbol table has it (node): it
	 * also sees handshakes driven by SSL_read/SSL_write. Else the public
	 * entry points, told client from server by SSL_set_*_state. */
	if (info.statem_connect) {
		mode = "ossl_statem_connect";
		err = attach_one(skel->progs.tls_statem_connect, path, "ossl_statem_connect", false);
		if (!err)
			err = attach_one(skel->progs.tls_handshake_ret, path, "ossl_statem_connect", true);
		if (!err)
			err = attach_one(skel->progs.tls_set_connect_state, path, "SSL_set_connect_state", false);
	} else {
		mode = "SSL_do_handshake, SSL_connect";
		err = attach_one(skel->progs.tls_do_handshake, path, "SSL_do_handshake", false);
		if (!err)
			err = attach_one(skel->progs.tls_handshake_ret, path, "SSL_do_handshake", true);
		if (!err)
			err = attach_one(skel->progs.tls_connect, path, "SSL_connect", false);
		if (!err)
			err = attach_one(skel->progs.tls_handshake_ret, path, "SSL_connect", true);
		if (!err)
			err = attach_one(skel->progs.tls_set_connect_state, path, "SSL_set_connect_state", false);
		if (!err)
			err = attach_one(skel->progs.tls_set_accept_state, path, "SSL_set_accept_state", false);
	}
	if (!err)
		err = attach_one(skel->progs.tls_free, path, "SSL_free", false);
	if (err) {
		why = W_ATTACH_FAILED;
		ops->log("tls: attaching uprobes to %s failed: %s; its handshakes are not covered",
			 shown, strerror(-err));
		goto out;
	}
	why = W_ATTACHED;
	if (strcmp(path, shown))
		ops->log("tls: attached to %s (%s; as %s)", shown, mode, path);
	else
		ops->log("tls: attached to %s (%s)", shown, mode);
out:
	why_count[why]++;
}

static bool is_libssl(const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	return !strncmp(base, "libssl", 6) && strstr(base, ".so");
}

static void scan_pid(uint32_t pid)
{
	char path[PATH_MAX + 64], line[PATH_MAX + 256], exe[PATH_MAX];
	FILE *f;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%u/exe", pid);
	n = readlink(path, exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		if (!strstr(exe, " (deleted)"))
			consider(path, exe, false);
	}
	snprintf(path, sizeof(path), "/proc/%u/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char perms[8], *file;
		int off = 0;

		if (sscanf(line, "%*s %7s %*s %*s %*s%n", perms, &off) != 1 || perms[2] != 'x')
			continue;
		file = line + off;
		while (*file == ' ')
			file++;
		file[strcspn(file, "\n")] = 0;
		if (file[0] != '/' || !is_libssl(file) || strstr(file, " (deleted)"))
			continue;
		snprintf(path, sizeof(path), "/proc/%u/root%s", pid, file);
		consider(path, file, true);
	}
	fclose(f);
}

static void scan_all(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end;
		unsigned long pid = strtoul(de->d_name, &end, 10);

		if (*end || !pid || pid == (unsigned long)getpid())
			continue;
		scan_pid(pid);
	}
	closedir(d);
}

static void scan_standard_paths(void)
{
	static const char *paths[] = {
		"/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3",
		"/lib/aarch64-linux-gnu/libssl.so.3", "/usr/lib/aarch64-linux-gnu/libssl.so.3",
		"/usr/lib64/libssl.so.3", "/usr/lib/libssl.so.3", "/lib/libssl.so.3",
		"/usr/bin/node", "/usr/local/bin/node",
	};
	FILE *p;
	char line[PATH_MAX + 64];

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (access(paths[i], R_OK) == 0)
			consider(paths[i], paths[i], is_libssl(paths[i]));
	p = popen("ldconfig -p 2>/dev/null", "re");
	if (!p)
		return;
	while (fgets(line, sizeof(line), p)) {
		char *arrow = strstr(line, "=> ");

		if (!arrow)
			continue;
		arrow += 3;
		arrow[strcspn(arrow, "\n")] = 0;
		if (is_libssl(arrow))
			consider(arrow, arrow, true);
	}
	pclose(p);
}

static void put_addr(char *buf, size_t len, int family, const uint8_t *a)
{
	if (!inet_ntop(family == 10 ? AF_INET6 : AF_INET, a, buf, len))
		buf[0] = 0;
}

static size_t json_str(char *p, const char *s, size_t max)
{
	size_t n = 0;

	for (size_t i = 0; i < max && s[i]; i++) {
		unsigned char c = s[i];

		if (c == '"' || c == '\\') {
			p[n++] = '\\';
			p[n++] = c;
		} else if (c < 0x20 || c >= 0x7f) { /* comm may be cut mid-character */
			n += sprintf(p + n, "\\u%04x", c);
		} else {
			p[n++] = c;
		}
	}
	p[n] = 0;
	return n;
}

static int handle(void *ctx, void *data, size_t size)
{
	const struct tls_event *e = data;
	char line[768], comm[TLS_COMM_LEN * 6 + 1], thread[TLS_COMM_LEN * 6 + 1];
	char saddr[64] = "", daddr[64] = "";
	const char *family = e->family == 10 ? "ipv6" : e->family == 2 ? "ipv4" : "";
	int n;

	(void)ctx;
	if (size < sizeof(*e))
		return 0;
	if (e->kind == TLS_EV_EXEC) {
		if (n_pending < MAX_PENDING) {
			pending[n_pending].pid = e->pid;
			pending[n_pending].t0 = boot_ns();
			pending[n_pending].next = 0;
			n_pending++;
		}
		return 0;
	}
	if (e->kind != TLS_EV_HANDSHAKE)
		return 0;
	if (ops->wanted && !ops->wanted(e->pid, e->cgroup_id, e->family ? e->dport : 0))
		return 0;
	e->ok ? n_ok++ : n_failed++;
	if (e->family) {
		put_addr(saddr, sizeof(saddr), e->family, e->saddr);
		put_addr(daddr, sizeof(daddr), e->family, e->daddr);
	} else {
		n_unjoined_lines++;
	}
	json_str(comm, e->comm, TLS_COMM_LEN);
	json_str(thread, e->thread, TLS_COMM_LEN);
	n = snprintf(line, sizeof(line),
		     "{\"type\":\"tls\",\"ts_ns\":%lld,\"latency_ns\":%llu,\"result\":\"%s\","
		     "\"pid\":%u,\"tid\":%u,\"comm\":\"%s\",\"thread\":\"%s\",\"cgroup_id\":%llu,"
		     "\"lib\":\"openssl\",\"calls\":%u,\"family\":\"%s\",\"saddr\":\"%s\",\"sport\":%u,"
		     "\"daddr\":\"%s\",\"dport\":%u}\n",
		     (long long)ops->wall_of((int64_t)e->start_ns), (unsigned long long)e->latency_ns,
		     e->ok ? "ok" : "failed", e->pid, e->tid, comm, thread,
		     (unsigned long long)e->cgroup_id, e->calls, family, saddr, e->sport, daddr,
		     e->dport);
	if (n > 0 && (size_t)n < sizeof(line))
		ops->emit(line, n);
	return 0;
}

int tls_start(struct ring_buffer *rb, const struct tls_ops *o)
{
	int err;

	ops = o;
	skel = tls_bpf__open_and_load();
	if (!skel) {
		err = -errno;
		ops->log("tls: loading the TLS programs failed: %s; TLS handshakes are not reported "
			 "(--tls=off silences this)", strerror(-err));
		return err;
	}
	/* The socket join and the exec hook; the uprobes go per target. */
	if (!bpf_program__attach(skel->progs.tls_sys_write) ||
	    !bpf_program__attach(skel->progs.tls_sys_writev) ||
	    !bpf_program__attach(skel->progs.tls_sys_sendto) ||
	    !bpf_program__attach(skel->progs.tls_sys_sendmsg) ||
	    !bpf_program__attach(skel->progs.tls_exec)) {
		err = -errno;
		ops->log("tls: attaching the syscalls:sys_enter_{write,writev,sendto,sendmsg} and "
			 "sched_process_exec tracepoints failed: %s; TLS handshakes are not reported",
			 strerror(-err));
		tls_bpf__destroy(skel);
		skel = NULL;
		return err;
	}
	err = ring_buffer__add(rb, bpf_map__fd(skel->maps.tls_events), handle, NULL);
	if (err) {
		ops->log("tls: reading the TLS ring buffer failed: %s", strerror(-err));
		tls_bpf__destroy(skel);
		skel = NULL;
		return err;
	}
	scan_standard_paths();
	scan_all();
	next_rescan = boot_ns() + RESCAN_NS;
	ops->log("tls: watching %llu OpenSSL target(s); %llu could not be attached, %llu Go/Java "
		 "binaries not covered", (unsigned long long)why_count[W_ATTACHED],
		 (unsigned long long)(why_count[W_ATTACH_FAILED] + why_count[W_UNREADABLE]),
		 (unsigned long long)(why_count[W_GO] + why_count[W_JAVA]));
	return 0;
}

void tls_tick(void)
{
	int64_t now;

	if (!skel)
		return;
	now = boot_ns();
	for (size_t i = 0; i < n_pending;) {
		if (now >= pending[i].t0 + exec_delays_ms[pending[i].next] * 1000000LL) {
			scan_pid(pending[i].pid);
			if (++pending[i].next == N_DELAYS) {
				pending[i] = pending[--n_pending];
				continue;
			}
		}
		i++;
	}
	if (now >= next_rescan) {
		scan_all();
		next_rescan = now + RESCAN_NS;
	}
}

int tls_timeout_ms(int max_ms)
{
	int64_t now, due;

	if (!skel)
		return max_ms;
	now = boot_ns();
	due = now + 100 * 1000000LL; /* tls.bpf.c submits without a wakeup */
	if (next_rescan < due)
		due = next_rescan;
	for (size_t i = 0; i < n_pending; i++) {
		int64_t t = pending[i].t0 + exec_delays_ms[pending[i].next] * 1000000LL;

		if (t < due)
			due = t;
	}
	if (due <= now)
		return 0;
	if ((due - now) / 1000000 < max_ms)
		return (int)((due - now + 999999) / 1000000);
	return max_ms;
}

static uint64_t counter(uint32_t idx)
{
	int ncpu = libbpf_num_possible_cpus();
	uint64_t sum = 0, *vals;

	if (ncpu <= 0 || !(vals = calloc(ncpu, sizeof(*vals))))
		return 0;
	if (!bpf_map_lookup_elem(bpf_map__fd(skel->maps.tls_counters), &idx, vals))
		for (int i = 0; i < ncpu; i++)
			sum += vals[i];
	free(vals);
	return sum;
}

size_t tls_stats_json(char *buf, size_t cap)
{
	size_t off;
	int n;

	if (!skel) {
		/* asked for and not running: the uprobes could not be loaded (logged at start) */
		n = snprintf(buf, cap, ",\"tls\":{\"on\":false}");
		return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
	}
	n = snprintf(buf, cap, ",\"tls\":{\"on\":true,\"ok\":%llu,\"failed\":%llu,\"unjoined\":%llu,"
		     "\"drops\":{\"ringbuf_full\":%llu},\"not_reported\":{\"role_unknown\":%llu},\"files\":{",
		     (unsigned long long)n_ok, (unsigned long long)n_failed, (unsigned long long)n_unjoined_lines,
		     (unsigned long long)counter(TLS_CNT_DROP_RINGBUF), (unsigned long long)counter(TLS_CNT_ROLE_UNKNOWN));
	off = n < 0 ? 0 : (size_t)n;
	for (int i = 0; i < W_MAX && off < cap; i++) {
		n = snprintf(buf + off, cap - off, "%s\"%s\":%llu", i ? "," : "", why_name[i], (unsigned long long)why_count[i]);
		off += n < 0 ? 0 : (size_t)n;
	}
	if (off < cap)
		off += snprintf(buf + off, cap - off, "}}");
	return off >= cap ? cap - 1 : off;
}

void tls_stop(void)
{
	char whys[256];
	size_t off = 0;

	if (!skel)
		return;
	for (int i = 0; i < W_MAX; i++)
		off += snprintf(whys + off, sizeof(whys) - off, "%s%s=%llu", i ? " " : "",
				why_name[i], (unsigned long long)why_count[i]);
	ops->log("tls: %llu handshakes ok, %llu failed (%llu without their socket); dropped: "
		 "ringbuf_full=%llu; not reported: role_unknown=%llu (SSL* set up before the probe "
		 "started); files: %s", (unsigned long long)n_ok, (unsigned long long)n_failed,
		 (unsigned long long)n_unjoined_lines, (unsigned long long)counter(TLS_CNT_DROP_RINGBUF),
		 (unsigned long long)counter(TLS_CNT_ROLE_UNKNOWN), whys);
	for (size_t i = 0; i < n_links; i++)
		bpf_link__destroy(links[i]);
	free(links);
	links = NULL;
	n_links = cap_links = 0;
	tls_bpf__destroy(skel);
	skel = NULL;
}
