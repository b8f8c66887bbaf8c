package io.roam;

/** The {@code NetworkCapabilities.TRANSPORT_*} values roam maps to link kinds. */
public final class Transport {
    private Transport() {}

    public static final int CELLULAR = 0;
    public static final int WIFI = 1;
    public static final int BLUETOOTH = 2;
    public static final int ETHERNET = 3;
    public static final int VPN = 4;
    public static final int USB = 8;
}
