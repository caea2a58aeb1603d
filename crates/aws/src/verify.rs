//! Checking a caller's SigV4 signature, the other side of `sign`: an
//! unmodified SDK pointed at the agent cannot send the agent's SSRF token,
//! so its requests prove who sent them the way AWS's own are proved, by a
//! signature over the request made with a key the agent knows.
//!
//! Pure: [`Claim::parse`] reads the `Authorization` header, [`Claim::check`]
//! rebuilds the canonical request from what arrived (method, path, query,
//! the headers the caller signed, the body's hash), signs it with the secret
//! the caller claims to hold, and compares in constant time. Who holds which
//! secret is `callers`' business; the time is the caller's to pass in.
//!
//! The rules are SigV4's for the JSON services: header-signed requests only
//! (no presigned query), the payload hashed from the body itself, the path
//! encoded once more as SDKs do for every service but S3, the time within
//! [`WINDOW`] of the agent's clock either way. Every refusal is a
//! [`Refusal`] whose code and message are what AWS answers for it; nothing
//! about the expected signature is ever in one.

use std::fmt;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use secrets_manager_agent_core::query::query_pairs;

/// How far a request's `X-Amz-Date` may be from the agent's clock, either
/// way: AWS's window for a signature. A captured request can be replayed
/// only within it.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// A request as it arrived, for checking its signature.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (still percent-encoded), without the query.
    pub path: &'a str,
    /// The query as sent, without the `?`.
    pub query: &'a str,
    /// Every header as sent (names in any case).
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The values of header `name`, in order.
    pub(crate) fn header(&self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn first_header(&self, name: &'a str) -> Option<&'a str> {
        self.header(name)
            .next()
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// Why a request's signature is refused, as AWS tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not a whole SigV4 one, or no date.
    Incomplete(String),
    /// An access key ID, or a session token, the agent does not accept.
    UnknownKey,
    /// Scoped to another service or day than the request says.
    WrongScope(String),
    /// Outside [`WINDOW`]: `Signature expired` or `not yet current`.
    Expired(String),
    /// The signature is not the one the claimed secret makes.
    Mismatch,
}

impl Refusal {
    /// The error code AWS gives (`__type`, `X-Amzn-Errortype`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Missing => "MissingAuthenticationToken",
            Refusal::Incomplete(_) => "IncompleteSignature",
            Refusal::UnknownKey => "InvalidClientTokenId",
            Refusal::WrongScope(_) | Refusal::Expired(_) | Refusal::Mismatch => {
                "SignatureDoesNotMatch"
            }
        }
    }

    /// The HTTP status AWS gives (a malformed signature is the caller's bad
    /// request; the rest are refusals of who it is).
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Incomplete(_) => 400,
            _ => 403,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => f.write_str(
                "Missing Authentication Token: sign the request with SigV4 \
                 (an AWS SDK does when its endpoint URL points at the agent)",
            ),
            Refusal::Incomplete(why) | Refusal::WrongScope(why) | Refusal::Expired(why) => {
                f.write_str(why)
            }
            Refusal::UnknownKey => {
                f.write_str("The security token included in the request is invalid.")
            }
            Refusal::Mismatch => f.write_str(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method.",
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// What a request's `Authorization` header claims: who signed, for which
/// day, region and service, over which headers, and the signature.
#[derive(Debug)]
pub struct Claim<'a> {
    pub access_key_id: &'a str,
    /// `YYYYMMDD`.
    date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// Lower-case names, `;`-separated, as signed.
    signed_headers: &'a str,
    signature: [u8; 32],
    /// `X-Amz-Date`: `YYYYMMDDTHHMMSSZ`.
    amz_date: &'a str,
    time: SystemTime,
}

impl<'a> Claim<'a> {
    /// Reads the claim from the request's `Authorization` and `X-Amz-Date`
    /// headers, without checking it.
    pub fn parse(request: &Request<'a>) -> Result<Claim<'a>, Refusal> {
        let Some(header) = request.first_header("authorization") else {
            return Err(match request.header("authorization").next() {
                Some(_) => Refusal::Incomplete("Authorization header is not valid UTF-8".into()),
                None => Refusal::Missing,
            });
        };
        let Some(fields) = header.trim().strip_prefix(ALGORITHM) else {
            return Err(Refusal::Incomplete(format!(
                "Authorization header must start with '{ALGORITHM}' (SigV4 with header signing is the only scheme the agent checks)"
            )));
        };
        let (mut credential, mut signed_headers, mut signature) = (None, None, None);
        for field in fields.split(',') {
            match field.trim().split_once('=') {
                Some(("Credential", v)) => credential = Some(v.trim()),
                Some(("SignedHeaders", v)) => signed_headers = Some(v.trim()),
                Some(("Signature", v)) => signature = Some(v.trim()),
                _ => {}
            }
        }
        let mut missing = Vec::new();
        for (name, value) in [
            ("Credential", credential),
            ("Signature", signature),
            ("SignedHeaders", signed_headers),
        ] {
            if value.is_none_or(str::is_empty) {
                missing.push(format!("Authorization header requires '{name}' parameter."));
            }
        }
        let Some(amz_date) = request.first_header("x-amz-date") else {
            missing
                .push("Authorization header requires existence of an 'X-Amz-Date' header.".into());
            return Err(Refusal::Incomplete(missing.join(" ")));
        };
        if !missing.is_empty() {
            return Err(Refusal::Incomplete(missing.join(" ")));
        }
        let (credential, signed_headers, signature) = (
            credential.unwrap_or_default(),
            signed_headers.unwrap_or_default(),
            signature.unwrap_or_default(),
        );
        let mut scope = credential.split('/');
        let mut part = || scope.next();
        let (
            Some(access_key_id),
            Some(date),
            Some(region),
            Some(service),
            Some("aws4_request"),
            None,
        ) = (part(), part(), part(), part(), part(), part())
        else {
            return Err(Refusal::Incomplete(format!(
                "Credential must have the form ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request, not {} parts",
                credential.split('/').count()
            )));
        };
        if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
            return Err(Refusal::Incomplete(
                "Credential has an empty access key ID, region or service".into(),
            ));
        }
        let mut bytes = [0u8; 32];
        if signature.len() != 64 || hex::decode_to_slice(signature, &mut bytes).is_err() {
            return Err(Refusal::Incomplete(
                "Signature must be 64 hexadecimal digits".into(),
            ));
        }
        // The operation is named by `X-Amz-Target`: unsigned, a captured
        // request could be sent again as another operation.
        for (name, present) in [
            ("host", true),
            (
                "x-amz-target",
                request.header("x-amz-target").next().is_some(),
            ),
        ] {
            if present && !signed_headers.split(';').any(|h| h == name) {
                return Err(Refusal::Incomplete(format!(
                    "SignedHeaders must include '{name}'"
                )));
            }
        }
        let time = parse_amz_date(amz_date).ok_or_else(|| {
            Refusal::Incomplete(format!(
                "X-Amz-Date must have the form YYYYMMDDTHHMMSSZ, not '{}'",
                clip(amz_date)
            ))
        })?;
        Ok(Claim {
            access_key_id,
            date,
            region,
            service,
            signed_headers,
            signature: bytes,
            amz_date,
            time,
        })
    }

    /// Checks the claim against the request it came with: scoped to
    /// `service` and the request's day, made within [`WINDOW`] of `now`,
    /// and signed with `secret`.
    pub fn check(
        &self,
        request: &Request<'_>,
        service: &str,
        secret: &str,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        if self.service != service {
            return Err(Refusal::WrongScope(format!(
                "Credential should be scoped to correct service: '{service}'."
            )));
        }
        // `amz_date` parsed as YYYYMMDDTHHMMSSZ: its first 8 bytes are ASCII.
        let day = self.amz_date.get(..8).unwrap_or_default();
        if self.date != day {
            return Err(Refusal::WrongScope(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{day}'",
                clip(self.date),
            )));
        }
        check_time(self.amz_date, self.time, now)?;
        let expected = self.signature_with(request, secret)?;
        if bool::from(expected.ct_eq(&self.signature)) {
            Ok(())
        } else {
            Err(Refusal::Mismatch)
        }
    }

    /// The signature `secret` makes for this request under this claim.
    fn signature_with(&self, request: &Request<'_>, secret: &str) -> Result<[u8; 32], Refusal> {
        let canonical = CANONICAL.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            let built = canonical_request(request, self.signed_headers, &mut buffer);
            let digest = hex32(&Sha256::digest(buffer.as_bytes()).into());
            // It holds the session token when the caller signed it.
            zeroize::Zeroize::zeroize(&mut *buffer);
            built.map(|()| digest)
        })?;
        let key = signing_key(secret, self.date, self.region, self.service);
        // The string to sign, fed to the HMAC piece by piece.
        let mut mac = hmac_with(&key);
        for part in [
            ALGORITHM.as_bytes(),
            b"\n",
            self.amz_date.as_bytes(),
            b"\n",
            self.date.as_bytes(),
            b"/",
            self.region.as_bytes(),
            b"/",
            self.service.as_bytes(),
            b"/aws4_request\n",
            &canonical,
        ] {
            mac.update(part);
        }
        Ok(mac.finalize().into_bytes().into())
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = hmac_with(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hmac_with(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail, and
    // `new` takes only a fixed-size one.
    <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()))
}

/// Lower-case hex of a digest, without an allocation.
fn hex32(digest: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    // 64 bytes is exactly room for 32 in hex: this cannot fail.
    let _ = hex::encode_to_slice(digest, &mut out);
    out
}

thread_local! {
    /// The canonical request being hashed: one buffer a thread, grown to the
    /// longest request it checked, instead of one allocation a check;
    /// overwritten after each.
    static CANONICAL: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// SigV4's derived key for `secret` and a scope, from the last one this
/// thread derived when it is the same: an SDK signs every request of a day
/// with one key, and deriving it is four HMACs, about a third of a check
/// (`bench_verify`: 1.6 of 4.3 us). The secret is known by its SHA-256 (one
/// block, compared in constant time), never kept.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    LAST_KEY.with(|last| {
        let mut last = last.borrow_mut();
        if let Some(cached) = last.as_ref() {
            let same_scope =
                cached.date == date && cached.region == region && cached.service == service;
            if same_scope && bool::from(cached.secret.ct_eq(&digest)) {
                return cached.key;
            }
        }
        let key = derive_key(secret, date, region, service);
        *last = Some(CachedKey {
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            secret: digest,
            key,
        });
        key
    })
}

thread_local! {
    static LAST_KEY: std::cell::RefCell<Option<CachedKey>> = const { std::cell::RefCell::new(None) };
}

/// A derived key and what it was derived from; overwritten when dropped.
struct CachedKey {
    date: String,
    region: String,
    service: String,
    secret: [u8; 32],
    key: [u8; 32],
}

impl Drop for CachedKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

/// SigV4's derived key: the secret narrowed to one day, region and service.
fn derive_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut k_secret = Vec::with_capacity(4 + secret.len());
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.as_bytes());
    let k_date = hmac(&k_secret, date.as_bytes());
    zeroize::Zeroize::zeroize(&mut k_secret);
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// `YYYYMMDDTHHMMSSZ` → the time it names.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .into(),
    )
}

/// `YYYYMMDDTHHMMSSZ` for `t`, as AWS writes times in its messages.
fn format_amz_date(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn check_time(amz_date: &str, signed: SystemTime, now: SystemTime) -> Result<(), Refusal> {
    let earliest = now.checked_sub(WINDOW).unwrap_or(SystemTime::UNIX_EPOCH);
    if signed < earliest {
        return Err(Refusal::Expired(format!(
            "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
            format_amz_date(earliest),
            format_amz_date(now)
        )));
    }
    let latest = now + WINDOW;
    if signed > latest {
        return Err(Refusal::Expired(format!(
            "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
            format_amz_date(latest),
            format_amz_date(now)
        )));
    }
    Ok(())
}

/// SigV4's canonical request: method, path, query, the signed headers and
/// their names, and the body's hash, one per line. Refused when what was
/// signed could be read two ways: a signed header that is not UTF-8, a
/// query that does not decode or names a key twice.
fn canonical_request(
    request: &Request<'_>,
    signed_headers: &str,
    out: &mut String,
) -> Result<(), Refusal> {
    out.push_str(request.method);
    out.push('\n');
    canonical_path(request.path, out);
    out.push('\n');
    canonical_query(request.query, out)?;
    out.push('\n');
    for name in signed_headers.split(';') {
        out.push_str(name);
        out.push(':');
        for (i, value) in request.header(name).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let value = std::str::from_utf8(value).map_err(|_| {
                Refusal::Incomplete(format!("signed header '{}' is not UTF-8", clip(name)))
            })?;
            push_header_value(value, out);
        }
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    let body = hex32(&Sha256::digest(request.body).into());
    // Hex digits are ASCII.
    out.push_str(std::str::from_utf8(&body).unwrap_or_default());
    Ok(())
}

/// At most 64 characters of `text`, for messages and log lines that quote
/// what a caller sent.
pub fn clip(text: &str) -> &str {
    match text.char_indices().nth(64) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// A header value trimmed, with each run of spaces and tabs as one space.
fn push_header_value(text: &str, out: &mut String) {
    let mut first = true;
    for word in text.split([' ', '\t']).filter(|w| !w.is_empty()) {
        if !first {
            out.push(' ');
        }
        out.push_str(word);
        first = false;
    }
}

/// The path as sent, without `.` and `..` segments, percent-encoded once
/// more (so `%2F` is `%252F`): what SDKs sign for every service but S3.
fn canonical_path(path: &str, out: &mut String) {
    if path.is_empty() {
        out.push('/');
        return;
    }
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = path.split('/').peekable();
    // The leading empty segment (the path starts with `/`).
    if path.starts_with('/') {
        parts.next();
    }
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." => {
                if last {
                    segments.push("");
                }
            }
            ".." => {
                segments.pop();
                if last {
                    segments.push("");
                }
            }
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        out.push('/');
    }
    for segment in segments {
        out.push('/');
        encode(segment.as_bytes(), out);
    }
}

/// The query's pairs, decoded as the agent's routes decode them (so what
/// was signed is what is read), encoded again strictly, sorted. A key given
/// twice is refused: the routes read one of the values, and which one would
/// not be signed.
fn canonical_query(query: &str, out: &mut String) -> Result<(), Refusal> {
    if query.is_empty() {
        return Ok(());
    }
    let decoded = query_pairs(query)
        .map_err(|_| Refusal::Incomplete("the query does not percent-decode to UTF-8".into()))?;
    let mut pairs: Vec<(String, String)> = decoded
        .map(|(k, v)| {
            let mut key = String::new();
            let mut value = String::new();
            encode(k.as_bytes(), &mut key);
            encode(v.as_bytes(), &mut value);
            (key, value)
        })
        .collect();
    pairs.sort();
    if let Some(twice) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Refusal::Incomplete(format!(
            "the query names '{}' more than once",
            clip(&twice[0].0)
        )));
    }
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    Ok(())
}

/// Percent-encodes all but SigV4's unreserved characters.
fn encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
