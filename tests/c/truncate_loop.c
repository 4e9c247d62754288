/* A user who keeps truncating and re-growing their own stats page, as fast as possible, so that
 * anything reading it through a mapping meets the end of the file (SIGBUS).
 *
 * Usage: truncate_loop PAGE SOURCE. Creates PAGE (0600) if missing, then forever: writes the
 * bytes of SOURCE (a valid page) into it, leaves it for 100 us (so that readers find a page and
 * open it), truncates it to nothing. Runs until killed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: truncate_loop PAGE SOURCE\n");
        return 2;
    }
    static char buf[1 << 16];
    int src = open(argv[2], O_RDONLY);
    ssize_t n = src < 0 ? -1 : read(src, buf, sizeof buf);
    int fd = open(argv[1], O_RDWR | O_CREAT, 0600);
    if (n <= 0 || fd < 0) {
        perror("truncate_loop");
        return 1;
    }
    for (;;) {
        if (pwrite(fd, buf, (size_t)n, 0) != n || usleep(100) != 0 || ftruncate(fd, 0) != 0) {
            perror("truncate_loop");
            return 1;
        }
    }
}
