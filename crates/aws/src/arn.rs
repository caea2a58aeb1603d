//! IAM role ARNs, checked before anything is sent to AWS: a per-request
//! `roleArn` today, the config file's role entries later. Pure, and it uses
//! only `std`, so that any layer (the config file's checks included) may use it.

use std::fmt;

/// What is wrong with a role ARN. The value itself is never quoted: the
/// caller decides whether to show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleArnError {
    TooLong,
    NotAnArn,
    NoArnPrefix,
    Partition,
    NotIam,
    HasRegion,
    Account,
    NotARole,
    RoleName,
    RolePath,
}

impl fmt::Display for RoleArnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            RoleArnError::TooLong => "longer than 2048 characters",
            RoleArnError::NotAnArn => "not an ARN",
            RoleArnError::NoArnPrefix => "does not start with `arn:`",
            RoleArnError::Partition => "invalid partition",
            RoleArnError::NotIam => "not an IAM ARN",
            RoleArnError::HasRegion => "IAM ARNs have no region",
            RoleArnError::Account => "the account must be 12 digits",
            RoleArnError::NotARole => "not a role",
            RoleArnError::RoleName => "the role name must be 1-64 of A-Z a-z 0-9 + = , . @ _ -",
            RoleArnError::RolePath => "invalid role path",
        };
        write!(
            f,
            "{what} (expected arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME)"
        )
    }
}

impl std::error::Error for RoleArnError {}

/// Checks that `arn` names an IAM role:
/// `arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME`, with a 12-digit account and
/// IAM's character sets for path and name.
pub fn check_role_arn(arn: &str) -> Result<(), RoleArnError> {
    if arn.len() > 2048 {
        return Err(RoleArnError::TooLong);
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
        return Err(RoleArnError::NotAnArn);
    };
    if prefix != "arn" {
        return Err(RoleArnError::NoArnPrefix);
    }
    if !is_partition(partition) {
        return Err(RoleArnError::Partition);
    }
    if service != "iam" {
        return Err(RoleArnError::NotIam);
    }
    if !region.is_empty() {
        return Err(RoleArnError::HasRegion);
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RoleArnError::Account);
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(RoleArnError::NotARole);
    };
    let (path, name) = match path_and_name.rsplit_once('/') {
        Some((path, name)) => (Some(path), name),
        None => (None, path_and_name),
    };
    if name.is_empty() || name.len() > 64 || !name.bytes().all(is_name_byte) {
        return Err(RoleArnError::RoleName);
    }
    // IAM paths are `/` or `/segment/.../`; in the ARN the leading `/` is
    // the one after `role`, so what is left holds non-empty segments.
    if let Some(path) = path {
        if path.len() > 510
            || path
                .split('/')
                .any(|s| s.is_empty() || !s.bytes().all(is_path_byte))
        {
            return Err(RoleArnError::RolePath);
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
            let e = check_role_arn(arn).expect_err(arn).to_string();
            assert!(e.contains(why), "{arn}: {e}");
        }
        let long = format!("arn:aws:iam::123456789012:role/{}", "a".repeat(65));
        assert_eq!(check_role_arn(&long), Err(RoleArnError::RoleName));
    }
}
