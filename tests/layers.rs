//! What the compiler cannot check about the workspace's layers: that every
//! crate but the OS edge keeps `#![forbid(unsafe_code)]` at its root, and that
//! each crate depends only on the crates below it (docs/design.md). Cargo
//! refuses a cycle, but not a lower crate that starts depending on a higher
//! one, which would let the layers blur without any cycle.

use std::fs;
use std::path::Path;

/// Top to bottom: a crate may depend on the crates after it, never before.
/// Every name starts with the agent's: the logger takes an event's target to
/// be the agent's own by that prefix (src/logger.rs, `is_ours`).
const LAYERS: [(&str, &str); 6] = [
    ("secrets-manager-agent", "."),
    ("secrets-manager-agent-cache", "crates/cache"),
    ("secrets-manager-agent-aws", "crates/aws"),
    ("secrets-manager-agent-http", "crates/http"),
    ("secrets-manager-agent-core", "crates/core"),
    ("secrets-manager-agent-os", "crates/os"),
];

/// Beside the layers: neither may depend on the other.
const SIDE_BY_SIDE: [(&str, &str); 1] =
    [("secrets-manager-agent-aws", "secrets-manager-agent-http")];

const UNSAFE_CRATE: &str = "secrets-manager-agent-os";

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The workspace crates a manifest names in its `[dependencies]`.
fn our_dependencies(manifest: &str) -> Vec<String> {
    let mut in_dependencies = false;
    let mut found = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
        } else if in_dependencies && line.starts_with("secrets-manager-agent") {
            let name = line.split(['.', ' ', '=']).next().unwrap_or_default();
            found.push(name.to_string());
        }
    }
    found
}

#[test]
fn crates_depend_only_on_crates_below() {
    for (i, (name, dir)) in LAYERS.iter().enumerate() {
        let manifest = read(&format!("{dir}/Cargo.toml"));
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{dir}: not {name}"
        );
        let below: Vec<&str> = LAYERS[i + 1..].iter().map(|(n, _)| *n).collect();
        for dependency in our_dependencies(&manifest) {
            assert!(
                below.contains(&dependency.as_str()),
                "{name} depends on {dependency}, which is not below it"
            );
            assert!(
                !SIDE_BY_SIDE.contains(&(name, dependency.as_str()))
                    && !SIDE_BY_SIDE.contains(&(dependency.as_str(), name)),
                "{name} and {dependency} stand side by side: neither may depend on the other"
            );
        }
    }
}

/// Whether a crate root carries `#![forbid(unsafe_code)]` as an attribute.
fn forbids_unsafe(root: &str) -> bool {
    read(root)
        .lines()
        .any(|l| l.trim() == "#![forbid(unsafe_code)]")
}

#[test]
fn only_the_os_crate_may_use_unsafe() {
    let mut roots = vec![
        "src/main.rs".to_string(),
        "bench/floor.rs".to_string(),
        "bench/verify.rs".to_string(),
    ];
    for (name, dir) in LAYERS {
        let lib = if dir == "." {
            "src/lib.rs".to_string()
        } else {
            format!("{dir}/src/lib.rs")
        };
        if name == UNSAFE_CRATE {
            assert!(
                !forbids_unsafe(&lib),
                "{lib}: the OS crate is where unsafe lives"
            );
        } else {
            roots.push(lib);
        }
    }
    for root in roots {
        assert!(
            forbids_unsafe(&root),
            "{root} must say #![forbid(unsafe_code)]"
        );
    }
}

#[test]
fn a_dependency_line_is_read_by_name() {
    let manifest =
        "[package]\nname = \"x\"\n[dependencies]\nsecrets-manager-agent-os.workspace = true\n\
                    secrets-manager-agent-core = { path = \"../core\" }\nlibc = \"0.2\"\n\
                    [dev-dependencies]\nsecrets-manager-agent-aws.workspace = true\n";
    assert_eq!(
        our_dependencies(manifest),
        ["secrets-manager-agent-os", "secrets-manager-agent-core"]
    );
}
