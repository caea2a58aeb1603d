"""The loop guard: an agent whose own environment has AWS_ENDPOINT_URL_SECRETS_MANAGER
or AWS_ENDPOINT_URL_SSM naming one of its own listeners (as a host's profile
exporting them for its applications would give it) skips that variable with one
INFO line saying `skipped` and the variable, and reaches AWS through the next
source (AWS_ENDPOINT_URL here, the counting proxy in front of moto): it still
serves, with one upstream call per value. An endpoint that is not its own is
used as before, with no such line."""

import re

from conftest import unique, wait_until
from sdk_common import agent_url, fixed_ports, sdk_clients, start_agent


def mentions(line, variable):
    """`variable` in the line as a whole word (AWS_ENDPOINT_URL is a prefix of both others)."""
    return re.search(rf"(?<![A-Z0-9_]){re.escape(variable)}(?![A-Z0-9_])", line) is not None


def skipped(ag, variable):
    return [line for line in (ag.stderr + ag.stdout).splitlines() if "skipped" in line and mentions(line, variable)]


def serve_one_of_each(ag, moto, proxy, monkeypatch):
    name = unique("loop")
    moto.client().create_secret(Name=name, SecretString="not-a-loop")
    param = "/loop/" + unique("p")
    moto.client("ssm").put_parameter(Name=param, Value="p-not-a-loop", Type="String")
    c = sdk_clients(monkeypatch, agent_url(ag.port), moto.admin)
    assert c.sm.get_secret_value(SecretId=name)["SecretString"] == "not-a-loop"
    assert c.ssm.get_parameter(Name=param)["Parameter"]["Value"] == "p-not-a-loop"
    assert proxy.count("GetSecretValue") == 1
    assert proxy.count("GetParameter", "AmazonSSM") == 1


def test_own_listener_in_the_service_variables_is_skipped(agent, moto, counting_proxy, monkeypatch):
    (port,) = fixed_ports(1)
    ag = agent(None, creds=moto.admin, config={"http_port": port}, env={
        "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{port}",
        "AWS_ENDPOINT_URL_SSM": f"http://localhost:{port}",
        "AWS_ENDPOINT_URL": counting_proxy.url,
    })
    ag.port = port
    serve_one_of_each(ag, moto, counting_proxy, monkeypatch)
    for variable in ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_SSM"):
        lines = wait_until(lambda v=variable: skipped(ag, v), 5, what=f"the line that skips {variable}")
        assert len(lines) == 1, lines
        assert "INFO" in lines[0], lines
    assert not skipped(ag, "AWS_ENDPOINT_URL"), "the general endpoint is used, not skipped"


def test_the_cloud_extensions_listener_counts_as_its_own(agent, moto, counting_proxy, monkeypatch):
    http_port, ce_port = fixed_ports(2)
    ag = start_agent(agent, moto, counting_proxy, http_port=http_port,
                     config={"cloud_extensions_port": ce_port}, env={
                         "AWS_ENDPOINT_URL_SECRETS_MANAGER": f"http://127.0.0.1:{ce_port}/secretsmanager",
                         "AWS_ENDPOINT_URL_SSM": f"http://localhost:{ce_port}/parameterstore",
                         "AWS_ENDPOINT_URL": counting_proxy.url,
                     })
    serve_one_of_each(ag, moto, counting_proxy, monkeypatch)
    for variable in ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_SSM"):
        lines = wait_until(lambda v=variable: skipped(ag, v), 5, what=f"the line that skips {variable}")
        assert len(lines) == 1 and "INFO" in lines[0], lines


def test_an_endpoint_that_is_not_its_own_is_used(agent, moto, counting_proxy, monkeypatch):
    """The service variables name the proxy; AWS_ENDPOINT_URL a closed port that
    would fail every call if it were used."""
    (closed,) = fixed_ports(1)
    ag = start_agent(agent, moto, counting_proxy, env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}"})
    serve_one_of_each(ag, moto, counting_proxy, monkeypatch)
    ag.stop()
    assert not [line for line in ag.stderr.splitlines() if "skipped" in line], ag.stderr
