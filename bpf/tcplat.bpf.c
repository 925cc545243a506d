// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcplat: TCP connect (handshake) latency from the sock:inet_sock_set_state
 * tracepoint. No kprobes: they are absent on some kernels (CONFIG_KPROBES=n).
 *
 *   CLOSE -> SYN_SENT          connect() in the caller's context: remember who and when
 *   SYN_SENT -> ESTABLISHED    handshake done: "ok"
 *   SYN_SENT -> CLOSE          attempt failed: sk_err (0: the app gave up, or
 *                              connect() itself failed: see below)
 *   tcp:tcp_retransmit_skb     in SYN_SENT: one more SYN had to be resent
 *   syscalls:sys_exit_connect  the errno of a connect() that failed inside the
 *                              kernel (EADDRNOTAVAIL, ENETUNREACH, EACCES, ...),
 *                              which leaves no sk_err
 *
 * Close events (--mode stream, unless --no-close): a connection that reached
 * ESTABLISHED is remembered in the bounded `sessions` hash until its
 * transition to CLOSE, which reports its lifespan and tcp_sock totals, and who
 * closed it (from the state it left and tcp:tcp_receive_reset /
 * tcp:tcp_send_reset, see on_close).
 *
 * The state and retransmit hooks exist twice: as BTF raw tracepoints (tp_btf,
 * cheaper, no tracefs; in-flight state in socket-local storage) and as classic
 * tracepoints (fallback; in-flight state in a bounded hash). The loader enables
 * one set. Every attempt ends either as a ring-buffer record (--mode stream)
 * or in a histogram (--mode hist), or in a counted loss.
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
#define SOCK_STREAM 1
/* vmlinux.h has the TCP_* states only as an anonymous enum on some kernels;
 * these values are ABI (include/net/tcp_states.h). */
#define ST_ESTABLISHED 1
#define ST_SYN_SENT 2
#define ST_SYN_RECV 3
#define ST_FIN_WAIT1 4
#define ST_FIN_WAIT2 5
#define ST_CLOSE 7
#define ST_CLOSE_WAIT 8
#define ST_LAST_ACK 9
#define ST_CLOSING 11
#define SOCK_DONE_BIT 1 /* enum sock_flags: set by tcp_fin() when the peer's FIN arrived */
#define SOCKET_SS_UNCONNECTED 1 /* enum socket_state, include/uapi/linux/net.h */

#define MAX_CGROUP_LEVELS 32
#define EPERM 1
#define EINTR 4
#define EBADF 9
#define EAGAIN 11
#define ENOMEM 12
#define EFAULT 14
#define EBUSY 16
#define EINVAL 22
#define ENOTSOCK 88
#define EPROTOTYPE 91
#define EOPNOTSUPP 95
#define EAFNOSUPPORT 97
#define ECONNABORTED 103
#define ECONNRESET 104
#define EISCONN 106
#define ETIMEDOUT 110
#define ECONNREFUSED 111
#define EALREADY 114
#define EINPROGRESS 115
#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define SO_EE_ORIGIN_ICMP 2
#define SO_EE_ORIGIN_ICMP6 3

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* A field of a kernel object. On the BTF path the pointer is typed (tp_btf
 * arguments, bpf_get_current_task_btf()): a plain load, several times cheaper
 * than the bpf_probe_read_kernel() call the classic tracepoints need. `btf` is
 * a compile-time constant in every inlined copy, so only one branch remains. */
#define RD(btf, p, field) ((btf) ? (p)->field : BPF_CORE_READ(p, field))

/* Set by the loader before load; the verifier sees them as constants, so a
 * disabled filter or mode costs nothing. */
const volatile bool filter_pid = false;
const volatile bool filter_exclude_pid = false;
const volatile bool filter_dport = false;
const volatile bool filter_cgroup = false;
const volatile __u64 min_latency_ns = 0;
const volatile bool hist_mode = false;
/* log2 of the slots in inflight_fast (0: not used). */
const volatile __u32 fast_bits = 0;
/* syscalls:sys_exit_connect is attached: an attempt may wait there for its errno. */
const volatile bool exit_hook = false;
/* tp_btf/tcp_retransmit_skb has a third argument "err" since Linux 6.13 (the
 * tracepoint now also fires for retransmits that failed locally). */
const volatile bool retrans_has_err = false;
/* Track established connections and report their close (stream mode). */
const volatile bool close_events = false;
/* --zero-windows: tp_btf/tcp_probe counts the peer's zero windows. */
const volatile bool zero_windows = false;

/* Upper bounds of pkg/core's tcp_connect_hist buckets in ns (buckets.ts:
 * 0.01 ms .. 10 s, R5 steps); bucket 31 is the overflow. */
static const __u64 bucket_bounds_ns[TCPLAT_NBUCKETS - 1] = {
	10000, 16000, 25000, 40000, 63000,
	100000, 160000, 250000, 400000, 630000,
	1000000, 1600000, 2500000, 4000000, 6300000,
	10000000, 16000000, 25000000, 40000000, 63000000,
	100000000, 160000000, 250000000, 400000000, 630000000,
	1000000000, 1600000000, 2500000000, 4000000000, 6300000000,
	10000000000,
};
/* A fresh histogram: min starts at the maximum. Read-only data: usable as the
 * value argument of a map update without a 300-byte stack copy. */
static const struct tcplat_hist_val hist_init = { .min_ns = ~0ULL };

/* Start timestamps are unique host-wide and increasing: each CPU hands out
 * only values whose low cpu_bits bits are its own number, strictly increasing
 * on that CPU (last_start_ns, per CPU). No shared cache line is written (a
 * host-wide compare-and-swap cost ~30-100 ns per connect on a 2-CPU VM, the
 * line moving between the CPUs); SYNs on different CPUs are ordered to within
 * 2^cpu_bits ns, below what the CPUs' clocks can tell apart. cpu_bits: set
 * by the loader, log2 of the possible CPUs rounded up. */
const volatile __u32 cpu_bits = 0;
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_start_ns SEC(".maps");

/* Waking the reader costs an irq_work (a self-IPI: a VM exit under
 * virtualisation), several microseconds per event if done for every event, as
 * the ring buffer does by default. Instead: wake it for the first event after
 * a quiet WAKEUP_NS, or when the buffer fills up; the reader, once awake,
 * polls every WAKEUP_NS until the stream stops. Own section: written by every
 * CPU, kept off last_start_ns's cache line. */
#define WAKEUP_NS (10 * 1000 * 1000ULL)
__u64 last_wakeup_ns SEC(".data.wakeup") = 0;

/* BTF path, first choice: a direct-mapped table of slots, claimed with one
 * compare-and-swap (an array lookup is a few instructions; a hash insert takes
 * a bucket lock and a free-list pop). A socket whose slot is taken by another
 * attempt goes to the hash below. */
struct tcplat_slot {
	__u64 sk; /* owner; 0: free */
	struct tcplat_inflight v;
};
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096); /* --inflight-fast */
	__type(key, __u32);
	__type(value, struct tcplat_slot);
} inflight_fast SEC(".maps");

/* BTF path, when the hash below is full: one in-flight record per socket,
 * freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct tcplat_inflight);
} sk_inflight SEC(".maps");

/* In-flight attempts, first choice on both paths (see inflight_new). A plain
 * hash, not an LRU: a full map is an update error, never a silent eviction. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPLAT_MAX_INFLIGHT); /* --inflight-max */
	__type(key, __u64); /* struct sock * */
	__type(value, struct tcplat_inflight);
} inflight SEC(".maps");

/* Established outbound connections until their CLOSE (close events). A plain
 * preallocated hash, not an LRU: when it is full a connection goes
 * unreported and is counted (session_full), nothing is evicted. Entries leave
 * at CLOSE, which every TCP socket passes before it is freed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPLAT_MAX_SESSIONS); /* --sessions-max */
	__type(key, __u64); /* struct sock * */
	__type(value, struct tcplat_session);
} sessions SEC(".maps");

/* connect() calls failing inside the kernel, per thread, until sys_exit_connect
 * gives their errno. LRU: an entry that never sees its syscall exit (io_uring)
 * must not stay; live entries live for microseconds. */
#define PENDING_DEFERRED 1 /* event waiting for the syscall's errno */
#define PENDING_REPORTED 2 /* already reported from sk_err: do not report again */
struct tcplat_pending {
	__u64 sk;
	__u32 kind;
	__u32 _pad;
	struct tcplat_event e;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, TCPLAT_MAX_PENDING);
	__type(key, __u32); /* tid */
	__type(value, struct tcplat_pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* resized by the loader (--ringbuf-mb) */
} events SEC(".maps");

/* --mode hist: the programs add to the map in slot 0; each window user space
 * puts the other map there (the update waits for every running BPF program:
 * kernel/bpf/syscall.c maybe_wait_bpf_programs), then reads and clears the
 * old one at leisure. Exact: no attempt is counted twice or lost. */
struct hist_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TCPLAT_MAX_HIST);
	__type(key, struct tcplat_hist_key);
	__type(value, struct tcplat_hist_val);
} hist_a SEC(".maps"), hist_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct hist_map);
} hist_current SEC(".maps") = {
	.values = { [0] = &hist_a },
};

/* sk_key(): the socket's address as a number is its distance from this
 * variable (a fixed address for the life of the loaded program). */
__u64 sk_key_anchor SEC(".data.anchor") = 0;

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
		(*v)++; /* per-CPU slot, programs do not nest on one CPU: no atomics needed */
}

static __always_inline __u64 unique_start_ns(void)
{
	__u64 now = bpf_ktime_get_boot_ns(), step = 1ULL << cpu_bits, mine;
	__u32 zero = 0, cpu = bpf_get_smp_processor_id(); /* both inlined */
	__u64 *last = bpf_map_lookup_elem(&last_start_ns, &zero);

	mine = (now & ~(step - 1)) | (cpu & (step - 1));
	if (!last)
		return mine;
	/* A compare-and-swap on this CPU's own line (cheap: it does not move):
	 * a program that interrupts or preempts this one on the CPU gets
	 * another value. */
	for (int i = 0; i < 8; i++) {
		__u64 l = *last, ts = mine > l ? mine : l + step;

		if (__sync_val_compare_and_swap(last, l, ts) == l)
			return ts;
	}
	/* not reached in practice: still unique, still this CPU's low bits */
	return __sync_fetch_and_add(last, step) + step;
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

/* The caller-side filters (everything but the destination port). */
static __always_inline bool caller_wanted(__u32 tgid)
{
	if (filter_pid && !bpf_map_lookup_elem(&pids, &tgid))
		return false;
	if (filter_exclude_pid && bpf_map_lookup_elem(&exclude_pids, &tgid))
		return false;
	if (filter_cgroup && !cgroup_matches())
		return false;
	return true;
}

static __always_inline bool dport_wanted(__u16 dport)
{
	return !filter_dport || bpf_map_lookup_elem(&dports, &dport);
}

/* pid, tid, cgroup, the process's name and the thread's name of the current
 * task (process context only). */
static __always_inline void caller(struct task_struct *task, __u64 pid_tgid, __u32 *pid, __u32 *tid, __u64 *cgroup_id,
				   char *comm, char *thread, bool btf)
{
	*pid = pid_tgid >> 32;
	*tid = (__u32)pid_tgid;
	/* comm is the process: pools name their threads ("HikariPool-1 c",
	 * "puma srv tp 0"), which would split one service into many. */
	if (btf) {
		/* Typed loads, no helper calls (each costs ~60 ns on a kernel
		 * with return-thunk mitigations): the same fields
		 * bpf_get_current_cgroup_id() and bpf_get_current_comm() read
		 * (task_dfl_cgroup(current)->kn->id; current->comm). */
		*cgroup_id = task->cgroups->dfl_cgrp->kn->id;
		__builtin_memcpy(comm, task->group_leader->comm, TCPLAT_COMM_LEN);
		if (!hist_mode)
			__builtin_memcpy(thread, task->comm, TCPLAT_COMM_LEN);
		else
			__builtin_memset(thread, 0, TCPLAT_COMM_LEN);
		return;
	}
	*cgroup_id = bpf_get_current_cgroup_id();
	{
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();
		struct task_struct *leader = BPF_CORE_READ(task, group_leader);

		bpf_core_read_str(comm, TCPLAT_COMM_LEN, &leader->comm);
	}
	if (!hist_mode) /* histograms are per process, not per thread */
		bpf_get_current_comm(thread, TCPLAT_COMM_LEN);
	else
		__builtin_memset(thread, 0, TCPLAT_COMM_LEN);
}

/* Records this CPU put into the ring buffer since it last looked at its fill. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} rb_unchecked SEC(".maps");

/* Set by the loader: the ring buffer's size in bytes. */
const volatile __u64 ring_bytes = 4 << 20;
#define FILL_CHECK_EVERY 32

static __always_inline __u64 wakeup_flags(__u64 now)
{
	__u32 zero = 0;
	__u64 *n;

	if (now - last_wakeup_ns >= WAKEUP_NS) {
		last_wakeup_ns = now; /* racy on purpose: at worst one extra wakeup */
		return BPF_RB_FORCE_WAKEUP;
	}
	/* The buffer may be filling up faster than the reader polls: wake it
	 * when an eighth of it waits. Each CPU looks every FILL_CHECK_EVERY
	 * records of its own (bpf_ringbuf_query() is a helper call: per record
	 * it cost ~20-40 ns), so at most an eighth plus FILL_CHECK_EVERY
	 * records per CPU wait unannounced. */
	n = bpf_map_lookup_elem(&rb_unchecked, &zero); /* inlined: no call */
	if (n && ++*n >= FILL_CHECK_EVERY) {
		*n = 0;
		if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= ring_bytes / 8)
			return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline __u32 bucket_of(__u64 ns)
{
	__u32 lo = 0, hi = TCPLAT_NBUCKETS - 1; /* hi: the overflow bucket */

	for (int i = 0; i < 5 && lo < hi; i++) {
		__u32 mid = (lo + hi) >> 1;

		if (mid >= TCPLAT_NBUCKETS - 1)
			break;
		if (ns <= bucket_bounds_ns[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo < TCPLAT_NBUCKETS ? lo : TCPLAT_NBUCKETS - 1;
}

static __always_inline void hist_add(const struct tcplat_event *e)
{
	struct tcplat_hist_key key = {};
	struct tcplat_hist_val *v;
	__u32 zero = 0, b;
	void *map;

	map = bpf_map_lookup_elem(&hist_current, &zero);
	if (!map)
		return;
	key.cgroup_id = e->cgroup_id;
	key.pid = e->pid;
	key.err = e->err;
	key.family = e->family;
	key.dport = e->dport;
	key.ok = e->ok;
	__builtin_memcpy(key.daddr, e->daddr, sizeof(key.daddr));
	__builtin_memcpy(key.comm, e->comm, sizeof(key.comm));
	v = bpf_map_lookup_elem(map, &key);
	if (!v) {
		bpf_map_update_elem(map, &key, &hist_init, BPF_NOEXIST); /* EEXIST: a racing CPU won */
		v = bpf_map_lookup_elem(map, &key);
		if (!v) {
			count(TCPLAT_CNT_DROP_HIST);
			return;
		}
	}
	b = bucket_of(e->latency_ns);
	__sync_fetch_and_add(&v->count, 1);
	__sync_fetch_and_add(&v->sum_ns, e->latency_ns);
	if (e->syn_retrans)
		__sync_fetch_and_add(&v->syn_retrans, e->syn_retrans);
	if (b < TCPLAT_NBUCKETS)
		__sync_fetch_and_add(&v->buckets[b], 1);
	for (int i = 0; i < 4; i++) {
		__u64 cur = v->min_ns;

		if (e->latency_ns >= cur || __sync_val_compare_and_swap(&v->min_ns, cur, e->latency_ns) == cur)
			break;
	}
	for (int i = 0; i < 4; i++) {
		__u64 cur = v->max_ns;

		if (e->latency_ns <= cur || __sync_val_compare_and_swap(&v->max_ns, cur, e->latency_ns) == cur)
			break;
	}
	count(TCPLAT_CNT_HIST_ADDED);
}

/* An attempt is over: one ring-buffer record, or one histogram count. */
static __always_inline void emit(const struct tcplat_event *src, __u64 now)
{
	struct tcplat_event *e;

	if (src->latency_ns < min_latency_ns)
		return;
	if (hist_mode) {
		hist_add(src);
		return;
	}
	/* reserve + submit or bpf_ringbuf_output(): the same here (what costs is
	 * the ring's lock and the record's cold cache lines, bpf/README.md) */
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(TCPLAT_CNT_DROP_RINGBUF);
		return;
	}
	__builtin_memcpy(e, src, sizeof(*e));
	bpf_ringbuf_submit(e, wakeup_flags(now));
	count(TCPLAT_CNT_SUBMITTED);
}

/* Where an in-flight record lives. A preallocated hash insert costs about half
 * of a socket-storage creation (which allocates, and is freed with the socket:
 * measured ~300 ns less per connect on the benchmark VM), so the hash comes
 * first. On the BTF path, an attempt the full hash cannot take goes to socket
 * storage, which has no capacity: nothing is evicted, nothing is lost. The
 * classic-tracepoint fallback can only count it (inflight_full). */
#define IN_HASH 1
#define IN_STORAGE 2
#define IN_SLOT 3

/* A number per socket, the key of its in-flight record and session: the
 * address itself on the classic path; on the BTF path, where sk is a typed
 * pointer the verifier allows no arithmetic on, its distance from a global.
 * Only one path is loaded at a time, so the two never meet. */
static __always_inline __u64 sk_key(struct sock *sk, bool btf)
{
	__u64 key;

	if (!btf)
		return (__u64)sk;
	/* One pointer minus another is a plain number to the verifier when the
	 * loader has CAP_PERFMON (allow_ptr_leaks), which the probe needs
	 * anyway: two instructions, no helper call (bpf_probe_read_kernel()
	 * cost ~60 ns here, a kernel with return-thunk mitigations) and no
	 * shared state (a per-CPU scratch slot would be unsafe where tracepoint
	 * programs are preemptible, PREEMPT_RT since Linux 7.0). Constant per
	 * socket while the program is loaded, never 0: a key, not an address. */
	asm volatile("%[k] = %[s]\n\t%[k] -= %[b]" : [k] "=&r"(key) : [s] "r"(sk), [b] "r"(&sk_key_anchor));
	return key;
}

static __always_inline struct tcplat_slot *slot_of(__u64 key)
{
	/* Fibonacci hashing of the socket address: slab objects are aligned,
	 * the multiply spreads their high bits over the index. */
	__u32 idx = (key * 0x9E3779B97F4A7C15ULL) >> (64 - fast_bits);

	return bpf_map_lookup_elem(&inflight_fast, &idx);
}

/* Store a new in-flight record (complete: one map update, no lookup after). */
static __always_inline void inflight_new(struct sock *sk, struct tcplat_inflight *v, bool btf)
{
	struct tcplat_inflight *in;
	__u64 key = sk_key(sk, btf);

	if (btf && fast_bits) {
		struct tcplat_slot *slot = slot_of(key);

		/* Claim a free slot (or the one this socket already holds). */
		if (slot && (slot->sk == key ||
			     (slot->sk == 0 && __sync_val_compare_and_swap(&slot->sk, 0, key) == 0))) {
			v->where = IN_SLOT;
			__builtin_memcpy(&slot->v, v, sizeof(*v));
			return;
		}
	}
	v->where = IN_HASH;
	/* BPF_ANY: a socket that connects again replaces its old record. */
	if (bpf_map_update_elem(&inflight, &key, v, BPF_ANY) == 0)
		return;
	if (!btf) {
		count(TCPLAT_CNT_DROP_INFLIGHT);
		return;
	}
	in = bpf_sk_storage_get(&sk_inflight, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!in) {
		count(TCPLAT_CNT_DROP_STORAGE);
		return;
	}
	v->where = IN_STORAGE;
	__builtin_memcpy(in, v, sizeof(*in));
}

static __always_inline struct tcplat_inflight *inflight_find(struct sock *sk, bool btf)
{
	__u64 key = sk_key(sk, btf);
	struct tcplat_inflight *in;

	if (btf && fast_bits) {
		struct tcplat_slot *slot = slot_of(key);

		if (slot && slot->sk == key)
			return &slot->v;
	}
	in = bpf_map_lookup_elem(&inflight, &key);

	/* A socket without storage answers at once (sk_bpf_storage is NULL). */
	if (!in && btf)
		in = bpf_sk_storage_get(&sk_inflight, sk, 0, 0);
	return in;
}

static __always_inline void inflight_end(struct sock *sk, struct tcplat_inflight *in, bool btf)
{
	__u64 key = sk_key(sk, btf);

	/* Socket storage stays with the socket (freed with it): mark it idle. */
	if (in->where == IN_STORAGE) {
		in->start_ns = 0;
	} else if (in->where == IN_SLOT) {
		struct tcplat_slot *slot = slot_of(key);

		in->start_ns = 0;
		if (slot && slot->sk == key)
			slot->sk = 0; /* release: the record was read already */
	} else {
		bpf_map_delete_elem(&inflight, &key);
	}
}

static __always_inline int on_syn_sent(struct sock *sk, bool btf)
{
	/* BTF path: one helper call for the task, then typed loads of what
	 * bpf_get_current_pid_tgid() would return. */
	struct task_struct *task = btf ? bpf_get_current_task_btf() : NULL;
	__u64 pid_tgid = btf ? (__u64)(__u32)task->tgid << 32 | (__u32)task->pid :
			       bpf_get_current_pid_tgid();
	struct tcplat_inflight v;

	if ((btf ? BPF_CORE_READ_BITFIELD(sk, sk_protocol) :
		   BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol)) != IPPROTO_TCP)
		return 0;
	if (!caller_wanted(pid_tgid >> 32))
		return 0;
	if (filter_dport && !dport_wanted(bpf_ntohs(RD(btf, sk, __sk_common.skc_dport))))
		return 0;

	/* Unique, ordered timestamps matter only for per-attempt records. */
	v.start_ns = hist_mode ? bpf_ktime_get_boot_ns() : unique_start_ns();
	v.syn_retrans = 0;
	caller(task, pid_tgid, &v.pid, &v.tid, &v.cgroup_id, v.comm, v.thread, btf);
	/* A socket can connect() again after a failure: errors already on it
	 * are not about this attempt. */
	v.errq_len = RD(btf, sk, sk_error_queue.qlen);
	v.err_soft = RD(btf, sk, sk_err_soft);
	inflight_new(sk, &v, btf);
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

/* Addresses and ports of the socket into e. */
static __always_inline void fill_addrs(struct tcplat_event *e, struct sock *sk, bool ok, bool btf)
{
	__u16 family = RD(btf, sk, __sk_common.skc_family);

	/* skc_num is a plain load but on the way to CLOSE inet_put_port() zeroes
	 * it before the tracepoint fires; inet_sport survives (the tracepoint
	 * reports it too), at the price of a probe read (it lies beyond struct
	 * sock, where a typed load cannot reach). */
	if (btf && ok)
		e->sport = sk->__sk_common.skc_num;
	else
		e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(RD(btf, sk, __sk_common.skc_dport));
	__builtin_memset(e->saddr, 0, sizeof(e->saddr));
	__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	if (family == AF_INET6) {
		if (btf)
			*(struct in6_addr *)e->daddr = sk->__sk_common.skc_v6_daddr;
		else
			bpf_core_read(e->daddr, sizeof(e->daddr), &sk->__sk_common.skc_v6_daddr);
		/* An AF_INET6 socket talking to ::ffff:a.b.c.d runs IPv4 on the
		 * wire (tcp_v6_connect hands it to tcp_v4_connect): report it as
		 * IPv4 so one server has one address whatever API the client used. */
		if (is_v4mapped((const __u32 *)e->daddr))
			family = AF_INET;
		else if (btf)
			*(struct in6_addr *)e->saddr = sk->__sk_common.skc_v6_rcv_saddr;
		else
			bpf_core_read(e->saddr, sizeof(e->saddr), &sk->__sk_common.skc_v6_rcv_saddr);
	}
	if (family == AF_INET) {
		__builtin_memset(e->daddr, 0, sizeof(e->daddr));
		*(__u32 *)e->saddr = RD(btf, sk, __sk_common.skc_rcv_saddr);
		*(__u32 *)e->daddr = RD(btf, sk, __sk_common.skc_daddr);
	}
	e->family = family;
}

static __always_inline int on_done(struct sock *sk, bool ok, bool btf)
{
	struct tcplat_inflight *in;
	struct tcplat_event ev;
	__u64 now;
	int err = 0;

	in = inflight_find(sk, btf);
	if (!in || !in->start_ns)
		return 0; /* not ours: filtered out, passive socket, or started before us */

	ev.start_ns = in->start_ns;
	/* (TCP's own clock, tp->tcp_clock_cache, refreshed when the SYN-ACK's
	 * processing starts, would save this helper call, but ends the
	 * handshake ~2 us earlier than this transition on loopback: the two
	 * modes would disagree, and the contract is this transition.) */
	now = bpf_ktime_get_boot_ns();
	ev.latency_ns = now > in->start_ns ? now - in->start_ns : 0;
	ev.cgroup_id = in->cgroup_id;
	ev.pid = in->pid;
	ev.tid = in->tid;
	ev.syn_retrans = in->syn_retrans;
	ev.ok = ok;
	ev._pad = 0;
	__builtin_memcpy(ev.comm, in->comm, sizeof(ev.comm));
	__builtin_memcpy(ev.thread, in->thread, sizeof(ev.thread));
	fill_addrs(&ev, sk, ok, btf);

	if (!ok) {
		/* tcp_reset(), tcp_write_err() and tcp_v4/v6_err() set sk_err before
		 * tcp_done() moves the socket to CLOSE. An ICMP error that arrives
		 * while the owner holds the socket lock (a local firewall REJECT:
		 * the ICMP comes back inside connect()) is only a soft error, which
		 * the application may already have read (SO_ERROR clears it) before
		 * closing the socket itself; the ICMP's own record is then still on
		 * the socket's error queue. Soft error and queue count only if they
		 * changed since the SYN. */
		int soft;

		err = RD(btf, sk, sk_err);
		if (!err) {
			soft = RD(btf, sk, sk_err_soft);
			if (soft != in->err_soft)
				err = soft;
		}
		if (!err)
			err = queued_icmp_error(sk, in->errq_len);
	}
	ev.err = err;
	inflight_end(sk, in, btf);

	if (!ok && !err) {
		__u64 pid_tgid = bpf_get_current_pid_tgid();
		struct socket *sock = BPF_CORE_READ(sk, sk_socket);

		/* No error anywhere. Either the application closed the socket
		 * (aborted), or connect() itself failed inside the kernel after
		 * SYN_SENT (tcp_v4_connect: inet_hash_connect() found no free port:
		 * EADDRNOTAVAIL; tcp_connect(): ENOBUFS): it moves the socket back
		 * to CLOSE and returns the errno, never setting sk_err. That happens
		 * in the connecting thread, while the socket is still
		 * SS_UNCONNECTED (SS_CONNECTING is set once ->connect() succeeded).
		 * Wait for the syscall's return value (sys_exit_connect). */
		if (exit_hook && (__u32)pid_tgid == ev.tid && sock &&
		    BPF_CORE_READ(sock, state) == SOCKET_SS_UNCONNECTED) {
			struct tcplat_pending *p;
			__u32 tid = ev.tid;
			static const struct tcplat_pending none = {};

			if (bpf_map_update_elem(&pending, &tid, &none, BPF_ANY) ||
			    !(p = bpf_map_lookup_elem(&pending, &tid))) {
				count(TCPLAT_CNT_DROP_PENDING);
				return 0;
			}
			p->sk = (__u64)sk;
			p->kind = PENDING_DEFERRED;
			__builtin_memcpy(&p->e, &ev, sizeof(ev));
			return 0;
		}
	}
	emit(&ev, now);

	/* Remember the connection for its close event (only if its connect
	 * was reported: the close joins it by ts_ns). */
	if (close_events && ok && ev.latency_ns >= min_latency_ns) {
		struct tcplat_session s;
		__u64 key = sk_key(sk, btf);

		s.start_ns = ev.start_ns;
		s.cgroup_id = ev.cgroup_id;
		s.pid = ev.pid;
		s.tid = ev.tid;
		s.closed_by = 0;
		s.zero_windows = 0;
		s.daddr = RD(btf, sk, __sk_common.skc_daddr);
		s.dport = RD(btf, sk, __sk_common.skc_dport);
		s._pad = 0;
		__builtin_memcpy(s.comm, ev.comm, sizeof(s.comm));
		__builtin_memcpy(s.thread, ev.thread, sizeof(s.thread));
		if (bpf_map_update_elem(&sessions, &key, &s, BPF_ANY))
			count(TCPLAT_CNT_DROP_SESSION);
		return 0;
	}

	/* A blocking connect() returns the same errno it got from sk_err: tell
	 * sys_exit_connect that this one is reported already (only errnos it
	 * could also take for a failure before the SYN). */
	if (!ok && err && err != ECONNREFUSED && err != ETIMEDOUT) {
		struct tcplat_pending rep = {};
		__u32 tid = ev.tid;

		rep.sk = (__u64)sk;
		rep.kind = PENDING_REPORTED;
		bpf_map_update_elem(&pending, &tid, &rep, BPF_ANY);
	}
	return 0;
}

/* An established connection of ours reached CLOSE: one close record.
 *
 * Who closed it, when no reset was seen on the way (tcp_receive_reset fires in
 * tcp_reset() before tcp_done(); tcp_send_reset before tcp_done() on the
 * timer paths), from the state it leaves:
 *   LAST_ACK                       the peer's FIN came first (CLOSE_WAIT, LAST_ACK): peer
 *   FIN_WAIT1/2, CLOSING           ours came first: local
 *   ESTABLISHED/CLOSE_WAIT, sk_err 0   an abortive close by this end: close()
 *                                  with unread data or SO_LINGER 0, or
 *                                  disconnect: net/ipv4/tcp.c __tcp_close()
 *                                  and tcp_disconnect() move the socket to
 *                                  CLOSE first and send the reset after
 *                                  (tcp_send_active_reset): reset_out
 *   ESTABLISHED, sk_err set        tcp_write_err() (retransmits timed out):
 *                                  this end gave up: local
 *   CLOSE_WAIT, sk_err set         the peer had closed already: peer */
static __always_inline int on_close(struct sock *sk, int oldstate, bool btf)
{
	__u64 key = sk_key(sk, btf);
	struct tcplat_session *s = bpf_map_lookup_elem(&sessions, &key);
	struct tcplat_close *r;
	struct tcp_sock *tp;
	__u32 closed_by, s_zero_windows;
	__u64 now;

	if (!s)
		return 0; /* not ours: passive, filtered out, or opened before we attached */
	/* Another socket at the address of one whose CLOSE the kernel did not
	 * let us see (a skipped run: stats missed.state): drop that stale
	 * session, counted, instead of reporting this socket under its name. */
	if (s->dport != RD(btf, sk, __sk_common.skc_dport) || s->daddr != RD(btf, sk, __sk_common.skc_daddr)) {
		bpf_map_delete_elem(&sessions, &key);
		count(TCPLAT_CNT_DROP_SESSION_STALE);
		return 0;
	}
	now = bpf_ktime_get_boot_ns();
	closed_by = s->closed_by;
	if (!closed_by) {
		if (oldstate == ST_LAST_ACK)
			closed_by = TCPLAT_CLOSED_PEER;
		else if (oldstate == ST_ESTABLISHED || oldstate == ST_CLOSE_WAIT)
			closed_by = !RD(btf, sk, sk_err) ? TCPLAT_CLOSED_RESET_OUT :
				    oldstate == ST_CLOSE_WAIT ? TCPLAT_CLOSED_PEER : TCPLAT_CLOSED_LOCAL;
		else
			closed_by = TCPLAT_CLOSED_LOCAL;
	}
	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		bpf_map_delete_elem(&sessions, &key);
		count(TCPLAT_CNT_DROP_CLOSE_RINGBUF);
		return 0;
	}
	r->c.start_ns = s->start_ns;
	r->c.latency_ns = 0;
	r->c.cgroup_id = s->cgroup_id;
	r->c.pid = s->pid;
	r->c.tid = s->tid;
	r->c.syn_retrans = 0;
	r->c.err = 0;
	r->c.ok = 1;
	r->c._pad = 0;
	__builtin_memcpy(r->c.comm, s->comm, sizeof(r->c.comm));
	__builtin_memcpy(r->c.thread, s->thread, sizeof(r->c.thread));
	r->lifespan_ns = now > s->start_ns ? now - s->start_ns : 0;
	s_zero_windows = s->zero_windows;
	bpf_map_delete_elem(&sessions, &key);
	fill_addrs(&r->c, sk, false, btf);
	/* The totals are still in place: tcp_disconnect() clears them only
	 * after its tcp_set_state(TCP_CLOSE). */
	tp = btf ? bpf_skc_to_tcp_sock(sk) : (struct tcp_sock *)sk;
	if (tp) {
		/* Payload bytes: the counters also advance by one for each
		 * control flag that takes a sequence number. bytes_acked
		 * counts our SYN (acked: we are past ESTABLISHED) and our FIN
		 * once acked (so in FIN_WAIT2, and in CLOSING/LAST_ACK when
		 * everything is acked); bytes_received counts the peer's FIN
		 * (SOCK_DONE), not its SYN (tcp_rcv_synsent_state_process
		 * sets rcv_nxt directly). */
		__u64 acked = RD(btf, tp, bytes_acked);
		__u64 rcvd = RD(btf, tp, bytes_received);
		__u64 ctl = 1;

		if (oldstate == ST_FIN_WAIT2 ||
		    ((oldstate == ST_CLOSING || oldstate == ST_LAST_ACK) &&
		     RD(btf, tp, snd_una) == RD(btf, tp, write_seq)))
			ctl++;
		r->bytes_sent = acked > ctl ? acked - ctl : 0;
		if ((RD(btf, sk, __sk_common.skc_flags) >> SOCK_DONE_BIT) & 1)
			rcvd = rcvd ? rcvd - 1 : 0;
		r->bytes_received = rcvd;
		r->retrans = RD(btf, tp, total_retrans);
		r->srtt_us = RD(btf, tp, srtt_us) >> 3;
	} else {
		r->bytes_sent = 0;
		r->bytes_received = 0;
		r->retrans = 0;
		r->srtt_us = 0;
	}
	r->closed_by = closed_by;
	r->zero_windows = s_zero_windows;
	bpf_ringbuf_submit(r, wakeup_flags(now));
	count(TCPLAT_CNT_CLOSE_SUBMITTED);
	return 0;
}

/* A reset received or sent on one of our established connections: the first
 * one decides closed_by. */
static __always_inline int on_reset(struct sock *sk, __u32 kind, bool btf)
{
	__u64 key;
	struct tcplat_session *s;

	if (!sk)
		return 0; /* tcp_v4_send_reset() without a socket */
	key = sk_key(sk, btf);
	s = bpf_map_lookup_elem(&sessions, &key);
	if (s && !s->closed_by)
		s->closed_by = kind;
	return 0;
}

static __always_inline int on_state(struct sock *sk, int oldstate, int newstate, bool btf)
{
	if (newstate == ST_SYN_SENT)
		return oldstate == ST_CLOSE ? on_syn_sent(sk, btf) : 0;
	/* Everything else that is not the end of an active open (or, with close
	 * events, the end of a connection) leaves here, before any lookup: the
	 * server side of every accepted connection (its SYN_RECV ->
	 * ESTABLISHED), data transfer, teardown. */
	if (oldstate != ST_SYN_SENT) {
		if (close_events && newstate == ST_CLOSE)
			return on_close(sk, oldstate, btf);
		return 0;
	}
	/* SYN_RECV: a simultaneous open (both ends sent a SYN; practically never
	 * between a client and a server): the peer answered, the handshake is
	 * over as far as latency goes. */
	if (newstate == ST_ESTABLISHED || newstate == ST_SYN_RECV)
		return on_done(sk, true, btf);
	if (newstate == ST_CLOSE)
		return on_done(sk, false, btf);
	return 0;
}

static __always_inline int on_retransmit(struct sock *sk, int err, bool btf)
{
	struct tcplat_inflight *in;

	/* Since Linux 6.13 the tracepoint also fires when the retransmit failed.
	 * Skip the cases where TCP itself did not send (previous SYN still in a
	 * host queue, no memory): the timer retries and we count that one. A SYN
	 * dropped further down (a local firewall: -EPERM, a full qdisc) was
	 * resent as far as TCP is concerned, and is what the latency shows. */
	if (err == -EBUSY || err == -EAGAIN || err == -ENOMEM)
		return 0;
	/* Data retransmits are the common case: leave before any lookup. */
	if (RD(btf, sk, __sk_common.skc_state) != ST_SYN_SENT)
		return 0;
	in = inflight_find(sk, btf);
	if (in && in->start_ns)
		__sync_fetch_and_add(&in->syn_retrans, 1);
	return 0;
}

/* ---- connect() failing inside the kernel ---- */

/* The socket behind fd of the current task, or NULL. */
static __always_inline struct sock *sock_of_fd(struct task_struct *task, int fd)
{
	struct file **fds, *file;
	struct socket *sock;
	struct fdtable *fdt;

	if (fd < 0)
		return NULL;
	fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_core_read(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	/* private_data is a struct socket only for socket files; a socket
	 * points back at its file. */
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return NULL;
	return BPF_CORE_READ(sock, sk);
}

/* connect() failed before any SYN_SENT (no route: ENETUNREACH/EHOSTUNREACH,
 * prohibited: EACCES/EPERM from a route, a cgroup BPF program or an LSM):
 * nothing moved the socket's state, so build the attempt from the socket and
 * the address the caller passed. */
static __always_inline void report_early_failure(struct sock *sk, const void *uaddr, int err,
						 __u64 pid_tgid)
{
	struct tcplat_event ev = {};
	struct sockaddr_in6 sa = {};
	__u64 now;

	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP ||
	    BPF_CORE_READ_BITFIELD_PROBED(sk, sk_type) != SOCK_STREAM)
		return;
	if (!caller_wanted(pid_tgid >> 32))
		return;
	if (bpf_probe_read_user(&sa, sizeof(struct sockaddr_in), uaddr))
		return;
	if (sa.sin6_family == AF_INET6 && bpf_probe_read_user(&sa, sizeof(sa), uaddr))
		return;
	ev.dport = bpf_ntohs(sa.sin6_port);
	if (!dport_wanted(ev.dport))
		return;
	if (sa.sin6_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&sa;

		__builtin_memcpy(ev.daddr, &sin->sin_addr, 4);
		ev.family = AF_INET;
	} else if (sa.sin6_family == AF_INET6) {
		__builtin_memcpy(ev.daddr, &sa.sin6_addr, 16);
		if (is_v4mapped((const __u32 *)ev.daddr)) {
			__builtin_memcpy(ev.daddr, ev.daddr + 12, 4);
			__builtin_memset(ev.daddr + 4, 0, 12);
			ev.family = AF_INET;
		} else {
			ev.family = AF_INET6;
		}
	} else {
		return;
	}
	ev.sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (ev.family == AF_INET)
		bpf_core_read(ev.saddr, 4, &sk->__sk_common.skc_rcv_saddr);
	else
		bpf_core_read(ev.saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
	now = bpf_ktime_get_boot_ns();
	ev.start_ns = hist_mode ? now : unique_start_ns();
	ev.latency_ns = 0; /* no packet was sent */
	ev.err = err;
	caller(NULL, pid_tgid, &ev.pid, &ev.tid, &ev.cgroup_id, ev.comm, ev.thread, false);
	emit(&ev, now);
}

static __always_inline int on_connect_error(int err)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	struct task_struct *task;
	struct tcplat_pending *p;
	struct pt_regs *regs;
	struct sock *sk;

	switch (err) {
	case EINPROGRESS: /* non-blocking connect: the attempt goes on */
	case EALREADY: case EISCONN: case EINTR: case EAGAIN:
	case ERESTARTSYS: case ERESTARTNOINTR: case ERESTARTNOHAND:
	case EBADF: case ENOTSOCK: case EFAULT: case EAFNOSUPPORT:
	case EPROTOTYPE: case EOPNOTSUPP:
		return 0; /* no attempt, or one still going on */
	}
	p = bpf_map_lookup_elem(&pending, &tid);
	if (p && p->kind == PENDING_DEFERRED) {
		struct tcplat_event ev;

		__builtin_memcpy(&ev, &p->e, sizeof(ev));
		bpf_map_delete_elem(&pending, &tid);
		ev.err = err;
		emit(&ev, bpf_ktime_get_boot_ns());
		return 0;
	}
	/* Errors only a SYN's answer gives were reported from sk_err. */
	if (err == ECONNREFUSED || err == ETIMEDOUT || err == ECONNRESET || err == ECONNABORTED)
		return 0;
	task = bpf_get_current_task_btf();
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	sk = sock_of_fd(task, (int)PT_REGS_PARM1_CORE_SYSCALL(regs));
	if (!sk)
		return 0;
	if (p && p->kind == PENDING_REPORTED) {
		bool same = p->sk == (__u64)sk;

		bpf_map_delete_elem(&pending, &tid);
		if (same)
			return 0;
	}
	report_early_failure(sk, (const void *)PT_REGS_PARM2_CORE_SYSCALL(regs), err, pid_tgid);
	return 0;
}

struct tp_sys_exit {
	__u64 __common;
	int __syscall_nr;
	long ret;
};

SEC("tracepoint/syscalls/sys_exit_connect")
int tp_sys_exit_connect(struct tp_sys_exit *ctx)
{
	long ret = ctx->ret;

	if (ret >= 0 || ret == -EINPROGRESS)
		return 0; /* the common cases, at the cost of one compare */
	return on_connect_error((int)-ret);
}

/* ---- BTF raw tracepoints (preferred) ---- */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(btf_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate, true);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(btf_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb)
{
	int err = 0;

	if (retrans_has_err)
		err = (int)ctx[2];
	return on_retransmit(sk, err, true);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(btf_tcp_receive_reset, struct sock *sk)
{
	return on_reset(sk, TCPLAT_CLOSED_RESET_IN, true);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(btf_tcp_send_reset, struct sock *sk)
{
	return on_reset(sk, TCPLAT_CLOSED_RESET_OUT, true);
}

/* --zero-windows: tcp:tcp_probe fires at the start of tcp_rcv_established(),
 * for every segment an established socket receives (hot: off by default; see
 * bpf/README.md for its cost). A zero window in the segment's header while the
 * socket's send window (tp->snd_wnd, not yet updated by this segment) is not
 * zero: the peer's window just closed, one more episode. Resets (window 0 too)
 * do not count. The header is read before any lookup: other segments leave at
 * once. */
SEC("tp_btf/tcp_probe")
int BPF_PROG(btf_tcp_probe, struct sock *sk, struct sk_buff *skb)
{
	/* tcp_rcv_established() reads its header at skb->data */
	unsigned char *th = skb->data;
	__u8 hdr[4] = { 0, 0, 1, 1 }; /* data offset, flags, window (network order) */
	struct tcplat_session *s;
	struct tcp_sock *tp;
	__u64 key;

	bpf_probe_read_kernel(hdr, sizeof(hdr), th + 12);
	if (hdr[2] || hdr[3] || (hdr[1] & 0x04 /* RST */))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp || tp->snd_wnd == 0)
		return 0;
	key = sk_key(sk, true);
	s = bpf_map_lookup_elem(&sessions, &key);
	if (s)
		__sync_fetch_and_add(&s->zero_windows, 1);
	return 0;
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

struct tp_tcp_receive_reset {
	__u64 __common;
	const void *skaddr;
};

struct tp_tcp_send_reset {
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
	return on_state((struct sock *)ctx->skaddr, ctx->oldstate, ctx->newstate, false);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tp_tcp_retransmit_skb(struct tp_tcp_retransmit_skb *ctx)
{
	struct trace_event_raw_tcp_retransmit_skb___tcplat *t = (void *)ctx;
	int err = 0;

	if (bpf_core_field_exists(t->err))
		err = t->err;
	return on_retransmit((struct sock *)ctx->skaddr, err, false);
}

SEC("tracepoint/tcp/tcp_receive_reset")
int tp_tcp_receive_reset(struct tp_tcp_receive_reset *ctx)
{
	return on_reset((struct sock *)ctx->skaddr, TCPLAT_CLOSED_RESET_IN, false);
}

SEC("tracepoint/tcp/tcp_send_reset")
int tp_tcp_send_reset(struct tp_tcp_send_reset *ctx)
{
	return on_reset((struct sock *)ctx->skaddr, TCPLAT_CLOSED_RESET_OUT, false);
}
