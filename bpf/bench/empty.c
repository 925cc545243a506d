/* bpf/bench/empty: attach bench/empty.bpf.o (programs that return at once on
 * tcplat-probe's hooks), print "empty: attached" on stderr, hold the links
 * until SIGINT/SIGTERM. Used by scripts/bench-probe as the "empty"
 * configuration: the in-kernel cost per connect of merely having programs on
 * those hooks. Usage: empty [PATH/TO/empty.bpf.o] */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

int main(int argc, char **argv)
{
	const char *path = argc > 1 ? argv[1] : "bench/empty.bpf.o";
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_link *links[8];
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
		if (n == 8)
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
	while (!stop)
		pause();
	while (n > 0)
		bpf_link__destroy(links[--n]);
	bpf_object__close(obj);
	return 0;
}
