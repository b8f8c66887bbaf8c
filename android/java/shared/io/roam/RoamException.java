package io.roam;

/**
 * Thrown by every roam call that fails: bad arguments, closed handles, policy errors, session
 * errors, and panics inside the native library (which never crash the VM). The message starts
 * with {@code roam: <entry point>:} and says what to do.
 */
public class RoamException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    public RoamException(String message) {
        super(message);
    }
}
