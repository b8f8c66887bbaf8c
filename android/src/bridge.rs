//! One bridge per `RoamService`: the link table and policy ([`Decider`]), the app's decision
//! listeners, the hold timer, the socket binder, and the tokio runtime sessions run on.
//!
//! Listeners are called on the thread that reported the link change (synchronously, before
//! `linkUpdate` returns) or, when a `hold` runs out, on one of roam's runtime threads attached
//! to the VM. Never with a lock held: a listener may call back into the bridge.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use jni::objects::{GlobalRef, JValue};
use jni::{JNIEnv, JavaVM};
use roam_policy::{Decision, Policy};
use tokio::sync::Notify;

use crate::binder::SocketBinder;
use crate::decisions::{AndroidDecisions, Decider, ListenerId, lock};
use crate::error::BridgeError;
use crate::links::{LinkUpdate, NetworkHandle};

/// The runtime every bridge and session shares: two worker threads, started on first use.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, BridgeError> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("roam-runtime")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| BridgeError::Io {
        what: "starting roam's runtime threads".into(),
        source: std::io::Error::other(e.clone()),
    })
}

/// Runs `f` to completion on the runtime, from a thread of the app's (not one of roam's: a
/// listener called from the hold timer must hand blocking work to its own thread).
pub fn block_on<F: Future>(f: F) -> Result<F::Output, BridgeError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(BridgeError::WrongThread(
            "this call blocks and was made on one of roam's own threads (from a decision \
             listener called by the hold timer?); make it from a thread of your own",
        ));
    }
    Ok(runtime()?.block_on(f))
}

#[derive(Debug)]
struct Inner {
    decider: Arc<Mutex<Decider>>,
    wake: Arc<Notify>,
    listeners: Mutex<HashMap<ListenerId, GlobalRef>>,
    vm: Option<JavaVM>,
}

/// The link table, policy, listeners and binder behind one Java `RoamBridge`.
#[derive(Debug)]
pub struct Bridge {
    inner: Arc<Inner>,
    binder: Mutex<Option<Arc<dyn SocketBinder>>>,
    timer: tokio::task::AbortHandle,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.timer.abort();
    }
}

impl Bridge {
    /// A bridge evaluating `policy`; `vm` is where listeners are called from the hold timer.
    pub fn new(policy: Policy, vm: Option<JavaVM>) -> Result<Bridge, BridgeError> {
        let inner = Arc::new(Inner {
            decider: Arc::new(Mutex::new(Decider::new(policy))),
            wake: Arc::new(Notify::new()),
            listeners: Mutex::new(HashMap::new()),
            vm,
        });
        let timer = runtime()?.spawn(hold_timer(inner.clone())).abort_handle();
        Ok(Bridge {
            inner,
            binder: Mutex::new(None),
            timer,
        })
    }

    /// The SDK decision source over this bridge's links.
    pub fn decisions(&self) -> AndroidDecisions {
        AndroidDecisions::new(self.inner.decider.clone(), self.inner.wake.clone())
    }

    /// A link change from ConnectivityManager; listeners whose decision changed are called on
    /// this thread through `env`.
    pub fn link_update(&self, env: &mut JNIEnv<'_>, u: LinkUpdate) -> Result<(), BridgeError> {
        let changed = lock(&self.inner.decider).update(Instant::now(), u);
        self.after_change(env, changed)
    }

    /// `onLosing`.
    pub fn link_losing(&self, env: &mut JNIEnv<'_>, n: NetworkHandle) -> Result<(), BridgeError> {
        let changed = lock(&self.inner.decider).losing(n)?;
        self.after_change(env, changed)
    }

    /// `onLost`; losing a network roam never heard of is not an error (Android reports every
    /// network it had, including ones the service was not asked about).
    pub fn link_lost(&self, env: &mut JNIEnv<'_>, n: NetworkHandle) -> Result<(), BridgeError> {
        let changed = lock(&self.inner.decider).lost(n);
        self.after_change(env, changed)
    }

    fn after_change(&self, env: &mut JNIEnv<'_>, changed: bool) -> Result<(), BridgeError> {
        if !changed {
            return Ok(());
        }
        let calls = lock(&self.inner.decider).publish(Instant::now());
        self.inner.wake.notify_one();
        self.inner.deliver(env, calls)
    }

    /// The current decision for `app`.
    pub fn decide(&self, app: Option<&str>) -> Decision {
        lock(&self.inner.decider)
            .snapshot(Instant::now(), app)
            .decision
    }

    /// Adds a Java `DecisionListener` for `app`; it is called at once with the current
    /// decision, then on every change.
    pub fn add_listener(
        &self,
        env: &mut JNIEnv<'_>,
        app: Option<String>,
        listener: GlobalRef,
    ) -> Result<ListenerId, BridgeError> {
        let (id, first) = lock(&self.inner.decider).add_listener(Instant::now(), app);
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, listener);
        self.inner.wake.notify_one();
        self.inner.deliver(env, vec![(id, first)])?;
        Ok(id)
    }

    /// Removes a listener; false when it was not registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        lock(&self.inner.decider).remove_listener(id)
    }

    /// Sets how sockets are put on networks; `None`: the NDK's `android_setsocknetwork`.
    pub fn set_binder(&self, b: Option<Arc<dyn SocketBinder>>) {
        *self.binder.lock().unwrap_or_else(|p| p.into_inner()) = b;
    }

    /// Binds `fd` to `network` through the binder; the network must be in the table.
    pub fn bind_socket(&self, fd: i32, network: NetworkHandle) -> Result<(), BridgeError> {
        crate::binder::check_socket(fd)?;
        if !lock(&self.inner.decider).links().contains(network) {
            return Err(crate::links::UnknownNetwork(network).into());
        }
        let binder = self
            .binder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let binder = match binder {
            Some(b) => b,
            None => {
                let ndk = crate::binder::NdkBinder::load().map_err(|detail| BridgeError::Bind {
                    fd,
                    network,
                    detail: format!(
                        "{detail}; off Android, give a SocketBinder with setSocketBinder"
                    ),
                })?;
                let b: Arc<dyn SocketBinder> = Arc::new(ndk);
                self.set_binder(Some(b.clone()));
                b
            }
        };
        binder.bind(fd, network)
    }

    /// The SDK's socket hook for this bridge's sessions: every socket a session opens goes on
    /// the `Network` of its path's interface (the LinkBook's handle for that name), through
    /// the app's binder or the NDK. Where there is neither (the host, without a binder) the
    /// socket stays as the SDK binds it (address and device), said once in the log.
    pub fn session_binder(self: &Arc<Self>) -> Arc<roam::session::SocketBinderFn> {
        let bridge = Arc::downgrade(self);
        Arc::new(move |path: &roam::path::LocalPath, fd: BorrowedFd<'_>| {
            let bridge = bridge
                .upgrade()
                .ok_or_else(|| io::Error::other("the RoamBridge was closed"))?;
            let network = lock(&bridge.inner.decider)
                .links()
                .network_of(&path.interface)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("no Android Network is known for {}", path.interface),
                    )
                })?;
            let have_binder = bridge
                .binder
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if !have_binder && crate::binder::NdkBinder::load().is_err() {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        "no socket binder and no NDK: session sockets are not put on Networks"
                    );
                });
                return Ok(());
            }
            bridge
                .bind_socket(fd.as_raw_fd(), network)
                .map_err(|e| io::Error::other(e.to_string()))
        })
    }
}

impl Inner {
    /// Calls each listener with its decision as JSON. A listener that throws is reported
    /// (stack trace on stderr, a warning) and cleared: one bad listener must not break link
    /// reporting for the others.
    fn deliver(
        &self,
        env: &mut JNIEnv<'_>,
        calls: Vec<(ListenerId, Decision)>,
    ) -> Result<(), BridgeError> {
        for (id, decision) in calls {
            let Some(listener) = self
                .listeners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
                .cloned()
            else {
                continue;
            };
            let json = serde_json::to_string(&decision).map_err(|e| BridgeError::Io {
                what: "encoding a decision as JSON".into(),
                source: e.into(),
            })?;
            // A frame per call: on the timer's attached thread nothing would free local refs.
            let r = env.with_local_frame(4, |env| -> Result<(), jni::errors::Error> {
                let s = env.new_string(&json)?;
                env.call_method(
                    &listener,
                    "onDecision",
                    "(Ljava/lang/String;)V",
                    &[JValue::Object(&s)],
                )?;
                Ok(())
            });
            match r {
                Ok(()) => {}
                Err(jni::errors::Error::JavaException) => {
                    tracing::warn!(
                        listener = id,
                        "a decision listener threw; it stays registered"
                    );
                    let _ = env.exception_describe();
                    env.exception_clear()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Re-evaluates when a link's up time crosses a `hold` or a session's flow age reaches one of
/// its thresholds, and calls the listeners whose decision changed from this runtime thread.
async fn hold_timer(inner: Arc<Inner>) {
    loop {
        let next = lock(&inner.decider).next_deadline(Instant::now());
        let woke_for_hold = match next {
            Some(t) => tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(t)) => true,
                _ = inner.wake.notified() => false,
            },
            None => {
                inner.wake.notified().await;
                false
            }
        };
        if !woke_for_hold {
            continue;
        }
        let calls = lock(&inner.decider).publish(Instant::now());
        if calls.is_empty() {
            continue;
        }
        let Some(vm) = &inner.vm else { continue };
        match vm.attach_current_thread_as_daemon() {
            Ok(mut env) => {
                if let Err(e) = inner.deliver(&mut env, calls) {
                    tracing::warn!(error = %e, "calling decision listeners after a hold failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot attach a runtime thread to the VM"),
        }
    }
}
