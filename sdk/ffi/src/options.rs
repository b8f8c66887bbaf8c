//! The options JSON of `roam_connect` and `roam_listen`: parsed and checked here (unknown keys
//! and bad words are errors that name them), files read when the options are applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roam_sdk::model::MultipathMode;
use roam_sdk::{ClientTls, SessionBuilder, TransportPreference};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::guard::FfiError;

/// Where a session's decisions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecisionChoice {
    /// roamd when its socket answers, else the embedded monitor and the policy.
    #[default]
    Auto,
    /// Always the embedded monitor and the policy (roamd is not asked).
    Embedded,
    /// Only roamd: connecting fails when it does not answer.
    Roamd,
}

/// The options of `roam_connect` as the JSON gives them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectJson {
    transport: Option<String>,
    ca: Option<PathBuf>,
    app: Option<String>,
    policy: Option<String>,
    policy_file: Option<PathBuf>,
    alpn: Option<Vec<String>>,
    multipath: Option<String>,
    decision_source: Option<String>,
    roamd_socket: Option<PathBuf>,
    server_name: Option<String>,
    connect_timeout_ms: Option<u64>,
}

/// The checked options of `roam_connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The transport (`auto` by default).
    pub transport: TransportPreference,
    /// A PEM file of the CA certificates to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// The app id the policy's `app` blocks match.
    pub app: Option<String>,
    /// The policy: its text, or a file holding it.
    pub policy: Option<PolicySource>,
    /// App ALPN protocols offered after `roam/1`.
    pub alpn: Vec<String>,
    /// Overrides the decision's multipath mode.
    pub multipath: Option<MultipathMode>,
    /// Where decisions come from.
    pub decision_source: DecisionChoice,
    /// roamd's socket (default: `ROAM_SOCKET`, else `/run/roam/roamd.sock`).
    pub roamd_socket: Option<PathBuf>,
    /// The name the server's certificate must carry when it is not the target's host.
    pub server_name: Option<String>,
    /// How long resolving, racing and the handshake may take in all (default 10 s).
    pub connect_timeout: Duration,
}

/// A policy given inline or as a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The policy text.
    Text(String),
    /// A file holding the policy text.
    File(PathBuf),
}

/// The default connect timeout, the SDK's.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn parse_json<T: for<'de> Deserialize<'de> + Default>(json: Option<&str>) -> Result<T, FfiError> {
    match json {
        None => Ok(T::default()),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| FfiError::invalid(format!("the options JSON is invalid: {e}"))),
    }
}

impl ConnectOptions {
    /// Parses `json` (`None`: the defaults).
    pub fn parse(json: Option<&str>) -> Result<ConnectOptions, FfiError> {
        let j: ConnectJson = parse_json(json)?;
        let transport = match j.transport.as_deref() {
            None => TransportPreference::Auto,
            Some(w) => w
                .parse()
                .map_err(|e: String| FfiError::invalid(format!("option `transport`: {e}")))?,
        };
        let policy = match (j.policy, j.policy_file) {
            (Some(_), Some(_)) => {
                return Err(FfiError::invalid(
                    "options `policy` and `policy_file` exclude each other; give one",
                ));
            }
            (Some(t), None) => Some(PolicySource::Text(t)),
            (None, Some(f)) => Some(PolicySource::File(f)),
            (None, None) => None,
        };
        let multipath = match j.multipath.as_deref() {
            None => None,
            Some(w) => Some(
                [
                    MultipathMode::Off,
                    MultipathMode::Handover,
                    MultipathMode::Interactive,
                    MultipathMode::Aggregate,
                ]
                .into_iter()
                .find(|m| m.as_str() == w)
                .ok_or_else(|| {
                    FfiError::invalid(format!(
                        "option `multipath`: unknown mode `{w}`; expected off, handover, \
                         interactive or aggregate"
                    ))
                })?,
            ),
        };
        let decision_source = match j.decision_source.as_deref() {
            None | Some("auto") => DecisionChoice::Auto,
            Some("embedded") => DecisionChoice::Embedded,
            Some("roamd") => DecisionChoice::Roamd,
            Some(w) => {
                return Err(FfiError::invalid(format!(
                    "option `decision_source`: unknown source `{w}`; expected auto, embedded \
                     or roamd"
                )));
            }
        };
        let connect_timeout = match j.connect_timeout_ms {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(0) => {
                return Err(FfiError::invalid(
                    "option `connect_timeout_ms` must be above 0",
                ));
            }
            Some(ms) => Duration::from_millis(ms),
        };
        Ok(ConnectOptions {
            transport,
            ca: j.ca,
            app: j.app,
            policy,
            alpn: j.alpn.unwrap_or_default(),
            multipath,
            decision_source,
            roamd_socket: j.roamd_socket,
            server_name: j.server_name,
            connect_timeout,
        })
    }

    /// The session builder these options describe; reads the CA and policy files.
    pub fn builder(&self) -> Result<SessionBuilder, FfiError> {
        let mut b = SessionBuilder::new()
            .transport(self.transport)
            .connect_timeout(self.connect_timeout);
        if let Some(ca) = &self.ca {
            b = b.tls(ClientTls::Ca(read_certs(ca, "ca")?));
        }
        if let Some(app) = &self.app {
            b = b.app(app.clone());
        }
        match &self.policy {
            Some(PolicySource::Text(t)) => b = b.policy(t.clone()),
            Some(PolicySource::File(f)) => {
                let t = std::fs::read_to_string(f).map_err(|e| {
                    FfiError::os(
                        &format!("option `policy_file`: reading {}", f.display()),
                        &e,
                    )
                })?;
                b = b.policy(t);
            }
            None => {}
        }
        for p in &self.alpn {
            b = b.alpn(p.as_bytes().to_vec());
        }
        if let Some(m) = self.multipath {
            b = b.multipath(m);
        }
        if let Some(s) = &self.roamd_socket {
            b = b.roamd_socket(s.clone());
        }
        match self.decision_source {
            DecisionChoice::Auto => {}
            DecisionChoice::Embedded => b = b.use_roamd(false),
            DecisionChoice::Roamd => {
                let socket = self
                    .roamd_socket
                    .clone()
                    .unwrap_or_else(|| roam_sdk::decision::Roamd::from_env().socket().to_owned());
                b = b.decision_source(Arc::new(roam_sdk::decision::Roamd::at(socket)));
            }
        }
        if let Some(n) = &self.server_name {
            b = b.server_name(n.clone());
        }
        Ok(b)
    }
}

/// The options of `roam_listen` as the JSON gives them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenJson {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    alpn: Option<Vec<String>>,
}

/// The checked options of `roam_listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOptions {
    /// A PEM file of the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// A PEM file of its private key.
    pub key: PathBuf,
    /// App ALPN protocols accepted after `roam/1`.
    pub alpn: Vec<String>,
}

impl ListenOptions {
    /// Parses `json`; `cert` and `key` are required (a listener needs a certificate).
    pub fn parse(json: Option<&str>) -> Result<ListenOptions, FfiError> {
        let j: ListenJson = parse_json(json)?;
        let need = |v: Option<PathBuf>, k: &str| {
            v.ok_or_else(|| {
                FfiError::invalid(format!(
                    "option `{k}` is required: a listener needs a PEM certificate chain (`cert`) \
                     and its key (`key`)"
                ))
            })
        };
        Ok(ListenOptions {
            cert: need(j.cert, "cert")?,
            key: need(j.key, "key")?,
            alpn: j.alpn.unwrap_or_default(),
        })
    }

    /// The rustls server configuration; reads the certificate and key files.
    pub fn server_tls(&self) -> Result<rustls::ServerConfig, FfiError> {
        let chain = read_certs(&self.cert, "cert")?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| {
            FfiError::invalid(format!(
                "option `key`: no private key in {}: {e}",
                self.key.display()
            ))
        })?;
        let alpn: Vec<Vec<u8>> = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(roam_sdk::tls::server_config(chain, key, &alpn)?)
    }
}

/// Every certificate in the PEM file `path` (option `key`); at least one.
fn read_certs(path: &std::path::Path, key: &str) -> Result<Vec<CertificateDer<'static>>, FfiError> {
    let bad = |e: String| {
        FfiError::invalid(format!(
            "option `{key}`: reading certificates from {}: {e}",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("the file holds no PEM certificate".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_options_are_the_defaults() {
        let o = ConnectOptions::parse(None).unwrap();
        assert_eq!(o.transport, TransportPreference::Auto);
        assert_eq!(o.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(o.decision_source, DecisionChoice::Auto);
        assert_eq!(o, ConnectOptions::parse(Some("{}")).unwrap());
    }

    #[test]
    fn every_option_is_read() {
        let o = ConnectOptions::parse(Some(
            r#"{"transport":"tcp-resume","ca":"/ca.pem","app":"com.x","policy":"p",
                "alpn":["h2"],"multipath":"interactive","decision_source":"embedded",
                "roamd_socket":"/r.sock","server_name":"s.test","connect_timeout_ms":1500}"#,
        ))
        .unwrap();
        assert_eq!(o.transport, TransportPreference::TcpResume);
        assert_eq!(o.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(o.app.as_deref(), Some("com.x"));
        assert_eq!(o.policy, Some(PolicySource::Text("p".into())));
        assert_eq!(o.alpn, ["h2"]);
        assert_eq!(o.multipath, Some(MultipathMode::Interactive));
        assert_eq!(o.decision_source, DecisionChoice::Embedded);
        assert_eq!(o.server_name.as_deref(), Some("s.test"));
        assert_eq!(o.connect_timeout, Duration::from_millis(1500));
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = ConnectOptions::parse(Some(r#"{"transprot":"quic"}"#)).unwrap_err();
        assert_eq!(e.errno, libc::EINVAL);
        assert!(
            e.message.contains("unknown field `transprot`"),
            "{}",
            e.message
        );
    }

    #[test]
    fn invalid_json_and_bad_words_are_einval_with_the_cause() {
        for (json, says) in [
            ("{", "the options JSON is invalid"),
            (r#"{"transport":"sctp"}"#, "unknown transport `sctp`"),
            (r#"{"multipath":"all"}"#, "unknown mode `all`"),
            (r#"{"decision_source":"x"}"#, "unknown source `x`"),
            (r#"{"connect_timeout_ms":0}"#, "must be above 0"),
            (r#"{"policy":"a","policy_file":"b"}"#, "exclude each other"),
        ] {
            let e = ConnectOptions::parse(Some(json)).unwrap_err();
            assert_eq!(e.errno, libc::EINVAL, "{json}");
            assert!(e.message.contains(says), "{json}: {}", e.message);
        }
    }

    #[test]
    fn a_missing_ca_file_is_an_error_naming_it() {
        let o = ConnectOptions::parse(Some(r#"{"ca":"/nonexistent/ca.pem"}"#)).unwrap();
        let e = o.builder().unwrap_err();
        assert!(e.message.contains("/nonexistent/ca.pem"), "{}", e.message);
    }

    #[test]
    fn a_listener_needs_cert_and_key() {
        let e = ListenOptions::parse(None).unwrap_err();
        assert!(e.message.contains("`cert` is required"), "{}", e.message);
        let e = ListenOptions::parse(Some(r#"{"cert":"c","key":"k","port":1}"#)).unwrap_err();
        assert!(e.message.contains("unknown field `port`"), "{}", e.message);
    }
}
