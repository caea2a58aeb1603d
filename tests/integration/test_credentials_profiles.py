"""Static keys from the environment and the shared files, and credential_process.

The shared config and credentials files (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE):
which section a profile reads, the file syntax, which file wins, session tokens; blank
environment keys count as unset.  credential_process beats static keys in the same
profile; its credentials are kept when they carry no Expiration and fetched again
before it when they do, and a failing process is an error that names the profile.
Profiles that assume a role (role_arn) are in test_credentials_sts.py.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import DUMMY_CREDS
from credentials_common import (
    LIFE,
    NEAR_EXPIRY,
    NO_ENV_CREDS,
    assert_all_ok,
    assert_secrets_not_logged,
    creds_error,
    get_ok,
    keys,
    reads,
    write_profiles,
)
# The shared fixtures: pytest finds them in this module's namespace.
from credentials_common import iam, secret  # noqa: F401


def test_profile_static_keys_credentials_file_section(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, credentials=f"[other]\n{keys(DUMMY_CREDS)}\n[sma]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_profile_static_keys_config_file_profile_section(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, config=f"[default]\n{keys(DUMMY_CREDS)}\n[profile sma]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_profile_default_without_aws_profile(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, config=f"[profile other]\n{keys(DUMMY_CREDS)}\n[default]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env}), secret)


def test_profile_file_syntax(agent, moto, secret, tmp_path):
    """Comments, no spaces around '=', blank lines, a nested sub-section in another profile."""
    config = (
        "# leading comment\n; another comment\n\n"
        "[default]\nregion = us-west-2\ns3 =\n    max_concurrent_requests = 20\n    addressing_style = path\n\n"
        f"[profile sma]\n# keys follow\naws_access_key_id={moto.admin[0]}\naws_secret_access_key={moto.admin[1]}\n"
    )
    env = write_profiles(tmp_path, config=config)
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_blank_environment_credentials_count_as_unset(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, credentials=f"[default]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**env, "AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}), secret)


def test_profile_credentials_file_wins_over_config(agent, moto, secret, tmp_path):
    env = write_profiles(tmp_path, config=f"[profile sma]\n{keys(moto.denied)}region = us-east-1\n",
                         credentials=f"[sma]\n{keys(moto.admin)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_profile_session_token(agent, moto, iam, secret, tmp_path):
    akid, sk, token = iam.mint()
    env = write_profiles(tmp_path, credentials=f"[sma]\n{keys((akid, sk), token)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_profile_credential_process_beats_static_keys(agent, moto, secret, tmp_path):
    doc = json.dumps({"Version": 1, "AccessKeyId": moto.admin[0], "SecretAccessKey": moto.admin[1]})
    script = write_script(tmp_path / "creds.sh", f"#!/bin/sh\ncat <<'EOF'\n{doc}\nEOF\n")
    env = write_profiles(tmp_path, config=f"[profile sma]\ncredential_process = {script}\n{keys(moto.denied)}")
    get_ok(agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma"}), secret)


def test_environment_session_token(agent, moto, iam, secret):
    akid, sk, token = iam.mint()
    get_ok(agent(moto.url, creds=(akid, sk), env={"AWS_SESSION_TOKEN": token}), secret)


def write_script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_profile_credential_process(agent, moto, secret, tmp_path):
    runs = tmp_path / "runs"
    doc = json.dumps({"Version": 1, "AccessKeyId": moto.admin[0], "SecretAccessKey": moto.admin[1]})
    script = write_script(tmp_path / "creds.sh", f"#!/bin/sh\necho \"$1\" >> '{runs}'\ncat <<'EOF'\n{doc}\nEOF\n")
    env = write_profiles(tmp_path, config=f"[profile sma-proc]\ncredential_process = {script} first-arg\n")
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-proc"})
    get_ok(ag, secret)
    get_ok(ag, secret)
    assert runs.read_text().splitlines()[0] == "first-arg"
    assert len(runs.read_text().splitlines()) == 1, "credentials without Expiration are cached"
    assert_secrets_not_logged(ag, moto.admin[1])


PROC_PY = """
import json, sys, time
state_path = sys.argv[1]
with open(state_path) as f:
    st = json.load(f)
i = min(st["n"], len(st["creds"]) - 1)
st["n"] += 1
with open(state_path, "w") as f:
    json.dump(st, f)
akid, sk, tok = st["creds"][i]
exp = int(time.time() + st["lifetime"]) + 1
print(json.dumps({"Version": 1, "AccessKeyId": akid, "SecretAccessKey": sk, "SessionToken": tok,
                  "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))}))
"""


def test_profile_credential_process_with_expiration_is_refreshed(agent, moto, iam, secret, tmp_path):
    name, value = secret
    creds = [list(iam.mint()) for _ in range(4)]
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"n": 0, "creds": creds, "lifetime": LIFE}))
    script = write_script(tmp_path / "proc.py", PROC_PY)
    env = write_profiles(tmp_path, config=f"[profile sma-proc]\ncredential_process = {sys.executable} {script} {state}\n")
    ag = agent(moto.url, config={"ttl_seconds": 0}, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-proc"})
    n = lambda: json.loads(state.read_text())["n"]  # noqa: E731
    # The agent's test clock steps towards the Expiration (an hour ahead): not
    # run again halfway, run again 200 s before it (past the 5 to 10 minutes
    # ahead at which the agent refreshes).
    results = reads(ag, name, 1)
    ag.advance(LIFE / 2)
    results += reads(ag, name)
    assert n() == 1, "credential_process was run again long before the Expiration"
    ag.advance(NEAR_EXPIRY - LIFE / 2)
    results += reads(ag, name)
    assert_all_ok(results, value)
    assert n() == 2, "credential_process was not run again before the Expiration"


@pytest.mark.parametrize("body", ["echo 'no credentials for you' >&2; exit 3", "echo 'this is not json'"],
                         ids=["exit-3", "bad-json"])
def test_profile_credential_process_failure_names_profile(agent, moto, secret, tmp_path, body):
    name, _ = secret
    script = write_script(tmp_path / "fail.sh", f"#!/bin/sh\n{body}\n")
    env = write_profiles(tmp_path, config=f"[profile sma-proc-fail]\ncredential_process = {script}\n")
    ag = agent(moto.url, env={**NO_ENV_CREDS, **env, "AWS_PROFILE": "sma-proc-fail"})
    t0 = time.monotonic()
    msg = creds_error(*ag.secret(name)[::2])
    assert time.monotonic() - t0 < 10
    assert "sma-proc-fail" in msg, msg

