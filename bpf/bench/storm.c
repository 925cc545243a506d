// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * storm: loopback TCP connect storm for benchmarking the probe.
 *
 * Listens on 127.0.0.1:PORT (or [::1]) and accepts-and-closes in one thread;
 * THREADS client threads loop socket/connect/close for SECONDS. The client
 * closes with SO_LINGER 0 (RST): without it every connection would leave a
 * TIME_WAIT socket and the ephemeral ports would run out within seconds.
 * With -r (remote peer), no listener: a TUN device (tcplatstorm0, 10.213.0.1/30) carries the
 * clients' SYNs to a thread of this program that answers each with a SYN-ACK as a remote server would,
 * and drops everything else (the client's ACK and RST). Only the client's side of each connection then
 * runs in this kernel, as on a host whose servers are elsewhere; the peer's work is this thread's
 * user-space packet crafting (counted in cpu_s, unlike a real remote server).
 * Prints one JSON line on stdout:
 *   {"connects":N,"errors":E,"seconds":S,"rate":R,"cpu_s":C,"threads":T,"port":P}
 * cpu_s is the storm's own user+system CPU time: on loopback the whole
 * handshake, both ends and any BPF program on the path run in its context.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
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

static atomic_int stop, stop_peer;
static struct sockaddr_storage dst;
static socklen_t dst_len;
static int listen_fd;
static int tun_fd = -1;

#define TUN_NAME "tcplatstorm0"
#define TUN_LOCAL "10.213.0.1"
#define TUN_PEER "10.213.0.2"

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

/* Internet checksum over the buffer, starting from sum. */
static unsigned short csum(const void *buf, size_t len, unsigned int sum)
{
	const unsigned char *p = buf;

	for (; len > 1; len -= 2, p += 2)
		sum += (p[0] << 8) | p[1];
	if (len)
		sum += p[0] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return htons(~sum & 0xffff);
}

/*
 * The remote peer: answers every SYN that reaches the TUN device with a SYN-ACK (RFC 793: ack = the
 * client's ISN + 1, our own ISN, no options: the client then assumes an MSS of 536, which a handshake
 * without data never uses) and ignores every other segment. Runs until stop.
 */
static void *responder(void *arg)
{
	unsigned char in[2048], out[40];
	unsigned int isn = 0x1000;

	(void)arg;
	while (!atomic_load_explicit(&stop_peer, memory_order_relaxed)) {
		struct pollfd pfd = { .fd = tun_fd, .events = POLLIN };
		struct iphdr *ip = (struct iphdr *)in, *oip = (struct iphdr *)out;
		struct tcphdr *tcp, *otcp = (struct tcphdr *)(out + 20);
		unsigned char pseudo[12];
		unsigned int sum = 0;
		ssize_t n;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = read(tun_fd, in, sizeof(in));
		if (n < 40 || ip->version != 4 || ip->protocol != IPPROTO_TCP || (size_t)n < ip->ihl * 4u + 20)
			continue;
		tcp = (struct tcphdr *)(in + ip->ihl * 4);
		if (!tcp->syn || tcp->ack)
			continue;
		memset(out, 0, sizeof(out));
		oip->version = 4;
		oip->ihl = 5;
		oip->tot_len = htons(40);
		oip->ttl = 64;
		oip->protocol = IPPROTO_TCP;
		oip->saddr = ip->daddr;
		oip->daddr = ip->saddr;
		oip->check = csum(oip, 20, 0);
		otcp->source = tcp->dest;
		otcp->dest = tcp->source;
		otcp->seq = htonl(isn += 7919);
		otcp->ack_seq = htonl(ntohl(tcp->seq) + 1);
		otcp->doff = 5;
		otcp->syn = 1;
		otcp->ack = 1;
		otcp->window = htons(65535);
		memcpy(pseudo, &oip->saddr, 4);
		memcpy(pseudo + 4, &oip->daddr, 4);
		pseudo[8] = 0;
		pseudo[9] = IPPROTO_TCP;
		pseudo[10] = 0;
		pseudo[11] = 20;
		for (int i = 0; i < 12; i += 2)
			sum += (pseudo[i] << 8) | pseudo[i + 1];
		otcp->check = csum(otcp, 20, sum);
		if (write(tun_fd, out, sizeof(out)) < 0 && errno != EAGAIN)
			perror("storm: tun write");
	}
	return NULL;
}

/* Create and configure the TUN device: TUN_LOCAL/30 here, TUN_PEER reached through it. */
static int tun_open(void)
{
	struct ifreq ifr;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ifr.ifr_addr;
	int fd = open("/dev/net/tun", O_RDWR), s;

	if (fd < 0) {
		perror("storm: /dev/net/tun (needs root and the tun module)");
		return -1;
	}
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	strncpy(ifr.ifr_name, TUN_NAME, IFNAMSIZ - 1);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		perror("storm: TUNSETIFF");
		return -1;
	}
	s = socket(AF_INET, SOCK_DGRAM, 0);
	sin->sin_family = AF_INET;
	inet_pton(AF_INET, TUN_LOCAL, &sin->sin_addr);
	if (ioctl(s, SIOCSIFADDR, &ifr) < 0) {
		perror("storm: SIOCSIFADDR");
		return -1;
	}
	inet_pton(AF_INET, "255.255.255.252", &sin->sin_addr);
	if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0) {
		perror("storm: SIOCSIFNETMASK");
		return -1;
	}
	/* a long queue: a SYN the responder has no time for would cost its connect a 1 s retransmit */
	ifr.ifr_qlen = 65536;
	if (ioctl(s, SIOCSIFTXQLEN, &ifr) < 0) {
		perror("storm: SIOCSIFTXQLEN");
		return -1;
	}
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
		perror("storm: SIOCGIFFLAGS");
		return -1;
	}
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
		perror("storm: SIOCSIFFLAGS");
		return -1;
	}
	close(s);
	return fd;
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
	fprintf(stderr, "usage: storm [-d SECONDS] [-t THREADS] [-p PORT] [-6 | -r]\n"
			"  loopback connect+close loop against a built-in accept-and-close server;\n"
			"  -r: against a remote peer instead (" TUN_PEER " through the TUN device " TUN_NAME ",\n"
			"      answered by a thread of this program): only the client side runs in this kernel\n"
			"  prints {\"connects\":N,\"errors\":E,\"seconds\":S,\"rate\":R,\"cpu_s\":C,...} on stdout\n");
	exit(2);
}

int main(int argc, char **argv)
{
	double seconds = 5, t0, t1;
	int threads = 2, port = 0, v6 = 0, remote = 0, c, one = 1;
	unsigned long long connects = 0, errors = 0;
	struct sockaddr_storage bound;
	socklen_t blen = sizeof(bound);
	pthread_t acc;
	struct worker *ws;
	struct rusage ru;

	while ((c = getopt(argc, argv, "d:t:p:6rh")) != -1) {
		switch (c) {
		case 'd': seconds = atof(optarg); break;
		case 't': threads = atoi(optarg); break;
		case 'p': port = atoi(optarg); break;
		case '6': v6 = 1; break;
		case 'r': remote = 1; break;
		default: usage();
		}
	}
	if (seconds <= 0 || threads <= 0 || port < 0 || port > 65535 || (remote && (v6 || port == 0)))
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
	if (remote) {
		struct sockaddr_in *a = (struct sockaddr_in *)&dst;

		inet_pton(AF_INET, TUN_PEER, &a->sin_addr);
		tun_fd = tun_open();
		if (tun_fd < 0)
			return 1;
		pthread_create(&acc, NULL, responder, NULL);
		goto run;
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
run:
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
	if (remote) {
		atomic_store(&stop_peer, 1);
		pthread_join(acc, NULL); /* the responder polls stop_peer every 100 ms */
		close(tun_fd); /* the device goes with its last fd */
	} else {
		shutdown(listen_fd, SHUT_RDWR);
		pthread_join(acc, NULL);
		close(listen_fd);
	}
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"connects\":%llu,\"errors\":%llu,\"seconds\":%.3f,\"rate\":%.0f,\"cpu_s\":%.3f,"
	       "\"threads\":%d,\"port\":%d}\n",
	       connects, errors, t1 - t0, connects / (t1 - t0),
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
	       threads, port);
	return 0;
}
