/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between tcplat.bpf.c (kernel) and tcplat-probe.c (user space). */
#ifndef TCPLAT_H
#define TCPLAT_H

#define TCPLAT_COMM_LEN 16

/* Sizes of the bounded maps. The in-flight map is an LRU: an attempt whose
 * socket never leaves SYN_SENT (should not happen, but a missed tracepoint run
 * could cause it) is evicted instead of leaking. */
#define TCPLAT_MAX_INFLIGHT 65536
#define TCPLAT_MAX_FILTER 1024

/* Index into the per-CPU counters map. */
enum tcplat_counter {
	TCPLAT_CNT_SUBMITTED = 0, /* events put into the ring buffer */
	TCPLAT_CNT_DROPPED = 1,   /* ring buffer full: event lost (counted, reported) */
	TCPLAT_CNT_MAX,
};

/* A connect attempt in flight, keyed by socket pointer. Everything about the
 * caller is captured at CLOSE->SYN_SENT, which runs in the connecting task;
 * the completion (SYN_SENT->ESTABLISHED/CLOSE) usually runs in softirq. */
struct tcplat_inflight {
	__u64 start_ns; /* CLOCK_MONOTONIC, made unique host-wide */
	__u64 cgroup_id;
	__u32 pid;      /* tgid */
	__u32 tid;
	__u32 syn_retrans;
	__u32 errq_len;  /* socket error queue length at SYN time */
	char comm[TCPLAT_COMM_LEN];
};

struct tcplat_event {
	__u64 start_ns;   /* CLOCK_MONOTONIC when the SYN was sent */
	__u64 latency_ns; /* from start to ESTABLISHED or CLOSE */
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 syn_retrans;
	__s32 err;        /* 0 when ok; else sk_err (or sk_err_soft) at CLOSE */
	__u16 family;     /* AF_INET or AF_INET6 (as the socket was created) */
	__u16 sport;      /* host byte order */
	__u16 dport;      /* host byte order */
	__u8 ok;          /* 1: reached ESTABLISHED */
	__u8 _pad;
	__u8 saddr[16];   /* AF_INET: first 4 bytes; AF_INET6: all 16 */
	__u8 daddr[16];
	char comm[TCPLAT_COMM_LEN];
};

#endif /* TCPLAT_H */
