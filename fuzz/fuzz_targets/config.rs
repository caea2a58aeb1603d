//! `Config::parse` on arbitrary text: never panics, its error message renders,
//! and every config it accepts is within the documented ranges.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrets_manager_agent::config::{is_role_arn, Config};

fuzz_target!(|data: &[u8]| {
    // Config::load reads the file with read_to_string: only UTF-8 gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::parse(text) {
        Ok(config) => config,
        Err(e) => {
            // `Display` is documented as "the one line the user sees" (stderr,
            // log): no line breaks or terminal escapes from the file get in.
            let line = e.to_string();
            assert!(!line.is_empty(), "empty error for {text:?}");
            assert!(
                !line.chars().any(|c| c.is_control() && c != '\t'),
                "error is not one clean line: {line:?}"
            );
            return;
        }
    };
    assert!(
        config.ttl_seconds <= 3600,
        "ttl_seconds {}",
        config.ttl_seconds
    );
    assert!(
        (1..=1000).contains(&config.cache_size),
        "cache_size {}",
        config.cache_size
    );
    assert!(
        (1..=1000).contains(&config.max_conn),
        "max_conn {}",
        config.max_conn
    );
    assert!(
        config.http_port == 0 || config.http_port >= 1024,
        "http_port {}",
        config.http_port
    );
    assert!(
        config.path_prefix.starts_with('/'),
        "path_prefix {:?}",
        config.path_prefix
    );
    assert!(!config.ssrf_headers.is_empty());
    for h in &config.ssrf_headers {
        assert!(
            !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
            "header name {h:?}"
        );
    }
    assert!(!config.ssrf_env_variables.is_empty());
    assert!(config
        .ssrf_env_variables
        .iter()
        .all(|v| !v.trim().is_empty()));
    if let Some(region) = &config.region {
        assert!(!region.trim().is_empty());
    }
    if let Some(path) = &config.credentials_file_path {
        assert!(!path.as_os_str().is_empty());
    }
    assert!(
        (1..=20).contains(&config.max_roles),
        "max_roles {}",
        config.max_roles
    );
    let prefetch = &config.prefetch;
    assert!((0.1..=1.0).contains(&prefetch.cache_buffer_ratio));
    assert!(prefetch.max_jitter_seconds <= 10);
    for s in &prefetch.secrets {
        assert!(!s.secret_id.trim().is_empty());
        assert!(s.role_arn.as_deref().map_or(true, is_role_arn));
    }
    for t in &prefetch.filter_tags {
        assert!(!t.key.trim().is_empty());
        assert!(t.role_arn.as_deref().map_or(true, is_role_arn));
    }
    // Parsing is a pure function of the text.
    assert_eq!(Config::parse(text).as_ref(), Ok(&config));
});
