/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Shared between tls.bpf.c (kernel) and tls.c (user space): TLS handshakes. */
#ifndef TCPLAT_TLS_H
#define TCPLAT_TLS_H

#define TLS_COMM_LEN 16
#define TLS_MAX_INFLIGHT 16384 /* handshakes in flight (LRU: the oldest go first) */

enum tls_kind {
	TLS_EV_HANDSHAKE = 1, /* a client handshake ended */
	TLS_EV_EXEC = 2,      /* a process called exec(): user space scans it for targets */
};

/* DONE: the handshake was reported; later runs of the state machine on the same
 * SSL* (TLS 1.3 NewSessionTicket and KeyUpdate, TLS 1.2 renegotiation) are not
 * new handshakes. SSL_set_connect_state (SSL_clear + reuse) makes it CLIENT again. */
enum tls_role { TLS_ROLE_UNKNOWN = 0, TLS_ROLE_CLIENT = 1, TLS_ROLE_SERVER = 2, TLS_ROLE_DONE = 3 };

/* Index into the per-CPU counters map. */
enum tls_counter {
	TLS_CNT_OK = 0,
	TLS_CNT_FAILED,
	TLS_CNT_DROP_RINGBUF,   /* ring buffer full */
	TLS_CNT_ROLE_UNKNOWN,   /* SSL* created before the probe attached: role not seen */
	TLS_CNT_UNJOINED,       /* reported without its socket (no write on a TCP socket seen) */
	TLS_CNT_MAX,
};

struct tls_key {
	__u32 pid;   /* tgid: SSL* addresses are per process */
	__u32 _pad;
	__u64 ssl;
};

struct tls_inflight {
	__u64 start_ns;    /* CLOCK_BOOTTIME of the first handshake call */
	__u64 last_ret_ns; /* ... of the last non-positive return */
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__s32 last_ret;    /* last return value; 1 never stays here */
	__u32 calls;
	__u16 family;      /* 0 until joined to its socket */
	__u16 sport;
	__u16 dport;
	__u16 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TLS_COMM_LEN];
	char thread[TLS_COMM_LEN];
};

struct tls_event {
	__u32 kind;       /* enum tls_kind */
	__u32 ok;         /* 1: handshake done (return 1) */
	__u64 start_ns;   /* CLOCK_BOOTTIME */
	__u64 latency_ns; /* first call to final return */
	__u64 cgroup_id;
	__u32 pid;
	__u32 tid;
	__s32 last_ret;
	__u32 calls;      /* handshake calls (retries + 1) */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TLS_COMM_LEN];
	char thread[TLS_COMM_LEN];
};

#endif
