//! `credential_process`: run a command and read credentials from its stdout
//! (the path IAM Roles Anywhere uses through `aws_signing_helper`).

use std::fmt;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use super::json::{self, JsonCredentialsError};
use crate::identity::Credentials;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Credentials JSON is small; more output than this is not credentials.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Why `credential_process` gave no credentials.
#[derive(Debug)]
pub enum ProcessError {
    Spawn(io::Error),
    /// No thread to read its output with.
    Reader(io::Error),
    Wait(io::Error),
    TimedOut(Duration),
    /// It exited but something it started still holds stdout or stderr.
    HeldOpen,
    /// It failed: its exit status and the first line of its stderr.
    Failed {
        status: ExitStatus,
        stderr: String,
    },
    NotVersion1,
    Output(JsonCredentialsError),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Spawn(e) => write!(f, "cannot run credential_process: {e}"),
            ProcessError::Reader(e) => write!(f, "cannot read credential_process output: {e}"),
            ProcessError::Wait(e) => write!(f, "credential_process: {e}"),
            ProcessError::TimedOut(t) => write!(
                f,
                "credential_process did not finish within {} s",
                t.as_secs()
            ),
            ProcessError::HeldOpen => f.write_str(
                "credential_process left a process holding its output open (run background work with its output redirected)",
            ),
            ProcessError::Failed { status, stderr } => {
                write!(f, "credential_process exited with {status}: {stderr}")
            }
            ProcessError::NotVersion1 => f.write_str(
                "credential_process output is not JSON with \"Version\": 1 (the command must print the credential_process JSON format)",
            ),
            ProcessError::Output(e) => write!(f, "credential_process: {e}"),
        }
    }
}

impl std::error::Error for ProcessError {}

/// Runs `command` through `sh -c` and parses its JSON output.
pub fn run(command: &str, source: &str) -> Result<Credentials, ProcessError> {
    run_with_timeout(command, source, TIMEOUT)
}

fn run_with_timeout(
    command: &str,
    source: &str,
    timeout: Duration,
) -> Result<Credentials, ProcessError> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill whatever it started too.
        .process_group(0)
        .spawn()
        .map_err(ProcessError::Spawn)?;
    let group = child.id();
    let kill_group = || secrets_manager_agent_os::process::kill_process_group(group);
    // Both pipes are read on their own threads so a chatty child cannot block
    // on a full pipe; results come back over a channel so a grandchild that
    // keeps a pipe open cannot block us.
    let (tx, rx) = mpsc::channel();
    let pipes: [(bool, Option<Box<dyn Read + Send>>); 2] = [
        (
            true,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            false,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ];
    for (is_stdout, pipe) in pipes {
        let tx = tx.clone();
        let spawned = thread::Builder::new()
            .name("credential-process".into())
            .spawn(move || {
                let mut out = Vec::new();
                if let Some(pipe) = pipe {
                    let _ = pipe.take(MAX_OUTPUT).read_to_end(&mut out);
                }
                let _ = tx.send((is_stdout, out));
            });
        if let Err(e) = spawned {
            kill_group();
            let _ = child.wait();
            return Err(ProcessError::Reader(e));
        }
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group();
                let _ = child.wait();
                return Err(ProcessError::TimedOut(timeout));
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(ProcessError::Wait(e)),
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match rx.recv_timeout(wait) {
            Ok((true, out)) => stdout = out,
            Ok((false, out)) => stderr = out,
            Err(_) => {
                // Something it left running still holds the pipe.
                kill_group();
                return Err(ProcessError::HeldOpen);
            }
        }
    }
    if !status.success() {
        // The first line of stderr usually says what went wrong; it is the
        // helper's own message, not credentials.
        let text = String::from_utf8_lossy(&stderr);
        let stderr = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(ProcessError::Failed { status, stderr });
    }
    // Output that is not the format at all (a script's own message on
    // stdout) is told as such, before any complaint about a field.
    let output = json::parse(&stdout).map_err(|_| ProcessError::NotVersion1)?;
    // The JSON number 1, written as JSON writes it.
    if output.version.as_deref().map(|v| v.get()) != Some("1") {
        return Err(ProcessError::NotVersion1);
    }
    output
        .into_credentials(source)
        .map_err(ProcessError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_output_and_reports_failures() {
        let ok = r#"echo '{"Version":1,"AccessKeyId":"A","SecretAccessKey":"S","SessionToken":"T","Expiration":"2030-01-01T00:00:00Z"}'"#;
        let c = run(ok, "profile p").unwrap();
        assert_eq!(c.access_key_id, "A");
        assert_eq!(c.session_token.as_deref(), Some("T"));
        assert!(c.expiry.is_some());

        let e = run("echo oops >&2; exit 3", "p").unwrap_err().to_string();
        assert!(e.contains("exit status: 3") && e.contains("oops"), "{e}");
        for not_version_1 in [
            "{}",
            r#"{"Version":2}"#,
            r#"{"Version":"1"}"#,
            r#"{"Version":1.0}"#,
            r#"{"Version":null}"#,
        ] {
            let e = run(&format!("echo '{not_version_1}'"), "p").unwrap_err();
            assert!(
                matches!(e, ProcessError::NotVersion1),
                "{not_version_1}: {e}"
            );
        }
        let e = run("echo 'Error: token expired'", "p").unwrap_err();
        assert!(matches!(e, ProcessError::NotVersion1), "{e}");
        let e = run_with_timeout("sleep 5", "p", Duration::from_millis(200)).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
        // A background grandchild holding stdout open must not hang us.
        let started = Instant::now();
        let e =
            run_with_timeout("sleep 30 & echo '{}'", "p", Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("holding its output open"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
