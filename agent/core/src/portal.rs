//! Captive-portal checks as the core sees them: which URL to fetch from a link and which HTTP
//! status means open internet. The fetch itself is the shell's (`roam_agent::probe::portal`);
//! its answer comes back as [`crate::Event::PortalChecked`].
//!
//! Plain HTTP to an address literal only: the agent resolves no names, and a portal answers
//! plain HTTP precisely so that it can intercept it.
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// `http://ADDRESS[:PORT]/PATH`, the address a literal (`198.18.1.1`, `[2001:db8::1]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header: the authority as written.
    pub host: String,
    /// The request target, starting with `/`.
    pub path: String,
}

impl FromStr for PortalUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!(
                "`{s}` {why} (e.g. \"http://198.18.1.1/generate_204\" or \"http://[2001:db8::1]:8080/generate_204\")"
            )
        };
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("is not a plain http:// URL"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("has white space in its path"));
        }
        let addr = host
            .parse::<SocketAddr>()
            .or_else(|_| {
                // No port: 80. An IPv6 literal keeps its brackets in the URL.
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                bare.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 80))
            })
            .map_err(|_| bad("does not name an address literal (the agent resolves no names)"))?;
        Ok(PortalUrl {
            addr,
            host: host.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for PortalUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host, self.path)
    }
}

/// A URL to fetch from a link and the HTTP status that means "no portal in the way".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalCheck {
    /// What to fetch.
    pub url: PortalUrl,
    /// The status of open internet (204 unless configured).
    pub expect: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_with_and_without_port_and_path() {
        let u: PortalUrl = "http://198.18.1.1:8080/generate_204".parse().unwrap();
        assert_eq!(u.addr, "198.18.1.1:8080".parse().unwrap());
        assert_eq!(u.host, "198.18.1.1:8080");
        assert_eq!(u.path, "/generate_204");
        let u: PortalUrl = "http://198.18.1.1".parse().unwrap();
        assert_eq!(u.addr.port(), 80);
        assert_eq!(u.path, "/");
        let u: PortalUrl = "http://[2001:db8::1]/x".parse().unwrap();
        assert_eq!(u.addr, "[2001:db8::1]:80".parse().unwrap());
        assert_eq!(u.to_string(), "http://[2001:db8::1]/x");
        for bad in [
            "https://198.18.1.1/",
            "http://example.com/",
            "http://198.18.1.1/a b",
        ] {
            assert!(bad.parse::<PortalUrl>().is_err(), "{bad}");
        }
    }
}
