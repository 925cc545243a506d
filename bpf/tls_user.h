/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* tls.c's interface to tcplat-probe.c: TLS handshake events (bpf/README.md, "TLS handshakes"). */
#ifndef TCPLAT_TLS_USER_H
#define TCPLAT_TLS_USER_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ring_buffer;

struct tls_ops {
	void (*emit)(const char *line, size_t len); /* one whole NDJSON line */
	int64_t (*wall_of)(int64_t boot_ns);        /* CLOCK_BOOTTIME -> Unix ns */
	void (*log)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
	/* The probe's --pid/--exclude-pid/--cgroup/--dport; dport 0: not joined */
	bool (*wanted)(uint32_t pid, uint64_t cgroup_id, uint16_t dport);
	bool verbose;
};

/* Load, attach the tracepoints and every target found now; add the event ring
 * to rb. 0 on success; on failure the probe runs on without TLS. */
int tls_start(struct ring_buffer *rb, const struct tls_ops *ops);
/* Due rescans (processes that exec'd, the periodic full scan). */
void tls_tick(void);
/* Milliseconds until tls_tick has work, at most max_ms. */
int tls_timeout_ms(int max_ms);
/* The TLS part of a stats line, `,"tls":{...}` (bpf/README.md), into buf (cap bytes, NUL-terminated);
 * returns its length. */
size_t tls_stats_json(char *buf, size_t cap);
/* Summary log line, detach, free. */
void tls_stop(void);
#endif
