/* bpf/bench/empty: attach bench/empty.bpf.o (programs that return at once on
 * tcplat-probe's hooks), print "empty: attached" on stderr, hold the links
 * until SIGINT/SIGTERM. Used by scripts/bench-probe as the "empty"
 * configuration: the in-kernel cost per connect of merely having programs on
 * those hooks. Also loads bench/helpers.bpf.o (scripts/bench-probe --helpers),
 * whose ring buffer "rb" it keeps empty. Usage: empty [PATH/TO/OBJECT.bpf.o] */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }
static int drop_record(void *ctx, void *data, size_t size) { (void)ctx; (void)data; (void)size; return 0; }

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "bench/empty.bpf.o";
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_link *links[32];
	struct ring_buffer *rb = NULL;
	struct bpf_map *rb_map;
	int n = 0, err;

	obj = bpf_object__open_file(path, NULL);
	if (!obj) {
		fprintf(stderr, "empty: cannot open %s: %s\n", path, strerror(errno));
		return 1;
	}
	err = bpf_object__load(obj);
	if (err) {
		fprintf(stderr, "empty: cannot load %s: %s\n", path, strerror(-err));
		return 1;
	}
	bpf_object__for_each_program(prog, obj) {
		if (n == 32)
			break;
		links[n] = bpf_program__attach(prog);
		if (!links[n]) {
			fprintf(stderr, "empty: cannot attach %s: %s\n", bpf_program__name(prog), strerror(errno));
			return 1;
		}
		n++;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	fprintf(stderr, "empty: attached %d programs\n", n);
	rb_map = bpf_object__find_map_by_name(obj, "rb");
	if (rb_map)
		rb = ring_buffer__new(bpf_map__fd(rb_map), drop_record, NULL, NULL);
	while (!stop) {
		if (!rb) {
			pause(); /* nothing to read: no wakeups of our own in the baseline */
			continue;
		}
		ring_buffer__consume(rb);
		usleep(5000);
	}
	ring_buffer__free(rb);
	while (n > 0)
		bpf_link__destroy(links[--n]);
	bpf_object__close(obj);
	return 0;
}
