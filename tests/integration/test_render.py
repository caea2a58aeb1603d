"""`render`: the config's [[templates]] rendered into files once, against moto
with signatures checked: values, filters, modes, atomic replacement, what a
rotation rewrites, commands after a change, and the failures that keep the old
file (docs/programs.md)."""

import json
import os
import stat
import subprocess

import pytest

from conftest import MINIMAL_CONFIG, agent_bin, agent_env, unique, wait_until

RUN_TIMEOUT = 60


@pytest.fixture
def render(moto, tmp_path):
    """Runs `render` with a config of MINIMAL_CONFIG plus `templates` (TOML text)."""
    env = agent_env(moto.url, None, moto.admin, {"AWS_ENDPOINT_URL_SSM": moto.url}, home=tmp_path)

    def run(templates: str):
        config = tmp_path / "render.toml"
        config.write_text(MINIMAL_CONFIG + "\n" + templates)
        return subprocess.run(
            [str(agent_bin()), "render", "--config", str(config)],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT,
        )

    return run


def toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a TOML basic string


def test_values_filters_modes_and_what_a_rotation_rewrites(render, moto, tmp_path):
    sm, ssm = moto.client(), moto.client("ssm")
    db = unique("db")
    sm.create_secret(Name=db, SecretString=json.dumps({"user": "admin", "password": "it's $ecret", "port": 5432}))
    host = "/" + unique("app") + "/host"
    ssm.put_parameter(Name=host, Value="db.internal", Type="SecureString")
    env_file, conf, marker = tmp_path / "db.env", tmp_path / "app.conf", tmp_path / "reloaded"
    source = tmp_path / "app.tmpl"
    source.write_text("host={{ parameter('%s') }}\nport={{ secret('%s', 'port') }}\n" % (host, db))
    templates = f"""
[[templates]]
contents = {toml_string("{{ secret('%s') | dotenv }}" % db)}
destination = "{env_file}"

[[templates]]
source = "{source}"
destination = "{conf}"
perms = "0640"
command = ["sh", "-c", "echo run >> {marker}"]
"""
    first = render(templates)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"rendered {env_file}", f"rendered {conf}"]
    assert env_file.read_text() == 'password="it\'s \\$ecret"\nport="5432"\nuser="admin"\n'
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600, "not readable by others by default"
    assert conf.read_text() == "host=db.internal\nport=5432\n"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert marker.read_text() == "run\n"
    inode = env_file.stat().st_ino

    again = render(templates)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [f"unchanged {env_file}", f"unchanged {conf}"]
    assert marker.read_text() == "run\n", "no change, no command"
    assert env_file.stat().st_ino == inode, "unchanged bytes are not rewritten"

    sm.put_secret_value(SecretId=db, SecretString=json.dumps({"user": "admin", "password": "new", "port": 5432}))
    rotated = render(templates)
    assert rotated.returncode == 0, rotated.stderr
    assert rotated.stdout.splitlines() == [f"rendered {env_file}", f"unchanged {conf}"]
    assert 'password="new"' in env_file.read_text()
    assert env_file.stat().st_ino != inode, "replaced by a rename, not written in place"
    assert marker.read_text() == "run\n", "only the changed file's command runs"
    assert sorted(os.listdir(tmp_path)).count("db.env") == 1
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n], "no temporary file left"


def test_a_failure_keeps_the_old_file_and_names_why(render, moto, tmp_path):
    sm = moto.client()
    db = unique("db")
    sm.create_secret(Name=db, SecretString=json.dumps({"user": "admin", "password": "p"}))
    dest = tmp_path / "out"
    dest.write_text("old")
    dest.chmod(0o600)
    other = tmp_path / "other"
    templates = f"""
[[templates]]
contents = {toml_string("{{ secret('%s', 'missing_key') }}" % db)}
destination = "{dest}"

[[templates]]
contents = {toml_string("{{ secret('%s', 'user') }}" % db)}
destination = "{other}"
"""
    result = render(templates)
    assert result.returncode == 1
    assert dest.read_text() == "old"
    assert other.read_text() == "admin", "the other template is still rendered"
    assert str(dest) in result.stderr and '"missing_key"' in result.stderr, result.stderr
    assert "admin" not in result.stderr and '"p"' not in result.stderr

    missing = render(f"""
[[templates]]
contents = "{{{{ secret('{unique('nope')}') }}}}"
destination = "{dest}"
""")
    assert missing.returncode == 1
    assert "ResourceNotFoundException" in missing.stderr, missing.stderr
    assert dest.read_text() == "old"


def test_a_symlink_at_the_destination_is_refused(render, moto, tmp_path):
    sm = moto.client()
    db = unique("db")
    sm.create_secret(Name=db, SecretString="s3cret")
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / "link"
    link.symlink_to(target)
    result = render(f"""
[[templates]]
contents = "{{{{ secret('{db}') }}}}"
destination = "{link}"
""")
    assert result.returncode == 1
    assert "symlink" in result.stderr, result.stderr
    assert target.read_text() == "keep"
    assert link.is_symlink()


def test_without_templates_render_says_so(render):
    result = render("")
    assert result.returncode == 1
    assert "no [[templates]]" in result.stderr


def test_the_running_agent_keeps_files_fresh(agent, moto, tmp_path):
    """The agent renders [[templates]] at start and again as its cache refreshes:
    a rotation reaches the file once the TTL has passed (the test clock steps
    past it), its command runs once per change, and an unchanged render leaves
    the file alone."""
    sm = moto.client()
    db = unique("db")
    sm.create_secret(Name=db, SecretString=json.dumps({"password": "pw-one-7f3a"}))
    dest, marker = tmp_path / "db.env", tmp_path / "changes"
    contents = toml_string("PASSWORD={{ secret('%s', 'password') }}\n" % db)
    raw = MINIMAL_CONFIG + "ttl_seconds = 60\n" + f"""
[[templates]]
contents = {contents}
destination = "{dest}"
command = ["sh", "-c", "echo change >> {marker}"]
"""
    ag = agent(moto.url, raw_config=raw, creds=moto.admin)

    def content():
        try:
            return dest.read_text()
        except FileNotFoundError:
            return None

    def changes():
        return marker.read_text().count("change") if marker.exists() else 0

    wait_until(lambda: content() == "PASSWORD=pw-one-7f3a\n", what="the first render")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    wait_until(lambda: changes() == 1, what="its command")
    inode = dest.stat().st_ino

    # Renders within the TTL come from the cache and change nothing.
    before = ag.metric("cache_hits_total")
    ag.advance(11)
    wait_until(lambda: ag.metric("cache_hits_total") > before, what="a render from the cache")
    assert dest.stat().st_ino == inode and changes() == 1

    sm.put_secret_value(SecretId=db, SecretString=json.dumps({"password": "pw-two-9c1b"}))
    ag.advance(75)
    wait_until(lambda: content() == "PASSWORD=pw-two-9c1b\n", what="the rotation in the file")
    wait_until(lambda: changes() == 2, what="its command, once more")
    assert changes() == 2
    assert "pw-one" not in ag.stderr and "pw-two" not in ag.stderr, "no value in the log"
