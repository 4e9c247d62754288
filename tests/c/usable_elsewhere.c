/* A program linked against a library that has its own malloc_usable_size (as one linked
 * against libjemalloc has), which comes after libmemtrim.so in the lookup order. With
 * -DOTHER_LIB: that library, whose malloc_usable_size answers 12345 for any block.
 * Prints malloc_usable_size(malloc(100)): glibc's 104 whatever serves. */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef OTHER_LIB
size_t malloc_usable_size(void *p) { (void)p; return 12345; }
#else
int main(void) {
    void *p = malloc(100);
    printf("usable %zu\n", malloc_usable_size(p));
    free(p);
    return 0;
}
#endif
