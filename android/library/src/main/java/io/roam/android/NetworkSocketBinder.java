package io.roam.android;

import android.net.Network;
import android.os.ParcelFileDescriptor;

import io.roam.SocketBinder;

import java.io.IOException;

/**
 * A {@link SocketBinder} through {@code Network.bindSocket} (API 28 for
 * {@code Network.fromNetworkHandle}). The default, with no binder set, is the NDK's
 * {@code android_setsocknetwork}, which needs no Java at all; this one is for apps that want the
 * platform's Java path (and its exceptions) instead.
 */
@android.annotation.TargetApi(28)
public final class NetworkSocketBinder implements SocketBinder {
    @Override
    public void bindSocket(int fd, long networkHandle) {
        Network network = Network.fromNetworkHandle(networkHandle);
        // fromFd duplicates the descriptor; the mark is set on the socket both share.
        try (ParcelFileDescriptor dup = ParcelFileDescriptor.fromFd(fd)) {
            network.bindSocket(dup.getFileDescriptor());
        } catch (IOException e) {
            throw new IllegalStateException("binding socket " + fd + " to " + network + ": " + e.getMessage(), e);
        }
    }
}
