//! Who we are to a pbts tracker: a BLS key pair made on this machine, the account it was
//! registered under and that account's passkey.
//!
//! `pbts-peer register` makes the key, proves possession of it to the tracker's `/register`
//! and keeps everything in one file per tracker, readable by its owner only (mode 0600):
//!
//! ```text
//! $XDG_CONFIG_HOME/pbts-peer/trackers/<host>_<port>.json     ($HOME/.config when unset)
//! ```
//!
//! Every torrent whose trackers include that host and port then uses this identity: its key
//! signs the receipts we give and is the key the receipts we earn credit, and its passkey
//! reports them.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use pbts_verifier::keys::SecretKey;
use pbts_verifier::receipt::PublicKeyBytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::tracker::{self, Scheme, TrackerError, TrackerUrl};

/// Why an identity cannot be made, stored or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Neither `XDG_CONFIG_HOME` nor `HOME` names a directory.
    #[error("no configuration directory: set HOME or XDG_CONFIG_HOME")]
    NoConfigDir,
    /// The tracker URL.
    #[error("tracker URL: {0}")]
    Url(TrackerError),
    /// The tracker could not be reached or answered something that is not JSON.
    #[error("{0}")]
    Tracker(#[from] TrackerError),
    /// The tracker refused (its own words).
    #[error("the tracker refused: {0}")]
    Refused(String),
    /// Reading or writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not an identity (or its key is not a valid BLS key).
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An identity for this tracker exists already; registering again would replace a key
    /// that may hold credit.
    #[error("{0} exists: this machine is registered with that tracker already (remove it first)")]
    Exists(PathBuf),
}

/// The file's contents.
#[derive(Serialize, Deserialize)]
struct IdentityFile {
    tracker: String,
    user: String,
    passkey: String,
    /// Hex of the 32-byte secret key.
    secret_key: String,
    /// Base64 of the 48-byte compressed public key.
    public_key: String,
    announce_url: String,
    udp_announce_url: String,
}

/// A registered identity.
pub struct Identity {
    /// The tracker's HTTP base (`http://host:port`).
    pub tracker: TrackerUrl,
    /// The account's name.
    pub user: String,
    /// The account's passkey.
    pub passkey: String,
    /// The signing key.
    pub secret_key: SecretKey,
    /// Its public key.
    pub public_key: PublicKeyBytes,
    /// The tracker's HTTP announce URL for this account.
    pub announce_url: String,
    /// The tracker's UDP announce URL for this account.
    pub udp_announce_url: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret key or the passkey.
        f.debug_struct("Identity")
            .field("tracker", &self.tracker.host_header())
            .field("user", &self.user)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// `$XDG_CONFIG_HOME/pbts-peer` (an absolute `XDG_CONFIG_HOME` only, as the XDG spec says),
/// else `$HOME/.config/pbts-peer`.
pub fn config_dir() -> Result<PathBuf, IdentityError> {
    base_dir("XDG_CONFIG_HOME", ".config")
}

/// `$XDG_STATE_HOME/pbts-peer`, else `$HOME/.local/state/pbts-peer`: where receipts wait to be
/// reported.
pub fn state_dir() -> Result<PathBuf, IdentityError> {
    base_dir("XDG_STATE_HOME", ".local/state")
}

fn base_dir(var: &str, under_home: &str) -> Result<PathBuf, IdentityError> {
    let from_var = std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    let base = match from_var {
        Some(p) => p,
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .ok_or(IdentityError::NoConfigDir)?
            .join(under_home),
    };
    Ok(base.join("pbts-peer"))
}

/// The file name for a tracker: `<host>_<port>.json`, brackets and colons of IPv6 literals
/// made underscores.
fn file_name(url: &TrackerUrl) -> String {
    let host: String = url
        .host
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect();
    format!("{host}_{}.json", url.port)
}

/// The tracker's HTTP base for a URL of either scheme: our tracker serves HTTP and UDP on one
/// port, and the API is HTTP.
fn http_base(url: &TrackerUrl) -> TrackerUrl {
    TrackerUrl {
        scheme: Scheme::Http,
        host: url.host.clone(),
        port: url.port,
        path_and_query: "/".to_owned(),
    }
}

impl Identity {
    /// Where the identity for `url`'s host and port lives under `dir`.
    pub fn path_for(dir: &Path, url: &TrackerUrl) -> PathBuf {
        dir.join("trackers").join(file_name(url))
    }

    /// Makes a key pair, registers it as `user` with the tracker at `tracker_url` (an
    /// `http://host:port` base or any of its announce URLs), and stores it under `dir`.
    ///
    /// # Errors
    /// An identity for that tracker already stored, the tracker's refusal (its message), an
    /// unreachable tracker, a file that cannot be written.
    pub async fn register(
        dir: &Path,
        tracker_url: &str,
        user: &str,
        invite: Option<&str>,
        config: &tracker::Config,
    ) -> Result<Self, IdentityError> {
        let url = http_base(&TrackerUrl::parse(tracker_url).map_err(IdentityError::Url)?);
        let path = Self::path_for(dir, &url);
        if path.exists() {
            return Err(IdentityError::Exists(path));
        }
        let secret_key = SecretKey::random();
        let public_key = secret_key.public_key().to_bytes();
        let mut body = serde_json::json!({
            "user_id": user,
            "public_key": B64.encode(public_key.0),
            "proof_of_possession": B64.encode(secret_key.prove_possession().0),
        });
        if let Some(code) = invite {
            body["invite"] = code.into();
        }
        let body = serde_json::to_vec(&body).expect("a JSON value serializes");
        let (status, answer) =
            tracker::http::exchange(&url, "POST", b"/register", Some(&body), config).await?;
        let answer: serde_json::Value = serde_json::from_slice(&answer).map_err(|_| {
            IdentityError::Refused(format!("HTTP {status} with a body that is not JSON"))
        })?;
        let text = |k: &str| answer[k].as_str().map(str::to_owned);
        if !(200..300).contains(&status) || answer["success"] != true {
            let why = text("error").unwrap_or_else(|| format!("HTTP {status}"));
            return Err(IdentityError::Refused(why));
        }
        let (Some(passkey), Some(announce_url), Some(udp_announce_url)) =
            (text("passkey"), text("announce_url"), text("udp_announce_url"))
        else {
            return Err(IdentityError::Refused(
                "the answer has no passkey or announce URLs".to_owned(),
            ));
        };
        let identity = Self {
            tracker: url,
            user: user.to_owned(),
            passkey,
            secret_key,
            public_key,
            announce_url,
            udp_announce_url,
        };
        identity.save(&path)?;
        Ok(identity)
    }

    /// Writes the file (mode 0600 from its creation; never over an existing one).
    fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io { path: path.to_owned(), source };
        if let Some(parent) = path.parent() {
            create_private_dir(parent).map_err(io)?;
        }
        let file = IdentityFile {
            tracker: format!("http://{}", self.tracker.host_header()),
            user: self.user.clone(),
            passkey: self.passkey.clone(),
            secret_key: const_hex::encode(*self.secret_key.to_bytes()),
            public_key: B64.encode(self.public_key.0),
            announce_url: self.announce_url.clone(),
            udp_announce_url: self.udp_announce_url.clone(),
        };
        let text = Zeroizing::new(serde_json::to_string_pretty(&file).expect("serializes") + "\n");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(path).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Reads the identity at `path`.
    ///
    /// # Errors
    /// An unreadable file, one that is not an identity, a key that is not a valid BLS key or
    /// does not match the public key stored beside it.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let corrupt = |reason: &str| IdentityError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|source| IdentityError::Io { path: path.to_owned(), source })?,
        );
        let file: IdentityFile =
            serde_json::from_str(&text).map_err(|e| corrupt(&format!("not an identity: {e}")))?;
        let tracker = TrackerUrl::parse(&file.tracker).map_err(|e| corrupt(&e.to_string()))?;
        let raw = Zeroizing::new(
            const_hex::decode_to_array::<_, 32>(&file.secret_key)
                .map_err(|_| corrupt("secret_key is not 32 bytes of hex"))?,
        );
        let secret_key =
            SecretKey::from_bytes(&raw).map_err(|_| corrupt("secret_key is not a BLS key"))?;
        let public_key = secret_key.public_key().to_bytes();
        if B64.encode(public_key.0) != file.public_key {
            return Err(corrupt("public_key is not the secret key's"));
        }
        Ok(Self {
            tracker,
            user: file.user,
            passkey: file.passkey,
            secret_key,
            public_key,
            announce_url: file.announce_url,
            udp_announce_url: file.udp_announce_url,
        })
    }

    /// The identity stored under `dir` for the first of `trackers` (announce URLs, HTTP or
    /// UDP) that has one.
    ///
    /// # Errors
    /// A stored identity that cannot be read.
    pub fn find(dir: &Path, trackers: &[Vec<String>]) -> Result<Option<Self>, IdentityError> {
        for url in trackers.iter().flatten() {
            let Ok(url) = TrackerUrl::parse(url) else { continue };
            let path = Self::path_for(dir, &url);
            if path.exists() {
                return Self::load(&path).map(Some);
            }
        }
        Ok(None)
    }

    /// The tracker's `/<passkey>/report` target.
    pub fn report_target(&self) -> Vec<u8> {
        format!("/{}/report", self.passkey).into_bytes()
    }
}

/// Creates `dir` and its missing parents; the last one private to its owner (0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_flat_and_per_port() {
        let u = |s: &str| TrackerUrl::parse(s).unwrap();
        assert_eq!(file_name(&u("http://t.example:8000/pk/announce")), "t.example_8000.json");
        assert_eq!(file_name(&u("udp://t.example:8000/pk")), "t.example_8000.json");
        assert_eq!(file_name(&u("http://[::1]:9/")), "___1__9.json");
        assert_eq!(file_name(&u("http://10.0.0.1/")), "10.0.0.1_80.json");
    }

    #[test]
    fn saved_identities_load_back_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let url = http_base(&TrackerUrl::parse("udp://127.0.0.1:7000/x").unwrap());
        let secret_key = SecretKey::random();
        let id = Identity {
            tracker: url.clone(),
            user: "alice".into(),
            passkey: "0123456789abcdef0123456789abcdef".into(),
            public_key: secret_key.public_key().to_bytes(),
            secret_key,
            announce_url: "http://127.0.0.1:7000/p/announce".into(),
            udp_announce_url: "udp://127.0.0.1:7000/p".into(),
        };
        let path = Identity::path_for(dir.path(), &url);
        id.save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Never over an existing file.
        assert!(matches!(id.save(&path), Err(IdentityError::Io { .. })));
        let trackers = vec![vec!["http://other:1/a".to_owned(), "udp://127.0.0.1:7000/p".into()]];
        let back = Identity::find(dir.path(), &trackers).unwrap().unwrap();
        assert_eq!((back.user.as_str(), back.public_key), ("alice", id.public_key));
        assert_eq!(back.report_target(), b"/0123456789abcdef0123456789abcdef/report");
        assert!(Identity::find(dir.path(), &[vec!["http://other:1/a".into()]]).unwrap().is_none());

        // A public key that is not the secret key's is refused.
        let text = std::fs::read_to_string(&path).unwrap();
        let other = B64.encode(SecretKey::random().public_key().to_bytes().0);
        let forged = text.replace(&B64.encode(id.public_key.0), &other);
        std::fs::write(&path, forged).unwrap();
        let err = Identity::load(&path).unwrap_err().to_string();
        assert!(err.ends_with("public_key is not the secret key's"), "{err}");
    }
}
