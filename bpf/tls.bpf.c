// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TLS client handshakes through OpenSSL, timed with uprobes (see bpf/README.md,
 * "TLS handshakes"). Loaded and attached per target by tls.c.
 *
 * A handshake runs from the first call of the handshake function on an SSL* to
 * its final return: return 1 is `ok`. A non-positive return followed by another
 * call on the same SSL* was a retry (WANT_READ/WANT_WRITE); followed by
 * SSL_free it was the last one: `failed`, timed to that return. (SSL_get_error
 * would tell at once, but it runs after every non-blocking SSL_read that finds
 * no data: hooked (its SSL* saved at entry, looked up at return) it cost
 * ~11.5 us a call on our VMs, see bpf/README.md.)
 *
 * The socket: OpenSSL does not know it (node uses a memory BIO), so the first
 * write/writev/sendto/sendmsg on a TCP socket by the handshaking thread after
 * the first call (the ClientHello) names it.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "tls.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} tls_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TLS_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} tls_counters SEC(".maps");

/* SSL* -> client or server, from SSL_set_connect_state/SSL_set_accept_state/SSL_connect. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TLS_MAX_INFLIGHT * 4);
	__type(key, struct tls_key);
	__type(value, __u8);
} tls_role SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TLS_MAX_INFLIGHT);
	__type(key, struct tls_key);
	__type(value, struct tls_inflight);
} tls_inflight SEC(".maps");

/* thread id -> the handshake waiting for its socket */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TLS_MAX_INFLIGHT);
	__type(key, __u32);
	__type(value, struct tls_key);
} tls_join SEC(".maps");

/* pid_tgid -> the SSL* of the handshake call in progress */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TLS_MAX_INFLIGHT);
	__type(key, __u64);
	__type(value, __u64);
} tls_args SEC(".maps");


/* Entries in tls_join, so the write hooks of every other syscall on the host
 * return after one load. LRU evictions leave it high: slower, still right. */
__u64 joins_pending = 0;

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&tls_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct tls_key key_of(__u64 pid_tgid, __u64 ssl)
{
	struct tls_key k = { .pid = pid_tgid >> 32, .ssl = ssl };

	return k;
}

static __always_inline void set_role(__u64 ssl, __u8 role)
{
	struct tls_key k = key_of(bpf_get_current_pid_tgid(), ssl);

	bpf_map_update_elem(&tls_role, &k, &role, BPF_ANY);
}

/* First call on this SSL*: start the clock. Later calls: a retry. */
static __always_inline void hs_enter(__u64 ssl, bool client_only_hook)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct tls_key k = key_of(pid_tgid, ssl);
	struct tls_inflight *v;
	__u32 tid = (__u32)pid_tgid;

	__u8 *role = bpf_map_lookup_elem(&tls_role, &k);

	if (role && *role == TLS_ROLE_DONE)
		return;
	if (!client_only_hook) {
		if (!role) {
			count(TLS_CNT_ROLE_UNKNOWN);
			return;
		}
		if (*role != TLS_ROLE_CLIENT)
			return;
	}
	bpf_map_update_elem(&tls_args, &pid_tgid, &ssl, BPF_ANY);
	v = bpf_map_lookup_elem(&tls_inflight, &k);
	if (v) {
		v->calls++;
		return;
	}
	struct tls_inflight n = {};
	struct task_struct *leader = bpf_get_current_task_btf()->group_leader;

	n.start_ns = bpf_ktime_get_boot_ns();
	n.cgroup_id = bpf_get_current_cgroup_id();
	n.pid = pid_tgid >> 32;
	n.tid = tid;
	n.calls = 1;
	n.last_ret = 1; /* no non-positive return yet */
	__builtin_memcpy(n.comm, leader->comm, TLS_COMM_LEN);
	bpf_get_current_comm(n.thread, TLS_COMM_LEN);
	bpf_map_update_elem(&tls_inflight, &k, &n, BPF_ANY);
	if (bpf_map_update_elem(&tls_join, &tid, &k, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(&joins_pending, 1);
	else
		bpf_map_update_elem(&tls_join, &tid, &k, BPF_ANY);
}

static __always_inline void emit(struct tls_key *k, struct tls_inflight *v, bool ok, __u64 end_ns)
{
	struct tls_event *e = bpf_ringbuf_reserve(&tls_events, sizeof(*e), 0);

	if (!e) {
		count(TLS_CNT_DROP_RINGBUF);
		return;
	}
	e->kind = TLS_EV_HANDSHAKE;
	e->ok = ok;
	e->start_ns = v->start_ns;
	e->latency_ns = end_ns > v->start_ns ? end_ns - v->start_ns : 0;
	e->cgroup_id = v->cgroup_id;
	e->pid = v->pid;
	e->tid = v->tid;
	e->last_ret = v->last_ret;
	e->calls = v->calls;
	e->family = v->family;
	e->sport = v->sport;
	e->dport = v->dport;
	e->_pad = 0;
	__builtin_memcpy(e->saddr, v->saddr, 16);
	__builtin_memcpy(e->daddr, v->daddr, 16);
	__builtin_memcpy(e->comm, v->comm, TLS_COMM_LEN);
	__builtin_memcpy(e->thread, v->thread, TLS_COMM_LEN);
	count(ok ? TLS_CNT_OK : TLS_CNT_FAILED);
	if (!v->family)
		count(TLS_CNT_UNJOINED);
	/* No wakeup: it costs ~12 us a time on our VMs, more than all the
	 * handshake's hooks together; user space polls every 100 ms anyway. */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

static __always_inline void finish(struct tls_key *k, struct tls_inflight *v)
{
	struct tls_key *j = bpf_map_lookup_elem(&tls_join, &v->tid);

	if (j && j->pid == k->pid && j->ssl == k->ssl && bpf_map_delete_elem(&tls_join, &v->tid) == 0)
		__sync_fetch_and_add(&joins_pending, -1);
	bpf_map_delete_elem(&tls_inflight, k);
}

static __always_inline void hs_exit(long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 *sslp = bpf_map_lookup_elem(&tls_args, &pid_tgid);
	struct tls_inflight *v;
	struct tls_key k;

	if (!sslp)
		return; /* not a client, or the inner call of SSL_connect -> SSL_do_handshake */
	k = key_of(pid_tgid, *sslp);
	bpf_map_delete_elem(&tls_args, &pid_tgid);
	v = bpf_map_lookup_elem(&tls_inflight, &k);
	if (!v)
		return;
	if ((int)ret == 1) {
		__u8 done = TLS_ROLE_DONE;

		emit(&k, v, true, bpf_ktime_get_boot_ns());
		finish(&k, v);
		bpf_map_update_elem(&tls_role, &k, &done, BPF_ANY);
		return;
	}
	v->last_ret = (int)ret;
	v->last_ret_ns = bpf_ktime_get_boot_ns();
}

/* Shared libssl: SSL_do_handshake and SSL_connect serve servers too. */
SEC("uprobe")
int BPF_KPROBE(tls_do_handshake, void *ssl)
{
	hs_enter((__u64)ssl, false);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_connect, void *ssl)
{
	set_role((__u64)ssl, TLS_ROLE_CLIENT);
	hs_enter((__u64)ssl, false);
	return 0;
}

/* ossl_statem_connect: the client state machine itself (in node's symbol
 * table), reached from SSL_do_handshake and from SSL_read/SSL_write alike. */
SEC("uprobe")
int BPF_KPROBE(tls_statem_connect, void *ssl)
{
	hs_enter((__u64)ssl, true);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(tls_handshake_ret, long ret)
{
	hs_exit(ret);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_set_connect_state, void *ssl)
{
	set_role((__u64)ssl, TLS_ROLE_CLIENT);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_set_accept_state, void *ssl)
{
	set_role((__u64)ssl, TLS_ROLE_SERVER);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(tls_free, void *ssl)
{
	struct tls_key k = key_of(bpf_get_current_pid_tgid(), (__u64)ssl);
	struct tls_inflight *v = bpf_map_lookup_elem(&tls_inflight, &k);

	if (v) {
		/* freed after a non-positive return: the handshake failed
		 * (abandoned mid-call it is not reported) */
		if (v->last_ret <= 0)
			emit(&k, v, false, v->last_ret_ns);
		finish(&k, v);
	}
	bpf_map_delete_elem(&tls_role, &k);
	return 0;
}

static __always_inline void unjoin(__u32 tid)
{
	if (bpf_map_delete_elem(&tls_join, &tid) == 0)
		__sync_fetch_and_add(&joins_pending, -1);
}

/* The handshaking thread's first write on a TCP socket names the handshake's socket. */
static __always_inline void join_fd(long fd)
{
	__u64 pid_tgid;
	__u32 tid;
	struct tls_key *jk;

	if (!joins_pending)
		return;
	pid_tgid = bpf_get_current_pid_tgid();
	tid = (__u32)pid_tgid;
	jk = bpf_map_lookup_elem(&tls_join, &tid);
	struct tls_inflight *v;
	struct task_struct *task;
	struct file **fds, *f = NULL;
	struct socket *sock;
	struct sock *sk;
	unsigned int max_fds;
	__u16 family;

	if (!jk)
		return;
	struct tls_key k = *jk;

	v = bpf_map_lookup_elem(&tls_inflight, &k);
	if (!v) {
		unjoin(tid);
		return;
	}
	task = bpf_get_current_task_btf();
	max_fds = BPF_CORE_READ(task, files, fdt, max_fds);
	if (fd < 0 || (unsigned long)fd >= max_fds)
		return;
	fds = BPF_CORE_READ(task, files, fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return;
	sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, type) != SOCK_STREAM)
		return;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	v->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	v->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&v->daddr, sk, __sk_common.skc_v6_daddr);
		BPF_CORE_READ_INTO(&v->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		const __u32 *a = (const __u32 *)v->daddr;
		/* ::ffff:a.b.c.d is IPv4 on the wire: reported as IPv4, as connect events are */
		if (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff)) {
			family = AF_INET;
			__builtin_memset(v->daddr, 0, 16);
			__builtin_memset(v->saddr, 0, 16);
		}
	}
	if (family == AF_INET) {
		*(__u32 *)v->daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		*(__u32 *)v->saddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
	}
	v->family = family;
	unjoin(tid);
}

SEC("tp/syscalls/sys_enter_write")
int tls_sys_write(struct trace_event_raw_sys_enter *ctx)
{
	join_fd(ctx->args[0]);
	return 0;
}

SEC("tp/syscalls/sys_enter_writev")
int tls_sys_writev(struct trace_event_raw_sys_enter *ctx)
{
	join_fd(ctx->args[0]);
	return 0;
}

SEC("tp/syscalls/sys_enter_sendto")
int tls_sys_sendto(struct trace_event_raw_sys_enter *ctx)
{
	join_fd(ctx->args[0]);
	return 0;
}

SEC("tp/syscalls/sys_enter_sendmsg")
int tls_sys_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	join_fd(ctx->args[0]);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(tls_exec, struct task_struct *p)
{
	struct tls_event *e = bpf_ringbuf_reserve(&tls_events, sizeof(*e), 0);

	if (!e)
		return 0; /* the periodic rescan still finds it */
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = TLS_EV_EXEC;
	e->pid = p->tgid;
	/* no wakeup, as for handshakes: user space polls every 100 ms */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}
