//! FindCoordinator: the node that coordinates a group is the leader of the group's
//! `__consumer_offsets` partition, created on the first lookup once
//! `offsets.topic.replication.factor` brokers are live (COORDINATOR_NOT_AVAILABLE until then).
//! Transaction coordinators do not exist yet.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::Context;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

struct Found {
    error: Option<(ResponseError, String)>,
    node_id: i32,
    host: String,
    port: i32,
}

fn lookup(ctx: &Context, key_type: i8, key: &str) -> Found {
    let failed = |e: ResponseError, message: String| Found {
        error: Some((e, message)),
        node_id: -1,
        host: String::new(),
        port: -1,
    };
    match key_type {
        KEY_TYPE_GROUP => match ctx.groups.find_coordinator(key, &ctx.listener) {
            Ok(c) => Found {
                error: None,
                node_id: c.node_id,
                host: c.host,
                port: c.port,
            },
            Err((e, message)) => failed(e, message),
        },
        KEY_TYPE_TRANSACTION => {
            // Transactions are a later issue. A retriable code would make transactional
            // producers retry until their timeout; this one is fatal in librdkafka,
            // kafka-python and the Java client, so init_transactions fails at once.
            tracing::warn!(
                transactional_id = key,
                "a client asked for a transaction coordinator; transactions are not supported yet"
            );
            failed(
                ResponseError::TransactionalIdAuthorizationFailed,
                "transactions are not supported by Runnel yet".to_string(),
            )
        }
        other => failed(
            ResponseError::InvalidRequest,
            format!("unknown coordinator key type {other}"),
        ),
    }
}

pub(crate) async fn handle(
    ctx: &Context,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let key_type = if version >= 1 { request.key_type } else { 0 };
    // The first group lookup of a new cluster creates `__consumer_offsets`, as in Kafka.
    if key_type == KEY_TYPE_GROUP {
        if let Err(e) = ctx.groups.ensure_offsets_topic().await {
            // Clients retry every few hundred milliseconds until it exists: rate-limited.
            ctx.limits.warnings.warn(|suppressed| {
                tracing::warn!(error = %e, suppressed, "cannot create the offsets topic");
            });
        }
    }
    if version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let found = lookup(ctx, key_type, key.as_str());
                let (code, message) = match found.error {
                    Some((e, m)) => (e.code(), Some(str_bytes(m))),
                    None => (0, None),
                };
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(found.node_id.into())
                    .with_host(str_bytes(found.host))
                    .with_port(found.port)
                    .with_error_code(code)
                    .with_error_message(message)
            })
            .collect();
        return FindCoordinatorResponse::default()
            .with_error_message(None)
            .with_coordinators(coordinators);
    }
    let found = lookup(ctx, key_type, request.key.as_str());
    let (code, message): (i16, Option<StrBytes>) = match found.error {
        Some((e, m)) => (e.code(), Some(str_bytes(m))),
        None => (0, None),
    };
    FindCoordinatorResponse::default()
        .with_error_code(code)
        .with_error_message(message)
        .with_node_id(found.node_id.into())
        .with_host(str_bytes(found.host))
        .with_port(found.port)
}
