/* A library that only shows it was loaded: its constructor creates the file named by
 * MARKER_FILE. tests/run_cmd.rs puts it where a split LD_PRELOAD entry would find it. */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void mark(void) {
  const char *path = getenv("MARKER_FILE");
  if (path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0)
      close(fd);
  }
}
