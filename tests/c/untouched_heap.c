/* A 5 GiB block, never touched (mmapped by glibc, not resident): the heap holds more than
 * 4 GiB from the system while the machine's memory is not used. Prints "ready", then sleeps
 * for the seconds given (default 30) so that `memtrim stat` can read its page. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    void *p = malloc((size_t)5 << 30);
    if (!p) {
        puts("malloc failed");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    sleep(argc > 1 ? (unsigned)atoi(argv[1]) : 30);
    free(p);
    return 0;
}
