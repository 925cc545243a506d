// SPDX-License-Identifier: GPL-2.0
/* What each building block of a probe costs per run on this kernel, for
 * scripts/bench-probe --helpers: programs on sock:inet_sock_set_state that each
 * do one thing (a helper call, or the typed loads that replace it) and return.
 * They all run on every state change of the storm, one after the other, so
 * their bpf_stats ns per run compare directly; the first one to touch some
 * piece of kernel code or data pays its cache misses (order matters: compare
 * a program with its neighbours, and with `empty`). Loaded by bench/empty.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sink SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} rb SEC(".maps"); /* read by bench/empty.c, so reserve never fails */

struct key60 {
	__u64 a;
	__u32 b;
	__s32 c;
	__u16 d, e;
	__u8 f, pad[3];
	__u8 g[16];
	char h[16];
};
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct key60);
	__type(value, __u64);
} h SEC(".maps");

struct rec {
	__u64 x[14]; /* 112 bytes: struct tcplat_event's size */
};

/* The result goes somewhere, so nothing is optimised away. */
#define SINK(v) do { __u32 z = 0; volatile __u64 *s = bpf_map_lookup_elem(&sink, &z); if (s) *s += (v); } while (0)
#define P(name) SEC("tp_btf/inet_sock_set_state") int BPF_PROG(name, struct sock *sk, int o, int n)

P(a_empty) { return 0; }
P(b_percpu_lookup) { SINK(1); return 0; }
P(c_ktime_get_boot_ns) { SINK(bpf_ktime_get_boot_ns()); return 0; }
P(d_ktime_get_ns) { SINK(bpf_ktime_get_ns()); return 0; }
P(e_get_current_pid_tgid) { SINK(bpf_get_current_pid_tgid()); return 0; }
P(f_get_current_task_btf) { SINK(bpf_get_current_task_btf()->pid); return 0; }
P(g_probe_read_kernel) { __u64 k = 0; bpf_probe_read_kernel(&k, 8, &sk); SINK(k); return 0; }
P(h_ptr_via_map_value)
{
	__u32 z = 0;
	volatile __u64 *s = bpf_map_lookup_elem(&sink, &z);

	if (s) {
		*s = (__u64)sk;
		SINK(*s);
	}
	return 0;
}
P(i_get_current_cgroup_id) { SINK(bpf_get_current_cgroup_id()); return 0; }
P(j_cgroup_id_typed) { SINK(bpf_get_current_task_btf()->cgroups->dfl_cgrp->kn->id); return 0; }
P(k_get_current_comm) { char c[16]; bpf_get_current_comm(c, 16); SINK(*(__u64 *)c); return 0; }
P(l_comm_typed)
{
	char c[16];

	__builtin_memcpy(c, bpf_get_current_task_btf()->group_leader->comm, 16);
	SINK(*(__u64 *)c + *(__u64 *)(c + 8));
	return 0;
}
P(m_ringbuf_reserve_submit)
{
	struct rec s = {}, *r;

	s.x[0] = n;
	r = bpf_ringbuf_reserve(&rb, sizeof(*r), 0);
	if (r) {
		__builtin_memcpy(r, &s, sizeof(*r));
		bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	}
	SINK(1);
	return 0;
}
P(n_ringbuf_output)
{
	struct rec s = {};

	s.x[0] = n;
	SINK(bpf_ringbuf_output(&rb, &s, sizeof(s), BPF_RB_NO_WAKEUP));
	return 0;
}
P(o_ringbuf_query) { SINK(bpf_ringbuf_query(&rb, BPF_RB_AVAIL_DATA)); return 0; }
P(p_hash_lookup_60b_key) { struct key60 k = {}; k.a = n; SINK(bpf_map_lookup_elem(&h, &k) ? 1 : 0); return 0; }
P(q_sock_typed_loads)
{
	SINK(sk->__sk_common.skc_daddr + sk->__sk_common.skc_dport + sk->sk_err_soft + sk->sk_error_queue.qlen);
	return 0;
}
