// SPDX-License-Identifier: GPL-2.0
/* The floor of the mechanism, for scripts/bench-probe: programs that do
 * nothing (return at once) on the hooks tcplat-probe uses. What bpf_stats
 * charges for them per run is the price of a program run on this kernel
 * (the tracepoint's call into BPF plus the two clock reads bpf_stats adds
 * around every run), before any probe does any work. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(empty_state, struct sock *sk, int oldstate, int newstate)
{
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(empty_retransmit, struct sock *sk, struct sk_buff *skb)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int empty_exit_connect(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
