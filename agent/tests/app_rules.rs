//! Per-app kernel rules in a network namespace: programs that never talk to roamd (plain
//! Python, written here) are held to their app's decision by their uid alone.
// Not every helper of the shared handset is used here.
#[allow(unused_imports)]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Handset, POLICY, can_run, paths, wait_update};

const WAIT: Duration = Duration::from_secs(10);
const SERVER: &str = "198.18.200.1";
const PORT: u16 = 5000;
const VIDEO_UID: u32 = 40001;
const OTHER_UID: u32 = 40002;

/// A TCP server in the server namespace that answers every connection with the address it
/// came from, then closes it.
struct WhoAmI(Child);

impl WhoAmI {
    fn start(hs: &Handset) -> WhoAmI {
        let script = format!(
            "import socket,sys\n\
             s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{SERVER}',{PORT})); s.listen(16); print('ready',flush=True)\n\
             while True:\n  c,a=s.accept(); c.sendall((a[0]+'\\n').encode()); c.close()\n"
        );
        let mut child =
            hs.s.command("/usr/bin/python3")
                .args(["-c", &script])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        WhoAmI(child)
    }
}

impl Drop for WhoAmI {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Connects to the server as `uid` with a plain Python client (unbound socket, as most
/// programs): `Ok(the address the server saw)` or `Err(errno)`, and how long it took.
fn connect_as(hs: &Handset, uid: u32) -> (Result<String, i32>, Duration) {
    connect_from(hs, uid, None)
}

/// [`connect_as`], with the socket bound to `bind` first when given.
fn connect_from(hs: &Handset, uid: u32, bind: Option<&str>) -> (Result<String, i32>, Duration) {
    let bind = bind.map_or_else(String::new, |a| format!("s.bind(('{a}',0))\n"));
    let script = format!(
        "import socket,sys\n\
         s=socket.socket(); s.settimeout(5)\n{bind}\
         try:\n  s.connect(('{SERVER}',{PORT})); print('OK', s.recv(100).decode().strip())\n\
         except OSError as e:\n  print('ERR', e.errno, e.strerror); sys.exit(3)\n"
    );
    let t = Instant::now();
    let out =
        hs.h.command("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                &script,
            ])
            .output()
            .unwrap();
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        ["OK", from] => (Ok((*from).to_owned()), took),
        ["ERR", errno, ..] => (Err(errno.parse().unwrap()), took),
        _ => panic!(
            "client said {text:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Packets to the server's port that left through rmnet0 (an nft counter on output).
fn rmnet_packets(hs: &Handset) -> u64 {
    let out =
        hs.h.exec("nft", &["list", "table", "inet", "roamtest"])
            .unwrap();
    let at = out.find("packets ").expect("the counter is listed");
    out[at + 8..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn add_default(hs: &Handset, gw: &str, dev: &str, metric: &str) {
    hs.ip_h(&[
        "route", "add", "default", "via", gw, "dev", dev, "metric", metric,
    ]);
}

#[test]
fn a_wifi_only_uid_never_leaves_on_cellular_and_fails_at_once_without_wifi() {
    if !can_run("a_wifi_only_uid_never_leaves_on_cellular_and_fails_at_once_without_wifi") {
        return;
    }
    let mut hs = Handset::new(&format!(
        "[[app]]\nuid = {VIDEO_UID}\nid = \"com.example.video\"\n\
         [[app]]\nuids = \"{OTHER_UID}-{}\"\nid = \"com.example.other\"\n",
        OTHER_UID + 10
    ));
    std::fs::write(
        hs.policy(),
        format!("{POLICY}app \"com.example.video\" {{\n  use wifi only\n}}\n"),
    )
    .unwrap();
    add_default(&hs, "198.18.1.1", "wlan0", "100");
    add_default(&hs, "198.18.2.1", "rmnet0", "200");
    hs.s.ip(&["addr", "add", &format!("{SERVER}/32"), "dev", "lo"])
        .unwrap();
    hs.s.ip(&["link", "set", "lo", "up"]).unwrap();
    hs.h.nft(&format!(
        "table inet roamtest {{\n chain out {{\n  type filter hook output priority 0;\n  \
         oifname \"rmnet0\" tcp dport {PORT} counter\n }}\n}}\n"
    ))
    .unwrap();
    let _server = WhoAmI::start(&hs);
    let before = hs.kernel_routing();

    hs.start_roamd(&[]);
    let mut video = hs.subscriber(Some("com.example.video"));
    wait_update(&mut video, WAIT, "video on wifi", |u| paths(u) == ["wlan0"]);
    let rules = hs.h.ip(&["rule", "show"]).unwrap();
    assert!(
        rules.contains(&format!("uidrange {VIDEO_UID}-{VIDEO_UID} lookup 10")),
        "{rules}"
    );
    assert_eq!(connect_as(&hs, VIDEO_UID).0, Ok("198.18.1.2".into()));
    assert_eq!(connect_as(&hs, OTHER_UID).0, Ok("198.18.1.2".into()));

    // WiFi goes: the video app has no path. Its connect fails at once with ENETUNREACH and
    // nothing leaves on rmnet0; the other app moves to cellular.
    let sent_before = rmnet_packets(&hs);
    hs.ip_h(&["link", "set", "wlan0", "down"]);
    wait_update(&mut video, WAIT, "video blocked", |u| paths(u).is_empty());
    let (blocked, took) = connect_as(&hs, VIDEO_UID);
    assert_eq!(blocked, Err(libc::ENETUNREACH), "{}", hs.log());
    assert!(took < Duration::from_secs(2), "refused at once: {took:?}");
    assert_eq!(rmnet_packets(&hs), sent_before, "no packet left on rmnet0");
    // Binding to rmnet0's address explicitly does not get around it.
    assert_eq!(
        connect_from(&hs, VIDEO_UID, Some("198.18.2.2")).0,
        Err(libc::ENETUNREACH)
    );
    assert_eq!(rmnet_packets(&hs), sent_before, "no packet left on rmnet0");
    let explain = hs.roamctl(None, &["explain", "--app", "com.example.video"]);
    assert!(
        explain.1.contains(&format!(
            "from 198.18.2.2 uidrange {VIDEO_UID}-{VIDEO_UID} unreachable"
        )),
        "{explain:?}"
    );
    assert!(
        explain
            .1
            .contains(&format!("-4 uidrange {VIDEO_UID}-{VIDEO_UID} unreachable")),
        "{explain:?}"
    );
    assert_eq!(connect_as(&hs, OTHER_UID).0, Ok("198.18.2.2".into()));
    assert!(rmnet_packets(&hs) > sent_before);

    // WiFi returns: the video app is back on it.
    hs.ip_h(&["link", "set", "wlan0", "up"]);
    add_default(&hs, "198.18.1.1", "wlan0", "100");
    wait_update(&mut video, WAIT, "video back on wifi", |u| {
        paths(u) == ["wlan0"]
    });
    // The routing plan follows the route's arrival: wait for the table's lookup rule.
    let deadline = Instant::now() + WAIT;
    loop {
        match connect_as(&hs, VIDEO_UID).0 {
            Ok(from) => {
                assert_eq!(from, "198.18.1.2");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(e, libc::ENETUNREACH);
            }
            Err(e) => panic!(
                "still refused ({e}) after wifi returned\n{}\n{}",
                hs.h.ip(&["rule", "show"]).unwrap(),
                hs.h.ip(&["route", "show", "table", "all"]).unwrap()
            ),
        }
    }

    drop(video);
    hs.stop_roamd(libc::SIGTERM);
    // Sorted: wlan0's bounce re-added its kernel routes, which moves them in the listing.
    let sorted = |s: &str| {
        let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(
        sorted(&hs.kernel_routing()),
        sorted(&before),
        "roamd's rules and routes are gone"
    );

    // A crash leaves them; the next start sweeps them (proto 177) and its clean stop leaves
    // nothing.
    hs.start_roamd(&[]);
    hs.stop_roamd(libc::SIGKILL);
    assert!(hs.kernel_routing().contains("uidrange"));
    hs.start_roamd(&[]);
    hs.stop_roamd(libc::SIGTERM);
    assert_eq!(sorted(&hs.kernel_routing()), sorted(&before));

    // --dry-run prints the rules it would add and adds none.
    hs.start_roamd(&["--dry-run"]);
    let rule = format!("11000: -4 uidrange {VIDEO_UID}-{VIDEO_UID} lookup 1002");
    // The first plan is logged before roamd says it is ready.
    let log = hs.log();
    assert!(
        log.contains("dry run: would have app rule") && log.contains(&rule),
        "{log}"
    );
    hs.stop_roamd(libc::SIGTERM);
    assert_eq!(sorted(&hs.kernel_routing()), sorted(&before));
}
