//! What an SDK asks for: the `X-Amz-Target` header and the JSON body read
//! into a typed, checked operation, before anything is looked up. A target
//! that is not one of the reads the agent serves is refused here, so a
//! write is never sent upstream with the agent's identity, and a body that
//! is not the operation's input gets the error AWS gives for it.
//!
//! Inputs that the cache keys on are normalised: a passed-through call's
//! input is the typed struct serialized again (fixed field order, no
//! unknown fields, filter values sorted), so equal requests share one entry.

use serde::{Deserialize, Serialize};

use secrets_manager_agent_aws::passthrough::{ReadCall, Service};
use secrets_manager_agent_aws::secrets_manager::BATCH;
use secrets_manager_agent_aws::ssm::ParameterQuery;
use secrets_manager_agent_aws::SecretQuery;

/// The service a target names (by its prefix), and the operation.
pub fn service_of(target: &str) -> Option<(Service, &str)> {
    if let Some(op) = target.strip_prefix("secretsmanager.") {
        Some((Service::SecretsManager, op))
    } else {
        target
            .strip_prefix("AmazonSSM.")
            .map(|op| (Service::Ssm, op))
    }
}

/// A read the agent serves.
#[derive(Debug, PartialEq)]
pub enum Operation {
    GetSecretValue(SecretQuery),
    /// BatchGetSecretValue by `SecretIdList`: each from the cache.
    BatchGetSecretValue(Vec<String>),
    GetParameter(ParameterQuery),
    /// Up to ten names, one decryption setting.
    GetParameters(Vec<ParameterQuery>),
    /// Passed to AWS as it is (normalised), and the answer cached whole.
    Passthrough(ReadCall, String),
}

/// Why a request is refused before the cache: AWS's status, code and
/// message.
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

fn validation(message: impl Into<String>) -> Refused {
    Refused {
        status: 400,
        code: "ValidationException",
        message: message.into(),
    }
}

/// The operation a request asks for: its target (`X-Amz-Target`) and body.
pub fn parse(service: Service, operation: &str, body: &[u8]) -> Result<Operation, Refused> {
    match (service, operation) {
        (Service::SecretsManager, "GetSecretValue") => {
            let input: GetSecretValue = read(body)?;
            let id = required("SecretId", input.secret_id, 2048)?;
            Ok(Operation::GetSecretValue(SecretQuery {
                secret_id: id,
                version_id: optional("VersionId", input.version_id, 64)?,
                version_stage: optional("VersionStage", input.version_stage, 256)?,
            }))
        }
        (Service::SecretsManager, "DescribeSecret") => {
            let input: DescribeSecret = read(body)?;
            let secret_id = required("SecretId", input.secret_id, 2048)?;
            passthrough(
                ReadCall::DescribeSecret,
                &DescribeSecret {
                    secret_id: Some(secret_id),
                },
            )
        }
        (Service::SecretsManager, "BatchGetSecretValue") => batch(read(body)?),
        (Service::Ssm, "GetParameter") => {
            let input: GetParameter = read(body)?;
            Ok(Operation::GetParameter(parameter(
                required("Name", input.name, 2048)?,
                input.with_decryption,
            )))
        }
        (Service::Ssm, "GetParameters") => {
            let input: GetParameters = read(body)?;
            let names = input.names.unwrap_or_default();
            if names.is_empty() || names.len() > 10 {
                return Err(validation(format!(
                    "1 validation error detected: Value at 'names' failed to satisfy constraint: \
                     Member must have length between 1 and 10 (it has {})",
                    names.len()
                )));
            }
            let mut queries: Vec<ParameterQuery> = Vec::with_capacity(names.len());
            for name in names {
                let name = required("Names", Some(name), 2048)?;
                // A name given twice is answered once, as Parameter Store does.
                if !queries.iter().any(|q| q.name == name) {
                    queries.push(parameter(name, input.with_decryption));
                }
            }
            Ok(Operation::GetParameters(queries))
        }
        (Service::Ssm, "GetParametersByPath") => {
            let mut input: GetParametersByPath = read(body)?;
            input.path = Some(required("Path", input.path, 2048)?);
            if let Some(filters) = &mut input.parameter_filters {
                for filter in filters.iter_mut() {
                    if let Some(values) = &mut filter.values {
                        values.sort();
                    }
                }
            }
            passthrough(ReadCall::GetParametersByPath, &input)
        }
        _ => Err(not_served(service, operation)),
    }
}

/// Every operation the agent does not serve: writes (never performed with
/// the agent's identity), lists, and names that are no operation at all.
fn not_served(service: Service, operation: &str) -> Refused {
    let served = match service {
        Service::SecretsManager => "GetSecretValue, BatchGetSecretValue and DescribeSecret",
        Service::Ssm => "GetParameter, GetParameters and GetParametersByPath",
    };
    validation(format!(
        "secrets-manager-agent serves reads only ({served}); {operation} is not performed \
         and nothing was sent to AWS. Call AWS directly for it (a client without \
         AWS_ENDPOINT_URL_{} set to the agent)",
        match service {
            Service::SecretsManager => "SECRETS_MANAGER",
            Service::Ssm => "SSM",
        }
    ))
}

fn parameter(name: String, with_decryption: Option<bool>) -> ParameterQuery {
    // A version or label stays on the name (`NAME:3`): Parameter Store reads
    // it there, as it does from the GET route's selector.
    ParameterQuery {
        name,
        selector: None,
        with_decryption: with_decryption.unwrap_or(false),
    }
}

fn batch(mut input: BatchGetSecretValue) -> Result<Operation, Refused> {
    let ids = input.secret_id_list.take().unwrap_or_default();
    match (&mut input.filters, ids.is_empty()) {
        (Some(_), false) => Err(invalid_parameter(
            "Either 'SecretIdList' or 'Filters' must be provided, but not both.",
        )),
        (None, true) => Err(invalid_parameter(
            "Either 'SecretIdList' or 'Filters' must be provided.",
        )),
        (None, false) => {
            if ids.len() > BATCH {
                return Err(validation(format!(
                    "1 validation error detected: Value at 'secretIdList' failed to satisfy \
                     constraint: Member must have length less than or equal to {BATCH}"
                )));
            }
            let mut checked = Vec::with_capacity(ids.len());
            for id in ids {
                checked.push(required("SecretIdList", Some(id), 2048)?);
            }
            Ok(Operation::BatchGetSecretValue(checked))
        }
        (Some(filters), true) => {
            filters.sort_by(|a, b| a.key.cmp(&b.key));
            for filter in filters.iter_mut() {
                if let Some(values) = &mut filter.values {
                    values.sort();
                }
            }
            passthrough(ReadCall::BatchGetSecretValue, &input)
        }
    }
}

fn invalid_parameter(message: &str) -> Refused {
    Refused {
        status: 400,
        code: "InvalidParameterException",
        message: message.into(),
    }
}

fn passthrough(call: ReadCall, input: &impl Serialize) -> Result<Operation, Refused> {
    // Serializing plain strings, numbers and lists cannot fail.
    let input = serde_json::to_string(input).map_err(|e| Refused {
        status: 500,
        code: "InternalFailure",
        message: e.to_string(),
    })?;
    Ok(Operation::Passthrough(call, input))
}

/// The body as the operation's input; what is not, is AWS's
/// `SerializationException`.
fn read<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, Refused> {
    // An SDK sends `{}` for an operation without input; some send nothing.
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| Refused {
        status: 400,
        code: "SerializationException",
        message: format!("the request body is not this operation's JSON input: {e}"),
    })
}

fn required(member: &str, value: Option<String>, max: usize) -> Result<String, Refused> {
    match value {
        Some(v) if !v.is_empty() && v.chars().count() <= max => Ok(v),
        Some(v) if !v.is_empty() => Err(validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: \
             Member must have length less than or equal to {max}"
        ))),
        _ => Err(validation(format!(
            "1 validation error detected: Value at '{member}' failed to satisfy constraint: \
             Member must not be null or empty"
        ))),
    }
}

fn optional(member: &str, value: Option<String>, max: usize) -> Result<Option<String>, Refused> {
    match value {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        v => required(member, v, max).map(Some),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetSecretValue {
    secret_id: Option<String>,
    version_id: Option<String>,
    version_stage: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeSecret {
    secret_id: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct BatchGetSecretValue {
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_id_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    filters: Option<Vec<Filter>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_results: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParameter {
    name: Option<String>,
    with_decryption: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParameters {
    names: Option<Vec<String>>,
    with_decryption: Option<bool>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersByPath {
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recursive: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    with_decryption: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameter_filters: Option<Vec<ParameterFilter>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_results: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ParameterFilter {
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    option: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(op: &str, body: &str) -> Result<Operation, Refused> {
        parse(Service::SecretsManager, op, body.as_bytes())
    }

    fn ssm(op: &str, body: &str) -> Result<Operation, Refused> {
        parse(Service::Ssm, op, body.as_bytes())
    }

    #[test]
    fn targets_name_a_service() {
        assert_eq!(
            service_of("secretsmanager.GetSecretValue"),
            Some((Service::SecretsManager, "GetSecretValue"))
        );
        assert_eq!(
            service_of("AmazonSSM.GetParameter"),
            Some((Service::Ssm, "GetParameter"))
        );
        assert_eq!(service_of("DynamoDB_20120810.GetItem"), None);
        assert_eq!(service_of("secretsmanager"), None);
    }

    #[test]
    fn get_secret_value() {
        assert_eq!(
            sm(
                "GetSecretValue",
                r#"{"SecretId":"prod/db","VersionStage":"AWSPREVIOUS","Unknown":1}"#
            ),
            Ok(Operation::GetSecretValue(SecretQuery {
                secret_id: "prod/db".into(),
                version_id: None,
                version_stage: Some("AWSPREVIOUS".into()),
            }))
        );
        for bad in ["{}", r#"{"SecretId":""}"#, r#"{"SecretId":null}"#] {
            let refused = sm("GetSecretValue", bad).unwrap_err();
            assert_eq!(
                (refused.status, refused.code),
                (400, "ValidationException"),
                "{bad}"
            );
            assert!(
                refused.message.contains("'SecretId'"),
                "{}",
                refused.message
            );
        }
        let long = format!(r#"{{"SecretId":"{}"}}"#, "x".repeat(2049));
        assert!(sm("GetSecretValue", &long).is_err());
        for garbage in ["[1]", "{", r#"{"SecretId":5}"#, "\u{0}"] {
            let refused = sm("GetSecretValue", garbage).unwrap_err();
            assert_eq!(refused.code, "SerializationException", "{garbage}");
        }
    }

    #[test]
    fn writes_and_unknown_operations_are_refused() {
        for op in [
            "PutSecretValue",
            "CreateSecret",
            "ListSecrets",
            "DeleteSecret",
            "Nope",
            "",
        ] {
            let refused = sm(op, "{}").unwrap_err();
            assert_eq!((refused.status, refused.code), (400, "ValidationException"));
            assert!(
                refused.message.contains("reads only"),
                "{}",
                refused.message
            );
            assert!(refused.message.contains("AWS_ENDPOINT_URL_SECRETS_MANAGER"));
        }
        let refused = ssm("DeleteParameter", r#"{"Name":"x"}"#).unwrap_err();
        assert!(
            refused.message.contains("AWS_ENDPOINT_URL_SSM"),
            "{}",
            refused.message
        );
        // The operations of one service are not the other's.
        assert!(ssm("GetSecretValue", r#"{"SecretId":"a"}"#).is_err());
    }

    #[test]
    fn batches_by_ids_or_by_filters() {
        assert_eq!(
            sm("BatchGetSecretValue", r#"{"SecretIdList":["a","b"]}"#),
            Ok(Operation::BatchGetSecretValue(vec!["a".into(), "b".into()]))
        );
        let by_filters = |body| match sm("BatchGetSecretValue", body) {
            Ok(Operation::Passthrough(ReadCall::BatchGetSecretValue, input)) => input,
            other => panic!("{other:?}"),
        };
        let normal = r#"{"Filters":[{"Key":"name","Values":["a","b"]},{"Key":"tag-key","Values":["x"]}],"MaxResults":5}"#;
        assert_eq!(
            by_filters(
                r#"{"MaxResults":5,"Filters":[{"Values":["x"],"Key":"tag-key"},{"Key":"name","Values":["b","a"]}]}"#
            ),
            normal
        );
        assert_eq!(by_filters(normal), normal);
        let both = sm(
            "BatchGetSecretValue",
            r#"{"SecretIdList":["a"],"Filters":[{"Key":"name","Values":["a"]}]}"#,
        )
        .unwrap_err();
        assert_eq!(both.code, "InvalidParameterException");
        assert!(sm("BatchGetSecretValue", "{}").is_err());
        let many: Vec<String> = (0..21).map(|i| format!("s{i}")).collect();
        let body = serde_json::json!({ "SecretIdList": many }).to_string();
        assert_eq!(
            sm("BatchGetSecretValue", &body).unwrap_err().code,
            "ValidationException"
        );
    }

    #[test]
    fn describe_is_passed_through_normalised() {
        assert_eq!(
            sm("DescribeSecret", r#"{"Extra":true,"SecretId":"a"}"#),
            Ok(Operation::Passthrough(
                ReadCall::DescribeSecret,
                r#"{"SecretId":"a"}"#.into()
            ))
        );
    }

    #[test]
    fn parameters() {
        assert_eq!(
            ssm(
                "GetParameter",
                r#"{"Name":"/app/db:3","WithDecryption":true}"#
            ),
            Ok(Operation::GetParameter(ParameterQuery {
                name: "/app/db:3".into(),
                selector: None,
                with_decryption: true,
            }))
        );
        match ssm("GetParameters", r#"{"Names":["a","b"]}"#) {
            Ok(Operation::GetParameters(q)) => {
                assert_eq!(q.len(), 2);
                assert!(!q[0].with_decryption);
            }
            other => panic!("{other:?}"),
        }
        assert!(ssm("GetParameters", r#"{"Names":[]}"#).is_err());
        let eleven: Vec<String> = (0..11).map(|i| format!("p{i}")).collect();
        let body = serde_json::json!({ "Names": eleven }).to_string();
        assert_eq!(
            ssm("GetParameters", &body).unwrap_err().code,
            "ValidationException"
        );
        match ssm(
            "GetParametersByPath",
            r#"{"Path":"/app","Recursive":true,"ParameterFilters":[{"Key":"Type","Values":["String","SecureString"]}],"MaxResults":2,"NextToken":"t"}"#,
        ) {
            Ok(Operation::Passthrough(ReadCall::GetParametersByPath, input)) => assert_eq!(
                input,
                r#"{"Path":"/app","Recursive":true,"ParameterFilters":[{"Key":"Type","Values":["SecureString","String"]}],"MaxResults":2,"NextToken":"t"}"#
            ),
            other => panic!("{other:?}"),
        }
        assert!(ssm("GetParametersByPath", "{}").is_err());
    }
}
