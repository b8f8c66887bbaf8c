/* A roam client in plain C: sends its message over a roam descriptor, reads the server's
 * answer to the end, and prints it with the session's paths.
 *
 *   cc client.c -I.. -L<target>/debug -lroam -o client
 *   ./client HOST:PORT 'OPTIONS_JSON' 'message'
 *
 * The descriptor is an ordinary stream socket to the program: write(2), shutdown(2), read(2),
 * close(2). The session under it moves between the device's interfaces by itself. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "roam.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST:PORT OPTIONS_JSON MESSAGE\n", argv[0]);
        return 2;
    }
    int fd = roam_connect(argv[1], argv[2]);
    if (fd < 0) {
        fprintf(stderr, "connect failed (errno %d: %s): %s\n", errno, strerror(errno),
                roam_last_error());
        return 1;
    }
    const char *msg = argv[3];
    size_t len = strlen(msg), off = 0;
    while (off < len) {
        ssize_t n = write(fd, msg + off, len - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("write");
            return 1;
        }
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR); /* the server reads the end of our stream */

    char paths[4096];
    if (roam_paths(fd, paths, sizeof paths) >= 0)
        fprintf(stderr, "paths: %s\n", paths);
    else
        fprintf(stderr, "roam_paths: %s\n", roam_last_error());

    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("read");
            return 1;
        }
        if (n == 0) break;
        fwrite(buf, 1, (size_t)n, stdout);
    }
    fflush(stdout);
    close(fd);
    return 0;
}
