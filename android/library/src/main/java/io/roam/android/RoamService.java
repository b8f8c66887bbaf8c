package io.roam.android;

import android.app.Service;
import android.content.Context;
import android.content.Intent;
import android.net.ConnectivityManager;
import android.net.LinkAddress;
import android.net.LinkProperties;
import android.net.Network;
import android.net.NetworkCapabilities;
import android.net.NetworkRequest;
import android.os.Binder;
import android.os.Build;
import android.os.IBinder;
import android.util.Log;

import io.roam.RoamBridge;
import io.roam.RoamException;
import io.roam.RoamNative;
import io.roam.Transport;

import java.io.ByteArrayOutputStream;
import java.io.FileNotFoundException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Feeds ConnectivityManager's networks (WiFi, cellular, Bluetooth) into roam and owns the
 * {@link RoamBridge} that apps make {@link io.roam.RoamSession}s from. Bind to it from the app
 * and call {@link LocalBinder#bridge()}. The policy is the app's {@code assets/roam/policy.roam}
 * (roam's built-in policy when the asset is missing); a policy with errors stops the service
 * with the errors in the log, rather than running with a policy the user did not write.
 */
public class RoamService extends Service {
    private static final String TAG = "roam";
    /** The asset the policy is read from. */
    public static final String POLICY_ASSET = "roam/policy.roam";

    private final LocalBinder binder = new LocalBinder();
    private final List<ConnectivityManager.NetworkCallback> callbacks = new ArrayList<>();
    private ConnectivityManager cm;
    private RoamBridge bridge;

    /** What an app component gets from {@code bindService}. */
    public final class LocalBinder extends Binder {
        public RoamBridge bridge() {
            return bridge;
        }
    }

    @Override
    public void onCreate() {
        super.onCreate();
        bridge = RoamBridge.create(readPolicy(), POLICY_ASSET);
        cm = (ConnectivityManager) getSystemService(Context.CONNECTIVITY_SERVICE);
        for (int transport : new int[] {NetworkCapabilities.TRANSPORT_WIFI,
                NetworkCapabilities.TRANSPORT_CELLULAR, NetworkCapabilities.TRANSPORT_BLUETOOTH}) {
            NetworkRequest req = new NetworkRequest.Builder()
                    .addTransportType(transport)
                    .addCapability(NetworkCapabilities.NET_CAPABILITY_INTERNET)
                    .build();
            ConnectivityManager.NetworkCallback cb = new Forwarder();
            cm.registerNetworkCallback(req, cb);
            callbacks.add(cb);
        }
    }

    @Override
    public IBinder onBind(Intent intent) {
        return binder;
    }

    @Override
    public void onDestroy() {
        for (ConnectivityManager.NetworkCallback cb : callbacks) cm.unregisterNetworkCallback(cb);
        callbacks.clear();
        bridge.close();
        super.onDestroy();
    }

    /** The policy text, or null (roam's built-in policy) when the app ships none. */
    private String readPolicy() {
        try (InputStream in = getAssets().open(POLICY_ASSET)) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buf = new byte[8192];
            for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
            return out.toString(StandardCharsets.UTF_8.name());
        } catch (FileNotFoundException e) {
            Log.i(TAG, "no assets/" + POLICY_ASSET + ": using roam's built-in policy");
            return null;
        } catch (IOException e) {
            throw new IllegalStateException("reading assets/" + POLICY_ASSET, e);
        }
    }

    /** roam's transport for a network: a VPN first (it rides on another transport). */
    static int transportOf(NetworkCapabilities caps) {
        int[] order = {NetworkCapabilities.TRANSPORT_VPN, NetworkCapabilities.TRANSPORT_WIFI,
                NetworkCapabilities.TRANSPORT_CELLULAR, NetworkCapabilities.TRANSPORT_BLUETOOTH,
                NetworkCapabilities.TRANSPORT_ETHERNET, Transport.USB};
        for (int t : order) if (caps.hasTransport(t)) return t;
        return -1;
    }

    /**
     * Merges each network's capabilities and link properties (they arrive in separate
     * callbacks) and forwards the whole picture whenever either changes.
     */
    private final class Forwarder extends ConnectivityManager.NetworkCallback {
        private final Map<Network, NetworkCapabilities> caps = new HashMap<>();
        private final Map<Network, LinkProperties> props = new HashMap<>();

        @Override
        public void onCapabilitiesChanged(Network n, NetworkCapabilities c) {
            synchronized (this) {
                caps.put(n, c);
            }
            forward(n);
        }

        @Override
        public void onLinkPropertiesChanged(Network n, LinkProperties p) {
            synchronized (this) {
                props.put(n, p);
            }
            forward(n);
        }

        @Override
        public void onLosing(Network n, int maxMsToLive) {
            try {
                bridge.linkLosing(n.getNetworkHandle());
            } catch (RoamException e) {
                Log.w(TAG, e.getMessage());
            }
        }

        @Override
        public void onLost(Network n) {
            synchronized (this) {
                caps.remove(n);
                props.remove(n);
            }
            bridge.linkLost(n.getNetworkHandle());
        }

        private void forward(Network n) {
            NetworkCapabilities c;
            LinkProperties p;
            synchronized (this) {
                c = caps.get(n);
                p = props.get(n);
            }
            if (c == null || p == null || p.getInterfaceName() == null) return; // not complete yet
            int transport = transportOf(c);
            if (transport < 0) return;
            List<String> addrs = new ArrayList<>();
            for (LinkAddress la : p.getLinkAddresses()) addrs.add(la.getAddress().getHostAddress());
            int signal = Build.VERSION.SDK_INT >= 29 ? c.getSignalStrength() : RoamNative.SIGNAL_UNKNOWN;
            try {
                bridge.linkUpdate(n.getNetworkHandle(), transport, p.getInterfaceName(),
                        addrs.toArray(new String[0]),
                        c.hasCapability(NetworkCapabilities.NET_CAPABILITY_NOT_METERED),
                        c.hasCapability(NetworkCapabilities.NET_CAPABILITY_VALIDATED), signal);
            } catch (RoamException e) {
                // A fact roam cannot take (say, an odd interface name) must not kill the service.
                Log.w(TAG, e.getMessage());
            }
        }
    }
}
