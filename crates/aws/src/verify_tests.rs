//! The verifier against the signer it must agree with: requests signed by
//! `aws-sigv4` (what the Rust SDK signs with) pass, and every change to what
//! was signed, the secret, the scope or the time fails the way AWS says.

use super::*;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// 2026-01-02T03:04:05Z.
fn signed_at() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045)
}

/// A request as an SDK sends it, signed by aws-sigv4: (name, value) headers
/// including the ones the signer added.
fn signed(
    method: &str,
    host: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    service: &str,
    token: Option<&str>,
) -> Vec<(String, String)> {
    let identity = aws_credential_types::Credentials::new(
        AKID,
        SECRET,
        token.map(str::to_string),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-3")
        .name(service)
        .time(signed_at())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = format!("http://{host}{path_and_query}");
    let mut all: Vec<(String, String)> = vec![("Host".into(), host.into())];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let request = SignableRequest::new(
        method,
        url,
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    all.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    all
}

/// Parses and checks as the agent does.
fn verify(
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    service: &str,
    secret: &str,
    now: SystemTime,
) -> Result<(), Refusal> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let request = Request {
        method,
        path,
        query,
        headers: &headers,
        body,
    };
    let claim = Claim::parse(&request)?;
    assert_eq!(claim.access_key_id, AKID);
    claim.check(&request, service, secret, now)
}

const BODY: &[u8] = br#"{"SecretId":"prod/db"}"#;

fn sdk_post(token: Option<&str>) -> Vec<(String, String)> {
    signed(
        "POST",
        "localhost:2773",
        "/",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", "secretsmanager.GetSecretValue"),
        ],
        BODY,
        "secretsmanager",
        token,
    )
}

#[test]
fn what_the_signer_signs_passes() {
    for token in [None, Some("session-token")] {
        let headers = sdk_post(token);
        assert_eq!(
            verify(
                "POST",
                "/",
                &headers,
                BODY,
                "secretsmanager",
                SECRET,
                signed_at()
            ),
            Ok(())
        );
    }
    // Paths and queries that need encoding, as the GET routes see them.
    for target in [
        "/secretsmanager/prod%2Fdb",
        "/secretsmanager/prod/db/pass%20word",
        "/secretsmanager/get?secretId=prod%2Fdb&versionStage=AWS%20PREVIOUS",
        "/secretsmanager/get?b=2&a=1&empty=",
        "/v1/a~b.c-d_e",
    ] {
        let headers = signed(
            "GET",
            "localhost:5333",
            target,
            &[],
            b"",
            "secretsmanager",
            None,
        );
        assert_eq!(
            verify(
                "GET",
                target,
                &headers,
                b"",
                "secretsmanager",
                SECRET,
                signed_at()
            ),
            Ok(()),
            "{target}"
        );
    }
}

#[test]
fn the_thread_s_last_key_serves_only_its_own_secret_and_scope() {
    let headers = sdk_post(None);
    let check = |secret: &str, service: &str| {
        verify("POST", "/", &headers, BODY, service, secret, signed_at())
    };
    for _ in 0..2 {
        assert_eq!(check(SECRET, "secretsmanager"), Ok(()));
        assert_eq!(
            check("other secret", "secretsmanager"),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(&format!("{SECRET} "), "secretsmanager"),
            Err(Refusal::Mismatch)
        );
    }
    let ssm = signed("POST", "localhost:2773", "/", &[], BODY, "ssm", None);
    assert_eq!(
        verify("POST", "/", &ssm, BODY, "ssm", SECRET, signed_at()),
        Ok(()),
        "another scope, the same secret"
    );
    assert_eq!(check(SECRET, "secretsmanager"), Ok(()));
}

#[test]
fn aws_published_example_passes() {
    // AWS's SigV4 test suite, "get-vanilla".
    let headers: Vec<(String, String)> = [
        ("Host", "example.amazonaws.com"),
        ("X-Amz-Date", "20150830T123600Z"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
    assert_eq!(
        verify("GET", "/", &headers, b"", "service", SECRET, at),
        Ok(())
    );
}

#[test]
fn any_change_to_what_was_signed_fails() {
    let headers = sdk_post(None);
    let check = |target: &str, headers: &[(String, String)], body: &[u8], secret: &str| {
        verify(
            "POST",
            target,
            headers,
            body,
            "secretsmanager",
            secret,
            signed_at(),
        )
    };
    assert_eq!(
        check("/", &headers, BODY, "other secret"),
        Err(Refusal::Mismatch)
    );
    assert_eq!(
        check("/", &headers, br#"{"SecretId":"prod/other"}"#, SECRET),
        Err(Refusal::Mismatch)
    );
    assert_eq!(check("/x", &headers, BODY, SECRET), Err(Refusal::Mismatch));
    assert_eq!(
        check("/?a=1", &headers, BODY, SECRET),
        Err(Refusal::Mismatch)
    );
    let mut other_target = headers.clone();
    for (k, v) in &mut other_target {
        if k.eq_ignore_ascii_case("x-amz-target") {
            *v = "secretsmanager.PutSecretValue".into();
        }
    }
    assert_eq!(
        check("/", &other_target, BODY, SECRET),
        Err(Refusal::Mismatch)
    );
    // An unsigned header may be added (proxies do), a signed one not twice.
    let mut extra = headers.clone();
    extra.push(("User-Agent".into(), "x".into()));
    assert_eq!(check("/", &extra, BODY, SECRET), Ok(()));
    extra.push((
        "X-Amz-Target".into(),
        "secretsmanager.PutSecretValue".into(),
    ));
    assert_eq!(check("/", &extra, BODY, SECRET), Err(Refusal::Mismatch));
}

#[test]
fn the_scope_must_name_the_service() {
    let headers = sdk_post(None);
    let refused = verify("POST", "/", &headers, BODY, "ssm", SECRET, signed_at()).unwrap_err();
    assert_eq!(refused.code(), "SignatureDoesNotMatch");
    assert_eq!(
        refused.to_string(),
        "Credential should be scoped to correct service: 'ssm'."
    );
}

#[test]
fn the_time_must_be_within_five_minutes_either_way() {
    let headers = sdk_post(None);
    let at = |offset: i64| {
        let t = signed_at();
        if offset >= 0 {
            t + Duration::from_secs(offset as u64)
        } else {
            t - Duration::from_secs(offset.unsigned_abs())
        }
    };
    let check = |offset| {
        verify(
            "POST",
            "/",
            &headers,
            BODY,
            "secretsmanager",
            SECRET,
            at(offset),
        )
    };
    assert_eq!(check(300), Ok(()));
    assert_eq!(check(-300), Ok(()));
    let late = check(301).unwrap_err();
    assert_eq!((late.status(), late.code()), (403, "SignatureDoesNotMatch"));
    assert_eq!(
        late.to_string(),
        "Signature expired: 20260102T030405Z is now earlier than 20260102T030406Z (20260102T030906Z - 5 min.)"
    );
    let early = check(-301).unwrap_err();
    assert_eq!(
        early.to_string(),
        "Signature not yet current: 20260102T030405Z is still later than 20260102T030404Z (20260102T025904Z + 5 min.)"
    );
}

#[test]
fn malformed_authorization_is_incomplete() {
    let base = sdk_post(None);
    let with_auth = |auth: Option<&str>| -> Result<(), Refusal> {
        let mut headers: Vec<(String, String)> = base
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
            .cloned()
            .collect();
        if let Some(auth) = auth {
            headers.push(("Authorization".into(), auth.into()));
        }
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect();
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            body: BODY,
        };
        Claim::parse(&request).map(|_| ())
    };
    assert_eq!(with_auth(None), Err(Refusal::Missing));
    assert_eq!(with_auth(None).unwrap_err().status(), 403);
    let sig = "a".repeat(64);
    for bad in [
        "Bearer x".to_string(),
        "AWS4-HMAC-SHA256".into(),
        format!("AWS4-HMAC-SHA256 SignedHeaders=host, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, Signature={sig}"),
        "AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, SignedHeaders=host, Signature=xyz".into(),
        format!("AWS4-HMAC-SHA256 Credential=AKID/20260102/r/aws4_request, SignedHeaders=host, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential=AKID/20260102/r/s/aws4_request, SignedHeaders=x-amz-date, Signature={sig}"),
        format!("AWS4-HMAC-SHA256 Credential=/20260102/r/s/aws4_request, SignedHeaders=host, Signature={sig}"),
    ] {
        let refused = with_auth(Some(&bad)).unwrap_err();
        assert!(matches!(refused, Refusal::Incomplete(_)), "{bad}: {refused:?}");
        assert_eq!((refused.status(), refused.code()), (400, "IncompleteSignature"));
    }
    let missing_both = with_auth(Some("AWS4-HMAC-SHA256 SignedHeaders=host")).unwrap_err();
    assert_eq!(
        missing_both.to_string(),
        "Authorization header requires 'Credential' parameter. \
         Authorization header requires 'Signature' parameter."
    );
}

#[test]
fn a_query_key_given_twice_is_refused() {
    // The routes read one of the values; the signature would cover both in
    // either order.
    let target = "/secretsmanager/get?secretId=a&secretId=b";
    let headers = signed(
        "GET",
        "localhost:5333",
        target,
        &[],
        b"",
        "secretsmanager",
        None,
    );
    let refused = verify(
        "GET",
        target,
        &headers,
        b"",
        "secretsmanager",
        SECRET,
        signed_at(),
    )
    .unwrap_err();
    assert_eq!(
        refused,
        Refusal::Incomplete("the query names 'secretId' more than once".into())
    );
}

#[test]
fn the_target_must_be_signed_when_sent() {
    // Signed without X-Amz-Target, then sent with one.
    let mut headers = signed(
        "POST",
        "localhost:2773",
        "/",
        &[],
        BODY,
        "secretsmanager",
        None,
    );
    assert_eq!(
        verify(
            "POST",
            "/",
            &headers,
            BODY,
            "secretsmanager",
            SECRET,
            signed_at()
        ),
        Ok(())
    );
    headers.push((
        "X-Amz-Target".into(),
        "secretsmanager.GetSecretValue".into(),
    ));
    let refused = verify(
        "POST",
        "/",
        &headers,
        BODY,
        "secretsmanager",
        SECRET,
        signed_at(),
    )
    .unwrap_err();
    assert_eq!(
        refused,
        Refusal::Incomplete("SignedHeaders must include 'x-amz-target'".into())
    );
}

#[test]
fn a_bad_date_is_incomplete() {
    for date in [
        "20260102T030405",
        "2026-01-02T03:04:05Z",
        "20261302T030405Z",
        "2026010xT030405Z",
    ] {
        let headers: Vec<(String, String)> = sdk_post(None)
            .into_iter()
            .map(|(k, v)| {
                let v = if k.eq_ignore_ascii_case("x-amz-date") {
                    date.to_string()
                } else {
                    v
                };
                (k, v)
            })
            .collect();
        let refused = verify(
            "POST",
            "/",
            &headers,
            BODY,
            "secretsmanager",
            SECRET,
            signed_at(),
        )
        .unwrap_err();
        assert!(
            matches!(refused, Refusal::Incomplete(_)),
            "{date}: {refused:?}"
        );
    }
}

#[test]
fn dot_segments_are_removed_before_encoding() {
    let mut out = String::new();
    for (path, canonical) in [
        ("", "/"),
        ("/", "/"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a%2Fb", "/a%252Fb"),
        ("/a b", "/a%20b"),
    ] {
        out.clear();
        canonical_path(path, &mut out);
        assert_eq!(out, canonical, "{path}");
    }
}
