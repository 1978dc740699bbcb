/* TEST DOUBLE: a file system without working flock, for the files under one folder.
 *
 * LD_PRELOAD'ed into a process, flock() on a file under $NOFLOCK_UNDER fails with $NOFLOCK_ERRNO (default
 * ENOLCK, what NFS without lockd answers; ENOSYS is what some FUSE file systems answer).  Every other file
 * locks as usual.  Built with gcc by tests/doubles/noflock.py.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int flock(int fd, int operation) {
    static int (*real_flock)(int, int) = NULL;
    if (real_flock == NULL) real_flock = (int (*)(int, int))dlsym(RTLD_NEXT, "flock");
    const char *under = getenv("NOFLOCK_UNDER");
    if (under != NULL && *under != '\0') {
        char link[64], path[4096];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, path, sizeof path - 1);
        if (n > 0) {
            path[n] = '\0';
            if (strncmp(path, under, strlen(under)) == 0) {
                const char *code = getenv("NOFLOCK_ERRNO");
                errno = (code != NULL && *code != '\0') ? atoi(code) : ENOLCK;
                return -1;
            }
        }
    }
    return real_flock(fd, operation);
}
