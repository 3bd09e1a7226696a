//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics (and describing the
//! broker's static configs).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use runnel_broker::config::{topic_config_def, ConfigSource, ConfigType, DescribedConfig};
use runnel_broker::BrokerError;

use super::str_bytes;
use crate::Context;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// IncrementalAlterConfigs operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn describe_entry(c: DescribedConfig, synonyms: bool, docs: bool) -> DescribeConfigsResourceResult {
    let synonyms = if synonyms {
        vec![DescribeConfigsSynonym::default()
            .with_name(str_bytes(c.name))
            .with_value(Some(str_bytes(c.value.clone())))
            .with_source(c.source as i8)]
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(str_bytes(c.name))
        .with_value(Some(str_bytes(c.value)))
        .with_read_only(false)
        .with_config_source(c.source as i8)
        .with_is_sensitive(false)
        .with_synonyms(synonyms)
        .with_config_type(c.config_type as i8)
        .with_documentation(docs.then(|| str_bytes(c.doc)))
}

pub(crate) fn describe(
    ctx: &Context,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let docs = version >= 3 && request.include_documentation;
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let name = resource.resource_name.as_str().to_string();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let described = match resource.resource_type {
                RESOURCE_TOPIC => match ctx.broker.image().topic(&name) {
                    Some(t) => Ok(ctx.broker.config().describe_topic(&t.configs)),
                    None => Err((
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic '{name}' does not exist"),
                    )),
                },
                RESOURCE_BROKER => {
                    // "" names the cluster-wide default broker config.
                    if name.is_empty() || name == ctx.broker.node_id().to_string() {
                        Ok(ctx
                            .broker
                            .config()
                            .describe_broker()
                            .into_iter()
                            .map(|mut c| {
                                if c.source == ConfigSource::StaticBroker && name.is_empty() {
                                    c.source = ConfigSource::Default;
                                }
                                c
                            })
                            .collect())
                    } else {
                        Err((
                            ResponseError::InvalidRequest,
                            format!(
                                "broker '{name}' is not this node ({})",
                                ctx.broker.node_id()
                            ),
                        ))
                    }
                }
                other => Err((
                    ResponseError::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            };
            match described {
                Ok(configs) => {
                    let wanted = resource.configuration_keys.as_ref();
                    let configs = configs
                        .into_iter()
                        .filter(|c| {
                            wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == c.name))
                        })
                        .map(|c| describe_entry(c, request.include_synonyms, docs))
                        .collect();
                    result.with_configs(configs)
                }
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Checks that the resource is a topic; broker configs are static (set with `--config`).
fn topic_resource(resource_type: i8, name: &str) -> Result<(), BrokerError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err(BrokerError::InvalidRequest(format!(
            "broker configs are static; set them with `runnel node --config KEY=VALUE` (broker '{name}')"
        ))),
        other => Err(BrokerError::InvalidRequest(format!("resource type {other} is not supported"))),
    }
}

fn error_fields(
    result: Result<(), BrokerError>,
    what: &str,
    name: &str,
) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (0, None),
        Err(e) => {
            tracing::info!(resource = name, error = %e, "{what} failed");
            (e.code().code(), Some(str_bytes(e.to_string())))
        }
    }
}

/// AlterConfigs replaces the whole set of a topic's overrides.
pub(crate) async fn alter(ctx: &Context, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_string();
        let configs = topic_resource(resource.resource_type, &name).and_then(|()| {
            let mut configs = BTreeMap::new();
            for c in resource.configs {
                let value = c.value.ok_or_else(|| {
                    BrokerError::InvalidConfig(format!(
                        "config '{}' has a null value",
                        c.name.as_str()
                    ))
                })?;
                configs.insert(c.name.as_str().to_string(), value.as_str().to_string());
            }
            Ok(configs)
        });
        let result = match configs {
            Ok(configs) => {
                ctx.broker
                    .set_topic_configs(&name, configs, request.validate_only)
                    .await
            }
            Err(e) => Err(e),
        };
        let (code, message) = error_fields(result, "alter configs", &name);
        responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    AlterConfigsResponse::default().with_responses(responses)
}

/// IncrementalAlterConfigs applies set/delete/append/subtract to the current overrides.
pub(crate) async fn incremental_alter(
    ctx: &Context,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(request.resources.len());
    for resource in request.resources {
        let name = resource.resource_name.as_str().to_string();
        let configs = topic_resource(resource.resource_type, &name).and_then(|()| {
            let image = ctx.broker.image();
            let topic = image
                .topic(&name)
                .ok_or_else(|| BrokerError::UnknownTopic(name.clone()))?;
            let mut configs = topic.configs.clone();
            for c in &resource.configs {
                apply_op(
                    ctx,
                    &mut configs,
                    c.name.as_str(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.as_str()),
                )?;
            }
            Ok(configs)
        });
        let result = match configs {
            Ok(configs) => {
                ctx.broker
                    .set_topic_configs(&name, configs, request.validate_only)
                    .await
            }
            Err(e) => Err(e),
        };
        let (code, message) = error_fields(result, "incremental alter configs", &name);
        responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}

fn apply_op(
    ctx: &Context,
    configs: &mut BTreeMap<String, String>,
    name: &str,
    op: i8,
    value: Option<&str>,
) -> Result<(), BrokerError> {
    let def = topic_config_def(name)
        .ok_or_else(|| BrokerError::InvalidConfig(format!("unknown topic config '{name}'")))?;
    let need_value = || {
        value.ok_or_else(|| BrokerError::InvalidConfig(format!("config '{name}' needs a value")))
    };
    match op {
        OP_SET => {
            configs.insert(name.to_string(), need_value()?.to_string());
        }
        OP_DELETE => {
            configs.remove(name);
        }
        OP_APPEND | OP_SUBTRACT => {
            if def.config_type != ConfigType::List {
                return Err(BrokerError::InvalidConfig(format!(
                    "append and subtract only apply to list configs; '{name}' is not one"
                )));
            }
            let current = configs.get(name).cloned().unwrap_or_else(|| {
                let described = ctx.broker.config().describe_topic(&BTreeMap::new());
                described
                    .into_iter()
                    .find(|c| c.name == name)
                    .map(|c| c.value)
                    .unwrap_or_default()
            });
            let mut items: Vec<String> = current
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            for v in need_value()?
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                if op == OP_APPEND {
                    if !items.iter().any(|i| i == v) {
                        items.push(v.to_string());
                    }
                } else {
                    items.retain(|i| i != v);
                }
            }
            configs.insert(name.to_string(), items.join(","));
        }
        other => {
            return Err(BrokerError::InvalidRequest(format!(
                "unknown config operation {other} for '{name}'"
            )))
        }
    }
    Ok(())
}
