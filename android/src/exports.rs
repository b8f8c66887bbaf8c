//! The `Java_io_roam_RoamNative_*` functions: the native methods of `io.roam.RoamNative`
//! (`android/java/shared/io/roam/RoamNative.java`). Each one parses its arguments and calls
//! into the bridge through [`entry`], and nothing else.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jni::JNIEnv;
use jni::objects::{JByteArray, JClass, JObject, JObjectArray, JString};
use jni::sys::{JNI_FALSE, JNI_TRUE, jboolean, jint, jlong, jstring};
use roam_policy::Policy;

use crate::binder::{JavaBinder, SocketBinder};
use crate::bridge::{Bridge, block_on};
use crate::error::BridgeError;
use crate::guard::entry;
use crate::handles::Handles;
use crate::links::{LinkUpdate, NetworkHandle, Transport};
use crate::session::SessionSlot;

static BRIDGES: Handles<Bridge> = Handles::new("bridge");
static SESSIONS: Handles<SessionSlot> = Handles::new("session");

/// `NetworkCapabilities.SIGNAL_STRENGTH_UNSPECIFIED`.
const SIGNAL_UNSPECIFIED: jint = jint::MIN;
/// More addresses than any interface has: a caller bug, not a network.
const MAX_ADDRS: i32 = 64;
/// Linux's IFNAMSIZ less the NUL.
const MAX_IFNAME: usize = 15;

fn opt_string(env: &mut JNIEnv<'_>, s: &JString<'_>) -> Result<Option<String>, BridgeError> {
    if s.is_null() {
        return Ok(None);
    }
    Ok(Some(env.get_string(s)?.into()))
}

fn string(
    env: &mut JNIEnv<'_>,
    s: &JString<'_>,
    name: &'static str,
) -> Result<String, BridgeError> {
    opt_string(env, s)?.ok_or(BridgeError::Null(name))
}

fn jstring_of(env: &mut JNIEnv<'_>, s: &str) -> Result<jstring, BridgeError> {
    Ok(env.new_string(s)?.into_raw())
}

fn network(h: jlong) -> Result<NetworkHandle, BridgeError> {
    u64::try_from(h)
        .ok()
        .filter(|h| *h != 0)
        .map(NetworkHandle)
        .ok_or_else(|| {
            BridgeError::invalid(
                "networkHandle",
                format!("{h} is not a network (Network.getNetworkHandle() is positive)"),
            )
        })
}

fn bridge(h: jlong) -> Result<Arc<Bridge>, BridgeError> {
    BRIDGES.get(h)
}

fn session(h: jlong) -> Result<Arc<SessionSlot>, BridgeError> {
    SESSIONS.get(h)
}

/// Checks `off` and `len` against `buf` (as `InputStream.read(byte[], int, int)` does).
fn region(
    env: &mut JNIEnv<'_>,
    buf: &JByteArray<'_>,
    off: jint,
    len: jint,
) -> Result<(i32, usize), BridgeError> {
    if buf.is_null() {
        return Err(BridgeError::Null("buf"));
    }
    let size = env.get_array_length(buf)?;
    match off.checked_add(len) {
        Some(end) if off >= 0 && len >= 0 && end <= size => Ok((off, len as usize)),
        _ => Err(BridgeError::invalid(
            "off/len",
            format!("off {off} and len {len} do not fit in the array's {size} bytes"),
        )),
    }
}

/// `LinkAddress.getAddress().getHostAddress()`: an IPv6 one may carry `%scope`.
fn parse_addr(i: i32, text: &str) -> Result<IpAddr, BridgeError> {
    let host = text.split_once('%').map_or(text, |(h, _)| h);
    host.parse().map_err(|_| {
        BridgeError::invalid("addresses", format!("[{i}] `{text}` is not an IP address"))
    })
}

fn addresses(env: &mut JNIEnv<'_>, arr: &JObjectArray<'_>) -> Result<Vec<IpAddr>, BridgeError> {
    if arr.is_null() {
        return Err(BridgeError::Null("addresses"));
    }
    let n = env.get_array_length(arr)?;
    if n > MAX_ADDRS {
        return Err(BridgeError::invalid(
            "addresses",
            format!("{n} addresses; at most {MAX_ADDRS}"),
        ));
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let el = env.get_object_array_element(arr, i)?;
        let s = JString::from(el);
        let text = opt_string(env, &s)?
            .ok_or_else(|| BridgeError::invalid("addresses", format!("element [{i}] is null")))?;
        env.delete_local_ref(s)?;
        out.push(parse_addr(i, &text)?);
    }
    Ok(out)
}

fn interface_name(name: String) -> Result<String, BridgeError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && !name.contains(|c: char| c == '/' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(name)
    } else {
        Err(BridgeError::invalid(
            "interfaceName",
            format!(
                "`{name}` is not an interface name (1 to {MAX_IFNAME} bytes, no '/' or spaces)"
            ),
        ))
    }
}

fn signal(dbm: jint) -> Result<Option<i32>, BridgeError> {
    match dbm {
        SIGNAL_UNSPECIFIED => Ok(None),
        -200..=0 => Ok(Some(dbm)),
        _ => Err(BridgeError::invalid(
            "signalDbm",
            format!("{dbm} dBm is out of range; pass -200..0, or Integer.MIN_VALUE when unknown"),
        )),
    }
}

/// `static native long bridgeCreate(String policyText, String sourceName)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_bridgeCreate<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    policy: JString<'l>,
    source_name: JString<'l>,
) -> jlong {
    entry(&mut env, "bridgeCreate", |env| {
        let name = opt_string(env, &source_name)?.unwrap_or_else(|| "policy".into());
        let policy = match opt_string(env, &policy)? {
            Some(text) => Policy::parse(&text).map_err(|e| BridgeError::Policy(e.render(&name)))?,
            None => Policy::default_policy(),
        };
        let b = Bridge::new(policy, Some(env.get_java_vm()?))?;
        Ok(BRIDGES.insert(b))
    })
}

/// `static native void bridgeClose(long bridge)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_bridgeClose<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
) {
    entry(&mut env, "bridgeClose", |_| BRIDGES.remove(b).map(drop))
}

/// `static native void linkUpdate(long bridge, long networkHandle, int transport, String
/// interfaceName, String[] addresses, boolean notMetered, boolean validated, int signalDbm)`
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // one per fact of the Java signature
pub extern "system" fn Java_io_roam_RoamNative_linkUpdate<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    net: jlong,
    transport: jint,
    ifname: JString<'l>,
    addrs: JObjectArray<'l>,
    not_metered: jboolean,
    validated: jboolean,
    signal_dbm: jint,
) {
    entry(&mut env, "linkUpdate", |env| {
        let bridge = bridge(b)?;
        if transport < 0 {
            return Err(BridgeError::invalid(
                "transport",
                format!("{transport} is no NetworkCapabilities.TRANSPORT_* value"),
            ));
        }
        let update = LinkUpdate {
            network: network(net)?,
            transport: Transport::from(transport),
            interface: interface_name(string(env, &ifname, "interfaceName")?)?,
            addrs: addresses(env, &addrs)?,
            not_metered: not_metered != JNI_FALSE,
            validated: validated != JNI_FALSE,
            signal_dbm: signal(signal_dbm)?,
        };
        bridge.link_update(env, update)
    })
}

/// `static native void linkLosing(long bridge, long networkHandle)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_linkLosing<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    net: jlong,
) {
    entry(&mut env, "linkLosing", |env| {
        bridge(b)?.link_losing(env, network(net)?)
    })
}

/// `static native void linkLost(long bridge, long networkHandle)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_linkLost<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    net: jlong,
) {
    entry(&mut env, "linkLost", |env| {
        bridge(b)?.link_lost(env, network(net)?)
    })
}

/// `static native String decide(long bridge, String app)`: the decision as JSON.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_decide<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    app: JString<'l>,
) -> jstring {
    entry(&mut env, "decide", |env| {
        let app = opt_string(env, &app)?;
        let d = bridge(b)?.decide(app.as_deref());
        let json = serde_json::to_string(&d).map_err(|e| BridgeError::Io {
            what: "encoding the decision".into(),
            source: e.into(),
        })?;
        jstring_of(env, &json)
    })
}

/// `static native long addDecisionListener(long bridge, String app, DecisionListener l)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_addDecisionListener<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    app: JString<'l>,
    listener: JObject<'l>,
) -> jlong {
    entry(&mut env, "addDecisionListener", |env| {
        let bridge = bridge(b)?;
        if listener.is_null() {
            return Err(BridgeError::Null("listener"));
        }
        let app = opt_string(env, &app)?;
        let global = env.new_global_ref(&listener)?;
        let id = bridge.add_listener(env, app, global)?;
        Ok(id as jlong)
    })
}

/// `static native boolean removeDecisionListener(long bridge, long listenerId)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_removeDecisionListener<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    id: jlong,
) -> jboolean {
    entry(&mut env, "removeDecisionListener", |_| {
        let removed =
            u64::try_from(id).is_ok_and(|id| bridge(b).is_ok_and(|b| b.remove_listener(id)));
        bridge(b)?;
        Ok(if removed { JNI_TRUE } else { JNI_FALSE })
    })
}

/// `static native void setSocketBinder(long bridge, SocketBinder binder)`; `null`: the NDK.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_setSocketBinder<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    binder: JObject<'l>,
) {
    entry(&mut env, "setSocketBinder", |env| {
        let bridge = bridge(b)?;
        let binder: Option<Arc<dyn SocketBinder>> = if binder.is_null() {
            None
        } else {
            let vm = env.get_java_vm()?;
            Some(Arc::new(JavaBinder::new(vm, env.new_global_ref(&binder)?)))
        };
        bridge.set_binder(binder);
        Ok(())
    })
}

/// `static native void bindSocket(long bridge, int fd, long networkHandle)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_bindSocket<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    fd: jint,
    net: jlong,
) {
    entry(&mut env, "bindSocket", |_| {
        bridge(b)?.bind_socket(fd, network(net)?)
    })
}

/// `static native long sessionConnect(long bridge, String target, String app, byte[] caDer,
/// String serverName, int timeoutMs)`; blocks until connected.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // one per option of the Java signature
pub extern "system" fn Java_io_roam_RoamNative_sessionConnect<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    b: jlong,
    target: JString<'l>,
    app: JString<'l>,
    ca_der: JByteArray<'l>,
    server_name: JString<'l>,
    timeout_ms: jint,
) -> jlong {
    entry(&mut env, "sessionConnect", |env| {
        let bridge = bridge(b)?;
        let target = string(env, &target, "target")?;
        if timeout_ms <= 0 {
            return Err(BridgeError::invalid(
                "timeoutMs",
                format!("{timeout_ms} ms; pass a positive timeout"),
            ));
        }
        let mut builder = roam::Session::builder()
            .decision_source(Arc::new(bridge.decisions()))
            .socket_binder(bridge.session_binder())
            .connect_timeout(Duration::from_millis(timeout_ms as u64));
        if let Some(app) = opt_string(env, &app)? {
            builder = builder.app(app);
        }
        if let Some(name) = opt_string(env, &server_name)? {
            builder = builder.server_name(name);
        }
        if !ca_der.is_null() {
            let der = env.convert_byte_array(&ca_der)?;
            if der.is_empty() {
                return Err(BridgeError::invalid(
                    "caDer",
                    "empty; pass a DER certificate or null",
                ));
            }
            builder = builder.tls(roam::ClientTls::Ca(vec![der.into()]));
        }
        let s = block_on(builder.connect(&target))??;
        Ok(SESSIONS.insert(SessionSlot::new(s)))
    })
}

/// `static native int sessionRead(long session, byte[] buf, int off, int len)`: bytes read,
/// -1 at the end of the peer's stream.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_sessionRead<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    s: jlong,
    buf: JByteArray<'l>,
    off: jint,
    len: jint,
) -> jint {
    entry(&mut env, "sessionRead", |env| {
        let s = session(s)?;
        let (off, len) = region(env, &buf, off, len)?;
        if len == 0 {
            return Ok(0);
        }
        let data = block_on(s.read(len))??;
        if data.is_empty() {
            return Ok(-1);
        }
        let signed: Vec<i8> = data.iter().map(|b| *b as i8).collect();
        env.set_byte_array_region(&buf, off, &signed)?;
        Ok(data.len() as jint)
    })
}

/// `static native void sessionWrite(long session, byte[] buf, int off, int len)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_sessionWrite<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    s: jlong,
    buf: JByteArray<'l>,
    off: jint,
    len: jint,
) {
    entry(&mut env, "sessionWrite", |env| {
        let s = session(s)?;
        let (off, len) = region(env, &buf, off, len)?;
        let mut signed = vec![0i8; len];
        env.get_byte_array_region(&buf, off, &mut signed)?;
        let data: Vec<u8> = signed.iter().map(|b| *b as u8).collect();
        block_on(s.write(&data))?
    })
}

/// `static native void sessionShutdownOutput(long session)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_sessionShutdownOutput<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    s: jlong,
) {
    entry(&mut env, "sessionShutdownOutput", |_| {
        block_on(session(s)?.shutdown_output())?
    })
}

/// `static native String sessionNextEvent(long session, int timeoutMs)`: JSON, or null when
/// none came in time.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_sessionNextEvent<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    s: jlong,
    timeout_ms: jint,
) -> jstring {
    entry(&mut env, "sessionNextEvent", |env| {
        let s = session(s)?;
        if timeout_ms < 0 {
            return Err(BridgeError::invalid(
                "timeoutMs",
                format!("{timeout_ms} is negative"),
            ));
        }
        match block_on(s.next_event(Duration::from_millis(timeout_ms as u64)))?? {
            Some(json) => jstring_of(env, &json),
            None => Ok(std::ptr::null_mut()),
        }
    })
}

/// `static native String sessionPath(long session)`: the path as JSON.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_sessionPath<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    s: jlong,
) -> jstring {
    entry(&mut env, "sessionPath", |env| {
        let json = session(s)?.path_json()?;
        jstring_of(env, &json)
    })
}

/// `static native void sessionClose(long session)`
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_sessionClose<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    s: jlong,
) {
    entry(&mut env, "sessionClose", |_| {
        let slot = SESSIONS.remove(s)?;
        block_on(slot.close())
    })
}

/// `static native void selfTestPanic(String message)`: panics inside Rust on purpose, so an
/// app's test (and ours) can check that a panic arrives as a `RoamException` and the VM lives.
#[unsafe(no_mangle)]
pub extern "system" fn Java_io_roam_RoamNative_selfTestPanic<'l>(
    mut env: JNIEnv<'l>,
    _: JClass<'l>,
    message: JString<'l>,
) {
    entry(&mut env, "selfTestPanic", |env| {
        let m = opt_string(env, &message)?.unwrap_or_default();
        panic!("self-test panic requested from Java: {m}")
    })
}
