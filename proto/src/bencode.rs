//! Bencode (BEP 3): a streaming encoder and a strict, borrowing decoder.
//!
//! The decoder accepts only canonical bencode: dictionary keys are byte strings in strictly
//! increasing byte order, integers and lengths have no leading zeros, and `-0` is invalid. So a
//! decoded value re-encodes to exactly the input bytes, which is what makes hashing a
//! `.torrent`'s raw `info` dictionary ([`dict_value_span`]) agree with hashing its decoded form.
//!
//! Decoding is iterative (an explicit stack, no recursion), bounded by [`DecodeLimits`], and
//! borrows byte strings from the input instead of copying them.
//!
//! # Example
//!
//! ```
//! use pbts_proto::bencode::{decode, DecodeLimits, Encoder, Value};
//!
//! let mut out = Vec::new();
//! let mut enc = Encoder::new(&mut out);
//! enc.begin_dict();
//! enc.str("interval"); // keys in sorted byte order: the caller's job
//! enc.int(1800);
//! enc.str("peers");
//! enc.bytes(&[]);
//! enc.end();
//! assert_eq!(out, b"d8:intervali1800e5:peers0:e");
//!
//! let value = decode(&out, &DecodeLimits::default())?;
//! assert_eq!(value.get(b"interval").and_then(Value::as_int), Some(1800));
//! # Ok::<(), pbts_proto::bencode::DecodeError>(())
//! ```

use core::fmt;
use core::ops::Range;

use crate::decimal::{push_i64, push_u64};

/// Writes bencode to a `Vec<u8>`, one token at a time.
///
/// The encoder does not check structure: the caller emits dictionary keys (with
/// [`Encoder::bytes`] or [`Encoder::str`]) in strictly increasing byte order, follows each key
/// with exactly one value, and closes every container with [`Encoder::end`]. Getting this wrong
/// produces bencode that strict decoders (including [`decode`]) reject; it never panics.
/// [`Encoder::depth`] helps tests check that containers are balanced.
#[derive(Debug)]
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    depth: usize,
}

impl<'a> Encoder<'a> {
    /// An encoder appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, depth: 0 }
    }

    /// Writes an integer, `i<v>e`.
    pub fn int(&mut self, v: i64) {
        self.out.push(b'i');
        push_i64(self.out, v);
        self.out.push(b'e');
    }

    /// Writes a byte string, `<len>:<bytes>`.
    pub fn bytes(&mut self, b: &[u8]) {
        push_u64(self.out, b.len() as u64);
        self.out.push(b':');
        self.out.extend_from_slice(b);
    }

    /// Writes a UTF-8 string as a byte string.
    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// Opens a list; close it with [`Encoder::end`].
    pub fn begin_list(&mut self) {
        self.out.push(b'l');
        self.depth += 1;
    }

    /// Opens a dictionary; close it with [`Encoder::end`]. Keys must come in sorted order.
    pub fn begin_dict(&mut self) {
        self.out.push(b'd');
        self.depth += 1;
    }

    /// Closes the innermost open list or dictionary.
    pub fn end(&mut self) {
        self.out.push(b'e');
        self.depth = self.depth.saturating_sub(1);
    }

    /// Containers opened and not yet closed.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// A decoded bencode value, borrowing byte strings from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// An integer.
    Int(i64),
    /// A byte string (not necessarily UTF-8).
    Bytes(&'a [u8]),
    /// A list.
    List(Vec<Self>),
    /// A dictionary; decoded ones have keys in strictly increasing order.
    Dict(Vec<(&'a [u8], Self)>),
}

impl<'a> Value<'a> {
    /// The value under `key`, if this is a dictionary that has it.
    pub fn get(&self, key: &[u8]) -> Option<&Self> {
        self.as_dict()?.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match *self {
            Self::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The byte string, if this is one.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The byte string as UTF-8, if this is a byte string holding valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.as_bytes()?).ok()
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Self]> {
        match self {
            Self::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries, if this is a dictionary.
    pub fn as_dict(&self) -> Option<&[(&'a [u8], Self)]> {
        match self {
            Self::Dict(entries) => Some(entries),
            _ => None,
        }
    }

    /// Appends the bencoding of this value. Dictionary entries are written in their stored
    /// order, so a decoded value re-encodes to its exact input bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut enc = Encoder::new(out);
        self.encode_with(&mut enc);
    }

    fn encode_with(&self, enc: &mut Encoder<'_>) {
        match self {
            Self::Int(v) => enc.int(*v),
            Self::Bytes(b) => enc.bytes(b),
            Self::List(items) => {
                enc.begin_list();
                for item in items {
                    item.encode_with(enc);
                }
                enc.end();
            }
            Self::Dict(entries) => {
                enc.begin_dict();
                for (k, v) in entries {
                    enc.bytes(k);
                    v.encode_with(enc);
                }
                enc.end();
            }
        }
    }
}

/// Bounds on what [`decode`] will build.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Deepest nesting of lists and dictionaries. Default 64 (real torrents nest at most 5 or
    /// 6). Dropping a [`Value`] recurses this deep, so keep it modest.
    pub max_depth: usize,
    /// Most values (integers, strings, lists, dictionaries; keys excluded). Default `1 << 20`.
    pub max_items: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_depth: 64, max_items: 1 << 20 }
    }
}

/// Why input is not canonical bencode. Offsets are byte positions in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a value that starts or continues at `offset`.
    UnexpectedEof {
        /// Where more input was needed.
        offset: usize,
    },
    /// An integer is empty, has a non-digit, or overflows `i64`.
    InvalidInt {
        /// Where the problem is.
        offset: usize,
    },
    /// An integer or string length has a leading zero (`i03e`, `03:abc`).
    LeadingZero {
        /// Where the number starts.
        offset: usize,
    },
    /// The integer `-0` (`i-0e`).
    NegativeZero {
        /// Where the integer starts.
        offset: usize,
    },
    /// A string length is not digits followed by `:`, or overflows.
    InvalidLength {
        /// Where the problem is.
        offset: usize,
    },
    /// A dictionary key sorts before the previous key.
    UnsortedKeys {
        /// Where the key starts.
        offset: usize,
    },
    /// A dictionary key equals the previous key.
    DuplicateKey {
        /// Where the key starts.
        offset: usize,
    },
    /// Lists and dictionaries nest deeper than `limit`.
    TooDeep {
        /// [`DecodeLimits::max_depth`].
        limit: usize,
    },
    /// More than `limit` values.
    TooManyItems {
        /// [`DecodeLimits::max_items`].
        limit: usize,
    },
    /// Bytes follow a complete value ([`decode`] only).
    TrailingBytes {
        /// Where the trailing bytes start.
        offset: usize,
    },
    /// A dictionary key is not a byte string.
    NonBytesKey {
        /// Where the key starts.
        offset: usize,
    },
    /// A byte that cannot start a value here (not `i`, `l`, `d`, a digit, or a closing `e`).
    InvalidByte {
        /// Where it is.
        offset: usize,
        /// The byte.
        byte: u8,
    },
}

impl DecodeError {
    /// A short fixed description.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedEof { .. } => "bencode: unexpected end of input",
            Self::InvalidInt { .. } => "bencode: invalid integer",
            Self::LeadingZero { .. } => "bencode: leading zero",
            Self::NegativeZero { .. } => "bencode: negative zero",
            Self::InvalidLength { .. } => "bencode: invalid string length",
            Self::UnsortedKeys { .. } => "bencode: dictionary keys not sorted",
            Self::DuplicateKey { .. } => "bencode: duplicate dictionary key",
            Self::TooDeep { .. } => "bencode: nested too deeply",
            Self::TooManyItems { .. } => "bencode: too many values",
            Self::TrailingBytes { .. } => "bencode: trailing bytes after value",
            Self::NonBytesKey { .. } => "bencode: dictionary key is not a string",
            Self::InvalidByte { .. } => "bencode: unexpected byte",
        }
    }

    /// The input offset the error refers to, if it has one.
    pub fn offset(self) -> Option<usize> {
        match self {
            Self::UnexpectedEof { offset }
            | Self::InvalidInt { offset }
            | Self::LeadingZero { offset }
            | Self::NegativeZero { offset }
            | Self::InvalidLength { offset }
            | Self::UnsortedKeys { offset }
            | Self::DuplicateKey { offset }
            | Self::TrailingBytes { offset }
            | Self::NonBytesKey { offset }
            | Self::InvalidByte { offset, .. } => Some(offset),
            Self::TooDeep { .. } | Self::TooManyItems { .. } => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        match *self {
            Self::TooDeep { limit } | Self::TooManyItems { limit } => {
                write!(f, " (limit {limit})")
            }
            Self::InvalidByte { offset, byte } => write!(f, " 0x{byte:02x} at offset {offset}"),
            other => match other.offset() {
                Some(offset) => write!(f, " at offset {offset}"),
                None => Ok(()),
            },
        }
    }
}

impl std::error::Error for DecodeError {}

/// One token seen by [`walk`].
enum Event<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    Key(&'a [u8]),
    BeginList,
    BeginDict,
    End,
}

/// An open container during [`walk`].
enum Frame<'a> {
    List,
    Dict {
        /// The previous key, for the ordering check.
        prev_key: Option<&'a [u8]>,
        /// True when the next token is a key (or the closing `e`).
        want_key: bool,
    },
}

/// Reads `i<digits>e` starting at `pos` (which holds `i`); returns the value and the end.
fn read_int(input: &[u8], pos: usize) -> Result<(i64, usize), DecodeError> {
    let mut i = pos + 1;
    let negative = input.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let digits_start = i;
    while input.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    match input.get(i) {
        None => return Err(DecodeError::UnexpectedEof { offset: i }),
        Some(b'e') => {}
        Some(_) => return Err(DecodeError::InvalidInt { offset: i }),
    }
    let digits = input.get(digits_start..i).unwrap_or_default();
    match digits {
        [] => return Err(DecodeError::InvalidInt { offset: digits_start }),
        [b'0'] if negative => return Err(DecodeError::NegativeZero { offset: pos }),
        [b'0', _, ..] => return Err(DecodeError::LeadingZero { offset: digits_start }),
        _ => {}
    }
    // Accumulate towards the sign so i64::MIN parses.
    let mut v: i64 = 0;
    for &d in digits {
        let d = i64::from(d - b'0');
        v = v
            .checked_mul(10)
            .and_then(|v| if negative { v.checked_sub(d) } else { v.checked_add(d) })
            .ok_or(DecodeError::InvalidInt { offset: digits_start })?;
    }
    Ok((v, i + 1))
}

/// Reads `<len>:<bytes>` starting at `pos` (which holds a digit); returns the bytes and the end.
fn read_bytes(input: &[u8], pos: usize) -> Result<(&[u8], usize), DecodeError> {
    let mut i = pos;
    while input.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    match input.get(i) {
        None => return Err(DecodeError::UnexpectedEof { offset: i }),
        Some(b':') => {}
        Some(_) => return Err(DecodeError::InvalidLength { offset: i }),
    }
    let digits = input.get(pos..i).unwrap_or_default();
    if let [b'0', _, ..] = digits {
        return Err(DecodeError::LeadingZero { offset: pos });
    }
    let len = digits
        .iter()
        .try_fold(0usize, |n, &d| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))
        .ok_or(DecodeError::InvalidLength { offset: pos })?;
    let start = i + 1;
    let end = start.checked_add(len).ok_or(DecodeError::InvalidLength { offset: pos })?;
    match input.get(start..end) {
        Some(bytes) => Ok((bytes, end)),
        None => Err(DecodeError::UnexpectedEof { offset: input.len() }),
    }
}

/// Validates the first value of `input`, reporting each token with its byte range to `on`.
/// Returns the number of bytes the value used.
fn walk<'a>(
    input: &'a [u8],
    limits: &DecodeLimits,
    mut on: impl FnMut(Event<'a>, Range<usize>),
) -> Result<usize, DecodeError> {
    let mut stack: Vec<Frame<'a>> = Vec::new();
    let mut pos = 0usize;
    let mut items = 0usize;
    loop {
        let byte = *input.get(pos).ok_or(DecodeError::UnexpectedEof { offset: pos })?;

        // Inside a dictionary, expecting a key (the closing `e` is handled below).
        if let Some(Frame::Dict { prev_key, want_key: want_key @ true }) = stack.last_mut()
            && byte != b'e'
        {
            if !byte.is_ascii_digit() {
                return Err(DecodeError::NonBytesKey { offset: pos });
            }
            let (key, end) = read_bytes(input, pos)?;
            match *prev_key {
                Some(prev) if key < prev => {
                    return Err(DecodeError::UnsortedKeys { offset: pos });
                }
                Some(prev) if key == prev => {
                    return Err(DecodeError::DuplicateKey { offset: pos });
                }
                _ => {}
            }
            *prev_key = Some(key);
            *want_key = false;
            on(Event::Key(key), pos..end);
            pos = end;
            continue;
        }

        let end = match byte {
            // Closes a list, or a dictionary between entries.
            b'e' if matches!(
                stack.last(),
                Some(Frame::List | Frame::Dict { want_key: true, .. })
            ) =>
            {
                stack.pop();
                on(Event::End, pos..pos + 1);
                pos + 1
            }
            b'i' | b'0'..=b'9' | b'l' | b'd' => {
                items += 1;
                if items > limits.max_items {
                    return Err(DecodeError::TooManyItems { limit: limits.max_items });
                }
                match byte {
                    b'i' => {
                        let (v, end) = read_int(input, pos)?;
                        on(Event::Int(v), pos..end);
                        end
                    }
                    b'l' | b'd' => {
                        if stack.len() >= limits.max_depth {
                            return Err(DecodeError::TooDeep { limit: limits.max_depth });
                        }
                        if byte == b'l' {
                            stack.push(Frame::List);
                            on(Event::BeginList, pos..pos + 1);
                        } else {
                            stack.push(Frame::Dict { prev_key: None, want_key: true });
                            on(Event::BeginDict, pos..pos + 1);
                        }
                        pos += 1;
                        continue;
                    }
                    _ => {
                        let (bytes, end) = read_bytes(input, pos)?;
                        on(Event::Bytes(bytes), pos..end);
                        end
                    }
                }
            }
            _ => return Err(DecodeError::InvalidByte { offset: pos, byte }),
        };
        pos = end;

        // A value (scalar or closed container) is complete.
        match stack.last_mut() {
            None => return Ok(pos),
            Some(Frame::Dict { want_key, .. }) => *want_key = true,
            Some(Frame::List) => {}
        }
    }
}

/// A container being built by [`decode_prefix`].
enum Building<'a> {
    List(Vec<Value<'a>>),
    Dict(Vec<(&'a [u8], Value<'a>)>, Option<&'a [u8]>),
}

/// Decodes the first value of `input` and returns it with the number of bytes it used; the
/// rest of `input` is not looked at (BEP 10 messages carry raw data after the dictionary).
///
/// # Errors
///
/// A [`DecodeError`] for anything that is not canonical bencode or exceeds `limits`.
pub fn decode_prefix<'a>(
    input: &'a [u8],
    limits: &DecodeLimits,
) -> Result<(Value<'a>, usize), DecodeError> {
    let mut stack: Vec<Building<'a>> = Vec::new();
    let mut root = None;

    fn attach<'a>(stack: &mut [Building<'a>], root: &mut Option<Value<'a>>, v: Value<'a>) {
        match stack.last_mut() {
            None => *root = Some(v),
            Some(Building::List(items)) => items.push(v),
            // `walk` guarantees a key precedes every dictionary value.
            Some(Building::Dict(entries, key)) => {
                if let Some(k) = key.take() {
                    entries.push((k, v));
                }
            }
        }
    }

    let used = walk(input, limits, |event, _| match event {
        Event::Int(v) => attach(&mut stack, &mut root, Value::Int(v)),
        Event::Bytes(b) => attach(&mut stack, &mut root, Value::Bytes(b)),
        Event::Key(k) => {
            if let Some(Building::Dict(_, key)) = stack.last_mut() {
                *key = Some(k);
            }
        }
        Event::BeginList => stack.push(Building::List(Vec::new())),
        Event::BeginDict => stack.push(Building::Dict(Vec::new(), None)),
        Event::End => {
            let v = match stack.pop() {
                Some(Building::List(items)) => Value::List(items),
                Some(Building::Dict(entries, _)) => Value::Dict(entries),
                None => return,
            };
            attach(&mut stack, &mut root, v);
        }
    })?;
    // `walk` succeeded, so exactly one root value was completed.
    let value = root.ok_or(DecodeError::UnexpectedEof { offset: used })?;
    Ok((value, used))
}

/// Decodes `input`, which must hold exactly one value.
///
/// # Errors
///
/// As [`decode_prefix`], plus [`DecodeError::TrailingBytes`] when bytes follow the value.
pub fn decode<'a>(input: &'a [u8], limits: &DecodeLimits) -> Result<Value<'a>, DecodeError> {
    let (value, used) = decode_prefix(input, limits)?;
    if used != input.len() {
        return Err(DecodeError::TrailingBytes { offset: used });
    }
    Ok(value)
}

/// Finds the byte range of the value stored under `key` in the top-level dictionary of
/// `input`, without building anything. `input[range]` is the raw bencode of that value, e.g.
/// the `info` dictionary whose SHA-1 is a torrent's info-hash.
///
/// The first value of `input` is fully validated as [`decode_prefix`] would; bytes after it
/// are ignored. Returns `Ok(None)` when the top-level value is not a dictionary or has no such
/// key.
///
/// # Errors
///
/// A [`DecodeError`] when the first value is not canonical bencode or exceeds `limits`.
pub fn dict_value_span(
    input: &[u8],
    key: &[u8],
    limits: &DecodeLimits,
) -> Result<Option<Range<usize>>, DecodeError> {
    let mut depth = 0usize;
    let mut wanted = false;
    let mut start = None;
    let mut span = None;
    walk(input, limits, |event, range| match event {
        Event::Key(k) => {
            if depth == 1 {
                wanted = k == key;
            }
        }
        Event::Int(_) | Event::Bytes(_) => {
            if depth == 1 && wanted {
                span = Some(range);
                wanted = false;
            }
        }
        Event::BeginList | Event::BeginDict => {
            if depth == 1 && wanted {
                start = Some(range.start);
                wanted = false;
            }
            depth += 1;
        }
        Event::End => {
            depth = depth.saturating_sub(1);
            if depth == 1
                && let Some(s) = start.take()
            {
                span = Some(s..range.end);
            }
        }
    })?;
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: DecodeLimits = DecodeLimits { max_depth: 64, max_items: 1 << 20 };

    fn enc(f: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        f(&mut e);
        assert_eq!(e.depth(), 0);
        out
    }

    #[test]
    fn encoder_exact_bytes() {
        assert_eq!(enc(|e| e.int(0)), b"i0e");
        assert_eq!(enc(|e| e.int(-42)), b"i-42e");
        assert_eq!(enc(|e| e.int(i64::MAX)), b"i9223372036854775807e");
        assert_eq!(enc(|e| e.int(i64::MIN)), b"i-9223372036854775808e");
        assert_eq!(enc(|e| e.bytes(b"")), b"0:");
        assert_eq!(enc(|e| e.bytes(b"\x00\xff")), b"2:\x00\xff");
        assert_eq!(enc(|e| e.str("spam")), b"4:spam");
        assert_eq!(
            enc(|e| {
                e.begin_dict();
                e.str("a");
                e.begin_list();
                e.int(1);
                e.str("x");
                e.begin_dict();
                e.end();
                e.end();
                e.str("b");
                e.int(2);
                e.end();
            }),
            b"d1:ali1e1:xdee1:bi2ee"
        );
        // Unbalanced use never panics.
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        e.end();
        assert_eq!((e.depth(), out), (0, b"e".to_vec()));
    }

    macro_rules! case {
        ($name:ident, $input:expr, Ok($expected:expr)) => {
            #[test]
            fn $name() {
                let input: &[u8] = $input;
                let value = decode(input, &LIM).unwrap();
                assert_eq!(value, $expected);
                let mut again = Vec::new();
                value.encode(&mut again);
                assert_eq!(again, input, "canonical input re-encodes exactly");
            }
        };
        ($name:ident, $input:expr, Err($err:expr)) => {
            #[test]
            fn $name() {
                assert_eq!(decode($input, &LIM), Err($err));
            }
        };
    }

    use DecodeError::*;
    use Value::{Bytes as B, Dict as D, Int as I, List as L};

    case!(int_zero, b"i0e", Ok(I(0)));
    case!(int_negative, b"i-17e", Ok(I(-17)));
    case!(int_min, b"i-9223372036854775808e", Ok(I(i64::MIN)));
    case!(bytes_empty, b"0:", Ok(B(b"")));
    case!(bytes_binary, b"3:\x00e:", Ok(B(b"\x00e:")));
    case!(list_empty, b"le", Ok(L(vec![])));
    case!(dict_empty, b"de", Ok(D(vec![])));
    case!(
        nested,
        b"d1:ad1:bli1e0:ee1:ci-1ee",
        Ok(D(vec![(b"a", D(vec![(b"b", L(vec![I(1), B(b"")]))])), (b"c", I(-1)),]))
    );
    case!(
        keys_sorted_bytewise,
        b"d1:Ai0e1:ai0e2:aai0e1:bi0ee",
        Ok(D(vec![(b"A", I(0)), (b"a", I(0)), (b"aa", I(0)), (b"b", I(0)),]))
    );

    case!(empty_input, b"", Err(UnexpectedEof { offset: 0 }));
    case!(int_unterminated, b"i12", Err(UnexpectedEof { offset: 3 }));
    case!(int_empty, b"ie", Err(InvalidInt { offset: 1 }));
    case!(int_minus_only, b"i-e", Err(InvalidInt { offset: 2 }));
    case!(int_plus, b"i+1e", Err(InvalidInt { offset: 1 }));
    case!(int_space, b"i 1e", Err(InvalidInt { offset: 1 }));
    case!(int_leading_zero, b"i03e", Err(LeadingZero { offset: 1 }));
    case!(int_negative_leading_zero, b"i-03e", Err(LeadingZero { offset: 2 }));
    case!(int_negative_zero, b"i-0e", Err(NegativeZero { offset: 0 }));
    case!(int_overflow, b"i9223372036854775808e", Err(InvalidInt { offset: 1 }));
    case!(int_underflow, b"i-9223372036854775809e", Err(InvalidInt { offset: 2 }));
    case!(len_leading_zero, b"03:abc", Err(LeadingZero { offset: 0 }));
    case!(len_no_colon, b"3abc", Err(InvalidLength { offset: 1 }));
    case!(len_unterminated, b"12", Err(UnexpectedEof { offset: 2 }));
    case!(len_short_data, b"5:abc", Err(UnexpectedEof { offset: 5 }));
    case!(len_overflow, b"99999999999999999999999:x", Err(InvalidLength { offset: 0 }));
    case!(list_unterminated, b"li1e", Err(UnexpectedEof { offset: 4 }));
    case!(dict_unterminated, b"d1:ai1e", Err(UnexpectedEof { offset: 7 }));
    case!(dict_key_without_value, b"d1:ae", Err(InvalidByte { offset: 4, byte: b'e' }));
    case!(dict_unsorted, b"d1:bi0e1:ai0ee", Err(UnsortedKeys { offset: 7 }));
    case!(dict_duplicate, b"d1:ai0e1:ai0ee", Err(DuplicateKey { offset: 7 }));
    case!(dict_int_key, b"di1ei2ee", Err(NonBytesKey { offset: 1 }));
    case!(dict_list_key, b"dlei2ee", Err(NonBytesKey { offset: 1 }));
    case!(trailing, b"i1ei2e", Err(TrailingBytes { offset: 3 }));
    case!(trailing_newline, b"de\n", Err(TrailingBytes { offset: 2 }));
    case!(stray_end, b"e", Err(InvalidByte { offset: 0, byte: b'e' }));
    case!(bad_type, b"x", Err(InvalidByte { offset: 0, byte: b'x' }));
    case!(nested_unsorted, b"ld1:bi0e1:ai0eee", Err(UnsortedKeys { offset: 8 }));

    #[test]
    fn depth_limit() {
        let limits = DecodeLimits { max_depth: 3, ..LIM };
        assert!(decode(b"llleee", &limits).is_ok());
        assert_eq!(decode(b"lllleeee", &limits), Err(TooDeep { limit: 3 }));
        assert_eq!(decode(b"ld1:ald1:aleeeee", &limits), Err(TooDeep { limit: 3 }));
        assert_eq!(decode(b"le", &DecodeLimits { max_depth: 0, ..LIM }), Err(TooDeep { limit: 0 }));
        assert_eq!(decode(b"i1e", &DecodeLimits { max_depth: 0, ..LIM }), Ok(I(1)));
        // Deep input is refused without recursion, whatever its depth.
        let mut deep = vec![b'l'; 1_000_000];
        deep.extend(vec![b'e'; 1_000_000]);
        assert_eq!(decode(&deep, &LIM), Err(TooDeep { limit: 64 }));
    }

    #[test]
    fn item_limit() {
        let limits = DecodeLimits { max_items: 3, ..LIM };
        assert!(decode(b"li1ei2ee", &limits).is_ok());
        assert_eq!(decode(b"li1ei2ei3ee", &limits), Err(TooManyItems { limit: 3 }));
        // Keys do not count.
        assert!(decode(b"d1:ai1e1:bi2ee", &limits).is_ok());
    }

    #[test]
    fn prefix_and_trailing_data() {
        let input = b"d8:msg_typei1e5:piecei0ee\x00\x01raw";
        let (value, used) = decode_prefix(input, &LIM).unwrap();
        assert_eq!(used, 25);
        assert_eq!(value.get(b"msg_type").and_then(Value::as_int), Some(1));
        assert_eq!(&input[used..], b"\x00\x01raw");
        assert_eq!(decode(input, &LIM), Err(TrailingBytes { offset: 25 }));
    }

    #[test]
    fn accessors() {
        let v = decode(b"d1:ai1e1:b2:hi1:cli2ee1:dde1:e2:\xff\xfee", &LIM).unwrap();
        assert_eq!(v.get(b"a").and_then(Value::as_int), Some(1));
        assert_eq!(v.get(b"b").and_then(Value::as_bytes), Some(&b"hi"[..]));
        assert_eq!(v.get(b"b").and_then(Value::as_str), Some("hi"));
        assert_eq!(v.get(b"e").and_then(Value::as_str), None);
        assert_eq!(v.get(b"c").and_then(Value::as_list), Some(&[I(2)][..]));
        assert_eq!(v.get(b"d").and_then(Value::as_dict).map(<[_]>::len), Some(0));
        assert_eq!(v.get(b"z"), None);
        assert_eq!(I(1).get(b"a"), None);
        assert_eq!((I(1).as_bytes(), B(b"").as_int(), B(b"").as_list()), (None, None, None));
        assert_eq!(L(vec![]).as_dict(), None);
    }

    #[test]
    fn info_span() {
        let torrent = b"d8:announce9:http://t/4:infod6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces0:e7:privatei1ee";
        let span = dict_value_span(torrent, b"info", &LIM).unwrap().unwrap();
        assert_eq!(
            &torrent[span.clone()],
            &b"d6:lengthi5e4:name1:x12:piece lengthi16384e6:pieces0:e"[..]
        );
        let decoded = decode(torrent, &LIM).unwrap();
        assert_eq!(decode(&torrent[span], &LIM).as_ref(), Ok(decoded.get(b"info").unwrap()));
        let s = dict_value_span(torrent, b"private", &LIM).unwrap().unwrap();
        assert_eq!(&torrent[s], b"i1e");
        let s = dict_value_span(torrent, b"announce", &LIM).unwrap().unwrap();
        assert_eq!(&torrent[s], b"9:http://t/");
        // Nested keys with the same name do not match; missing keys give None.
        assert_eq!(dict_value_span(torrent, b"name", &LIM), Ok(None));
        assert_eq!(dict_value_span(b"li1ee", b"info", &LIM), Ok(None));
        assert_eq!(dict_value_span(b"d4:infolee", b"info", &LIM), Ok(Some(7..9)));
        // Invalid input is an error even after the key was found.
        assert_eq!(
            dict_value_span(b"d4:infoi1e1:zi-0ee", b"info", &LIM),
            Err(NegativeZero { offset: 13 })
        );
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            UnsortedKeys { offset: 7 }.to_string(),
            "bencode: dictionary keys not sorted at offset 7"
        );
        assert_eq!(TooDeep { limit: 3 }.to_string(), "bencode: nested too deeply (limit 3)");
        assert_eq!(
            InvalidByte { offset: 0, byte: b'x' }.to_string(),
            "bencode: unexpected byte 0x78 at offset 0"
        );
        assert_eq!(TooManyItems { limit: 1 }.offset(), None);
    }
}
