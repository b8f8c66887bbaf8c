package io.roam;

/** Told roam's decision for one app: at once when added, then each time it changes. */
public interface DecisionListener {
    /**
     * @param decisionJson the decision in the policy contract's JSON shape:
     *     {@code {"app":..,"multipath":"handover","paths":[{"interface":"wlan0","link":"wifi","role":"primary"}],"explain":[..]}}
     *     ({@code paths} empty: the app is blocked). Called on the thread that reported the link
     *     change, or on a roam thread when a {@code hold} runs out; do not block in it.
     */
    void onDecision(String decisionJson);
}
