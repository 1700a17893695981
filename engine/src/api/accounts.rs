//! Accounts: `POST /register` (a BLS key proven by its proof of possession) and `POST /invites`.

use pbts_http::request::Request;
use serde::Deserialize;
use serde_json::json;

use super::decode::{b64_array, json_body, parse_json, valid_name};
use super::response::{ApiError, ApiResult, Response};
use crate::config::RegistrationPolicy;
use crate::state::Core;
use crate::store::{StoreCmd, StoreError};

pub(crate) fn announce_urls(core: &Core, passkey: &str) -> (String, String) {
    let base = core.state.config.tracker.public_url.trim_end_matches('/');
    let http = format!("{base}/{passkey}/announce");
    let host = base.split("://").nth(1).unwrap_or(base);
    (http, format!("udp://{host}/{passkey}/announce"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    user_id: String,
    /// Base64 of the 48-byte compressed G1 public key.
    public_key: String,
    /// Base64 of the 96-byte proof of possession (PopProve): required, so nobody can register
    /// a key they do not hold (rogue keys).
    proof_of_possession: String,
    /// Optional: base64 of a registration signature over
    /// `"register" ‖ instance_id ‖ user_id`, verified when present.
    #[serde(default)]
    signature: Option<String>,
    /// For a user an admin created (who has a passkey but no key yet): their passkey, which
    /// authorises attaching the key to that existing user.
    #[serde(default)]
    passkey: Option<String>,
    /// An invite code (`registration.policy = "invite"`).
    #[serde(default)]
    invite: Option<String>,
}

/// A `POST /register` body, decoded: the name checked, the keys decoded to their sizes (the
/// signatures are not checked yet).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct NewRegistration {
    pub(crate) user_id: String,
    pub(crate) public_key: [u8; 48],
    pub(crate) proof_of_possession: [u8; 96],
    pub(crate) signature: Option<[u8; 96]>,
    pub(crate) passkey: Option<String>,
    pub(crate) invite: Option<String>,
}

/// Decodes a `POST /register` body, or says what is wrong with it (pure; [`register`] checks
/// the signatures and stores the user).
pub(crate) fn decode_registration(raw: &[u8]) -> Result<NewRegistration, String> {
    let r: Registration = parse_json(raw)?;
    if !valid_name(&r.user_id) {
        return Err("user_id must be 1-64 characters of A-Z a-z 0-9 _ - .".to_owned());
    }
    Ok(NewRegistration {
        public_key: b64_array::<48>("public_key", &r.public_key)?,
        proof_of_possession: b64_array::<96>("proof_of_possession", &r.proof_of_possession)?,
        signature: r.signature.as_deref().map(|s| b64_array::<96>("signature", s)).transpose()?,
        user_id: r.user_id,
        passkey: r.passkey,
        invite: r.invite,
    })
}

/// Checks a registration's key, proof of possession and optional signature (CPU-heavy: runs
/// off the serving core). Returns the HTTP status and reason on failure.
fn check_registration(
    public_key: [u8; 48],
    proof: [u8; 96],
    signature: Option<[u8; 96]>,
    instance_id: &str,
    user_id: &str,
) -> Result<(), (u16, String)> {
    use pbts_verifier::keys::PublicKey;
    use pbts_verifier::receipt::{PublicKeyBytes, SignatureBytes};
    let pk = PublicKey::from_bytes(&PublicKeyBytes(public_key))
        .map_err(|e| (400, format!("invalid public_key: {e}")))?;
    pk.verify_possession(&SignatureBytes(proof))
        .map_err(|_| (401, "invalid proof_of_possession".to_owned()))?;
    if let Some(sig) = signature {
        let mut msg = b"register".to_vec();
        msg.extend_from_slice(instance_id.as_bytes());
        msg.extend_from_slice(user_id.as_bytes());
        pk.verify(&msg, &SignatureBytes(sig))
            .map_err(|_| (401, "invalid registration signature".to_owned()))?;
    }
    Ok(())
}

/// `POST /register`: binds a new user to a BLS public key proven by a proof of possession and
/// returns the passkey. Failures answer `{"success": false, "error": ...}` (PBTS's shape).
pub(crate) async fn register(core: &Core, req: &Request<'_>) -> ApiResult {
    let r = decode_registration(req.body)?;
    // Attaching a key to an account that exists (the passkey proves it) is not registration.
    let invite = match (core.state.config.registration_policy(), &r.passkey) {
        (_, Some(_)) | (RegistrationPolicy::Open, None) => None,
        (RegistrationPolicy::Closed, None) => {
            return Err(ApiError::new(403, "registration is closed: an admin creates accounts"));
        }
        (RegistrationPolicy::Invite, None) => match r.invite.clone() {
            Some(code) => Some(code),
            None => {
                return Err(ApiError::new(
                    403,
                    "an invite code is required to register: send \"invite\": \"<code>\"",
                ));
            }
        },
    };
    let (pk, proof, sig) = (r.public_key, r.proof_of_possession, r.signature);
    let instance_id = core.state.instance_id.clone();
    let user_id = r.user_id.clone();
    let checked = glommio::executor()
        .spawn_blocking(move || check_registration(pk, proof, sig, &instance_id, &user_id))
        .await;
    if let Err((status, message)) = checked {
        return Err(ApiError::new(status, message));
    }
    let public_key = pbts_verifier::receipt::PublicKeyBytes(pk);
    let result = match &r.passkey {
        Some(given) => {
            // Attaching a key to an existing user: the passkey proves it is theirs.
            let owner = crate::store::Passkey::parse(given.as_bytes())
                .and_then(|pk| core.state.accounts.by_passkey(&pk));
            if owner.is_none_or(|u| u.name != r.user_id) {
                return Err(ApiError::new(403, "passkey does not belong to user_id"));
            }
            core.state.ask(|reply| StoreCmd::AttachKey { name: r.user_id, public_key, reply }).await
        }
        None => {
            let public_key = Some(public_key);
            core.state
                .ask(|reply| StoreCmd::CreateUser { name: r.user_id, invite, public_key, reply })
                .await
        }
    };
    match result {
        Ok(record) => {
            let (http, udp) = announce_urls(core, &record.passkey);
            let body = json!({
                "success": true,
                "message": "User registered successfully",
                "instance_id": core.state.instance_id,
                "user_id": record.name,
                "passkey": record.passkey,
                "announce_url": http,
                "udp_announce_url": udp,
            });
            Ok(Response::json(200, &body))
        }
        // PBTS's text, kept for clients that match it.
        Err(StoreError::UserExists(_)) => Err(ApiError::new(409, "User already exists")),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    passkey: String,
}

/// `POST /invites {"passkey": ...}`: a user creates an invite code, within the budget
/// `registration.user_invites` (0 by default: only admins invite).
pub(crate) async fn user_invite(core: &Core, req: &Request<'_>) -> ApiResult {
    let body: InviteRequest = json_body(req)?;
    let Some(user) = crate::store::Passkey::parse(body.passkey.as_bytes())
        .and_then(|pk| core.state.accounts.by_passkey(&pk))
    else {
        return Err(ApiError::new(401, "unknown passkey"));
    };
    let budget = core.state.config.registration.user_invites;
    let code = core
        .state
        .ask(|reply| StoreCmd::CreateInvite { by: Some((user.id, budget)), reply })
        .await?;
    Ok(Response::json(201, &json!({"success": true, "code": code})))
}
