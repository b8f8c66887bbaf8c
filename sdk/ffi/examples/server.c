/* A roam echo server in plain C: listens, accepts sessions one after another, prints each
 * peer's JSON, and echoes what the client sends until it ends its stream.
 *
 *   cc server.c -I.. -L<target>/debug -lroam -o server
 *   ./server ADDR:PORT '{"cert":"chain.pem","key":"key.pem"}' [SESSIONS]
 *
 * It prints "listening" once the listener is up, and stops after SESSIONS sessions (default:
 * never). A session that fails is reported and the server goes on.
 *
 * As with any socket, writing to a descriptor whose session has ended raises SIGPIPE: a
 * server ignores it and handles EPIPE instead. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "roam.h"

static int echo(int fd) {
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("read");
            return -1;
        }
        if (n == 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR) continue;
                perror("write");
                return -1;
            }
            off += w;
        }
    }
    shutdown(fd, SHUT_WR);
    /* Wait for the client to close, so our last bytes reach it before the session ends. */
    while (read(fd, buf, sizeof buf) > 0) {
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ADDR:PORT OPTIONS_JSON [SESSIONS]\n", argv[0]);
        return 2;
    }
    long sessions = argc > 3 ? strtol(argv[3], NULL, 10) : -1;
    signal(SIGPIPE, SIG_IGN);
    int lfd = roam_listen(argv[1], argv[2]);
    if (lfd < 0) {
        fprintf(stderr, "listen failed (errno %d: %s): %s\n", errno, strerror(errno),
                roam_last_error());
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    for (long i = 0; sessions < 0 || i < sessions; i++) {
        char peer[1024];
        int fd = roam_accept(lfd, peer, sizeof peer);
        if (fd < 0) {
            fprintf(stderr, "accept failed: %s\n", roam_last_error());
            return 1;
        }
        printf("peer %s\n", peer);
        fflush(stdout);
        if (echo(fd) < 0) fprintf(stderr, "session %ld failed; going on\n", i);
        close(fd);
    }
    close(lfd);
    return 0;
}
