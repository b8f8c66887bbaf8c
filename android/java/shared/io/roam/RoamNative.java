package io.roam;

/**
 * The native methods of libroam_android.so (android/src/exports.rs). Apps use {@link RoamBridge}
 * and {@link RoamSession}; this class is their one door into Rust. Every method throws
 * {@link RoamException} on bad arguments, closed handles, failures and panics inside Rust.
 */
public final class RoamNative {
    static {
        System.loadLibrary("roam_android");
    }

    private RoamNative() {}

    /** {@code NetworkCapabilities.SIGNAL_STRENGTH_UNSPECIFIED}. */
    public static final int SIGNAL_UNKNOWN = Integer.MIN_VALUE;

    static native long bridgeCreate(String policyText, String sourceName);
    static native void bridgeClose(long bridge);
    static native void linkUpdate(long bridge, long networkHandle, int transport, String interfaceName,
                                  String[] addresses, boolean notMetered, boolean validated, int signalDbm);
    static native void linkLosing(long bridge, long networkHandle);
    static native void linkLost(long bridge, long networkHandle);
    static native String decide(long bridge, String app);
    static native long addDecisionListener(long bridge, String app, DecisionListener listener);
    static native boolean removeDecisionListener(long bridge, long listenerId);
    static native void setSocketBinder(long bridge, SocketBinder binder);
    static native void bindSocket(long bridge, int fd, long networkHandle);

    static native long sessionConnect(long bridge, String target, String app, byte[] caDer,
                                      String serverName, int timeoutMs);
    static native int sessionRead(long session, byte[] buf, int off, int len);
    static native void sessionWrite(long session, byte[] buf, int off, int len);
    static native void sessionShutdownOutput(long session);
    static native String sessionNextEvent(long session, int timeoutMs);
    static native String sessionPath(long session);
    static native void sessionClose(long session);

    /**
     * Panics inside Rust on purpose: the bridge must turn it into a {@link RoamException} and
     * the VM must go on. For an app's own integration tests.
     */
    public static native void selfTestPanic(String message);
}
