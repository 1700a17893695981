//! A slow, obviously correct request parser: the specification of
//! `pbts_http::request::parse_request`, written for reading rather than speed.
//!
//! It splits the head area into lines up front, uses `splitn` and lowercase copies instead of
//! memchr and case-insensitive compares, and checks byte classes against explicit lists.
//! The property tests require the fast parser to return exactly what this returns.

use pbts_http::request::{Limits, Method, ParseError, Request, Status};

/// RFC 9110 `tchar`, spelled out.
const TCHARS: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn trim(mut s: &[u8]) -> &[u8] {
    while s.first() == Some(&b' ') || s.first() == Some(&b'\t') {
        s = &s[1..];
    }
    while s.last() == Some(&b' ') || s.last() == Some(&b'\t') {
        s = &s[..s.len() - 1];
    }
    s
}

/// The complete lines of `area` (CR before LF removed) with the offset after each LF.
fn lines(area: &[u8]) -> Vec<(&[u8], usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..area.len() {
        if area[i] == b'\n' {
            let mut line = &area[start..i];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            out.push((line, i + 1));
            start = i + 1;
        }
    }
    out
}

pub(crate) fn parse<'a>(buf: &'a [u8], limits: &Limits) -> Result<Status<Request<'a>>, ParseError> {
    let incomplete = if buf.len() > limits.max_header_bytes {
        Err(ParseError::HeadersTooLarge { limit: limits.max_header_bytes })
    } else {
        Ok(Status::Partial)
    };
    let head_area = &buf[..buf.len().min(limits.max_header_bytes)];
    let all_lines = lines(head_area);
    let mut lines = all_lines.into_iter().skip_while(|(line, _)| line.is_empty());

    let Some((request_line, _)) = lines.next() else { return incomplete };
    let parts: Vec<&[u8]> = request_line.splitn(3, |&b| b == b' ').collect();
    if parts.len() != 3 {
        return Err(ParseError::InvalidRequestLine);
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if method.is_empty() || method.iter().any(|b| !TCHARS.contains(b)) {
        return Err(ParseError::InvalidRequestLine);
    }
    if target.is_empty() || target.iter().any(|&b| is_control(b) || b == b' ') {
        return Err(ParseError::InvalidRequestLine);
    }
    let minor_version = match version {
        b"HTTP/1.0" => 0,
        b"HTTP/1.1" => 1,
        v if v.len() == 8
            && v.starts_with(b"HTTP/")
            && v[5].is_ascii_digit()
            && v[6] == b'.'
            && v[7].is_ascii_digit() =>
        {
            return Err(ParseError::UnsupportedVersion { major: v[5] - b'0', minor: v[7] - b'0' });
        }
        _ => return Err(ParseError::InvalidVersion),
    };
    let mut target_parts = target.splitn(2, |&b| b == b'?');
    let path = target_parts.next().unwrap_or_default();
    let query = target_parts.next().unwrap_or_default();

    let mut host = None;
    let mut content_type = None;
    let mut authorization = None;
    let mut x_forwarded_for = None;
    let mut x_real_ip = None;
    let mut content_length: Option<u64> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut count = 0;
    let mut head_end = None;

    for (line, next) in lines {
        if line.is_empty() {
            head_end = Some(next);
            break;
        }
        count += 1;
        if count > limits.max_headers {
            return Err(ParseError::TooManyHeaders { limit: limits.max_headers });
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(ParseError::InvalidHeader);
        };
        let name = &line[..colon];
        let raw_value = &line[colon + 1..];
        if name.is_empty() || name.iter().any(|b| !TCHARS.contains(b)) {
            return Err(ParseError::InvalidHeader);
        }
        if raw_value.iter().any(|&b| is_control(b) && b != b'\t') {
            return Err(ParseError::InvalidHeader);
        }
        let value = trim(raw_value);
        match name.to_ascii_lowercase().as_slice() {
            b"host" if host.is_none() => host = Some(value),
            b"content-type" if content_type.is_none() => content_type = Some(value),
            b"authorization" if authorization.is_none() => authorization = Some(value),
            b"x-forwarded-for" => x_forwarded_for = Some(value),
            b"x-real-ip" => x_real_ip = Some(value),
            b"transfer-encoding" => return Err(ParseError::TransferEncodingUnsupported),
            b"connection" => {
                for token in value.split(|&b| b == b',') {
                    match trim(token).to_ascii_lowercase().as_slice() {
                        b"close" => close = true,
                        b"keep-alive" => keep_alive_token = true,
                        _ => {}
                    }
                }
            }
            b"content-length" => {
                let text = std::str::from_utf8(value).unwrap_or("x");
                if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseError::InvalidContentLength);
                }
                let n: u64 = text.parse().expect("at most 19 digits fit a u64");
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(ParseError::InvalidContentLength);
                }
                content_length = Some(n);
                if n > limits.max_body_bytes as u64 {
                    return Err(ParseError::BodyTooLarge { got: n, limit: limits.max_body_bytes });
                }
            }
            _ => {}
        }
    }

    let Some(head_end) = head_end else { return incomplete };
    let body_len = content_length.unwrap_or(0) as usize;
    if buf.len() < head_end + body_len {
        return Ok(Status::Partial);
    }
    let method = match method {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        _ => Method::Other,
    };
    let keep_alive = if minor_version == 1 { !close } else { keep_alive_token && !close };
    Ok(Status::Complete(
        Request {
            method,
            path,
            query,
            minor_version,
            host,
            keep_alive,
            content_type,
            x_forwarded_for,
            x_real_ip,
            authorization,
            body: &buf[head_end..head_end + body_len],
        },
        head_end + body_len,
    ))
}
