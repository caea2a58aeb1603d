//! The `[[templates]]` setting: files rendered from secrets (docs/programs.md),
//! a list of tables each checked here, every refusal naming the entry by
//! index (`templates[1].perms`). Whether a source file exists and a template
//! parses is checked when it is rendered; what can be checked without the
//! disk is checked here.

use std::path::PathBuf;

use super::error::{invalid, ConfigError};
use super::settings::{non_empty, ranged};
use super::Config;

/// One file to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub text: TemplateText,
    pub destination: PathBuf,
    /// Permission bits, `0600` unless set.
    pub perms: u32,
    /// A user and a group, by name (from `/etc/passwd`, `/etc/group`) or
    /// number; `None` keeps the agent's.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Run after each change of the file (argv, no shell), with a timeout.
    pub command: Vec<String>,
    pub command_timeout_seconds: u64,
    /// A JSON key a secret does not have stops the render (`true`) or
    /// renders empty (`false`).
    pub error_on_missing_key: bool,
}

/// Where a template's text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateText {
    Contents(String),
    Source(PathBuf),
}

const KEYS: &[&str] = &[
    "contents",
    "source",
    "destination",
    "perms",
    "user",
    "group",
    "command",
    "command_timeout_seconds",
    "error_on_missing_key",
];

pub(super) fn set_templates(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    let shape =
        "a list of tables ([[templates]]), each with `destination` and `contents` or `source`";
    let items = value.as_array().ok_or_else(|| invalid(key, shape))?;
    let mut templates = Vec::with_capacity(items.len());
    for (at, item) in items.iter().enumerate() {
        let entry = format!("{key}[{at}]");
        let table = item.as_table().ok_or_else(|| invalid(&entry, shape))?;
        templates.push(template(table, &entry)?);
    }
    for (at, t) in templates.iter().enumerate() {
        if templates[..at]
            .iter()
            .any(|u| u.destination == t.destination)
        {
            return Err(invalid(
                &format!("{key}[{at}].destination"),
                "a path no other template writes",
            ));
        }
    }
    c.templates = templates;
    Ok(())
}

fn template(table: &toml::Table, entry: &str) -> Result<Template, ConfigError> {
    let path = |name: &str| format!("{entry}.{name}");
    let string = |name: &str| -> Result<Option<String>, ConfigError> {
        match table.get(name) {
            None => Ok(None),
            Some(v) => non_empty(v)
                .map(|s| Some(s.to_string()))
                .ok_or_else(|| invalid(&path(name), "a non-empty string")),
        }
    };
    for name in table.keys() {
        if !KEYS.contains(&name.as_str()) {
            return Err(ConfigError::UnknownKey {
                key: path(name),
                table: entry.to_string(),
                valid: KEYS.to_vec(),
            });
        }
    }
    let text = match (table.get("contents"), string("source")?) {
        (Some(toml::Value::String(contents)), None) => TemplateText::Contents(contents.clone()),
        (None, Some(source)) => TemplateText::Source(PathBuf::from(source)),
        (Some(_), None) => return Err(invalid(&path("contents"), "a string")),
        _ => {
            return Err(invalid(
                entry,
                "exactly one of `contents` (the template's text) or `source` (a template file)",
            ))
        }
    };
    let destination = string("destination")?
        .map(PathBuf::from)
        .ok_or_else(|| invalid(&path("destination"), "a path to write (required)"))?;
    let perms = match table.get("perms") {
        None => 0o600,
        Some(toml::Value::String(s)) => u32::from_str_radix(s.trim(), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| invalid(&path("perms"), "permission bits as a string of octal digits such as \"0640\", at most \"0777\""))?,
        Some(_) => {
            return Err(invalid(
                &path("perms"),
                "a string of octal digits such as \"0640\" (a bare number would be read as decimal)",
            ))
        }
    };
    let command = match table.get("command") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(|i| non_empty(i).map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            })
            .filter(|argv| !argv.is_empty())
            .ok_or_else(|| {
                invalid(
                    &path("command"),
                    "a non-empty list of strings: the program and its arguments",
                )
            })?,
    };
    let command_timeout_seconds = match table.get("command_timeout_seconds") {
        None => 30,
        Some(v) => ranged(
            v,
            1,
            3600,
            &path("command_timeout_seconds"),
            "an integer from 1 to 3600",
        )?,
    };
    let error_on_missing_key = match table.get("error_on_missing_key") {
        None => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid(&path("error_on_missing_key"), "true or false"))?,
    };
    Ok(Template {
        text,
        destination,
        perms,
        user: string("user")?,
        group: string("group")?,
        command,
        command_timeout_seconds,
        error_on_missing_key,
    })
}

#[cfg(test)]
mod tests {
    use super::super::err;
    use super::*;

    #[test]
    fn entries_with_their_defaults() {
        let c = Config::parse(
            r#"
            [[templates]]
            contents = "PASS={{ secret('db', 'password') }}"
            destination = "/run/app/db.env"

            [[templates]]
            source = "/etc/app/nginx.tmpl"
            destination = "/etc/nginx/conf.d/app.conf"
            perms = "0640"
            user = "root"
            group = "nginx"
            command = ["nginx", "-s", "reload"]
            command_timeout_seconds = 10
            error_on_missing_key = false
            "#,
        )
        .unwrap();
        assert_eq!(c.templates.len(), 2);
        let first = &c.templates[0];
        assert_eq!(
            first.text,
            TemplateText::Contents("PASS={{ secret('db', 'password') }}".into())
        );
        assert_eq!(
            (
                first.perms,
                first.command_timeout_seconds,
                first.error_on_missing_key
            ),
            (0o600, 30, true)
        );
        let second = &c.templates[1];
        assert_eq!(
            second.text,
            TemplateText::Source("/etc/app/nginx.tmpl".into())
        );
        assert_eq!(second.perms, 0o640);
        assert_eq!(second.command, ["nginx", "-s", "reload"]);
        assert_eq!(
            (second.user.as_deref(), second.group.as_deref()),
            (Some("root"), Some("nginx"))
        );
        assert!(Config::default().templates.is_empty());
    }

    #[test]
    fn refusals_name_the_entry() {
        let one = |body: &str| err(&format!("[[templates]]\n{body}\n"));
        assert!(one("destination = \"/x\"").contains("`templates[0]`"));
        assert!(
            one("contents = \"a\"\nsource = \"/t\"\ndestination = \"/x\"").contains("exactly one")
        );
        assert!(one("contents = \"a\"").contains("templates[0].destination"));
        assert!(one("contents = \"a\"\ndestination = \"/x\"\nperms = 600").contains("decimal"));
        assert!(
            one("contents = \"a\"\ndestination = \"/x\"\nperms = \"0999\"")
                .contains("templates[0].perms")
        );
        assert!(one("contents = \"a\"\ndestination = \"/x\"\ncommand = []")
            .contains("templates[0].command"));
        assert!(
            one("contents = \"a\"\ndestination = \"/x\"\nowner = \"me\"")
                .contains("unknown config key `templates[0].owner`")
        );
        let twice = err("[[templates]]\ncontents = \"a\"\ndestination = \"/x\"\n[[templates]]\ncontents = \"b\"\ndestination = \"/x\"\n");
        assert!(twice.contains("templates[1].destination"), "{twice}");
        assert!(err("templates = \"x\"").contains("a list of tables"));
    }
}
