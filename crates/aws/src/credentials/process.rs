//! `credential_process`: run a command and read credentials from its stdout
//! (the path IAM Roles Anywhere uses through `aws_signing_helper`).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{json_members, Member};
use crate::identity::Credentials;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Credentials JSON is small; more output than this is not credentials.
const MAX_OUTPUT: u64 = 64 * 1024;

/// Runs `command` through `sh -c` and parses its JSON output.
pub fn run(command: &str, source: &str) -> Result<Credentials, String> {
    run_with_timeout(command, source, TIMEOUT)
}

fn run_with_timeout(command: &str, source: &str, timeout: Duration) -> Result<Credentials, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill whatever it started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run credential_process: {e}"))?;
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
            return Err(format!("cannot read credential_process output: {e}"));
        }
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group();
                let _ = child.wait();
                return Err(format!(
                    "credential_process did not finish within {} s",
                    timeout.as_secs()
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("credential_process: {e}")),
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
                return Err("credential_process left a process holding its output open".into());
            }
        }
    }
    if !status.success() {
        // The first line of stderr usually says what went wrong; it is the
        // helper's own message, not credentials.
        let text = String::from_utf8_lossy(&stderr);
        let first: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        return Err(format!("credential_process exited with {status}: {first}"));
    }
    let version = json_members(&stdout, &["Version"]).and_then(|mut v| v.pop().flatten());
    if version != Some(Member::Int(1)) {
        return Err("credential_process output is not JSON with \"Version\": 1".into());
    }
    super::json::from_json(&stdout, source).map_err(|e| format!("credential_process: {e}"))
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

        let e = run("echo oops >&2; exit 3", "p").unwrap_err();
        assert!(e.contains("exit status: 3") && e.contains("oops"), "{e}");
        assert!(run("echo '{}'", "p").unwrap_err().contains("Version"));
        let e = run_with_timeout("sleep 5", "p", Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
        // A background grandchild holding stdout open must not hang us.
        let started = Instant::now();
        let e =
            run_with_timeout("sleep 30 & echo '{}'", "p", Duration::from_millis(300)).unwrap_err();
        assert!(e.contains("holding its output open"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
