package io.roam;

/**
 * Puts a socket on a network. On Android the default (no binder set) is the NDK's
 * {@code android_setsocknetwork}; an app may give one that calls
 * {@code Network.fromNetworkHandle(h).bindSocket(...)} instead. Throw to refuse.
 */
public interface SocketBinder {
    void bindSocket(int fd, long networkHandle);
}
