//! The CPU of checking one SDK request's SigV4 signature, without the
//! server around it: the request `make bench`'s SDK rows replay (boto3's
//! GetSecretValue, as it sent it to the bench's agent), checked in a loop
//! the way the agent checks it for each `caller_auth`. The bench's rows
//! measure the whole agent; this says how much of the difference between
//! `"credentials"` and `"none"` the check itself is (docs/benchmarks.md,
//! "The SDK protocol").
//!
//! ```text
//! cargo run --release --example bench_verify [SECONDS_EACH]
//! ```

#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hmac::{Hmac, KeyInit, Mac};
use secrets_manager_agent_aws::callers::{AgentKeys, Callers};
use secrets_manager_agent_aws::identity::{Credentials, Static};
use secrets_manager_agent_aws::verify::{Claim, Request};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const ACCESS_KEY_ID: &str = "AKIAFAKEBENCH0000000";
const SECRET: &str = "fake-bench-secret-key";
/// `X-Amz-Date` of the request below, as seconds since the epoch
/// (2026-12-08T02:49:55Z): the check's clock.
const SIGNED_AT: u64 = 1_796_698_195;

/// The headers boto3 1.43.11 sent, signature and all (bench/sdk.py wrote
/// them into the wrk script of one run).
const HEADERS: &[(&str, &str)] = &[
    ("Host", "127.0.0.1:34927"),
    ("User-Agent", "Boto3/1.43.11 md/Botocore#1.43.11 ua/2.1 os/linux#6.18.44-fc-v1300 md/arch#x86_64 lang/python#3.11.7 md/pyimpl#CPython m/b,N,D,Z,e cfg/retry-mode#legacy Botocore/1.43.11"),
    ("X-Amz-Target", "secretsmanager.GetSecretValue"),
    ("Content-Type", "application/x-amz-json-1.1"),
    ("X-Amz-Date", "20261208T024955Z"),
    ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAFAKEBENCH0000000/20261208/us-east-1/secretsmanager/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=b8b21cd80c0771af1293390848aba96bc4dc74424014c64089102b46673abfd5"),
    ("amz-sdk-invocation-id", "da639b0c-f501-4c9c-b2aa-601effebe3cb"),
    ("amz-sdk-request", "attempt=1"),
    ("Content-Length", "26"),
];
const BODY: &[u8] = br#"{"SecretId": "bench-0999"}"#;

fn main() {
    let seconds = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let each = Duration::from_secs_f64(seconds);
    let headers: Vec<(&str, &[u8])> = HEADERS.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    let request = Request {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        body: BODY,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(SIGNED_AT + 60);
    let agent = Callers::Agent(AgentKeys::new(Arc::new(Static(Arc::new(Credentials {
        access_key_id: ACCESS_KEY_ID.into(),
        secret_access_key: SECRET.into(),
        session_token: None,
        expiry: None,
        source: "bench".into(),
    })))));
    let key = Callers::Key {
        access_key_id: ACCESS_KEY_ID.into(),
        secret: Zeroizing::new(SECRET.into()),
    };
    for (name, callers) in [
        ("agent", &agent),
        ("key", &key),
        ("anyone", &Callers::Anyone),
    ] {
        if let Err(refusal) = callers.check(&request, "secretsmanager", now) {
            eprintln!("the bench's request is refused ({name}): {refusal}");
            std::process::exit(1);
        }
    }
    println!("one boto3 GetSecretValue request checked in a loop, {seconds} s each, best of 5:");
    let runs: [(&str, &dyn Fn()); 8] = [
        ("caller_auth = \"credentials\": Callers::check", &|| {
            black_box(agent.check(black_box(&request), "secretsmanager", now)).ok();
        }),
        ("caller_auth = \"key\": Callers::check", &|| {
            black_box(key.check(black_box(&request), "secretsmanager", now)).ok();
        }),
        (
            "  of which Claim::parse (the Authorization header)",
            &|| {
                black_box(Claim::parse(black_box(&request))).ok();
            },
        ),
        ("caller_auth = \"none\": Callers::check", &|| {
            black_box(Callers::Anyone.check(black_box(&request), "secretsmanager", now)).ok();
        }),
        // What a check is made of: SigV4 hashes the body and the canonical
        // request (about 250 bytes here), and signs the string to sign with
        // a key derived by four HMACs from the secret, the day, the region
        // and the service.
        ("SHA-256 of 64 bytes (2 blocks)", &|| {
            black_box(Sha256::digest(black_box([7u8; 64])));
        }),
        (
            "SHA-256 of 250 bytes (the canonical request, 5 blocks)",
            &|| {
                black_box(Sha256::digest(black_box([7u8; 250])));
            },
        ),
        ("one HMAC-SHA256 of a short message (4 blocks)", &|| {
            black_box(hmac(black_box(b"AWS4fake-bench-secret-key"), b"20261208"));
        }),
        (
            "the signing key: four HMACs (secret, day, region, service)",
            &|| {
                let k = hmac(black_box(b"AWS4fake-bench-secret-key"), b"20261208");
                let k = hmac(&k, b"us-east-1");
                let k = hmac(&k, b"secretsmanager");
                black_box(hmac(&k, b"aws4_request"));
            },
        ),
    ];
    for (name, run) in runs {
        let best = (0..5)
            .map(|_| ns_each(run, each))
            .fold(f64::INFINITY, f64::min);
        println!("  {name:<60} {:>6.0} ns", best);
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Nanoseconds a call of `run`, calling it for about `each`.
fn ns_each(run: &dyn Fn(), each: Duration) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < each {
        for _ in 0..100 {
            run();
        }
        calls += 100;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}
