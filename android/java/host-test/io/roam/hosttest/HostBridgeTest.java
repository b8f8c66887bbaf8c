package io.roam.hosttest;

import io.roam.DecisionListener;
import io.roam.RoamBridge;
import io.roam.RoamException;
import io.roam.RoamNative;
import io.roam.RoamSession;
import io.roam.SocketBinder;
import io.roam.Transport;

import java.lang.reflect.Method;
import java.nio.channels.DatagramChannel;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.security.MessageDigest;
import java.util.List;
import java.util.Random;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Drives libroam_android.so from a real JVM on the host, through the same io.roam classes the
 * Android library ships: link events in, decisions out, errors and panics as exceptions, the
 * socket binder, and a session to a roam Listener on loopback (args: port, CA certificate file).
 * Run by android/tests/jvm.rs; exits non-zero on the first failed check.
 */
public final class HostBridgeTest {
    static int checks = 0;

    static final String POLICY = "link wifi = kind wifi\n"
            + "link cell = kind cellular\n"
            + "link bt = kind bluetooth\n"
            + "default {\n"
            + "  prefer wifi over cell\n"
            + "  avoid bt unless cell.down and wifi.down\n"
            + "  hold 400ms\n"
            + "}\n"
            + "app \"com.example.video\" {\n"
            + "  use wifi only\n"
            + "}\n";

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError("FAILED: " + what);
        checks++;
        System.out.println("ok   " + what);
    }

    interface Body {
        void run() throws Exception;
    }

    static <T extends Throwable> T expect(Class<T> cls, String contains, String what, Body body) {
        try {
            body.run();
        } catch (Throwable t) {
            if (cls.isInstance(t) && t.getMessage() != null && t.getMessage().contains(contains)) {
                check(true, what + " -> " + t.getClass().getSimpleName() + ": "
                        + t.getMessage().split("\n")[0]);
                return cls.cast(t);
            }
            throw new AssertionError("FAILED: " + what + ": wrong exception " + t, t);
        }
        throw new AssertionError("FAILED: " + what + ": no exception");
    }

    static final Pattern PRIMARY = Pattern.compile("\"paths\":\\[(\\{\"interface\":\"([^\"]+)\")?");

    /** The primary interface of a decision's JSON, null when it has no path. */
    static String primary(String json) {
        Matcher m = PRIMARY.matcher(json);
        if (!m.find()) throw new AssertionError("not a decision: " + json);
        return m.group(2);
    }

    static final class Recorder implements DecisionListener {
        final BlockingQueue<String[]> calls = new LinkedBlockingQueue<>();

        @Override
        public void onDecision(String json) {
            calls.add(new String[] {json, Thread.currentThread().getName()});
        }

        /** The next call, already made (listeners run before the reporting call returns). */
        String[] now() {
            String[] c = calls.poll();
            if (c == null) throw new AssertionError("FAILED: the listener was not called synchronously");
            return c;
        }

        /** Waits for a call whose primary is {@code iface}. */
        String[] waitFor(String iface, long ms) throws InterruptedException {
            long end = System.nanoTime() + ms * 1_000_000;
            while (true) {
                long left = (end - System.nanoTime()) / 1_000_000;
                String[] c = calls.poll(Math.max(left, 0), TimeUnit.MILLISECONDS);
                if (c == null) throw new AssertionError("FAILED: no decision with primary " + iface + " in " + ms + " ms");
                if (iface.equals(primary(c[0]))) return c;
            }
        }
    }

    public static void main(String[] args) {
        try {
            run(Integer.parseInt(args[0]), Files.readAllBytes(Paths.get(args[1])));
            System.out.println("ALL " + checks + " CHECKS PASSED");
            System.exit(0);
        } catch (Throwable t) {
            t.printStackTrace(System.out);
            System.exit(1);
        }
    }

    static void run(int port, byte[] ca) throws Exception {
        try (RoamBridge bridge = RoamBridge.create(POLICY, "test.roam")) {
            linksAndDecisions(bridge);
            errorsAndPanics(bridge);
            binder(bridge);
        }
        session(port, ca);
    }

    static void linksAndDecisions(RoamBridge bridge) throws Exception {
        String main = Thread.currentThread().getName();
        Recorder all = new Recorder();
        bridge.addDecisionListener(null, all);
        check(primary(all.now()[0]) == null, "no link yet: the first decision is blocked");

        bridge.linkUpdate(100, Transport.CELLULAR, "rmnet0", new String[] {"198.18.1.2"}, false, true, -90);
        String[] c = all.now();
        check("rmnet0".equals(primary(c[0])) && c[1].equals(main),
                "cellular up: rmnet0 primary, told on the reporting thread: " + c[0]);

        bridge.linkUpdate(101, Transport.WIFI, "wlan0", new String[] {"198.18.0.2", "fe80::1%wlan0"}, true, true, -55);
        all.waitFor("wlan0", 3000);
        check("wlan0".equals(primary(bridge.decide(null))), "wifi up: wlan0 primary (prefer wifi over cell)");
        check(bridge.decide(null).contains("\"role\":\"backup\""), "rmnet0 is the backup: " + bridge.decide(null));

        Recorder video = new Recorder();
        long videoId = bridge.addDecisionListener("com.example.video", video);
        check("wlan0".equals(primary(video.now()[0])), "video app (use wifi only): wlan0");

        bridge.linkLost(101);
        check("rmnet0".equals(primary(all.now()[0])), "wifi lost: rmnet0 primary at once");
        String v = video.now()[0];
        check(primary(v) == null, "wifi lost: the video app is blocked, never moved to cellular: " + v);

        Thread.sleep(500); // rmnet0 has now been up longer than the policy's 400 ms hold
        bridge.linkUpdate(102, Transport.WIFI, "wlan0", new String[] {"198.18.0.3"}, true, true, -50);
        c = all.now();
        check("rmnet0".equals(primary(c[0])) && c[0].contains("rmnet0 first"),
                "wifi back: held, rmnet0 stays primary: " + c[0]);
        check("wlan0".equals(primary(video.now()[0])), "wifi back: the video app has wlan0 again");
        c = all.waitFor("wlan0", 3000);
        check(!c[1].equals(main), "hold over: wlan0 primary, told from roam's timer thread " + c[1]);

        check(bridge.removeDecisionListener(videoId), "listener removed");
        check(!bridge.removeDecisionListener(videoId), "removing it again says false");

        bridge.addDecisionListener(null, json -> {
            throw new IllegalStateException("a listener with a bug");
        });
        bridge.linkUpdate(103, Transport.BLUETOOTH, "bnep0", new String[] {"198.18.2.2"}, true, false, RoamNative.SIGNAL_UNKNOWN);
        c = all.now();
        check(c[0].contains("bnep0"), "a throwing listener does not stop link events or other listeners");
        bridge.linkLosing(103);
        bridge.linkLost(103);
        bridge.linkLost(103); // Android may report a network twice; not an error
        check(!all.now()[0].contains("bnep0"), "bluetooth losing then lost: gone from the decision");
    }

    static void errorsAndPanics(RoamBridge bridge) throws Exception {
        expect(RoamException.class, "bad.roam:2:28: error", "a policy error points at line and column",
                () -> RoamBridge.create("link wifi = kind wifi\ndefault { prefer wifi over }\n", "bad.roam"));
        RoamBridge closed = RoamBridge.create(null, null);
        closed.close();
        expect(RoamException.class, "is closed", "a closed bridge handle", () -> closed.linkLost(1));
        expect(RoamException.class, "is closed", "closing twice", closed::close);
        expect(RoamException.class, "`interfaceName` is null", "a null interface name",
                () -> bridge.linkUpdate(7, Transport.WIFI, null, new String[0], true, true, -50));
        expect(RoamException.class, "`999.1.1.1` is not an IP address", "a malformed address",
                () -> bridge.linkUpdate(7, Transport.WIFI, "wlan1", new String[] {"999.1.1.1"}, true, true, -50));
        expect(RoamException.class, "element [1] is null", "a null address in the array",
                () -> bridge.linkUpdate(7, Transport.WIFI, "wlan1", new String[] {"198.18.0.9", null}, true, true, -50));
        expect(RoamException.class, "networkHandle", "network handle 0",
                () -> bridge.linkUpdate(0, Transport.WIFI, "wlan1", new String[0], true, true, -50));
        expect(RoamException.class, "signalDbm", "a signal strength out of range",
                () -> bridge.linkUpdate(7, Transport.WIFI, "wlan1", new String[0], true, true, 12));
        expect(RoamException.class, "not an interface name", "an interface name too long",
                () -> bridge.linkUpdate(7, Transport.WIFI, "wlan-with-a-very-long-name", new String[0], true, true, -50));
        expect(RoamException.class, "is not known to roam", "losing a network never reported",
                () -> bridge.linkLosing(999));
        expect(RoamException.class, "`listener` is null", "a null listener",
                () -> bridge.addDecisionListener(null, null));
        for (int i = 0; i < 3; i++) {
            expect(RoamException.class, "a panic inside roam", "panic #" + (i + 1) + " inside Rust",
                    () -> RoamNative.selfTestPanic("boom"));
        }
        check("wlan0".equals(primary(bridge.decide(null))), "after three panics the VM and the bridge still work");
    }

    /** The descriptor of a JDK channel (needs --add-opens java.base/sun.nio.ch=ALL-UNNAMED). */
    static int fdOf(DatagramChannel ch) throws Exception {
        Method m = ch.getClass().getMethod("getFDVal");
        m.setAccessible(true);
        return (Integer) m.invoke(ch);
    }

    static void binder(RoamBridge bridge) throws Exception {
        try (DatagramChannel ch = DatagramChannel.open()) {
            int fd = fdOf(ch);
            expect(RoamException.class, "libandroid.so", "no binder on the host: the NDK one is missing, said so",
                    () -> bridge.bindSocket(fd, 102));
            List<long[]> bound = new CopyOnWriteArrayList<>();
            bridge.setSocketBinder((sock, net) -> bound.add(new long[] {sock, net}));
            bridge.bindSocket(fd, 102);
            check(bound.size() == 1 && bound.get(0)[0] == fd && bound.get(0)[1] == 102,
                    "bindSocket(fd " + fd + ", network 102) reached the Java binder");
            expect(RoamException.class, "is not known to roam", "binding to a lost network",
                    () -> bridge.bindSocket(fd, 101));
            expect(RoamException.class, "not an open socket", "a descriptor that is not a socket",
                    () -> bridge.bindSocket(0, 102));
            bridge.setSocketBinder(new SocketBinder() {
                @Override
                public void bindSocket(int sock, long net) {
                    throw new IllegalStateException("network " + net + " refused the socket");
                }
            });
            expect(IllegalStateException.class, "refused the socket",
                    "a binder's own exception reaches the caller unchanged", () -> bridge.bindSocket(fd, 102));
        }
    }

    static String hex(byte[] d) {
        StringBuilder s = new StringBuilder();
        for (byte b : d) s.append(String.format("%02x", b));
        return s.toString();
    }

    static void session(int port, byte[] ca) throws Exception {
        try (RoamBridge bridge = RoamBridge.create(null, null)) {
            // The test's namespace has one link, a veth wlan0 standing in for WiFi.
            bridge.linkUpdate(200, Transport.WIFI, "wlan0", new String[] {"198.18.0.2"}, true, true, RoamNative.SIGNAL_UNKNOWN);
            RoamSession.Options o = new RoamSession.Options();
            o.app = "com.example.hosttest";
            o.caDer = ca;
            o.serverName = "server.roam.test";
            o.connectTimeoutMs = 10_000;
            List<long[]> bound = new CopyOnWriteArrayList<>();
            bridge.setSocketBinder((sock, net) -> bound.add(new long[] {sock, net}));
            RoamSession s = RoamSession.connect(bridge, "198.18.0.2:" + port, o);
            check(!bound.isEmpty() && bound.stream().allMatch(b -> b[1] == 200),
                    "every socket of the session went through the binder on network 200 (" + bound.size() + " calls)");
            String path = s.path();
            check(path.contains("\"interface\":\"wlan0\""), "session connected over the decided link: " + path);

            final int total = 2 * 1024 * 1024 + 12345;
            MessageDigest sent = MessageDigest.getInstance("SHA-256");
            AtomicReference<Throwable> writeError = new AtomicReference<>();
            Thread writer = new Thread(() -> {
                try {
                    Random rnd = new Random(7);
                    byte[] chunk = new byte[70_000];
                    int left = total;
                    while (left > 0) {
                        int n = Math.min(left, 1 + rnd.nextInt(chunk.length - 10));
                        rnd.nextBytes(chunk);
                        sent.update(chunk, 5, n);
                        s.write(chunk, 5, n);
                        left -= n;
                    }
                    s.shutdownOutput();
                } catch (Throwable t) {
                    writeError.set(t);
                }
            }, "writer");
            writer.start();
            MessageDigest got = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[50_000];
            long received = 0;
            while (true) {
                int n = s.read(buf, 3, buf.length - 3);
                if (n < 0) break;
                got.update(buf, 3, n);
                received += n;
            }
            writer.join();
            check(writeError.get() == null, "the writer thread finished: " + writeError.get());
            String sentHex = hex(sent.digest());
            String gotHex = hex(got.digest());
            System.out.println("SENT sha256=" + sentHex + " bytes=" + total);
            System.out.println("RECEIVED sha256=" + gotHex + " bytes=" + received);
            check(received == total && sentHex.equals(gotHex), "the echo came back whole: " + received + " bytes");

            bridge.linkUpdate(201, Transport.CELLULAR, "rmnet9", new String[] {"198.18.1.9"}, false, true, -100);
            String event = null;
            for (int i = 0; i < 10 && event == null; i++) {
                String e = s.nextEvent(5000);
                if (e == null) break;
                if (e.contains("\"event\":\"decision\"")) event = e;
            }
            check(event != null && event.contains("rmnet9"), "a link event reached the session as a decision: " + event);

            expect(RoamException.class, "do not fit", "read with off/len outside the array",
                    () -> s.read(buf, 10, buf.length));
            s.close();
            expect(RoamException.class, "is closed", "read after close", () -> s.read(buf, 0, 10));
            expect(RoamException.class, "is closed", "close twice", s::close);
        }
    }
}
