//! Intel TDX quotes, version 4 and 5: the header, the TD report (1.0, 1.5 and 1.5 extended), the
//! report data at its correct offset, and the signature section's bounds. Pure; no crypto here
//! ([`crate::verify`] checks signatures and collateral).
//!
//! ```text
//! v4:  header (48) │ TD report 1.0 (584)                          │ u32 sig len │ sig data
//! v5:  header (48) │ u16 body type │ u32 body size │ TD report    │ u32 sig len │ sig data
//!                    2 = TD 1.0 (584), 3 = TD 1.5 (648), 4 = TD 1.5 extended (885)
//!
//! TD report 1.0: tee_tcb_svn 16 │ mr_seam 48 │ mr_signer_seam 48 │ seam_attributes 8 │
//!   td_attributes 8 │ xfam 8 │ mr_td 48 │ mr_config_id 48 │ mr_owner 48 │ mr_owner_config 48 │
//!   rtmr0..3 4×48 │ report_data 64            (report_data at body offset 520)
//! TD report 1.5 adds tee_tcb_svn2 16 │ mr_servicetd 48 after it.
//! ```
//!
//! In a v4 quote the report data is therefore bytes 568..632; [`crate::verify`] enforces it
//! (see docs/COMPATIBILITY.md).

use crate::error::TeeError;

/// Header bytes.
pub const HEADER_LEN: usize = 48;
/// `tee_type` of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// TD report 1.0 bytes.
pub const TD_REPORT10_LEN: usize = 584;
/// TD report 1.5 bytes.
pub const TD_REPORT15_LEN: usize = 648;
/// TD report 1.5 extended bytes.
pub const TD_REPORT15_EX_LEN: usize = 885;
/// Largest quote accepted, bytes (real ones are ~5 KB; certificate chains make them vary).
pub const MAX_QUOTE_LEN: usize = 64 * 1024;
/// Offset of `report_data` inside every TD report body.
const REPORT_DATA_OFFSET: usize = 520;

/// Which TD report a quote carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// TD report 1.0 (v4 quotes, v5 body type 2).
    Td10,
    /// TD report 1.5 (v5 body type 3).
    Td15,
    /// TD report 1.5 extended (v5 body type 4).
    Td15Ex,
}

/// The measurements and identity fields of a TD report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport {
    /// Which report format.
    pub kind: BodyKind,
    /// TEE TCB security version numbers.
    pub tee_tcb_svn: [u8; 16],
    /// Measurement of the TDX module.
    pub mr_seam: [u8; 48],
    /// Signer of the TDX module.
    pub mr_signer_seam: [u8; 48],
    /// TDX module attributes.
    pub seam_attributes: [u8; 8],
    /// TD attributes (bit 0: debug).
    pub td_attributes: [u8; 8],
    /// Extended features allowed.
    pub xfam: [u8; 8],
    /// Measurement of the initial TD contents (the firmware).
    pub mr_td: [u8; 48],
    /// Software-defined configuration id.
    pub mr_config_id: [u8; 48],
    /// Owner id.
    pub mr_owner: [u8; 48],
    /// Owner-defined configuration.
    pub mr_owner_config: [u8; 48],
    /// Runtime measurement registers 0..3.
    pub rtmr: [[u8; 48]; 4],
    /// The 64 bytes the TD asked to be bound into the quote.
    pub report_data: [u8; 64],
    /// TD 1.5: second TEE TCB SVN.
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// TD 1.5: measurement of the service TD.
    pub mr_service_td: Option<[u8; 48]>,
}

impl TdReport {
    /// Whether the TD runs in debug mode (its memory is readable by the host).
    pub fn is_debug(&self) -> bool {
        self.td_attributes[0] & 1 == 1
    }
}

/// A parsed quote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quote {
    /// 4 or 5.
    pub version: u16,
    /// Attestation key type (2: ECDSA-256 with P-256).
    pub attestation_key_type: u16,
    /// 0x81 for TDX.
    pub tee_type: u32,
    /// The quoting enclave's vendor.
    pub qe_vendor_id: [u8; 16],
    /// The TD report.
    pub report: TdReport,
    /// Bytes of the signature section (after its length field).
    pub signature_len: usize,
    /// Unsigned bytes after the signature section (padding).
    pub trailing_len: usize,
}

/// Reads fixed-size fields with bounds checks.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TeeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(
            TeeError::Quote(format!(
                "quote truncated in {what}: needs {n} bytes at offset {}, has {}",
                self.pos,
                self.buf.len().saturating_sub(self.pos)
            )),
        )?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TeeError> {
        let s = self.take(N, what)?;
        Ok(s.try_into().expect("take returned exactly N bytes"))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TeeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, TeeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
}

/// Parses a TDX quote.
///
/// # Errors
/// [`TeeError::Quote`] naming what is wrong: too long, truncated, not TDX, an unknown version
/// or body type, a body size that disagrees with its type, or a signature section past the end.
pub fn parse(buf: &[u8]) -> Result<Quote, TeeError> {
    if buf.len() > MAX_QUOTE_LEN {
        return Err(TeeError::Quote(format!(
            "quote is {} bytes, limit {MAX_QUOTE_LEN}",
            buf.len()
        )));
    }
    let mut c = Cursor { buf, pos: 0 };
    let version = c.u16("header")?;
    let attestation_key_type = c.u16("header")?;
    let tee_type = c.u32("header")?;
    let _reserved = c.take(4, "header")?;
    let qe_vendor_id = c.array::<16>("header")?;
    let _user_data = c.take(20, "header")?;
    if tee_type != TEE_TYPE_TDX {
        return Err(TeeError::Quote(format!("tee_type {tee_type:#x} is not TDX (0x81)")));
    }
    let kind = match version {
        4 => BodyKind::Td10,
        5 => {
            let body_type = c.u16("body descriptor")?;
            let size = c.u32("body descriptor")? as usize;
            let (kind, expected) = match body_type {
                2 => (BodyKind::Td10, TD_REPORT10_LEN),
                3 => (BodyKind::Td15, TD_REPORT15_LEN),
                4 => (BodyKind::Td15Ex, TD_REPORT15_EX_LEN),
                other => {
                    return Err(TeeError::Quote(format!("unknown v5 body type {other}")));
                }
            };
            if size != expected {
                return Err(TeeError::Quote(format!(
                    "body type {body_type} must be {expected} bytes, header says {size}"
                )));
            }
            kind
        }
        other => return Err(TeeError::Quote(format!("unsupported quote version {other}"))),
    };
    let body_len = match kind {
        BodyKind::Td10 => TD_REPORT10_LEN,
        BodyKind::Td15 => TD_REPORT15_LEN,
        BodyKind::Td15Ex => TD_REPORT15_EX_LEN,
    };
    let body = c.take(body_len, "TD report")?;
    let mut b = Cursor { buf: body, pos: 0 };
    let mut report = TdReport {
        kind,
        tee_tcb_svn: b.array("TD report")?,
        mr_seam: b.array("TD report")?,
        mr_signer_seam: b.array("TD report")?,
        seam_attributes: b.array("TD report")?,
        td_attributes: b.array("TD report")?,
        xfam: b.array("TD report")?,
        mr_td: b.array("TD report")?,
        mr_config_id: b.array("TD report")?,
        mr_owner: b.array("TD report")?,
        mr_owner_config: b.array("TD report")?,
        rtmr: [
            b.array("TD report")?,
            b.array("TD report")?,
            b.array("TD report")?,
            b.array("TD report")?,
        ],
        report_data: [0; 64],
        tee_tcb_svn2: None,
        mr_service_td: None,
    };
    debug_assert_eq!(b.pos, REPORT_DATA_OFFSET);
    report.report_data = b.array("TD report")?;
    if kind != BodyKind::Td10 {
        report.tee_tcb_svn2 = Some(b.array("TD report")?);
        report.mr_service_td = Some(b.array("TD report")?);
    }
    let signature_len = c.u32("signature length")? as usize;
    c.take(signature_len, "signature data")?;
    // Quoting services pad quotes to a fixed size; bytes past the signature are not signed and
    // carry nothing, so they are counted, not refused.
    let trailing_len = buf.len() - c.pos;
    Ok(Quote {
        version,
        attestation_key_type,
        tee_type,
        qe_vendor_id,
        report,
        signature_len,
        trailing_len,
    })
}

/// Domain tag hashed in front of every client payload ([`Binding::Client`]).
pub const CLIENT_ATTESTATION_DOMAIN: &[u8] = b"pbts/client-attestation/v1";

/// What a quote's 64 bytes of report data bind, and under which scheme. Anyone may ask
/// `POST /generate-attestation` to quote a payload, so a client payload must never yield the
/// report data of a statement the tracker makes itself (its factory statement,
/// `PBTS-Tracker-v1.0:factory=<factory>:referrer=<referrer>`, is published on chain as proof of
/// where the tracker runs). Each binding has its own domain:
///
/// ```text
///  Tracker(statement)  statement ‖ zeros              when it is 64 bytes or fewer
///                      SHA-256(statement) ‖ 32 zeros  otherwise (PBTS's scheme, kept so
///                                                     published attestations still verify)
///  Client(payload)     SHA-256("pbts/client-attestation/v1" ‖ payload) ‖ 32 zeros
/// ```
///
/// The domains cannot meet: a client's report data is a SHA-256 of a message that starts with
/// the domain tag, a tracker statement's is either a SHA-256 of a message that starts with
/// `PBTS-Tracker-` (equal hashes would be a SHA-256 collision) or the statement's own text,
/// which would need a hash whose first 13 bytes spell `PBTS-Tracker-`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding<'a> {
    /// A statement of the tracker itself (the factory statement): [`report_data_for`].
    Tracker(&'a [u8]),
    /// A payload a client chose (`POST /generate-attestation`, `/verify-attestation` with
    /// `expected_payload`): [`client_report_data`].
    Client(&'a [u8]),
}

impl Binding<'_> {
    /// The 64 bytes of report data under this binding's scheme.
    pub fn report_data(self) -> [u8; 64] {
        match self {
            Self::Tracker(statement) => report_data_for(statement),
            Self::Client(payload) => client_report_data(payload),
        }
    }
}

/// Report data of a client payload: SHA-256([`CLIENT_ATTESTATION_DOMAIN`] ‖ `payload`),
/// zero-padded to 64 bytes. See [`Binding`].
pub fn client_report_data(payload: &[u8]) -> [u8; 64] {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(CLIENT_ATTESTATION_DOMAIN);
    h.update(payload);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

/// Report data of a tracker statement ([`Binding::Tracker`]): the statement itself,
/// zero-padded, when it fits; otherwise its SHA-256, zero-padded (PBTS's scheme, so quotes
/// PBTS made still match). Never for payloads a client chose: see [`client_report_data`].
pub fn report_data_for(payload: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    if payload.len() <= 64 {
        out[..payload.len()].copy_from_slice(payload);
    } else {
        use sha2::Digest as _;
        out[..32].copy_from_slice(&sha2::Sha256::digest(payload));
    }
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const_hex::encode(bytes)
}

/// Decodes hex (either case, `0x` optional).
///
/// # Errors
/// [`TeeError::Quote`] for odd length or a non-hex digit.
pub fn unhex(s: &str) -> Result<Vec<u8>, TeeError> {
    // Decoded from bytes: a multi-byte UTF-8 character is just an invalid digit here (slicing
    // the `str` by byte index, as this function once did, panicked on one).
    const_hex::decode(s.trim().as_bytes()).map_err(|e| match e {
        const_hex::FromHexError::OddLength => {
            TeeError::Quote("hex has an odd number of digits".to_owned())
        }
        _ => TeeError::Quote("not valid hex".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_binding() {
        assert_eq!(&report_data_for(b"abc")[..4], b"abc\0");
        let exact = [9u8; 64];
        assert_eq!(report_data_for(&exact), exact);
        let long = [1u8; 65];
        let rd = report_data_for(&long);
        use sha2::Digest as _;
        assert_eq!(&rd[..32], sha2::Sha256::digest(long).as_slice());
        assert_eq!(&rd[32..], &[0; 32]);
    }

    #[test]
    fn client_payloads_have_their_own_domain() {
        use sha2::Digest as _;
        let statement = b"PBTS-Tracker-v1.0:factory=0x00000000000000000000000000000000000000aa:\
                          referrer=0x0000000000000000000000000000000000000000";
        let client = Binding::Client(statement).report_data();
        assert_ne!(client, Binding::Tracker(statement).report_data());
        assert_eq!(Binding::Tracker(statement).report_data(), report_data_for(statement));
        let mut tagged = b"pbts/client-attestation/v1".to_vec();
        tagged.extend_from_slice(statement);
        assert_eq!(&client[..32], sha2::Sha256::digest(&tagged).as_slice());
        assert_eq!(&client[32..], &[0; 32]);
        // Short payloads are hashed too (a tracker statement of 64 bytes or fewer is not).
        assert_eq!(
            const_hex::encode(client_report_data(b"abc")),
            format!(
                "{}{}",
                const_hex::encode(sha2::Sha256::digest(b"pbts/client-attestation/v1abc")),
                "0".repeat(64)
            )
        );
        assert_ne!(client_report_data(b"abc"), report_data_for(b"abc"));
    }

    #[test]
    fn malformed_quotes_name_the_problem() {
        let err = |b: &[u8]| parse(b).unwrap_err().to_string();
        assert_eq!(err(&[]), "quote: quote truncated in header: needs 2 bytes at offset 0, has 0");
        let mut h = vec![0u8; 48];
        h[0] = 4;
        h[4] = 0x00;
        assert_eq!(err(&h), "quote: tee_type 0x0 is not TDX (0x81)");
        h[4] = 0x81;
        assert_eq!(
            err(&h),
            "quote: quote truncated in TD report: needs 584 bytes at offset 48, has 0"
        );
        h[0] = 3;
        assert_eq!(err(&h), "quote: unsupported quote version 3");
        h[0] = 5;
        let mut v5 = h.clone();
        v5.extend_from_slice(&[9, 0, 0, 0, 0, 0]);
        assert_eq!(err(&v5), "quote: unknown v5 body type 9");
        let mut v5 = h;
        v5.extend_from_slice(&[3, 0, 0x48, 0x02, 0, 0]);
        assert_eq!(err(&v5), "quote: body type 3 must be 648 bytes, header says 584");
        assert_eq!(
            err(&vec![0; MAX_QUOTE_LEN + 1]),
            format!("quote: quote is {} bytes, limit {MAX_QUOTE_LEN}", MAX_QUOTE_LEN + 1)
        );
        assert_eq!(unhex("0xAbCd").unwrap(), vec![0xab, 0xcd]);
        assert!(unhex("abc").is_err() && unhex("zz").is_err());
        // A 2-byte character split by 2-byte slices: once a panic on the serving core.
        assert_eq!(unhex("aé0").unwrap_err().to_string(), "quote: not valid hex");
        assert_eq!(unhex("éé").unwrap_err().to_string(), "quote: not valid hex");
    }
}
