package io.roam;

import java.io.Closeable;

/**
 * roam's link table and policy: feed it ConnectivityManager's facts about each network, get
 * decisions back, and make {@link RoamSession}s that follow them. One per process is enough.
 */
public final class RoamBridge implements Closeable {
    final long handle;

    private RoamBridge(long handle) {
        this.handle = handle;
    }

    /**
     * @param policyText a roam policy (the app's assets/roam/policy.roam), or null for roam's
     *     built-in policy
     * @param sourceName the file name errors point at (line, column, caret), or null
     */
    public static RoamBridge create(String policyText, String sourceName) {
        return new RoamBridge(RoamNative.bridgeCreate(policyText, sourceName));
    }

    /** A network appeared or changed (onAvailable, onCapabilitiesChanged, onLinkPropertiesChanged). */
    public void linkUpdate(long networkHandle, int transport, String interfaceName, String[] addresses,
                           boolean notMetered, boolean validated, int signalDbm) {
        RoamNative.linkUpdate(handle, networkHandle, transport, interfaceName, addresses, notMetered,
                validated, signalDbm);
    }

    /** onLosing: the network is expected to go soon. */
    public void linkLosing(long networkHandle) {
        RoamNative.linkLosing(handle, networkHandle);
    }

    /** onLost. */
    public void linkLost(long networkHandle) {
        RoamNative.linkLost(handle, networkHandle);
    }

    /** The current decision for {@code app} (null: the policy's default block), as JSON. */
    public String decide(String app) {
        return RoamNative.decide(handle, app);
    }

    /** Adds a listener; it is called at once with the current decision. Returns its id. */
    public long addDecisionListener(String app, DecisionListener listener) {
        return RoamNative.addDecisionListener(handle, app, listener);
    }

    public boolean removeDecisionListener(long id) {
        return RoamNative.removeDecisionListener(handle, id);
    }

    /** Sets how sockets are put on networks; null: the NDK's android_setsocknetwork. */
    public void setSocketBinder(SocketBinder binder) {
        RoamNative.setSocketBinder(handle, binder);
    }

    /** Binds a socket (a descriptor of the app's own native code) to a network roam knows. */
    public void bindSocket(int fd, long networkHandle) {
        RoamNative.bindSocket(handle, fd, networkHandle);
    }

    /** Stops the bridge; open sessions keep their last decision. */
    @Override
    public void close() {
        RoamNative.bridgeClose(handle);
    }
}
