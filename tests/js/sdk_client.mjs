// One call of the AWS SDK for JavaScript v3, configured only by the environment
// (AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL_SSM, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION), as an application would
// make it. Used by tests/integration/test_sdk_clients.py.
//
//   node sdk_client.mjs SERVICE OPERATION [INPUT_JSON]
//
// SERVICE is `secretsmanager` or `ssm`, OPERATION an SDK operation name
// (`GetSecretValue`, `GetParameter`, ...), INPUT_JSON its input (default `{}`; the
// environment variable SDK_INPUT is read when the argument is absent).
//
// Prints one JSON line on stdout:
//   success: {"ok": true, "httpStatusCode": 200, "output": {...}}
//   failure: {"ok": false, "name": "ResourceNotFoundException", "httpStatusCode": 400,
//             "message": "...", "errorType": "<x-amzn-errortype or null>"}
// Dates become epoch seconds (numbers), byte arrays {"$base64": "..."}, and the
// SDK's $metadata is left out of `output`. Exit status: 0 success, 1 an error from
// the call, 2 bad usage. SDK_TIMEOUT_MS (default 20000) bounds the call.

const PACKAGES = {
  secretsmanager: ["@aws-sdk/client-secrets-manager", "SecretsManagerClient"],
  ssm: ["@aws-sdk/client-ssm", "SSMClient"],
};

function usage(message) {
  process.stderr.write(`${message}\nusage: node sdk_client.mjs secretsmanager|ssm OPERATION [INPUT_JSON]\n`);
  process.exit(2);
}

// Plain JSON for what the SDK hands back: Date and Uint8Array have no JSON form.
function plain(value) {
  if (value instanceof Date) return value.getTime() / 1000;
  if (value instanceof Uint8Array) return { $base64: Buffer.from(value).toString("base64") };
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined && k !== "$metadata" && k !== "$response") out[k] = plain(v);
    }
    return out;
  }
  return value;
}

async function main() {
  const [service, operation, inputArg] = process.argv.slice(2);
  const pkg = PACKAGES[service];
  if (!pkg) usage(`unknown service ${JSON.stringify(service)}`);
  if (!operation) usage("no operation");
  let input;
  try {
    input = JSON.parse(inputArg ?? process.env.SDK_INPUT ?? "{}");
  } catch (e) {
    usage(`input is not JSON: ${e.message}`);
  }
  const mod = await import(pkg[0]);
  const Command = mod[`${operation}Command`];
  if (!Command) usage(`${pkg[0]} has no ${operation}Command`);
  const client = new mod[pkg[1]]({});
  const timeout = Number(process.env.SDK_TIMEOUT_MS || 20000);
  try {
    const output = await client.send(new Command(input), { abortSignal: AbortSignal.timeout(timeout) });
    process.stdout.write(JSON.stringify({
      ok: true, httpStatusCode: output.$metadata?.httpStatusCode ?? null, output: plain(output),
    }) + "\n");
    return 0;
  } catch (e) {
    const headers = e.$response?.headers ?? {};
    process.stdout.write(JSON.stringify({
      ok: false,
      name: e.name ?? null,
      httpStatusCode: e.$metadata?.httpStatusCode ?? null,
      message: e.message ?? null,
      errorType: headers["x-amzn-errortype"] ?? null,
    }) + "\n");
    return 1;
  } finally {
    client.destroy();
  }
}

process.exitCode = await main();
