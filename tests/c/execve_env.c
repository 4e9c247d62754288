/* execve_env [NAME=VALUE]... -- PROGRAM [ARGS]...: runs PROGRAM with exactly these environment
 * entries, in this order, duplicates and bytes as given (setenv and Python's os.execve would
 * merge a name given twice). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int sep = 1;
  while (sep < argc && strcmp(argv[sep], "--") != 0)
    sep++;
  if (sep + 1 >= argc) {
    fprintf(stderr, "usage: execve_env [NAME=VALUE]... -- PROGRAM [ARGS]...\n");
    return 2;
  }
  char *envp[sep];
  for (int i = 1; i < sep; i++)
    envp[i - 1] = argv[i];
  envp[sep - 1] = NULL;
  execve(argv[sep + 1], argv + sep + 1, envp);
  perror(argv[sep + 1]);
  return 127;
}
