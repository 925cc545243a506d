// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * storm: loopback TCP connect storm for benchmarking the probe.
 *
 * Listens on 127.0.0.1:PORT (or [::1]) and accepts-and-closes in one thread;
 * THREADS client threads loop socket/connect/close for SECONDS. The client
 * closes with SO_LINGER 0 (RST): without it every connection would leave a
 * TIME_WAIT socket and the ephemeral ports would run out within seconds.
 * Prints one JSON line on stdout:
 *   {"connects":N,"errors":E,"seconds":S,"rate":R,"cpu_s":C,"threads":T,"port":P}
 * cpu_s is the storm's own user+system CPU time: on loopback the whole
 * handshake, both ends and any BPF program on the path run in its context.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static atomic_int stop;
static struct sockaddr_storage dst;
static socklen_t dst_len;
static int listen_fd;

struct worker {
	pthread_t th;
	unsigned long long connects, errors;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *acceptor(void *arg)
{
	(void)arg;
	for (;;) {
		int fd = accept(listen_fd, NULL, NULL);

		if (fd >= 0)
			close(fd);
		else if (errno != EINTR && errno != ECONNABORTED)
			return NULL; /* listen socket shut down: we are done */
	}
}

static void *client(void *arg)
{
	struct worker *w = arg;
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		int fd = socket(dst.ss_family, SOCK_STREAM, 0);

		if (fd < 0) {
			w->errors++;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		if (connect(fd, (struct sockaddr *)&dst, dst_len) == 0)
			w->connects++;
		else
			w->errors++;
		close(fd);
	}
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: storm [-d SECONDS] [-t THREADS] [-p PORT] [-6]\n"
			"  loopback connect+close loop against a built-in accept-and-close server;\n"
			"  prints {\"connects\":N,\"errors\":E,\"seconds\":S,\"rate\":R,\"cpu_s\":C,...} on stdout\n");
	exit(2);
}

int main(int argc, char **argv)
{
	double seconds = 5, t0, t1;
	int threads = 2, port = 0, v6 = 0, c, one = 1;
	unsigned long long connects = 0, errors = 0;
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	pthread_t acc;
	struct worker *ws;
	struct rusage ru;

	while ((c = getopt(argc, argv, "d:t:p:6h")) != -1) {
		switch (c) {
		case 'd': seconds = atof(optarg); break;
		case 't': threads = atoi(optarg); break;
		case 'p': port = atoi(optarg); break;
		case '6': v6 = 1; break;
		default: usage();
		}
	}
	if (seconds <= 0 || threads <= 0 || port < 0 || port > 65535)
		usage();

	memset(&dst, 0, sizeof(dst));
	if (v6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&dst;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons(port);
		dst_len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&dst;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons(port);
		dst_len = sizeof(*a);
	}
	listen_fd = socket(dst.ss_family, SOCK_STREAM, 0);
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&dst, dst_len) != 0 ||
	    listen(listen_fd, 4096) != 0 || getsockname(listen_fd, (struct sockaddr *)&bound, &blen)) {
		perror("storm: listen");
		return 1;
	}
	memcpy(&dst, &bound, blen);
	port = ntohs(v6 ? ((struct sockaddr_in6 *)&dst)->sin6_port : ((struct sockaddr_in *)&dst)->sin_port);

	pthread_create(&acc, NULL, acceptor, NULL);
	ws = calloc(threads, sizeof(*ws));
	t0 = now_s();
	for (int i = 0; i < threads; i++)
		pthread_create(&ws[i].th, NULL, client, &ws[i]);
	while (now_s() - t0 < seconds)
		usleep(10000);
	atomic_store(&stop, 1);
	for (int i = 0; i < threads; i++) {
		pthread_join(ws[i].th, NULL);
		connects += ws[i].connects;
		errors += ws[i].errors;
	}
	t1 = now_s();
	shutdown(listen_fd, SHUT_RDWR);
	pthread_join(acc, NULL);
	close(listen_fd);
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"connects\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"rate\":%.0f,\"cpu_s\":%.3f,"
	       "\"threads\":%d,\"port\":%d}\n",
	       connects, errors, t1 - t0, connects / (t1 - t0),
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
	       threads, port);
	return 0;
}
