/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between tcplat.bpf.c (kernel) and tcplat-probe.c (user space). */
#ifndef TCPLAT_H
#define TCPLAT_H

#define TCPLAT_COMM_LEN 16
#define TCPLAT_MAX_FILTER 1024

/* Bounded maps (sizes are defaults; the loader resizes them). In-flight
 * attempts go to direct-mapped slots (BTF path, --inflight-fast), else to a
 * preallocated hash of TCPLAT_MAX_INFLIGHT entries; when it is full, the BTF
 * path puts them in socket-local storage (no capacity), the classic-tracepoint
 * fallback counts them (inflight_full). */
#define TCPLAT_MAX_INFLIGHT 16384
/* connect() calls that failed inside the kernel, waiting for their errno at
 * syscall exit (microseconds), keyed by thread id. */
#define TCPLAT_MAX_PENDING 1024
/* --mode hist: distinct (cgroup, process, destination, result) keys per window. */
#define TCPLAT_MAX_HIST 4096
/* pkg/core/src/buckets.ts: 31 finite bounds (10 us .. 10 s) + overflow. */
#define TCPLAT_NBUCKETS 32

/* Index into the per-CPU counters map. Every loss has its own reason. */
enum tcplat_counter {
	TCPLAT_CNT_SUBMITTED = 0,     /* events put into the ring buffer */
	TCPLAT_CNT_DROP_RINGBUF,      /* ring buffer full */
	TCPLAT_CNT_DROP_STORAGE,      /* socket-local storage could not be allocated */
	TCPLAT_CNT_DROP_INFLIGHT,     /* fallback path: in-flight hash full */
	TCPLAT_CNT_DROP_PENDING,      /* in-kernel connect() failure could not wait for its errno */
	TCPLAT_CNT_DROP_HIST,         /* --mode hist: histogram map full */
	TCPLAT_CNT_HIST_ADDED,        /* --mode hist: attempts added to a histogram */
	TCPLAT_CNT_DROP_SESSION,      /* close events: established-connection map full */
	TCPLAT_CNT_DROP_CLOSE_RINGBUF, /* close events: ring buffer full */
	TCPLAT_CNT_CLOSE_SUBMITTED,   /* close events put into the ring buffer */
	TCPLAT_CNT_DROP_SESSION_STALE, /* a session whose CLOSE was missed, found by another socket */
	TCPLAT_CNT_MAX,
};

/* A connect attempt in flight (socket-local storage, or the fallback hash
 * keyed by socket pointer). Everything about the caller is captured at
 * CLOSE->SYN_SENT, which runs in the connecting task; the completion
 * (SYN_SENT->ESTABLISHED/CLOSE) usually runs in softirq. */
struct tcplat_inflight {
	__u64 start_ns;  /* CLOCK_BOOTTIME when the SYN was sent; 0: nothing in flight */
	__u64 cgroup_id;
	__u32 pid;       /* tgid */
	__u32 tid;
	__u32 syn_retrans;
	__u32 errq_len;  /* socket error queue length at SYN time */
	__s32 err_soft;  /* sk_err_soft at SYN time */
	__u32 where;     /* IN_HASH or IN_STORAGE (tcplat.bpf.c) */
	char comm[TCPLAT_COMM_LEN];   /* process (thread-group leader) name */
	char thread[TCPLAT_COMM_LEN]; /* the calling thread's own name */
};

struct tcplat_event {
	__u64 start_ns;   /* CLOCK_BOOTTIME when the SYN was sent */
	__u64 latency_ns; /* from start to ESTABLISHED or CLOSE */
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 syn_retrans;
	__s32 err;        /* 0 when ok; else the errno */
	__u16 family;     /* AF_INET or AF_INET6 (after v4-mapped folding) */
	__u16 sport;      /* host byte order */
	__u16 dport;      /* host byte order */
	__u8 ok;          /* 1: reached ESTABLISHED */
	__u8 _pad;
	__u8 saddr[16];   /* AF_INET: first 4 bytes; AF_INET6: all 16 */
	__u8 daddr[16];
	char comm[TCPLAT_COMM_LEN];
	char thread[TCPLAT_COMM_LEN];
};

/* An established outbound connection, from SYN_SENT -> ESTABLISHED to its
 * CLOSE (the sessions hash, keyed by socket pointer): who opened it, when,
 * and how it ended so far. */
#define TCPLAT_MAX_SESSIONS 65536
#define TCPLAT_CLOSED_LOCAL 1     /* this end sent the first FIN */
#define TCPLAT_CLOSED_PEER 2      /* the peer sent the first FIN */
#define TCPLAT_CLOSED_RESET_IN 3  /* the peer reset it */
#define TCPLAT_CLOSED_RESET_OUT 4 /* this end reset it */
struct tcplat_session {
	__u64 start_ns;  /* CLOCK_BOOTTIME of the SYN: the connect event's ts_ns */
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__u32 closed_by; /* a reset seen on the way (TCPLAT_CLOSED_RESET_*), else 0 */
	__u32 zero_windows; /* --zero-windows: times the peer's window went to 0 */
	__u32 daddr;     /* skc_daddr, skc_dport: the same socket at CLOSE? */
	__u16 dport;
	__u16 _pad;
	char comm[TCPLAT_COMM_LEN];
	char thread[TCPLAT_COMM_LEN];
};

/* A close record: the connect record's fields (start_ns is the join key;
 * latency_ns unused) plus the connection's totals. Larger than struct
 * tcplat_event: the reader tells the two kinds apart by size. */
struct tcplat_close {
	struct tcplat_event c;
	__u64 lifespan_ns;    /* SYN to CLOSE */
	__u64 bytes_sent;     /* tcp_sock.bytes_acked */
	__u64 bytes_received; /* tcp_sock.bytes_received */
	__u32 retrans;        /* tcp_sock.total_retrans (SYN retransmits included) */
	__u32 srtt_us;        /* tcp_sock.srtt_us >> 3 */
	__u32 closed_by;      /* TCPLAT_CLOSED_* */
	__u32 zero_windows;   /* --zero-windows only */
};

/* --mode hist */
struct tcplat_hist_key {
	__u64 cgroup_id;
	__u32 pid;
	__s32 err;
	__u16 family;
	__u16 dport;
	__u8 ok;
	__u8 _pad[3];
	__u8 daddr[16];
	char comm[TCPLAT_COMM_LEN];
};

struct tcplat_hist_val {
	__u64 count;
	__u64 sum_ns;
	__u64 min_ns;
	__u64 max_ns;
	__u64 syn_retrans;
	__u64 buckets[TCPLAT_NBUCKETS];
};

#endif /* TCPLAT_H */
