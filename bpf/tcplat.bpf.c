// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcplat: TCP connect (handshake) latency from the sock:inet_sock_set_state
 * tracepoint. No kprobes: they are absent on some kernels (CONFIG_KPROBES=n).
 *
 *   CLOSE -> SYN_SENT          connect() in the caller's context: remember who and when
 *   SYN_SENT -> ESTABLISHED    handshake done: emit "ok"
 *   SYN_SENT -> CLOSE          attempt failed: emit with sk_err (0: the app gave up)
 *   tcp:tcp_retransmit_skb     in SYN_SENT: one more SYN had to be resent
 *
 * Each hook exists twice: as a BTF raw tracepoint (tp_btf, about 5x cheaper per
 * call, no tracefs needed) and as a classic tracepoint. The loader enables one
 * set (bpf_program__set_autoload) depending on what the kernel offers.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tcplat.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
/* vmlinux.h has the TCP_* states only as an anonymous enum on some kernels;
 * these values are ABI (include/net/tcp_states.h). */
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_SYN_RECV 3
#define ST_CLOSE 7

#define MAX_CGROUP_LEVELS 32
#define EAGAIN 11
#define ENOMEM 12
#define EBUSY 16
#define SO_EE_ORIGIN_ICMP 2
#define SO_EE_ORIGIN_ICMP6 3

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before load; the verifier sees them as constants, so a
 * disabled filter costs nothing. */
const volatile bool filter_pid = false;
const volatile bool filter_exclude_pid = false;
const volatile bool filter_dport = false;
const volatile bool filter_cgroup = false;
const volatile __u64 min_latency_ns = 0;
/* tp_btf/tcp_retransmit_skb has a third argument "err" since Linux 6.13 (the
 * tracepoint now also fires for retransmits that failed locally). */
const volatile bool retrans_has_err = false;

/* Last start timestamp handed out, host-wide: start_ns values are strictly
 * increasing, so (host, ts_ns) is unique and ordered by SYN time. */
__u64 last_start_ns = 0;

/* Waking the reader costs an irq_work (a self-IPI: a VM exit under
 * virtualisation), several microseconds per event if done for every event, as
 * the ring buffer does by default. Instead: wake it for the first event after
 * a quiet WAKEUP_NS, or when the buffer fills up; the reader, once awake,
 * polls every WAKEUP_NS until the stream stops. Own section: written by every
 * CPU, kept off last_start_ns's cache line. */
#define WAKEUP_NS (10 * 1000 * 1000ULL)
__u64 last_wakeup_ns SEC(".data.wakeup") = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TCPLAT_MAX_INFLIGHT);
	__type(key, __u64); /* struct sock * */
	__type(value, struct tcplat_inflight);
} inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* resized by the loader (--ringbuf-mb) */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TCPLAT_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPLAT_MAX_FILTER);
	__type(key, __u32); /* tgid */
	__type(value, __u8);
} pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPLAT_MAX_FILTER);
	__type(key, __u32); /* tgid */
	__type(value, __u8);
} exclude_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPLAT_MAX_FILTER);
	__type(key, __u16); /* host byte order */
	__type(value, __u8);
} dports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPLAT_MAX_FILTER);
	__type(key, __u64); /* cgroup v2 id */
	__type(value, __u8);
} cgroups SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		(*v)++; /* per-CPU slot: no atomics needed */
}

static __always_inline __u64 unique_start_ns(void)
{
	__u64 now = bpf_ktime_get_ns();

	/* Two CPUs can read the same nanosecond; bump by 1 ns on collision. */
	for (int i = 0; i < 8; i++) {
		__u64 last = last_start_ns;
		__u64 ts = now > last ? now : last + 1;

		if (__sync_val_compare_and_swap(&last_start_ns, last, ts) == last)
			return ts;
	}
	/* Heavy contention: still unique, at most a few ns late. */
	return __sync_fetch_and_add(&last_start_ns, 1) + 1;
}

static __always_inline bool cgroup_matches(void)
{
	/* The task's cgroup or any of its ancestors is one of --cgroup. */
	for (int lvl = 0; lvl < MAX_CGROUP_LEVELS; lvl++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(lvl);

		if (!id)
			break;
		if (bpf_map_lookup_elem(&cgroups, &id))
			return true;
	}
	return false;
}

static __always_inline __u64 wakeup_flags(__u64 now)
{
	if (now - last_wakeup_ns >= WAKEUP_NS) {
		last_wakeup_ns = now; /* racy on purpose: at worst one extra wakeup */
		return BPF_RB_FORCE_WAKEUP;
	}
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >=
	    bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 8)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline int on_syn_sent(struct sock *sk)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	struct tcplat_inflight in = {};
	__u64 key = (__u64)sk;

	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (filter_pid && !bpf_map_lookup_elem(&pids, &tgid))
		return 0;
	if (filter_exclude_pid && bpf_map_lookup_elem(&exclude_pids, &tgid))
		return 0;
	if (filter_dport) {
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

		if (!bpf_map_lookup_elem(&dports, &dport))
			return 0;
	}
	if (filter_cgroup && !cgroup_matches())
		return 0;

	in.start_ns = unique_start_ns();
	in.cgroup_id = bpf_get_current_cgroup_id();
	in.pid = tgid;
	in.tid = (__u32)pid_tgid;
	bpf_get_current_comm(&in.comm, sizeof(in.comm));
	/* a socket can connect() again after a failure: older ICMP records on
	 * its error queue are not about this attempt */
	in.errq_len = BPF_CORE_READ(sk, sk_error_queue.qlen);
	bpf_map_update_elem(&inflight, &key, &in, BPF_ANY);
	return 0;
}

/* errno of the newest ICMP/ICMPv6 error queued on the socket during this
 * attempt (the queue grew since SYN time), or 0. */
static __always_inline int queued_icmp_error(struct sock *sk, __u32 errq_len_at_start)
{
	struct sock_exterr_skb *serr;
	struct sk_buff *skb;
	__u32 eno = 0;
	__u8 origin = 0;

	if (BPF_CORE_READ(sk, sk_error_queue.qlen) <= errq_len_at_start)
		return 0;
	skb = BPF_CORE_READ(sk, sk_error_queue.prev);
	if (!skb)
		return 0;
	serr = (struct sock_exterr_skb *)&skb->cb; /* SKB_EXT_ERR() */
	bpf_core_read(&origin, sizeof(origin), &serr->ee.ee_origin);
	if (origin != SO_EE_ORIGIN_ICMP && origin != SO_EE_ORIGIN_ICMP6)
		return 0;
	bpf_core_read(&eno, sizeof(eno), &serr->ee.ee_errno);
	return eno;
}

static __always_inline bool is_v4mapped(const __u32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int on_done(struct sock *sk, bool ok)
{
	__u64 key = (__u64)sk;
	struct tcplat_inflight *in;
	struct tcplat_event *e;
	__u64 now, latency;
	__u16 family;
	int err = 0;

	in = bpf_map_lookup_elem(&inflight, &key);
	if (!in)
		return 0; /* not ours: filtered out, passive socket, or started before us */

	now = bpf_ktime_get_ns();
	latency = now > in->start_ns ? now - in->start_ns : 0;
	if (latency < min_latency_ns)
		goto out;

	if (!ok) {
		/* tcp_reset(), tcp_write_err() and tcp_v4/v6_err() set sk_err before
		 * tcp_done() moves the socket to CLOSE. An ICMP error that arrives
		 * while the owner holds the socket lock (a local firewall REJECT:
		 * the ICMP comes back inside connect()) is only a soft error, which
		 * the application may already have read (SO_ERROR clears it) before
		 * closing the socket itself; the ICMP's own record is then still on
		 * the socket's error queue. Nothing anywhere: the application gave
		 * up on its own. */
		err = BPF_CORE_READ(sk, sk_err);
		if (!err)
			err = BPF_CORE_READ(sk, sk_err_soft);
		if (!err)
			err = queued_icmp_error(sk, in->errq_len);
	}

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TCPLAT_CNT_DROPPED);
		goto out;
	}

	e->start_ns = in->start_ns;
	e->latency_ns = latency;
	e->cgroup_id = in->cgroup_id;
	e->pid = in->pid;
	e->tid = in->tid;
	e->syn_retrans = in->syn_retrans;
	__builtin_memcpy(e->comm, in->comm, sizeof(e->comm));
	e->err = err;
	e->ok = ok;
	e->_pad = 0;
	/* Not skc_num: on the way to CLOSE, inet_put_port() zeroes it before the
	 * tracepoint fires; inet_sport survives (the tracepoint reports it too). */
	e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET6) {
		bpf_core_read(e->daddr, sizeof(e->daddr), &sk->__sk_common.skc_v6_daddr);
		/* An AF_INET6 socket talking to ::ffff:a.b.c.d runs IPv4 on the
		 * wire (tcp_v6_connect hands it to tcp_v4_connect): report it as
		 * IPv4 so one server has one address whatever API the client used. */
		if (is_v4mapped((const __u32 *)e->daddr))
			family = AF_INET;
		else
			bpf_core_read(e->saddr, sizeof(e->saddr), &sk->__sk_common.skc_v6_rcv_saddr);
	}
	if (family == AF_INET) {
		__builtin_memset(e->daddr, 0, sizeof(e->daddr));
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	}
	e->family = family;

	bpf_ringbuf_submit(e, wakeup_flags(now));
	count(TCPLAT_CNT_SUBMITTED);
out:
	bpf_map_delete_elem(&inflight, &key);
	return 0;
}

static __always_inline int on_state(struct sock *sk, int oldstate, int newstate)
{
	if (newstate == ST_SYN_SENT)
		return oldstate == ST_CLOSE ? on_syn_sent(sk) : 0;
	/* SYN_RECV covers a simultaneous open (SYN_SENT -> SYN_RECV -> ...). */
	if (oldstate != ST_SYN_SENT && oldstate != ST_SYN_RECV)
		return 0;
	if (newstate == ST_ESTABLISHED)
		return on_done(sk, true);
	if (newstate == ST_CLOSE)
		return on_done(sk, false);
	return 0;
}

static __always_inline int on_retransmit(struct sock *sk, int err)
{
	__u64 key = (__u64)sk;
	struct tcplat_inflight *in;

	/* Since Linux 6.13 the tracepoint also fires when the retransmit failed.
	 * Skip the cases where TCP itself did not send (previous SYN still in a
	 * host queue, no memory): the timer retries and we count that one. A SYN
	 * dropped further down (a local firewall: -EPERM, a full qdisc) was
	 * resent as far as TCP is concerned, and is what the latency shows. */
	if (err == -EBUSY || err == -EAGAIN || err == -ENOMEM)
		return 0;
	if (BPF_CORE_READ(sk, __sk_common.skc_state) != ST_SYN_SENT)
		return 0;
	in = bpf_map_lookup_elem(&inflight, &key);
	if (in)
		__sync_fetch_and_add(&in->syn_retrans, 1);
	return 0;
}

/* ---- BTF raw tracepoints (preferred) ---- */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(btf_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(btf_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb)
{
	int err = 0;

	if (retrans_has_err)
		err = (int)ctx[2];
	return on_retransmit(sk, err);
}

/* ---- classic tracepoints (fallback; need tracefs) ----
 * The leading fields of both formats have been stable since Linux 4.16. */

struct tp_inet_sock_set_state {
	__u64 __common;
	const void *skaddr;
	int oldstate;
	int newstate;
};

struct tp_tcp_retransmit_skb {
	__u64 __common;
	const void *skbaddr;
	const void *skaddr;
};

/* Relocated by CO-RE; absent (so never read) before Linux 6.13. */
struct trace_event_raw_tcp_retransmit_skb___tcplat {
	int err;
} __attribute__((preserve_access_index));

SEC("tracepoint/sock/inet_sock_set_state")
int tp_inet_sock_set_state(struct tp_inet_sock_set_state *ctx)
{
	return on_state((struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tp_tcp_retransmit_skb(struct tp_tcp_retransmit_skb *ctx)
{
	struct trace_event_raw_tcp_retransmit_skb___tcplat *t = (void *)ctx;
	int err = 0;

	if (bpf_core_field_exists(t->err))
		err = t->err;
	return on_retransmit((struct sock *)ctx->skaddr, err);
}
