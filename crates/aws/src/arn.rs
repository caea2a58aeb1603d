//! IAM role ARNs, checked before anything is sent to AWS: a per-request
//! `roleArn` today, the config file's role entries later. Pure and free of
//! imports so that any layer (the config file's checks included) may use it.

/// Checks that `arn` names an IAM role:
/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, with a 12-digit account and
/// IAM's character sets for path and name. The error says what is wrong,
/// without quoting the value (the caller decides whether to show it).
pub fn check_role_arn(arn: &str) -> Result<(), String> {
    const SHAPE: &str = "expected arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME";
    if arn.len() > 2048 {
        return Err(format!("longer than 2048 characters ({SHAPE})"));
    }
    let mut parts = arn.splitn(6, ':');
    let (Some(prefix), Some(partition), Some(service), Some(region), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(format!("not an ARN ({SHAPE})"));
    };
    if prefix != "arn" {
        return Err(format!("does not start with `arn:` ({SHAPE})"));
    }
    if !is_partition(partition) {
        return Err(format!("invalid partition ({SHAPE})"));
    }
    if service != "iam" {
        return Err(format!("not an IAM ARN ({SHAPE})"));
    }
    if !region.is_empty() {
        return Err(format!("IAM ARNs have no region ({SHAPE})"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the account must be 12 digits ({SHAPE})"));
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(format!("not a role ({SHAPE})"));
    };
    let (path, name) = match path_and_name.rsplit_once('/') {
        Some((path, name)) => (Some(path), name),
        None => (None, path_and_name),
    };
    if name.is_empty() || name.len() > 64 || !name.bytes().all(is_name_byte) {
        return Err(format!(
            "the role name must be 1-64 of A-Z a-z 0-9 + = , . @ _ - ({SHAPE})"
        ));
    }
    // IAM paths are `/` or `/segment/.../`; in the ARN the leading `/` is
    // the one after `role`, so what is left holds non-empty segments.
    if let Some(path) = path {
        if path.len() > 510
            || path
                .split('/')
                .any(|s| s.is_empty() || !s.bytes().all(is_path_byte))
        {
            return Err(format!("invalid role path ({SHAPE})"));
        }
    }
    Ok(())
}

fn is_partition(p: &str) -> bool {
    // aws, aws-cn, aws-us-gov, aws-iso, aws-iso-b, aws-eusc, ...
    let mut pieces = p.split('-');
    pieces.next() == Some("aws")
        && p.len() <= 32
        && pieces.all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b)
}

/// IAM allows printable ASCII (U+0021 to U+007E) in a path; `/` separates.
fn is_path_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b) && b != b'/'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_role_arns() {
        for arn in [
            "arn:aws:iam::123456789012:role/reader",
            "arn:aws-cn:iam::123456789012:role/reader",
            "arn:aws-us-gov:iam::123456789012:role/reader",
            "arn:aws:iam::123456789012:role/team/app/reader",
            "arn:aws:iam::000000000000:role/a+b=c,d.e@f_g-h",
        ] {
            assert_eq!(check_role_arn(arn), Ok(()), "{arn}");
        }
    }

    #[test]
    fn bad_role_arns() {
        for (arn, why) in [
            ("", "not an ARN"),
            ("reader", "not an ARN"),
            ("arn:aws:sts::123456789012:role/reader", "not an IAM ARN"),
            ("arn:aws:s3::123456789012:role/reader", "not an IAM ARN"),
            ("arn:aws:iam:::role/reader", "12 digits"),
            ("arn:aws:iam::12345678901:role/reader", "12 digits"),
            ("arn:aws:iam::1234567890123:role/reader", "12 digits"),
            ("arn:aws:iam::12345678901a:role/reader", "12 digits"),
            ("arn:aws:iam::123456789012:user/reader", "not a role"),
            ("arn:aws:iam::123456789012:role/", "role name"),
            ("arn:aws:iam::123456789012:role/team/", "role name"),
            ("arn:aws:iam::123456789012:role", "not a role"),
            ("arn:aws:iam::123456789012:role/reader x", "role name"),
            ("arn:aws:iam::123456789012:role/reader:extra", "role name"),
            ("arn:aws:iam::123456789012:role/reader\n", "role name"),
            ("arn:aws:iam::123456789012:role//reader", "role path"),
            (
                "arn:aws:iam:us-east-1:123456789012:role/reader",
                "no region",
            ),
            ("arn:gcp:iam::123456789012:role/reader", "partition"),
            ("arn::iam::123456789012:role/reader", "partition"),
            ("ARN:aws:iam::123456789012:role/reader", "arn:"),
        ] {
            let e = check_role_arn(arn).expect_err(arn);
            assert!(e.contains(why), "{arn}: {e}");
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "a".repeat(65));
        assert!(check_role_arn(&long).unwrap_err().contains("role name"));
    }
}
