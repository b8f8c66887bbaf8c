//! Bad input to every entry point, in this process and without a network: NULL, invalid JSON,
//! an unknown option, text that is not UTF-8, closed and foreign descriptors, a listener used
//! as a session and the other way round. Each call returns -1 with errno and a message that
//! names the cause; none crashes or blocks.

mod common;

use std::ffi::{CStr, CString, c_char, c_int};
use std::os::fd::{AsRawFd, IntoRawFd};

use roam::{roam_accept, roam_connect, roam_events_fd, roam_last_error, roam_listen, roam_paths};

/// The errno and message of the call that just failed (`r` must be -1).
fn failure(r: c_int) -> (i32, String) {
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    assert_eq!(r, -1, "the call did not fail");
    let msg = unsafe { CStr::from_ptr(roam_last_error()) }
        .to_string_lossy()
        .into_owned();
    (errno, msg)
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

fn connect(target: Option<&str>, options: Option<&str>) -> (i32, String) {
    let t = target.map(c);
    let o = options.map(c);
    let r = unsafe {
        roam_connect(
            t.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            o.as_ref().map_or(std::ptr::null(), |o| o.as_ptr()),
        )
    };
    failure(r)
}

fn expect(got: (i32, String), errno: i32, says: &str) {
    assert_eq!(got.0, errno, "errno of `{}`", got.1);
    assert!(got.1.contains(says), "`{}` does not say `{says}`", got.1);
    assert!(
        got.1.starts_with("roam: roam_"),
        "`{}` names no entry point",
        got.1
    );
}

#[test]
fn connect_rejects_null_bad_json_unknown_options_and_bad_targets() {
    expect(connect(None, None), libc::EINVAL, "`name_port` is NULL");
    expect(
        connect(Some("a:1"), Some("{\"transport\":")),
        libc::EINVAL,
        "the options JSON is invalid",
    );
    expect(
        connect(Some("a:1"), Some("[1,2]")),
        libc::EINVAL,
        "the options JSON is invalid",
    );
    expect(
        connect(Some("a:1"), Some(r#"{"transport":"quic","colour":"red"}"#)),
        libc::EINVAL,
        "unknown field `colour`",
    );
    expect(
        connect(Some("a:1"), Some(r#"{"transport":"carrier-pigeon"}"#)),
        libc::EINVAL,
        "unknown transport `carrier-pigeon`",
    );
    expect(
        connect(Some("a:1"), Some(r#"{"ca":"/nonexistent/ca.pem"}"#)),
        libc::EINVAL,
        "/nonexistent/ca.pem",
    );
    expect(
        connect(Some("a:1"), Some(r#"{"policy":"prefer wifi over"}"#)),
        libc::EINVAL,
        "policy",
    );
    expect(
        connect(
            Some("no-port-here"),
            Some(r#"{"decision_source":"embedded"}"#),
        ),
        libc::EINVAL,
        "`no-port-here` is not a valid target",
    );
    let bad = [b'h', 0xff, b':', b'1', 0];
    let r = unsafe { roam_connect(bad.as_ptr().cast::<c_char>(), std::ptr::null()) };
    expect(failure(r), libc::EINVAL, "`name_port` is not UTF-8");
}

#[test]
fn closed_and_foreign_descriptors_are_ebadf() {
    let mut buf = [0 as c_char; 256];
    // Closed: a number no file holds.
    let closed = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
    unsafe { libc::close(closed) };
    let r = unsafe { roam_paths(closed, buf.as_mut_ptr(), buf.len()) };
    expect(failure(r), libc::EBADF, &format!("descriptor {closed}"));
    expect(failure(roam_events_fd(-1)), libc::EBADF, "descriptor -1");
    // Foreign: an open file roam did not make.
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let fd = a.as_raw_fd();
    let r = unsafe { roam_paths(fd, buf.as_mut_ptr(), buf.len()) };
    expect(failure(r), libc::EBADF, "is not a roam descriptor");
    expect(
        failure(roam_events_fd(fd)),
        libc::EBADF,
        "is not a roam descriptor",
    );
    let r = unsafe { roam_accept(fd, buf.as_mut_ptr(), buf.len()) };
    expect(failure(r), libc::EBADF, "is not a roam descriptor");
}

#[test]
fn listen_rejects_null_bad_addresses_and_missing_certificates() {
    let listen = |a: Option<&str>, o: Option<&str>| {
        let a = a.map(c);
        let o = o.map(c);
        failure(unsafe {
            roam_listen(
                a.as_ref().map_or(std::ptr::null(), |a| a.as_ptr()),
                o.as_ref().map_or(std::ptr::null(), |o| o.as_ptr()),
            )
        })
    };
    expect(listen(None, None), libc::EINVAL, "`addr_port` is NULL");
    expect(
        listen(Some("server.example:443"), None),
        libc::EINVAL,
        "is not an IP address and port",
    );
    expect(
        listen(Some("127.0.0.1:0"), None),
        libc::EINVAL,
        "option `cert` is required",
    );
    expect(
        listen(
            Some("127.0.0.1:0"),
            Some(r#"{"cert":"/nonexistent/c.pem","key":"/nonexistent/k.pem"}"#),
        ),
        libc::EINVAL,
        "/nonexistent/c.pem",
    );
}

/// A real listener on loopback (binding needs no route): used as a session it is refused, a
/// non-blocking accept with nobody waiting is EAGAIN, and once closed it is EBADF.
#[test]
fn a_listener_descriptor_is_not_a_session_and_dies_with_its_close() {
    let dir = common::scratch("bad-input").unwrap();
    let pki = common::Pki::generate(&dir).unwrap();
    let addr = c("127.0.0.1:0");
    let opts = c(&pki.listen_options());
    let lfd = unsafe { roam_listen(addr.as_ptr(), opts.as_ptr()) };
    assert!(lfd >= 0, "{}", failure(lfd).1);
    let mut buf = [0 as c_char; 256];
    let r = unsafe { roam_paths(lfd, buf.as_mut_ptr(), buf.len()) };
    expect(failure(r), libc::EINVAL, "is a listener, not a session");
    expect(
        failure(roam_events_fd(lfd)),
        libc::EINVAL,
        "is a listener, not a session",
    );
    unsafe { libc::fcntl(lfd, libc::F_SETFL, libc::O_NONBLOCK) };
    let r = unsafe { roam_accept(lfd, buf.as_mut_ptr(), buf.len()) };
    expect(failure(r), libc::EAGAIN, "no session is waiting");
    unsafe { libc::close(lfd) };
    let r = unsafe { roam_accept(lfd, buf.as_mut_ptr(), buf.len()) };
    expect(failure(r), libc::EBADF, &format!("descriptor {lfd}"));
}

#[test]
fn the_last_error_is_per_thread_and_never_null() {
    let _ = connect(None, None);
    let here = unsafe { CStr::from_ptr(roam_last_error()) }.to_owned();
    assert!(!here.is_empty());
    let there = std::thread::spawn(|| {
        let p = roam_last_error();
        assert!(!p.is_null());
        unsafe { CStr::from_ptr(p) }.to_owned()
    })
    .join()
    .unwrap();
    assert!(there.is_empty(), "another thread's error leaked: {there:?}");
}
