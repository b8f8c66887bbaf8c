package io.roam;

import java.io.Closeable;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/**
 * A roam session: a byte stream to a named peer that moves between the device's networks as
 * the policy says. Blocking: use it from a thread of your own, never the main thread.
 */
public final class RoamSession implements Closeable {
    final long handle;

    private RoamSession(long handle) {
        this.handle = handle;
    }

    /** How to connect; every field is optional. */
    public static final class Options {
        /** The app id the policy's {@code app "..."} blocks match. */
        public String app;
        /** Trust only this CA (DER); null: the system's trust store. */
        public byte[] caDer;
        /** The name the certificate must carry when it is not the target's host. */
        public String serverName;
        /** Resolving, racing and the handshake in all. */
        public int connectTimeoutMs = 10_000;
    }

    /** Connects to {@code target} ({@code host:port}) over the paths {@code bridge} decides. */
    public static RoamSession connect(RoamBridge bridge, String target, Options o) {
        if (o == null) o = new Options();
        return new RoamSession(RoamNative.sessionConnect(bridge.handle, target, o.app, o.caDer,
                o.serverName, o.connectTimeoutMs));
    }

    /** Bytes read into {@code buf}, or -1 at the end of the peer's stream. */
    public int read(byte[] buf, int off, int len) {
        return RoamNative.sessionRead(handle, buf, off, len);
    }

    public void write(byte[] buf, int off, int len) {
        RoamNative.sessionWrite(handle, buf, off, len);
    }

    /** Ends this side of the stream; the peer reads to its end, reading here goes on. */
    public void shutdownOutput() {
        RoamNative.sessionShutdownOutput(handle);
    }

    /** The next event (path changed, degraded, recovered, decision) as JSON, or null on timeout. */
    public String nextEvent(int timeoutMs) {
        return RoamNative.sessionNextEvent(handle, timeoutMs);
    }

    /** The current path (interface, addresses, rtt, byte counts) as JSON. */
    public String path() {
        return RoamNative.sessionPath(handle);
    }

    @Override
    public void close() {
        RoamNative.sessionClose(handle);
    }

    /** The session as an InputStream (RoamException becomes IOException). */
    public InputStream inputStream() {
        return new InputStream() {
            @Override public int read() throws IOException {
                byte[] one = new byte[1];
                int n = read(one, 0, 1);
                return n < 0 ? -1 : one[0] & 0xff;
            }
            @Override public int read(byte[] b, int off, int len) throws IOException {
                try {
                    return RoamSession.this.read(b, off, len);
                } catch (RoamException e) {
                    throw new IOException(e.getMessage(), e);
                }
            }
        };
    }

    /** The session as an OutputStream; close() ends this side of the stream. */
    public OutputStream outputStream() {
        return new OutputStream() {
            @Override public void write(int b) throws IOException {
                write(new byte[] {(byte) b}, 0, 1);
            }
            @Override public void write(byte[] b, int off, int len) throws IOException {
                try {
                    RoamSession.this.write(b, off, len);
                } catch (RoamException e) {
                    throw new IOException(e.getMessage(), e);
                }
            }
            @Override public void close() throws IOException {
                try {
                    shutdownOutput();
                } catch (RoamException e) {
                    throw new IOException(e.getMessage(), e);
                }
            }
        };
    }
}
