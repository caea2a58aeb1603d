//! Files rendered from secrets (`[[templates]]`, `render`; docs/programs.md):
//! a template in Jinja's syntax, rendered with `minijinja`, whose only way to
//! the outside is the functions given here, `secret(ID)`, `secret(ID, KEY)`
//! and `parameter(NAME)`, each answered through the agent's cache. No file
//! or network access from a template (no loader, no includes), and `fuel`
//! bounds what one may compute.
//!
//! Pure apart from the values it asks for: [`render`] takes the template's
//! text and a function that resolves a reference; `write` puts the result in
//! place.

mod filters;
pub mod keep;
pub mod run;
pub mod write;

use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use zeroize::Zeroizing;

use crate::reference::{PickError, Picked, Reference};

/// The most instructions one template may run: far more than any config
/// file needs, and a loop that never ends stops at it.
const FUEL: u64 = 1_000_000;

/// How a template's functions get a value: the reference (`ID`, `ID#KEY`,
/// `ssm:NAME`), answered through the cache.
pub type Resolve = Arc<dyn Fn(&Reference) -> Result<Picked, Failure> + Send + Sync>;

/// Why a value could not be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The secret has no such JSON key (`error_on_missing_key = false`
    /// renders it empty).
    MissingKey(String),
    /// Anything else: AWS's error, no credentials, not a JSON object...
    Other(String),
}

impl From<PickError> for Failure {
    fn from(e: PickError) -> Failure {
        match e {
            PickError::NoKey(key) => Failure::MissingKey(key),
            other => Failure::Other(other.to_string()),
        }
    }
}

/// Renders `source` with the values `resolve` gives. The text holds
/// secrets: it is overwritten when dropped. The error names the template's
/// line and what failed, never a value.
pub fn render(
    source: &str,
    resolve: Resolve,
    error_on_missing_key: bool,
) -> Result<Zeroizing<String>, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    // A config file's last line ends with a line break, as written. The
    // default delimiters always build.
    if let Ok(syntax) = SyntaxConfig::builder().keep_trailing_newline(true).build() {
        env.set_syntax(syntax);
    }
    filters::add(&mut env);
    let for_secret = resolve.clone();
    env.add_function(
        "secret",
        move |id: String, key: Option<String>| -> Result<String, Error> {
            let text = match key {
                Some(key) => format!("{id}#{key}"),
                None => id,
            };
            value(&for_secret, &text, error_on_missing_key)
        },
    );
    env.add_function("parameter", move |name: String| -> Result<String, Error> {
        value(&resolve, &format!("ssm:{name}"), error_on_missing_key)
    });
    env.render_str(source, ())
        .map(Zeroizing::new)
        .map_err(|e| describe(&e))
}

fn value(resolve: &Resolve, text: &str, error_on_missing_key: bool) -> Result<String, Error> {
    let reference = Reference::parse(text)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    match resolve(&reference) {
        Ok(Picked::Text(bytes) | Picked::Json(bytes)) => String::from_utf8(bytes.to_vec())
            .map_err(|_| Error::new(ErrorKind::InvalidOperation, "the value is not UTF-8 text")),
        Err(Failure::MissingKey(_)) if !error_on_missing_key => Ok(String::new()),
        Err(Failure::MissingKey(key)) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{text}: the secret has no JSON key {key:?} (error_on_missing_key = false renders it empty)"),
        )),
        Err(Failure::Other(why)) => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{text}: {why}"),
        )),
    }
}

/// One line: what failed and where. minijinja's own text names the line;
/// its debug view would show the template's source around it, which may
/// hold values, so it is never used.
fn describe(e: &Error) -> String {
    let mut text = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        text.push_str(&format!(" (line {line})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets_manager_agent_cache::Key;

    /// `db` is a JSON secret, `plain` a string, `/app/host` a parameter;
    /// anything else is missing.
    fn values() -> Resolve {
        Arc::new(|reference: &Reference| {
            let served = match &reference.key {
                Key::Secret { query, .. } if query.secret_id == "db" => {
                    r#"{"SecretString":"{\"user\":\"admin\",\"pass\":\"it's \\\"q\\\"\",\"port\":5432}"}"#
                }
                Key::Secret { query, .. } if query.secret_id == "plain" => {
                    r#"{"SecretString":"hunter2"}"#
                }
                Key::Parameter { query, .. } if query.name == "/app/host" => {
                    r#"{"Parameter":{"Value":"db.internal"}}"#
                }
                _ => {
                    return Err(Failure::Other(
                        "AWS answered 400 ResourceNotFoundException".into(),
                    ))
                }
            };
            crate::reference::pick(
                &reference.key,
                served.as_bytes(),
                reference.json_key.as_deref(),
            )
            .map_err(Failure::from)
        })
    }

    fn run(source: &str) -> Result<String, String> {
        render(source, values(), true).map(|s| s.to_string())
    }

    #[test]
    fn functions_and_filters() {
        assert_eq!(
            run("user={{ secret('db', 'user') }} host={{ parameter('/app/host') }} port={{ secret('db', 'port') }}").unwrap(),
            "user=admin host=db.internal port=5432"
        );
        assert_eq!(run("{{ secret('plain') }}").unwrap(), "hunter2");
        assert_eq!(
            run("a={{ secret('plain') }}\n").unwrap(),
            "a=hunter2\n",
            "the last line break kept"
        );
        assert_eq!(
            run("PASS={{ secret('db', 'pass') | shell_quote }}").unwrap(),
            r#"PASS='it'\''s "q"'"#
        );
        assert_eq!(
            run("{{ secret('db', 'pass') | json }}").unwrap(),
            r#""it's \"q\"""#
        );
        assert_eq!(
            run("{{ secret('plain') | base64 }}").unwrap(),
            "aHVudGVyMg=="
        );
        assert_eq!(run("{{ 'aHVudGVyMg==' | b64decode }}").unwrap(), "hunter2");
        assert_eq!(
            run("{{ secret('db') | dotenv }}").unwrap(),
            "pass=\"it's \\\"q\\\"\"\nport=\"5432\"\nuser=\"admin\"\n",
            "sorted by key"
        );
        // Loops and conditions work on what the functions give.
        assert_eq!(
            run("{% for x in [1,2] %}{{ x }}{% endfor %}{% if secret('plain') %}!{% endif %}")
                .unwrap(),
            "12!"
        );
    }

    #[test]
    fn failures_name_the_reference_never_a_value() {
        let e = run("a\n{{ secret('nope') }}").unwrap_err();
        assert!(
            e.contains("nope") && e.contains("ResourceNotFoundException") && e.contains("line 2"),
            "{e}"
        );
        let e = run("{{ secret('db', 'password') }}").unwrap_err();
        assert!(e.contains("\"password\"") && !e.contains("admin"), "{e}");
        assert_eq!(
            render("[{{ secret('db', 'password') }}]", values(), false)
                .unwrap()
                .as_str(),
            "[]"
        );
        let e = run("{{ secret('plain') | dotenv }}").unwrap_err();
        assert!(e.contains("JSON object") && !e.contains("hunter2"), "{e}");
        assert!(
            run("{{ undefined_thing }}").is_err(),
            "strict: a typo is an error"
        );
        assert!(run("{% include 'x' %}").is_err(), "no files");
        assert!(run("{{ secret(").is_err());
        let hundred = format!("[{}]", vec!["0"; 100].join(","));
        let endless = run(&format!(
            "{{% for a in {hundred} %}}{{% for b in {hundred} %}}{{% for c in {hundred} %}}\
             {{% endfor %}}{{% endfor %}}{{% endfor %}}"
        ));
        assert!(endless.unwrap_err().contains("fuel"), "bounded");
    }
}
