//! The policy decides: an app allowed WiFi only, with WiFi gone, gets a clear "no permitted
//! path" error instead of a session on cellular.

mod common;

use common::*;
use roam_tests::privilege::require_netns;
use roam_tests::topology::SERVICE_V4;

const WIFI_ONLY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                         default { prefer wifi over cell }\n\
                         app \"com.example.video\" { use wifi only }\n";

#[test]
fn a_wifi_only_app_with_wifi_gone_fails_with_no_permitted_path() -> anyhow::Result<()> {
    if !require_netns("a_wifi_only_app_with_wifi_gone_fails_with_no_permitted_path") {
        return Ok(());
    }
    let topo = two_links()?;
    topo.link_down("wlan0")?;
    let pki = TestPki::generate()?;
    let _server = start_server_ready(&topo, &pki)?;
    let target = format!("{SERVICE_V4}:{PORT}");
    let connect = |app: &'static str| {
        let b = roam::Session::builder()
            .app(app)
            .policy(WIFI_ONLY)
            .tls(pki.roam_client())
            .server_name(SERVER_NAME);
        let target = target.clone();
        topo.handset().block_on(async move {
            let s = b.connect(&target).await?;
            let on = s.path().interface;
            s.close_and_wait(0, b"done").await;
            Ok::<_, roam::Error>(on)
        })
    };
    // The control: an app the policy lets use cellular gets a session there.
    let on = connect("com.example.chat")?.expect("the chat app may use cellular");
    assert_eq!(on.as_deref(), Some("rmnet0"));
    let err = connect("com.example.video")?.expect_err("a session was made on cellular");
    assert!(matches!(err, roam::Error::NoPermittedPath { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("no permitted path for app com.example.video"),
        "{text}"
    );
    assert!(text.contains("wlan0 (wifi) down"), "{text}");
    let io: std::io::Error = err.into();
    assert_eq!(io.kind(), std::io::ErrorKind::NetworkUnreachable);
    Ok(())
}
