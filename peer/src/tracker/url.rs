//! Tracker URLs: `http://host[:port]/path?query` and `udp://host:port[/path?query]`.
//!
//! Parsed by hand rather than with a URL crate because a tracker URL needs little (a scheme,
//! a host that is a name, an IPv4 literal or a bracketed IPv6 literal, a port, and the path and
//! query kept byte for byte, since private trackers hide the passkey there) and because every
//! refusal should say what is wrong in words a user can act on.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::announce::TrackerError;

/// The protocol a tracker speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// HTTP (BEP 3), port 80 by default.
    Http,
    /// UDP (BEP 15), no default port.
    Udp,
}

/// A tracker's host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name, resolved at each announce.
    Name(String),
    /// An IP literal (`1.2.3.4` or `[::1]` in the URL).
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

/// A parsed tracker URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrackerUrl {
    /// HTTP or UDP.
    pub scheme: Scheme,
    /// The host.
    pub host: Host,
    /// The port (80 when an HTTP URL names none).
    pub port: u16,
    /// The path and query exactly as in the URL, without any `#fragment`. For HTTP it starts
    /// with `/` (an empty path becomes `/`); for UDP it is the BEP 41 URL data, possibly empty.
    pub path_and_query: String,
}

fn bad(url: &str, reason: &'static str) -> TrackerError {
    TrackerError::BadUrl { url: url.to_owned(), reason }
}

impl TrackerUrl {
    /// Parses `url` (surrounding whitespace, as torrent makers sometimes leave, is ignored).
    ///
    /// # Errors
    /// [`TrackerError::UnsupportedScheme`] for `https://`, `wss://` and anything else that is
    /// not `http` or `udp`; [`TrackerError::BadUrl`] with the reason otherwise.
    pub fn parse(url: &str) -> Result<Self, TrackerError> {
        let text = url.trim();
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad(url, "no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "udp" => Scheme::Udp,
            "" => return Err(bad(url, "no scheme")),
            other => return Err(TrackerError::UnsupportedScheme { scheme: other.to_owned() }),
        };
        let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(split);
        if authority.contains('@') {
            return Err(bad(url, "user names in tracker URLs are not supported"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (ip, after) =
                bracketed.split_once(']').ok_or_else(|| bad(url, "unclosed '[' in host"))?;
            let ip: Ipv6Addr = ip.parse().map_err(|_| bad(url, "invalid IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| bad(url, "junk after ']'"))?),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (name, port) = match authority.split_once(':') {
                Some((name, port)) => (name, Some(port)),
                None => (authority, None),
            };
            if port.is_some_and(|p| p.contains(':')) {
                return Err(bad(url, "IPv6 addresses must be in brackets"));
            }
            if name.is_empty() {
                return Err(bad(url, "no host"));
            }
            let host = match name.parse::<Ipv4Addr>() {
                Ok(ip) => Host::Ip(IpAddr::V4(ip)),
                Err(_)
                    if name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) =>
                {
                    Host::Name(name.to_owned())
                }
                Err(_) => return Err(bad(url, "invalid character in host name")),
            };
            (host, port)
        };
        let port = match (port, scheme) {
            (Some(p), _) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(bad(url, "invalid port")),
            },
            (None, Scheme::Http) => 80,
            (None, Scheme::Udp) => return Err(bad(url, "udp tracker URLs need a port")),
        };
        let path_and_query = tail.split('#').next().unwrap_or_default();
        if path_and_query.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(bad(url, "spaces or control characters in path"));
        }
        let path_and_query = match scheme {
            Scheme::Http if !path_and_query.starts_with('/') => format!("/{path_and_query}"),
            _ => path_and_query.to_owned(),
        };
        Ok(Self { scheme, host, port, path_and_query })
    }

    /// The `Host` header value: the host as in the URL, and the port unless it is 80.
    pub fn host_header(&self) -> String {
        match self.port {
            80 => self.host.to_string(),
            port => format!("{}:{port}", self.host),
        }
    }

    /// The tracker's addresses: the literal, or what the resolver returns for the name (within
    /// `limit`).
    ///
    /// # Errors
    /// [`TrackerError::Resolve`], [`TrackerError::NoAddress`] or [`TrackerError::Timeout`].
    pub async fn resolve(&self, limit: Duration) -> Result<Vec<SocketAddr>, TrackerError> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        let lookup = tokio::net::lookup_host((name.as_str(), self.port));
        let addrs: Vec<SocketAddr> = tokio::time::timeout(limit, lookup)
            .await
            .map_err(|_| TrackerError::Timeout(limit))?
            .map_err(|source| TrackerError::Resolve { host: name.clone(), source })?
            .collect();
        if addrs.is_empty() {
            return Err(TrackerError::NoAddress { host: name.clone() });
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (Scheme, Host, u16, String) {
        let u = TrackerUrl::parse(url).unwrap();
        (u.scheme, u.host, u.port, u.path_and_query)
    }

    fn name(n: &str) -> Host {
        Host::Name(n.to_owned())
    }

    /// A URL and what it parses to: scheme, host, port, path and query.
    type Case<'a> = (&'a str, (Scheme, Host, u16, &'a str));

    #[test]
    fn accepted_urls() {
        let cases: &[Case<'_>] = &[
            (
                "http://tracker.example.org/announce",
                (Scheme::Http, name("tracker.example.org"), 80, "/announce"),
            ),
            (
                "HTTP://t.example:6969/0123abcd/announce",
                (Scheme::Http, name("t.example"), 6969, "/0123abcd/announce"),
            ),
            (
                "http://10.0.0.1:8080/announce.php?passkey=abc&x=1#frag",
                (
                    Scheme::Http,
                    Host::Ip("10.0.0.1".parse().unwrap()),
                    8080,
                    "/announce.php?passkey=abc&x=1",
                ),
            ),
            (
                "http://[::1]:81?pk=1",
                (Scheme::Http, Host::Ip("::1".parse().unwrap()), 81, "/?pk=1"),
            ),
            ("http://h", (Scheme::Http, name("h"), 80, "/")),
            ("udp://tracker.example:1337", (Scheme::Udp, name("tracker.example"), 1337, "")),
            (
                " udp://[2001:db8::2]:1337/pk/announce \n",
                (Scheme::Udp, Host::Ip("2001:db8::2".parse().unwrap()), 1337, "/pk/announce"),
            ),
        ];
        for (url, (scheme, host, port, path)) in cases {
            assert_eq!(ok(url), (*scheme, host.clone(), *port, (*path).to_owned()), "{url}");
        }
    }

    #[test]
    fn refused_urls() {
        let cases: &[(&str, &str)] = &[
            (
                "https://t.example/announce",
                "https trackers are not supported (only http:// and udp://)",
            ),
            (
                "WSS://t.example/announce",
                "wss trackers are not supported (only http:// and udp://)",
            ),
            ("t.example/announce", "bad tracker URL \"t.example/announce\": no scheme"),
            (
                "udp://t.example/announce",
                "bad tracker URL \"udp://t.example/announce\": udp tracker URLs need a port",
            ),
            ("http://t.example:0/", "bad tracker URL \"http://t.example:0/\": invalid port"),
            ("http://t.example:+80/", "bad tracker URL \"http://t.example:+80/\": invalid port"),
            (
                "http://t.example:65536/",
                "bad tracker URL \"http://t.example:65536/\": invalid port",
            ),
            (
                "http://::1:80/",
                "bad tracker URL \"http://::1:80/\": IPv6 addresses must be in brackets",
            ),
            ("http://[::1/", "bad tracker URL \"http://[::1/\": unclosed '[' in host"),
            ("http://[::x]/", "bad tracker URL \"http://[::x]/\": invalid IPv6 address"),
            ("http://[::1]x/", "bad tracker URL \"http://[::1]x/\": junk after ']'"),
            ("http:///announce", "bad tracker URL \"http:///announce\": no host"),
            (
                "http://u:p@t.example/",
                "bad tracker URL \"http://u:p@t.example/\": user names in tracker URLs are not supported",
            ),
            ("http://t ex/", "bad tracker URL \"http://t ex/\": invalid character in host name"),
            (
                "http://t.example/a b",
                "bad tracker URL \"http://t.example/a b\": spaces or control characters in path",
            ),
        ];
        for (url, text) in cases {
            assert_eq!(TrackerUrl::parse(url).unwrap_err().to_string(), *text, "{url}");
        }
    }

    #[test]
    fn host_header() {
        let h = |u: &str| TrackerUrl::parse(u).unwrap().host_header();
        assert_eq!(h("http://t.example/a"), "t.example");
        assert_eq!(h("http://t.example:8080/a"), "t.example:8080");
        assert_eq!(h("http://[::1]:8080/a"), "[::1]:8080");
        assert_eq!(h("http://[::1]/a"), "[::1]");
    }

    #[tokio::test]
    async fn resolves_literals_and_localhost() {
        let limit = Duration::from_secs(5);
        let u = TrackerUrl::parse("udp://127.0.0.1:7/").unwrap();
        assert_eq!(u.resolve(limit).await.unwrap(), ["127.0.0.1:7".parse().unwrap()]);
        let u = TrackerUrl::parse("http://localhost:8/").unwrap();
        let addrs = u.resolve(limit).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 8), "{addrs:?}");
    }
}
